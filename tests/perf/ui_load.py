"""Does the console stay responsive under a heavy event stream? (target: p99_lag_ms <= 50)

It builds a Lab over a temporary Store with the real HostBackend and runs ``DevLabApp`` headless
(``run_test(size=(160, 45))``, with its dispatch, no device polling). First it queues a real
host:cpu job on a sample model (``--model``, default assets/models/mnv2_224.onnx: one round
timed by duration, longer than the load) and waits until its timed runs stream progress; the
console's process then also carries that measurement's worker thread (the timing itself runs
in a measurement process of its own, on another core when there is one). For ``--seconds``
(default 30), while that job runs:
- a producer thread publishes a synthetic power stream through ``lab.events.publish``:
  5,000 samples/s as ``PowerSamples`` batches of 50 every 10 ms, contiguous ``t0`` and
  ``interval_s``, a realistic waveform (idle floor, inference bursts, ripple, noise), from a
  monitor announced as a configured, connected one (``MonitorChanged``), so the Power view
  draws it as it draws a Monsoon's panel;
- a second producer publishes 200 ``JobProgress`` events/s for two synthetic running jobs
  (announced first with ``JobQueued`` and ``JobStarted``), each with its recent latencies;
- the script switches views (Live, Power, Queue) every ``--switch-s`` so both heavy views render.
The host job is interrupted (and re-queued, in the throwaway store) when the load ends.

It measures the event loop's lag (a task sleeps 10 ms in a loop and records how late it woke)
and the process CPU (process_time over wall time), prints a line per second and a summary, and
ends with one line ``RESULT p99_lag_ms=<x> cpu_pct=<y> ...``.

Headless Textual composes and renders every update but skips the final encoding of segments
into terminal escapes, so a real terminal costs somewhat more than measured here.

Usage: python tests/perf/ui_load.py [--seconds 30] [--switch-s 2] [--model FILE] [--quiet]
       [--profile FILE] [--smoke]
       (--smoke: 2 s of the same load on the small MLP, views every 0.5 s; make test runs it)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import math
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.core.events import (  # noqa: E402
    Event,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobProgress,
    JobQueued,
    JobStarted,
    MonitorChanged,
    PowerSamples,
)
from backends.core.lab import Lab  # noqa: E402
from backends.core.plan import queue_paths  # noqa: E402
from backends.core.records import (  # noqa: E402
    Job,
    JobSettings,
    JobState,
    Model,
    ModelInput,
    MonitorState,
    PowerMonitor,
)
from backends.core.store import Store  # noqa: E402
from backends.devices.host import HOST_DEVICE_ID, ORT_RUNTIME, HostBackend  # noqa: E402
from console.tui.app import UI_TICK_S, DevLabApp  # noqa: E402

SAMPLE_RATE_HZ = 5_000
POWER_BATCH = 50  # samples per PowerSamples event: one event every 10 ms
PROGRESS_PER_S = 200  # JobProgress events per second, over all synthetic jobs
SYNTHETIC_JOBS = 2
TICK_S = 0.010  # the lag probe's sleep
TARGET_P99_MS = 50.0
MONITOR_ID = "monsoon:synthetic"
VOLTS = 4.2
VIEW_KEYS = {"live": "3", "power": "4", "queue": "2"}
MODELS = ROOT / "assets" / "models"
HOST_MODEL = MODELS / "mnv2_224.onnx"
HOST_START_TIMEOUT_S = 60.0  # the measurement process: spawn, import, load, warm up
HOST_JOB_SPARE_S = 120.0  # the host job is timed for longer than the load; interrupted after
# --smoke: long enough for the app to start and each heavy view to render once or twice
SMOKE = {"seconds": 2.0, "switch_s": 0.5, "quiet": True, "model": str(MODELS / "mlp.onnx")}


# --- producers -------------------------------------------------------------------------------


class Producer(threading.Thread):
    """Calls ``step(n)`` at a fixed rate on absolute deadlines (late steps are caught up)."""

    def __init__(self, name: str, period_s: float, step: Callable[[int], int]) -> None:
        super().__init__(name=name, daemon=True)
        self.period_s = period_s
        self.step = step
        self.stop_event = threading.Event()
        self.published = 0  # events
        self.units = 0  # what the events carry (samples, progress reports)

    def run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self.stop_event.is_set():
            due = start + n * self.period_s
            delay = due - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
                continue
            self.units += self.step(n)
            self.published += 1
            n += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


class PowerWaveform:
    """A phone on a Monsoon: ~0.9 W floor, ~3.2 W inference bursts at ~7 Hz with a ramp,
    100 Hz regulator ripple, gaussian noise and a rare spike."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.t0 = time.time()
        self.interval_s = 1.0 / SAMPLE_RATE_HZ

    def batch(self, n: int) -> PowerSamples:
        first = n * POWER_BATCH
        watts = []
        for i in range(first, first + POWER_BATCH):
            t = i * self.interval_s
            phase = (t * 7.0) % 1.0
            burst = 2.3 * min(1.0, phase / 0.05) if phase < 0.45 else 0.0
            ripple = 0.04 * math.sin(2 * math.pi * 100.0 * t)
            spike = 1.5 if self.rng.random() < 2e-4 else 0.0
            watts.append(0.9 + burst + ripple + spike + self.rng.gauss(0.0, 0.03))
        return PowerSamples(
            monitor_id=MONITOR_ID,
            t0=self.t0 + first * self.interval_s,
            interval_s=self.interval_s,
            watts=tuple(watts),
            volts=VOLTS,  # a Monsoon's batches carry V and I too; the panel shows them
            amps=statistics.fmean(watts) / VOLTS,
        )


def synthetic_jobs(count: int) -> list[Job]:
    jobs = []
    for index in range(count):
        name = f"synthetic_net{index}"
        model = Model(
            path=f"/synthetic/{name}.onnx",
            name=name,
            sha256=hashlib.sha256(name.encode()).hexdigest(),
            inputs=[ModelInput("input", [1, 3, 224, 224], "float32")],
        )
        jobs.append(
            Job(
                id=f"synth{index:07d}",
                model=model,
                device_id=HOST_DEVICE_ID,
                runtime=ORT_RUNTIME,
                settings=JobSettings(warmup=10, runs=1_000_000),
                created_at=time.time(),
            )
        )
    return jobs


class ProgressStream:
    """Round-robin progress of the synthetic jobs, each report with its recent latencies."""

    def __init__(self, jobs: list[Job], seed: int = 2) -> None:
        self.jobs = jobs
        self.rng = random.Random(seed)
        self.done = [0] * len(jobs)
        self.base_us = [1800.0 + 900.0 * i for i in range(len(jobs))]

    def event(self, n: int) -> JobProgress:
        index = n % len(self.jobs)
        job = self.jobs[index]
        total = job.settings.runs or 0
        base = self.base_us[index]
        # the worker throttles to a few reports per second per job, so each carries a burst
        recent = tuple(base * self.rng.lognormvariate(0.0, 0.08) for _ in range(8))
        self.done[index] = (self.done[index] + len(recent)) % total
        done = self.done[index]
        return JobProgress(
            job_id=job.id,
            phase="timed",
            done=done,
            total=total,
            fraction=done / total,
            median_us=base * 1.01,
            p90_us=base * 1.12,
            recent_us=recent,
        )


# --- the real host measurement -----------------------------------------------------------------


class HostJobWatch:
    """What the Lab says about the one real host job: when its timed runs stream, how many
    progress reports and iterations it made, and whether it ended before the load did."""

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.timing = threading.Event()
        self.ended: str | None = None  # "done", "failed: ...", "cancelled"
        self.progress_events = 0
        self.iterations = 0
        self.phase = ""

    def __call__(self, event: Event) -> None:
        job_id = getattr(event, "job_id", None) or getattr(getattr(event, "job", None), "id", None)
        if self.job_id is None or job_id != self.job_id:
            return
        if isinstance(event, JobProgress):
            self.progress_events += 1
            self.phase = event.phase
            if event.recent_us:
                self.iterations = event.done
                self.timing.set()
        elif isinstance(event, JobFinished):
            self.ended = "done"
        elif isinstance(event, JobFailed):
            self.ended = f"failed: {event.error}"
        elif isinstance(event, JobCancelled):
            self.ended = "cancelled"
        if self.ended is not None:
            self.timing.set()  # whoever waits for the timed runs must not wait for nothing


def queue_host_job(lab: Lab, model: Path, seconds: float, watch: HostJobWatch) -> Job:
    """A real host:cpu job timed for longer than the load: one round, no canary, no parity,
    no precision gate, one thread, so its measurement process keeps one core busy throughout."""
    settings = JobSettings(
        warmup=5,
        runs=None,
        min_seconds=seconds + HOST_JOB_SPARE_S,
        threads=1,
        rounds=1,
        precision_pct=0.0,
        skip_canary=True,
        skip_parity=True,
    )
    report = queue_paths(lab, [model], [HOST_DEVICE_ID], settings=settings)
    if not report.queued:
        errors = [job.error for job in report.failed]
        raise RuntimeError(f"the host job on {model} was not queued: {errors or report}")
    watch.job_id = report.queued[0].id
    return report.queued[0]


# --- measurement -----------------------------------------------------------------------------


class LagProbe:
    """Sleeps ``TICK_S`` in a loop on the app's event loop; records how late each wake was."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            expected = time.perf_counter() + TICK_S
            await asyncio.sleep(TICK_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - expected) * 1000.0))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[rank]


async def wait_for_host_timing(watch: HostJobWatch, timeout_s: float) -> None:
    """Until the host job's timed runs report progress (the app keeps running meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while not watch.timing.is_set():
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the host job streamed no timed runs in {timeout_s:g} s (phase {watch.phase!r})"
            )
        await asyncio.sleep(0.1)
    if watch.ended is not None:
        raise RuntimeError(f"the host job ended before the load started: {watch.ended}")


async def drive(
    lab: Lab, seconds: float, switch_s: float, quiet: bool, model: Path
) -> dict[str, float]:
    app = DevLabApp(lab, start_dispatch=True, poll_devices_s=None, open_monitors=False)
    watch = HostJobWatch()
    lab.subscribe(watch)
    jobs = synthetic_jobs(SYNTHETIC_JOBS)
    waveform = PowerWaveform()
    progress = ProgressStream(jobs)

    def power_step(n: int) -> int:
        batch = waveform.batch(n)
        lab.events.publish(batch)
        return len(batch.watts)

    def progress_step(n: int) -> int:
        lab.events.publish(progress.event(n))
        return 1

    power = Producer("power-producer", POWER_BATCH / SAMPLE_RATE_HZ, power_step)
    progress_thread = Producer("progress-producer", 1.0 / PROGRESS_PER_S, progress_step)
    probe = LagProbe()

    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        host_job = queue_host_job(lab, model, seconds, watch)
        await wait_for_host_timing(watch, HOST_START_TIMEOUT_S)
        if not quiet:
            print(
                f"host job {host_job.id}: {model.name} on {HOST_DEVICE_ID} is timing "
                f"({watch.phase})",
                flush=True,
            )
        lab.events.publish(  # the synthetic source, as the hub announces a configured monitor
            MonitorChanged(
                PowerMonitor(
                    MONITOR_ID,
                    port="synthetic",
                    serial_number=1,
                    powers="adb:synthetic",
                    state=MonitorState.CONNECTED,
                    voltage=VOLTS,
                )
            )
        )
        for job in jobs:  # announce the synthetic jobs as the Lab would
            lab.events.publish(JobQueued(job))
            lab.events.publish(
                JobStarted(replace(job, state=JobState.RUNNING, started_at=time.time()))
            )
        await pilot.pause(0.3)

        probe.start()
        power.start()
        progress_thread.start()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        host0 = (watch.progress_events, watch.iterations)
        last_wall, last_cpu, last_lags = wall0, cpu0, 0
        order = ["live", "power", "queue"]
        views_shown = 0
        next_switch = wall0
        next_report = wall0 + 1.0
        try:
            while (now := time.perf_counter()) - wall0 < seconds:
                if now >= next_switch:
                    # the key goes through the app's bindings as a typed one would; unlike
                    # pilot.press it does not wait for the app to be idle (it never is here)
                    app.simulate_key(VIEW_KEYS[order[views_shown % len(order)]])
                    views_shown += 1
                    next_switch += switch_s
                if now >= next_report:
                    cpu = time.process_time()
                    window = probe.lags_ms[last_lags:]
                    if not quiet:
                        print(
                            f"t={now - wall0:5.1f}s view={app.active_view:<6} "
                            f"lag p50={percentile(window, 50):6.2f} "
                            f"p99={percentile(window, 99):6.2f} "
                            f"max={max(window, default=float('nan')):7.2f} ms  "
                            f"cpu={(cpu - last_cpu) / (now - last_wall) * 100:5.1f}%  "
                            f"samples={power.units} progress={progress_thread.units} "
                            f"host_iterations={watch.iterations}",
                            flush=True,
                        )
                    last_wall, last_cpu, last_lags = now, cpu, len(probe.lags_ms)
                    next_report = now + 1.0
                await asyncio.sleep(0.05)
        finally:
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            host_during = (watch.progress_events - host0[0], watch.iterations - host0[1])
            host_ended = watch.ended
            power.stop()
            progress_thread.stop()
            await probe.stop()
        # Let the 10 Hz pump drain the inbox before the app closes: a tick that finds events
        # while Textual tears the widgets down raises NoMatches in DevLabApp.pump_events.
        await pilot.pause(3 * UI_TICK_S)
        state = app.state
        shown = {
            "power_buckets": float(len(state.power[MONITOR_ID].series))
            if MONITOR_ID in state.power
            else 0.0,
            "live_jobs": float(len(state.live)),
        }

    lags = probe.lags_ms
    return {
        "wall_s": wall,
        "cpu_pct": cpu / wall * 100.0,
        "lag_samples": float(len(lags)),
        "p50_lag_ms": percentile(lags, 50),
        "p90_lag_ms": percentile(lags, 90),
        "p99_lag_ms": percentile(lags, 99),
        "max_lag_ms": max(lags, default=float("nan")),
        "mean_lag_ms": statistics.fmean(lags) if lags else float("nan"),
        "power_events": float(power.published),
        "samples": float(power.units),
        "progress_events": float(progress_thread.published),
        "views_shown": float(views_shown),
        "host_progress_events": float(host_during[0]),
        "host_iterations": float(host_during[1]),
        "host_ran_throughout": float(host_ended is None),
        **shown,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="load duration (default 30)")
    parser.add_argument(
        "--switch-s", type=float, default=2.0, help="seconds between view switches (default 2)"
    )
    parser.add_argument(
        "--model",
        default=str(HOST_MODEL),
        help="the model the real host:cpu job measures during the load "
        "(default assets/models/mnv2_224.onnx)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-second lines")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the run into FILE")
    parser.add_argument(
        "--top", type=int, default=40, help="with --profile: functions to print (default 40)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f"={v:g}")
            for k, v in SMOKE.items()
            if not isinstance(v, str)
        ),
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="devlab-ui-load-") as tmp:
        store = Store(Path(tmp) / "devlab.sqlite")
        lab = Lab(store, [HostBackend()])
        lab.discover()
        profiler = cProfile.Profile() if args.profile else None
        try:
            if profiler is not None:
                profiler.enable()
            figures = asyncio.run(
                drive(lab, args.seconds, args.switch_s, args.quiet, Path(args.model))
            )
        finally:
            if profiler is not None:
                profiler.disable()
            lab.shutdown(interrupt=True)  # the host job is timed for longer than the load
            store.close()

    if profiler is not None:
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)

    wall = figures["wall_s"]
    print()
    print(f"ui load: {wall:.1f} s, views live/power/queue every {args.switch_s:g} s")
    print(
        f"  published: {figures['samples']:.0f} power samples in {figures['power_events']:.0f} "
        f"events ({figures['samples'] / wall:.0f}/s), {figures['progress_events']:.0f} progress "
        f"events ({figures['progress_events'] / wall:.0f}/s)"
    )
    print(
        f"  event-loop lag over {figures['lag_samples']:.0f} wakes of {TICK_S * 1000:.0f} ms: "
        f"p50 {figures['p50_lag_ms']:.2f} ms, p90 {figures['p90_lag_ms']:.2f} ms, "
        f"p99 {figures['p99_lag_ms']:.2f} ms, max {figures['max_lag_ms']:.2f} ms, "
        f"mean {figures['mean_lag_ms']:.2f} ms"
    )
    print(
        f"  host job ({Path(args.model).name} on {HOST_DEVICE_ID}, its own measurement process): "
        f"{'running throughout' if figures['host_ran_throughout'] else 'ENDED during the load'}, "
        f"{figures['host_iterations']:.0f} timed iterations and "
        f"{figures['host_progress_events']:.0f} progress reports during the load"
    )
    print(
        f"  console process cpu (UI, event bus, the job's worker thread; not the measurement "
        f"process): {figures['cpu_pct']:.1f} % of one core"
    )
    print(
        f"  console state after the run: {figures['power_buckets']:.0f} power buckets, "
        f"{figures['live_jobs']:.0f} live jobs"
    )
    verdict = "met" if figures["p99_lag_ms"] <= TARGET_P99_MS else "MISSED"
    print(f"  target p99_lag_ms <= {TARGET_P99_MS:g}: {verdict}")
    print(
        f"RESULT p99_lag_ms={figures['p99_lag_ms']:.2f} cpu_pct={figures['cpu_pct']:.1f} "
        f"p50_lag_ms={figures['p50_lag_ms']:.2f} max_lag_ms={figures['max_lag_ms']:.2f} "
        f"samples_per_s={figures['samples'] / wall:.0f} "
        f"progress_per_s={figures['progress_events'] / wall:.0f} "
        f"host_iterations={figures['host_iterations']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
