"""How much does devlab add to a host CPU measurement? (target: max_ratio <= 1.02, with and
without the console's live views)

For each sample model, interleaved round by round (the order of the modes rotates every round),
this measures:
- bare: a hand-written ONNX Runtime loop (same session options, inputs, warmup and runs) in an
  interpreter of its own, as a script would run it;
- bare2: a second, identical bare loop in another interpreter: bare2/bare is the comparison's
  own noise (two loops that differ in nothing), printed so every other ratio can be read
  against it;
- harness: a job on ``host:cpu`` through the whole Lab path (store, device worker, the
  measurement process that runs the timed loop, progress events rendered by the CLI's rich
  progress view into a buffer) with the canary, the precision gate and output parity off, one
  round and no minimum round time, so it times the same warmup and runs as the bare loop: what
  the harness alone costs;
- tui: the same job submitted to a Lab driven by the real Textual console (``DevLabApp`` as
  ``devlab`` builds it: it starts dispatch and polls devices) running headless at a real size,
  with the Live view showing the job's progress bar, numbers and latency plot while it runs:
  does a live console in the measuring process cost the measurement anything? Every screen the
  app composes is also encoded into terminal escapes and dropped (headless Textual skips only
  that step), so the console pays what a real terminal would. To show it was live, the script
  counts the screens drawn while each job ran (and while its timed round ran) and the progress
  events the app applied; a tui job during which the app drew nothing or applied no progress
  stops the script;
- default (``--with-default``): the same job with devlab's default protocol (``--job-rounds``
  rounds, the reference canary paired inside each, rounds sized by time, the precision gate,
  parity), so its latencies come from more rounds than the bare loop's.

The rounds run in epochs. An epoch starts every mode's processes afresh and side by side (the
bare loops and the console are helper processes of this script that answer one request per
round; the harness's Lab spawns its own measurement process, as a ``devlab --run`` does), then
runs ``--rounds-per-epoch`` rounds, so the modes of a round run within about a second of each
other. Both choices come from this host: it changes pace by 10-20% over seconds (so only
ratios of measurements close in time cancel it), and a process's memory placement alone can
make mlp 10% slower for that process's whole life (two identical bare loops kept up for 40
rounds: bare2/bare 0.886), so only many processes per mode resolve 2%. Epochs go on (from
``--min-epochs`` to ``--max-epochs``) until every ratio is known to ``--target-pct``. Every
timed loop runs on one core (``--pin``: the bare loops' processes pin themselves, devlab's
measurement processes get the job's ``pin``), so no mode sits on a faster or slower core than
another for a whole epoch; the script's own process, the Labs and the console run unpinned.

Latencies of devlab jobs are read from the stored result. It prints each mode's median of round
medians, the ratios to bare (the median over rounds of each round's ratio to that round's bare
loop) and the tui liveness per model, and ends with ``RESULT max_ratio=<harness>
max_ratio_tui=<tui> max_ratio_harness=<harness> max_ratio_bare2=<noise>
max_ratio_default=<default> models=<n> ...`` (``skipped`` for modes not run).
Usage: python tests/perf/host_overhead.py [--rounds-per-epoch 3] [--min-epochs 6]
       [--max-epochs 12] [--target-pct 1.5] [--pin CORE] [--runs 150] [--min-round-ms 200]
       [--warmup 10] [--threads 1] [--job-rounds 5] [--no-tui] [--with-default] [--dump FILE]
       [--smoke] [models...]
(--runs is raised per model so that a round lasts --min-round-ms: long enough for the console
to draw during a tiny model's round.)
--smoke: the smallest sample model, one epoch of one round of 20 runs after 2 warm-up runs,
every mode included (make test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
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
    "rounds_per_epoch": 1,
    "min_epochs": 1,
    "max_epochs": 1,
    "runs": 20,
    "warmup": 2,
    "min_round_ms": 0.0,
    "with_default": True,
    "models": [str(MODELS / "mlp.onnx")],
}
TUI_SIZE = (160, 50)  # a real terminal's size, so the views lay out as an operator sees them
LIVE_VIEW_KEY = "3"  # the app's binding for the Live view
APP_READY_TIMEOUT_S = 30.0


def bare_loop(model: Model, warmup: int, runs: int, threads: int) -> list[float]:
    """The baseline: what anyone would write by hand to time a model with ONNX Runtime."""
    session = ort.InferenceSession(
        model.path, session_options(threads), providers=["CPUExecutionProvider"]
    )
    feeds = random_inputs(model)
    for _ in range(warmup + 1):
        session.run(None, feeds)
    return timed_runs(session, feeds, runs)


def timed_runs(session: ort.InferenceSession, feeds: dict, runs: int) -> list[float]:
    latencies = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feeds)
        latencies.append((time.perf_counter_ns() - start) / 1e3)
    return latencies


class Server:
    """A helper process of this script (``--bare-server`` or ``--tui-server``) that stays up
    for one epoch's rounds and answers one request per round over a socket pair, so a round
    costs its measurement and not an interpreter's start-up (the modes of a round then run
    within about a second of each other). It starts at once; ``ready()`` waits for it to be
    set up, so an epoch's processes start side by side."""

    def __init__(self, role: str, *init: object) -> None:
        parent, child = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, __file__, role, str(child.fileno())],
            pass_fds=[child.fileno()],
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.conn.send(("init", *init))

    def ready(self) -> Server:
        self._reply()
        return self

    def ask(self, request: tuple) -> object:
        self.conn.send(request)
        return self._reply()

    def _reply(self) -> object:
        try:
            kind, reply = self.conn.recv()
        except EOFError:
            code = self.process.wait(timeout=30)
            raise SystemExit(f"{self.process.args[2]} ended (exit code {code})") from None
        if kind == "error":
            raise SystemExit(f"{self.process.args[2]}: {reply}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def bare_server(conn: Connection) -> None:
    """The bare loop as a hand-written script runs it, in an interpreter of its own: the
    session is made once; each round runs the warmup and then times the runs."""
    _, path, warmup, threads, pin = conn.recv()
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    model = load_model(path)
    session = ort.InferenceSession(
        model.path, session_options(threads), providers=["CPUExecutionProvider"]
    )
    feeds = random_inputs(model)
    session.run(None, feeds)
    conn.send(("ok", None))
    while (request := conn.recv()) is not None:
        for _ in range(warmup):
            session.run(None, feeds)
        conn.send(("ok", timed_runs(session, feeds, request[1])))


def new_lab(workdir: Path) -> tuple[Store, Lab]:
    """A fresh store and Lab with the host device, as each devlab run starts."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = Store(workdir / "devlab.sqlite", fresh=True)
    lab = Lab(store, [HostBackend()])
    lab.discover()
    return store, lab


def round_settings(settings: JobSettings, round_index: int) -> JobSettings:
    """The settings of one round's job: the store keeps a done job's result and would answer
    a resubmission with it, so every round's job differs in ``settle_timeout_s``, which the
    host never reads (no battery to settle)."""
    return replace(settings, settle_timeout_s=settings.settle_timeout_s + round_index)


def stored_latencies(store: Store, job_id: str) -> list[float]:
    result = store.result(job_id)
    if result is None:
        raise SystemExit(f"devlab job failed: {store.path} {job_id}")
    return result.latencies_us


def paired_ratio(mode: list[float], bare: list[float]) -> float:
    """The median over rounds of (the mode's round median / the same round's bare median):
    each ratio compares measurements about a second apart, so the host's changes of pace,
    which move a whole round by 10-20% on this machine, cancel instead of landing on one
    mode's rounds more than another's."""
    return statistics.median(m / b for m, b in zip(mode, bare, strict=True))


def runs_for(model: Model, args: argparse.Namespace) -> int:
    """``--runs``, raised so a round of them lasts about ``--min-round-ms`` (timed on a short
    bare loop first); every mode of the model then times this many runs."""
    if args.min_round_ms <= 0:
        return args.runs
    pilot = statistics.median(bare_loop(model, args.warmup, 30, args.threads))
    return max(args.runs, int(args.min_round_ms * 1e3 / pilot))


class LabRounds:
    """devlab jobs on host:cpu through one Lab that stays up for a model's rounds, as the
    headless CLI runs them (progress rendered by its rich view into a buffer); its device
    worker's measurement process lives as long as the Lab, like a long ``devlab --run``."""

    def __init__(self, workdir: Path, rounds: int) -> None:
        self.store, self.lab = new_lab(workdir)
        self.view = ProgressView(Console(file=io.StringIO(), force_terminal=True), rounds)
        self.lab.subscribe(self.view)
        self.view.__enter__()
        self.lab.start()

    def run(self, model: Model, settings: JobSettings) -> list[float]:
        job = self.lab.submit(model, HOST_DEVICE_ID, settings=settings)
        self.lab.wait_until_idle()
        return stored_latencies(self.store, job.id)

    def close(self) -> None:
        self.lab.shutdown()
        self.view.__exit__(None, None, None)
        self.store.close()


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

    def reset(self) -> None:
        """Forget the previous job's marks and progress (the app stays up across jobs)."""
        self.marks.clear()
        self.progress = 0

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


async def serve_app(conn: Connection, workdir: Path) -> None:
    """The console kept up for a model's tui rounds: the real app (as ``devlab`` builds it: it
    starts dispatch and polls devices) headless at a real size, on the Live view; each request
    submits one job to its Lab, off the UI thread as the app's own intake worker does, and is
    answered with the job's latencies and what the console did meanwhile."""
    store, lab = new_lab(workdir)
    app = DevLabApp(lab)
    watch = LiveWatch(app)
    lab.subscribe(watch)
    try:
        async with app.run_test(size=TUI_SIZE) as pilot:
            await until(
                lambda: HOST_DEVICE_ID in app.state.devices, APP_READY_TIMEOUT_S, "the lab snapshot"
            )
            await pilot.press(LIVE_VIEW_KEY)
            if app.active_view != "live":
                raise SystemExit(f"tui: the Live view did not open (showing {app.active_view})")
            conn.send(("ok", None))
            while (request := await asyncio.to_thread(conn.recv)) is not None:
                _, path, settings = request
                watch.reset()
                job = await asyncio.to_thread(
                    lab.submit, load_model(path), HOST_DEVICE_ID, settings=JobSettings(**settings)
                )
                await asyncio.to_thread(lab.wait_until_idle)
                # the app draws the finished job, and its inbox is empty before the next one
                await pilot.pause(3 * UI_TICK_S)
                liveness = watch.liveness()
                if liveness.frames == 0 or liveness.progress == 0:
                    conn.send(("error", f"the console was not live during the job: {liveness}"))
                    return
                conn.send(("ok", (stored_latencies(store, job.id), asdict(liveness))))
    finally:
        lab.shutdown()
        store.close()


def tui_server(conn: Connection) -> None:
    _, workdir = conn.recv()
    asyncio.run(serve_app(conn, Path(workdir)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    servers = {"--bare-server": bare_server, "--tui-server": tui_server}
    if argv[:1] and argv[0] in servers:  # a helper process of this script
        servers[argv[0]](Connection(int(argv[1])))
        return 0
    args = parse_args(argv)
    default = JobSettings(
        warmup=args.warmup,
        runs=args.runs,
        threads=args.threads,
        rounds=args.job_rounds,
        pin=args.pin,
    )
    harness = replace(
        default, rounds=1, precision_pct=0, skip_canary=True, skip_parity=True, min_round_s=0.0
    )
    modes = ["bare", "bare2", "harness"]
    modes += ["tui"] if args.tui else []
    modes += ["default"] if args.with_default else []
    compared = [mode for mode in modes if mode != "bare"]
    ratios: dict[str, list[float]] = {mode: [] for mode in compared}
    print(
        f"{'model':<34}"
        + "".join(f"{mode + ' med us':>16}" for mode in modes)
        + "".join(f"{mode + '/bare':>14}" for mode in compared)
    )
    lives: list[tuple[str, Liveness]] = []
    dumped: dict[str, dict[str, list[float]]] = {}
    epochs_run: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, path in enumerate(args.models):
            model = load_model(path)
            runs = runs_for(model, args)
            by_round, live, epochs = measure_model(
                model,
                modes,
                args,
                replace(harness, runs=runs),
                replace(default, runs=runs),
                Path(tmp) / str(index),
            )
            dumped[model.name] = by_round
            epochs_run.append(epochs)
            for name in compared:
                ratios[name].append(paired_ratio(by_round[name], by_round["bare"]))
            print(
                f"{model.name + f' ({runs} runs, {epochs} ep)':<34}"
                + "".join(f"{statistics.median(by_round[mode]):>16.1f}" for mode in modes)
                + "".join(f"{ratios[mode][-1]:>14.3f}" for mode in compared),
                flush=True,
            )
            if args.tui:
                lives.append((model.name, live))
    print(
        "(med us: the median of the round medians; mode/bare: the median over rounds of the "
        "round's ratio; bare2/bare: two identical bare loops, the comparison's own noise)"
    )
    if lives:
        print_liveness(lives)
    if args.dump:
        Path(args.dump).write_text(json.dumps(dumped, indent=1))
    tui = f"{max(ratios['tui']):.3f}" if args.tui else "skipped"
    default_max = f"{max(ratios['default']):.3f}" if args.with_default else "skipped"
    print(
        f"RESULT max_ratio={max(ratios['harness']):.3f} max_ratio_tui={tui} "
        f"max_ratio_harness={max(ratios['harness']):.3f} "
        f"max_ratio_bare2={max(ratios['bare2']):.3f} max_ratio_default={default_max} "
        f"models={len(args.models)} epochs={'/'.join(map(str, epochs_run))} "
        f"rounds_per_epoch={args.rounds_per_epoch}"
    )
    return 0


def measure_model(
    model: Model,
    modes: list[str],
    args: argparse.Namespace,
    harness: JobSettings,
    default: JobSettings,
    workdir: Path,
) -> tuple[dict[str, list[float]], Liveness, int]:
    """Every mode's round medians for one model, and the epochs it took.

    An epoch starts every mode's processes afresh (two bare loops, a Lab whose device worker
    spawns a new measurement process, a new console) and runs ``--rounds-per-epoch`` rounds,
    the modes interleaved (the order rotates every round). Epochs go on, from ``--min-epochs``
    to ``--max-epochs``, until the ratio of every compared mode is known to ``--target-pct``
    (95% interval of the median ratio, from the epochs' spread): on this host a process's
    memory placement alone can make a tiny model 10% slower for that process's whole life, so
    only many processes per mode can resolve 2%, and a stop on precision (not on the ratio's
    value) spends them where the spread needs them."""
    by_round: dict[str, list[float]] = {mode: [] for mode in modes}
    per_epoch: dict[str, list[float]] = {mode: [] for mode in modes if mode != "bare"}
    live = Liveness()
    epoch = 0
    while epoch < args.max_epochs:
        if epoch >= args.min_epochs and all(
            ratio_half_width_pct(values) <= args.target_pct for values in per_epoch.values()
        ):
            break
        first = len(by_round["bare"])
        run_epoch(model, modes, args, harness, default, workdir / f"epoch{epoch}", by_round, live)
        for name, values in per_epoch.items():
            values.append(
                paired_ratio(by_round[name][first:], by_round["bare"][first:])  # this epoch's
            )
        epoch += 1
    return by_round, live, epoch


def ratio_half_width_pct(epoch_ratios: list[float]) -> float:
    """Half the 95% interval of the median of the epochs' ratios, in percent (normal
    approximation: 1.2533 sigma / sqrt(n), sigma from the MAD so one wild epoch cannot hold
    the run open)."""
    if len(epoch_ratios) < 3:
        return float("inf")
    center = statistics.median(epoch_ratios)
    mad = statistics.median(abs(r - center) for r in epoch_ratios)
    return 1.96 * 1.2533 * 1.4826 * mad / len(epoch_ratios) ** 0.5 / center * 100


def run_epoch(
    model: Model,
    modes: list[str],
    args: argparse.Namespace,
    harness: JobSettings,
    default: JobSettings,
    workdir: Path,
    by_round: dict[str, list[float]],
    live: Liveness,
) -> None:
    """One epoch's rounds on fresh processes; appends each mode's round medians."""
    starting = {
        name: Server("--bare-server", model.path, args.warmup, args.threads, args.pin)
        for name in ("bare", "bare2")
    }
    if "tui" in modes:
        starting["tui"] = Server("--tui-server", str(workdir / "tui"))
    lab = LabRounds(workdir / "lab", args.rounds_per_epoch * 2)
    try:
        servers = {name: server.ready() for name, server in starting.items()}
        for _ in range(args.rounds_per_epoch):
            done = len(by_round["bare"])  # rounds so far: also makes every round's job unique
            shift = done % len(modes)
            for name in modes[shift:] + modes[:shift]:
                if name in ("bare", "bare2"):
                    latencies = servers[name].ask(("run", harness.runs))
                elif name == "tui":
                    settings = round_settings(harness, done)
                    latencies, job_live = servers[name].ask(("job", model.path, settings.to_dict()))
                    live.add(Liveness(**job_live))
                else:
                    settings = harness if name == "harness" else default
                    latencies = lab.run(model, round_settings(settings, done))
                by_round[name].append(statistics.median(latencies))
    finally:
        lab.close()
        for server in starting.values():
            server.close()


def print_liveness(lives: list[tuple[str, Liveness]]) -> None:
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="*",
        default=sorted(str(p) for p in MODELS.glob("*.onnx")),
        help="ONNX models (default: every sample model in assets/models)",
    )
    parser.add_argument(
        "--rounds-per-epoch",
        type=int,
        default=3,
        help="rounds on one set of processes (default %(default)s)",
    )
    parser.add_argument("--min-epochs", type=int, default=6, help="(default %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=12, help="(default %(default)s)")
    parser.add_argument(
        "--target-pct",
        type=float,
        default=1.5,
        help="epochs go on until every ratio is known to this (95%% interval, default %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=150, help="timed runs per job (default 150)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs (default 10)")
    parser.add_argument(
        "--min-round-ms",
        type=float,
        default=200.0,
        help="raise a model's runs so that a round of them lasts about this long, so a tiny "
        "model's round is long enough for the console to draw during it (default %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument(
        "--pin",
        type=int,
        default=max(os.sched_getaffinity(0)),
        help="the core every timed loop runs on: the bare loops' processes and devlab's "
        "measurement processes (its --pin) alike, so no mode runs on a faster or slower core "
        "than another (default: the highest core this script may use, %(default)s)",
    )
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
        "--with-default",
        action="store_true",
        help="also time a job with devlab's default protocol (canary, gate, parity; several "
        "seconds a round)",
    )
    parser.add_argument("--dump", help="write every mode's round medians per model to this JSON")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k}={v}" for k, v in SMOKE.items() if k != "models")
        + " on mlp.onnx",
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
