"""How much does devlab add to a host CPU measurement? (target: max_ratio <= 1.02)

For each sample model, in the same process and interleaved round by round, this measures:
- devlab: a job on ``host:cpu`` through the whole Lab path (store, worker thread, progress
  callback, events rendered by the CLI's rich progress view into a buffer);
- bare: a hand-written ONNX Runtime loop (same session options, inputs, warmup and runs).

It prints both medians and their ratio per model and ends with ``RESULT max_ratio=<x>``.
Usage: python tests/perf/host_overhead.py [--rounds 6] [--runs 150] [models...]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.core.lab import Lab  # noqa: E402
from backends.core.records import JobSettings, Model  # noqa: E402
from backends.core.store import Store  # noqa: E402
from backends.devices.host import HOST_DEVICE_ID, HostBackend, session_options  # noqa: E402
from backends.models.intake import load_model, random_inputs  # noqa: E402
from console.cli.progress import ProgressView  # noqa: E402


def bare_loop(model: Model, warmup: int, runs: int, threads: int) -> list[float]:
    """The baseline: what anyone would write by hand to time a model with ONNX Runtime."""
    session = ort.InferenceSession(
        model.path, session_options(threads), providers=["CPUExecutionProvider"]
    )
    feeds = random_inputs(model)
    for _ in range(warmup + 1):
        session.run(None, feeds)
    latencies = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feeds)
        latencies.append((time.perf_counter_ns() - start) / 1e3)
    return latencies


def devlab_round(model: Model, settings: JobSettings, workdir: Path) -> list[float]:
    """One devlab job on host:cpu through the Lab, as the headless CLI runs it."""
    store = Store(workdir / "devlab.sqlite", fresh=True)
    lab = Lab(store, [HostBackend()])
    lab.discover()
    view = ProgressView(Console(file=io.StringIO(), force_terminal=True), total_jobs=1)
    lab.subscribe(view)
    job = lab.submit(model, HOST_DEVICE_ID, settings=settings)
    with view:
        lab.start()
        lab.wait_until_idle()
    lab.shutdown()
    result = store.result(job.id)
    store.close()
    if result is None:
        raise SystemExit(f"devlab job failed: {store.path}")
    return result.latencies_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="*",
        default=sorted(str(p) for p in (ROOT / "assets" / "models").glob("*.onnx")),
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    settings = JobSettings(warmup=args.warmup, runs=args.runs, threads=args.threads)
    ratios = []
    print(f"{'model':<24}{'devlab median us':>18}{'bare median us':>16}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            model = load_model(path)
            devlab_all: list[float] = []
            bare_all: list[float] = []
            for round_index in range(args.rounds):
                devlab_first = round_index % 2 == 0  # alternate who goes first
                if devlab_first:
                    devlab_all.extend(devlab_round(model, settings, Path(tmp)))
                bare_all.extend(bare_loop(model, args.warmup, args.runs, args.threads))
                if not devlab_first:
                    devlab_all.extend(devlab_round(model, settings, Path(tmp)))
            devlab_median = statistics.median(devlab_all)
            bare_median = statistics.median(bare_all)
            ratio = devlab_median / bare_median
            ratios.append(ratio)
            print(f"{model.name:<24}{devlab_median:>18.1f}{bare_median:>16.1f}{ratio:>8.3f}")
    print(
        f"RESULT max_ratio={max(ratios):.3f} models={len(ratios)} rounds={args.rounds} "
        f"runs_per_round={args.runs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
