"""Regenerate the console screenshots of README.md and docs/console.md (SVG, exported by Textual).

Runs the real console headless on a temporary store: the sample models are benchmarked on
the host CPU, one bad file shows a failure, and the Power view is fed by a synthetic source
(labelled as such) until a power monitor is attached.

    python assets/make_screenshots.py [--out assets/screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.core.events import PowerSamples  # noqa: E402
from backends.core.lab import Lab  # noqa: E402
from backends.core.plan import queue_paths  # noqa: E402
from backends.core.records import JobSettings, JobState  # noqa: E402
from backends.core.store import STORE_FILE, Store  # noqa: E402
from console.tui.app import DevLabApp  # noqa: E402

SIZE = (150, 42)


def synthetic_power(lab: Lab, stop: threading.Event) -> None:
    """A 5 kHz stream shaped like a phone: ~0.9 W idle, bursts of ~2.4 W, some noise."""
    rate, batch = 5000, 250
    start = time.time()
    index = 0
    while not stop.is_set():
        t0 = start + index / rate
        watts = tuple(
            (2.4 if math.sin((t0 + i / rate) * 1.3) > 0.2 else 0.9)
            + 0.05 * math.sin((index + i) * 0.37)
            for i in range(batch)
        )
        lab.events.publish(PowerSamples("demo:synthetic", t0, 1 / rate, watts))
        index += batch
        time.sleep(batch / rate)


async def wait_for(pilot, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the console")
        await pilot.pause(0.2)


async def capture(out: Path, workdir: Path) -> None:
    models = workdir / "models"
    shutil.copytree(ROOT / "assets" / "models", models)
    (models / "not-a-model.onnx").write_text("this is not an ONNX model\n")
    store = Store(workdir / STORE_FILE)
    lab = Lab(store)
    lab.discover()
    app = DevLabApp(lab, poll_devices_s=None, export_folder=workdir / "export")
    stop = threading.Event()
    power = threading.Thread(target=synthetic_power, args=(lab, stop), daemon=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            power.start()
            settings = JobSettings(warmup=5, runs=200, rounds=2)
            queue_paths(lab, [models], ["host:cpu"], settings=settings)
            await wait_for(pilot, lambda: not lab.pending())
            long_run = JobSettings(warmup=5, runs=None, min_seconds=6, rounds=3)
            queue_paths(lab, [models / "mnv2_224.onnx"], ["host:cpu"], settings=long_run)
            await pilot.press("3")
            await wait_for(
                pilot, lambda: any(j.state is JobState.RUNNING for j in app.state.jobs.values())
            )
            await pilot.pause(3.0)
            app.save_screenshot(path=str(out), filename="live.svg")
            await pilot.press("2")
            await pilot.pause(0.5)
            app.save_screenshot(path=str(out), filename="queue.svg")
            await pilot.press("4")
            await pilot.pause(0.5)
            app.save_screenshot(path=str(out), filename="power.svg")
            await wait_for(pilot, lambda: not lab.pending())
            await pilot.press("5")
            await pilot.pause(0.5)
            app.save_screenshot(path=str(out), filename="results.svg")
            await pilot.press("1")
            await pilot.pause(0.5)
            app.save_screenshot(path=str(out), filename="devices.svg")
            await pilot.press("question_mark")
            await pilot.pause(0.5)
            app.save_screenshot(path=str(out), filename="help.svg")
    finally:
        stop.set()
        lab.shutdown(interrupt=True)
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(capture(args.out, Path(tmp)))
    print(f"screenshots written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
