"""How much does devlab add to a host CPU measurement? (target: max_ratio <= 1.02, with and
without the console's live views)

For each sample model, in the same process and interleaved round by round (the order of the
four rotates every round), this measures:
- harness: a job on ``host:cpu`` through the whole Lab path (store, device worker, the
  measurement process that runs the timed loop, progress events rendered by the CLI's rich
  progress view into a buffer) with the canary, the precision gate and output parity off, one
  round and no minimum round time, so it times the same warmup and runs as the bare loop: what
  the harness alone costs;
- tui: the same job submitted to a Lab driven by the real Textual console (``DevLabApp`` as
  ``devlab`` builds it: it starts dispatch and polls devices) running headless at a real size
  in this process, with the Live view showing the job's progress bar, numbers and latency plot
  while it runs: does a live console in the measuring process cost the measurement anything?
  Every screen the app composes is also encoded into terminal escapes and dropped (headless
  Textual skips only that step), so the console pays what a real terminal would. To show it
  was live, the script counts the screens drawn while each job ran (and while its timed round
  ran) and the progress events the app applied; a tui job during which the app drew nothing
  or applied no progress stops the script;
- default: the same job with devlab's default protocol (``--job-rounds`` rounds of the runs,
  the reference canary paired inside each, rounds sized by time, the precision gate adding
  rounds, parity), so its latencies come from more rounds than the bare loop's;
- bare: a hand-written ONNX Runtime loop (same session options, inputs, warmup and runs), in
  a fresh interpreter each round as a script would run (devlab's rounds also time in fresh
  measurement processes, and a process's memory placement alone moves a tiny model's time).

Latencies of devlab jobs are read from the stored result. It prints the four medians (of every
latency pooled over the rounds), the ratios to bare (the median over rounds of each round's
ratio to that round's bare loop: a slow spell of the host then cancels instead of landing on
one mode) and the tui liveness per model, and ends with
``RESULT max_ratio=<harness> max_ratio_tui=<tui> max_ratio_harness=<harness>
max_ratio_default=<default> models=<n> ...`` (``max_ratio_tui=skipped`` with ``--no-tui``).
Usage: python tests/perf/host_overhead.py [--rounds 10] [--runs 150] [--min-round-ms 300]
       [--warmup 10] [--threads 1] [--job-rounds 5] [--no-tui] [--smoke] [models...]
(--runs is raised per model so that a round lasts --min-round-ms: long enough for the console
to draw during a tiny model's round.)
--smoke: the smallest sample model, one round of 20 runs after 2 warm-up runs, tui included
(make test).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import onnxruntime as ort
from rich.console import Console, RenderableType
from textual.screen import Screen

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.core.events import (  # noqa: E402
    Event,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobProgress,
    JobStarted,
)
from backends.core.lab import Lab  # noqa: E402
from backends.core.records import JobSettings, Model  # noqa: E402
from backends.core.store import Store  # noqa: E402
from backends.devices.host import HOST_DEVICE_ID, HostBackend  # noqa: E402
from backends.models.intake import load_model, random_inputs  # noqa: E402
from backends.runtimes.ort_session import session_options  # noqa: E402
from console.cli.progress import ProgressView  # noqa: E402
from console.tui.app import UI_TICK_S, DevLabApp  # noqa: E402

MODELS = ROOT / "assets" / "models"
SMOKE = {
    "rounds": 1,
    "runs": 20,
    "warmup": 2,
    "min_round_ms": 0.0,
    "models": [str(MODELS / "mlp.onnx")],
}
TUI_SIZE = (160, 50)  # a real terminal's size, so the views lay out as an operator sees them
LIVE_VIEW_KEY = "3"  # the app's binding for the Live view
APP_READY_TIMEOUT_S = 30.0
MODES = ("harness", "default", "bare", "tui")


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


def bare_process(model: Model, warmup: int, runs: int, threads: int) -> list[float]:
    """The bare loop as a hand-written script runs it: in a fresh interpreter of its own.

    Every devlab round times in a freshly spawned measurement process, and a process's memory
    placement alone moves a 15 us model's time by a few percent; timing the baseline in one
    long-lived process would compare one placement against many."""
    done = subprocess.run(
        [sys.executable, __file__, "--bare-worker", model.path, str(warmup), str(runs)]
        + [str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def new_lab(workdir: Path) -> tuple[Store, Lab]:
    """A fresh store and Lab with the host device, as each devlab run starts."""
    store = Store(workdir / "devlab.sqlite", fresh=True)
    lab = Lab(store, [HostBackend()])
    lab.discover()
    return store, lab


def stored_latencies(store: Store, job_id: str) -> list[float]:
    result = store.result(job_id)
    store.close()
    if result is None:
        raise SystemExit(f"devlab job failed: {store.path}")
    return result.latencies_us


def paired_ratio(mode: list[float], bare: list[float]) -> float:
    """The median over rounds of (the mode's round median / the same round's bare median):
    each ratio compares measurements seconds apart, so the host's slow spells, which last tens
    of seconds and would land on one mode's rounds more than another's, cancel."""
    return statistics.median(m / b for m, b in zip(mode, bare, strict=True))


def runs_for(model: Model, args: argparse.Namespace) -> int:
    """``--runs``, raised so a round of them lasts about ``--min-round-ms`` (timed on a short
    bare loop first); every mode of the model then times this many runs."""
    if args.min_round_ms <= 0:
        return args.runs
    pilot = statistics.median(bare_loop(model, args.warmup, 30, args.threads))
    return max(args.runs, int(args.min_round_ms * 1e3 / pilot))


def devlab_round(model: Model, settings: JobSettings, workdir: Path) -> list[float]:
    """One devlab job on host:cpu through the Lab, as the headless CLI runs it."""
    store, lab = new_lab(workdir)
    view = ProgressView(Console(file=io.StringIO(), force_terminal=True), total_jobs=1)
    lab.subscribe(view)
    job = lab.submit(model, HOST_DEVICE_ID, settings=settings)
    with view:
        lab.start()
        lab.wait_until_idle()
    lab.shutdown()
    return stored_latencies(store, job.id)


@dataclass
class Liveness:
    """What the console did while its jobs ran, summed over the tui rounds of a model."""

    jobs: int = 0
    frames: int = 0  # screens composed (and encoded) between the job's start and its end
    frames_timed: int = 0  # of those, while its timed round ran
    progress: int = 0  # the job's JobProgress events the app applied
    timed_s: float = 0.0  # how long the timed rounds took, as the console saw them
    cpu_timed_s: float = 0.0  # CPU this process (console, Lab threads) used meanwhile

    def add(self, other: Liveness) -> None:
        self.jobs += other.jobs
        self.frames += other.frames
        self.frames_timed += other.frames_timed
        self.progress += other.progress
        self.timed_s += other.timed_s
        self.cpu_timed_s += other.cpu_timed_s


class LiveWatch:
    """Counts, from outside the app, the screens it draws and the progress it applies, and
    marks (as a Lab subscriber) when its job starts, enters its timed round and ends.

    The app's display hook is wrapped on the instance: each composed screen update is counted
    and encoded as the terminal driver would encode it, then dropped.
    """

    def __init__(self, app: DevLabApp) -> None:
        self.frames = 0
        self.progress = 0
        # start/round/end: (frames drawn, wall time, this process's CPU time)
        self.marks: dict[str, tuple[int, float, float]] = {}
        display: Callable[[Screen, RenderableType | None], None] = app._display
        drain = app.inbox.drain

        def display_counted(screen: Screen, renderable: RenderableType | None) -> None:
            display(screen, renderable)
            if renderable is None or app._batch_count:  # nothing drawn (Textual's own rule)
                return
            self.frames += 1
            encode = getattr(renderable, "render_segments", None)
            if encode is not None:
                encode(app.console)

        def drain_counted() -> list[Event]:
            events = drain()
            self.progress += sum(isinstance(event, JobProgress) for event in events)
            return events

        app._display = display_counted  # type: ignore[method-assign]
        app.inbox.drain = drain_counted  # type: ignore[method-assign]

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobStarted):
            self._mark("start")
        elif isinstance(event, JobProgress) and event.phase.startswith("round"):
            self._mark("round")
        elif isinstance(event, JobFinished | JobFailed | JobCancelled):
            self._mark("end")

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, (self.frames, time.perf_counter(), time.process_time()))

    def liveness(self) -> Liveness:
        start, timed, end = (self.marks.get(name) for name in ("start", "round", "end"))
        if start is None or timed is None or end is None:
            raise SystemExit(f"the tui job did not run through (marks seen: {list(self.marks)})")
        return Liveness(
            jobs=1,
            frames=end[0] - start[0],
            frames_timed=end[0] - timed[0],
            progress=self.progress,
            timed_s=end[1] - timed[1],
            cpu_timed_s=end[2] - timed[2],
        )


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"tui: {what} did not happen in {timeout_s:g} s")
        await asyncio.sleep(0.02)


async def drive_app(lab: Lab, model: Model, settings: JobSettings) -> tuple[str, Liveness]:
    """Run the console headless on ``lab``, show the Live view, run one job under it."""
    app = DevLabApp(lab)  # as `devlab` builds it: it starts dispatch and polls devices
    watch = LiveWatch(app)
    unsubscribe = lab.subscribe(watch)
    try:
        async with app.run_test(size=TUI_SIZE) as pilot:
            await until(
                lambda: HOST_DEVICE_ID in app.state.devices, APP_READY_TIMEOUT_S, "the lab snapshot"
            )
            await pilot.press(LIVE_VIEW_KEY)
            if app.active_view != "live":
                raise SystemExit(f"tui: the Live view did not open (showing {app.active_view})")
            # submitted off the UI thread, as the app's own intake worker does
            job = await asyncio.to_thread(lab.submit, model, HOST_DEVICE_ID, settings=settings)
            await asyncio.to_thread(lab.wait_until_idle)
            # the app draws the finished job, and its inbox is empty before it tears down
            await pilot.pause(3 * UI_TICK_S)
    finally:
        unsubscribe()
    liveness = watch.liveness()
    if liveness.frames == 0 or liveness.progress == 0:
        raise SystemExit(f"tui: the console was not live during the job: {liveness}")
    return job.id, liveness


def tui_round(model: Model, settings: JobSettings, workdir: Path) -> tuple[list[float], Liveness]:
    """One devlab job on host:cpu with the Textual console live in this process."""
    store, lab = new_lab(workdir)
    threads_before = set(threading.enumerate())
    try:
        job_id, liveness = asyncio.run(drive_app(lab, model, settings))
    finally:
        lab.shutdown()
    left = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    if left:  # they would share the bare loop's interpreter in the next measurement
        print(f"warning: threads left running after the tui round: {left}", file=sys.stderr)
    return stored_latencies(store, job_id), liveness


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bare-worker"]:  # the child of bare_process
        path, warmup, runs, threads = argv[1:5]
        print(json.dumps(bare_loop(load_model(path), int(warmup), int(runs), int(threads))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="*",
        default=sorted(str(p) for p in MODELS.glob("*.onnx")),
        help="ONNX models (default: every sample model in assets/models)",
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--runs", type=int, default=150, help="timed runs per job (default 150)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs (default 10)")
    parser.add_argument(
        "--min-round-ms",
        type=float,
        default=300.0,
        help="raise a model's runs so that a round of them lasts about this long, so a tiny "
        "model's round is long enough for the console to draw during it (default %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument(
        "--job-rounds",
        type=int,
        default=JobSettings.rounds,
        help="rounds of the default-protocol job (devlab's default, %(default)s)",
    )
    parser.add_argument(
        "--no-tui",
        dest="tui",
        action="store_false",
        help="skip the measurement with the Textual console live (max_ratio_tui=skipped)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k}={v}" for k, v in SMOKE.items() if k != "models")
        + " on mlp.onnx",
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)

    default = JobSettings(
        warmup=args.warmup, runs=args.runs, threads=args.threads, rounds=args.job_rounds
    )
    harness = replace(
        default, rounds=1, precision_pct=0, skip_canary=True, skip_parity=True, min_round_s=0.0
    )
    modes = [mode for mode in MODES if args.tui or mode != "tui"]
    compared = [mode for mode in modes if mode != "bare"]
    ratios: dict[str, list[float]] = {mode: [] for mode in compared}
    print(
        f"{'model':<24}"
        + "".join(f"{mode + ' med us':>16}" for mode in modes)
        + "".join(f"{mode + '/bare':>14}" for mode in compared)
    )
    lives: list[tuple[str, Liveness]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            model = load_model(path)
            runs = runs_for(model, args)
            harness_m, default_m = replace(harness, runs=runs), replace(default, runs=runs)
            pooled: dict[str, list[float]] = {mode: [] for mode in modes}
            by_round: dict[str, list[float]] = {mode: [] for mode in modes}
            live = Liveness()
            for round_index in range(args.rounds):
                shift = round_index % len(modes)  # rotate who goes first
                for name in modes[shift:] + modes[:shift]:
                    if name == "bare":
                        latencies = bare_process(model, args.warmup, runs, args.threads)
                    elif name == "tui":
                        latencies, job_live = tui_round(model, harness_m, Path(tmp))
                        live.add(job_live)
                    else:
                        settings = harness_m if name == "harness" else default_m
                        latencies = devlab_round(model, settings, Path(tmp))
                    pooled[name].extend(latencies)
                    by_round[name].append(statistics.median(latencies))
            medians = {name: statistics.median(values) for name, values in pooled.items()}
            for name in ratios:
                ratios[name].append(paired_ratio(by_round[name], by_round["bare"]))
            print(
                f"{model.name + f' ({runs} runs)':<24}"
                + "".join(f"{medians[mode]:>16.1f}" for mode in modes)
                + "".join(f"{ratios[mode][-1]:>14.3f}" for mode in compared),
                flush=True,
            )
            if args.tui:
                lives.append((model.name, live))
    if lives:
        print(
            f"\ntui: the console live at {TUI_SIZE[0]}x{TUI_SIZE[1]} on the Live view; per model,"
            " summed over its tui jobs"
        )
        print(
            f"{'model':<24}{'jobs':>6}{'screens drawn':>15}{'progress applied':>18}"
            f"{'timed rounds ms':>17}{'screens in them':>17}{'console cpu in them':>21}"
        )
        for name, live in lives:
            cpu = live.cpu_timed_s / live.timed_s * 100 if live.timed_s > 0 else 0.0
            print(
                f"{name:<24}{live.jobs:>6}{live.frames:>15}{live.progress:>18}"
                f"{live.timed_s * 1000:>17.1f}{live.frames_timed:>17}{cpu:>20.0f}%"
            )
        print(
            "(screens drawn and progress applied: from each job's start to its end; the timed "
            "rounds: from the round's start event to the job's end)"
        )
    tui = f"{max(ratios['tui']):.3f}" if args.tui else "skipped"
    print(
        f"RESULT max_ratio={max(ratios['harness']):.3f} max_ratio_tui={tui} "
        f"max_ratio_harness={max(ratios['harness']):.3f} "
        f"max_ratio_default={max(ratios['default']):.3f} "
        f"models={len(args.models)} rounds={args.rounds} runs_per_round={args.runs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
