"""One device's worker: claims its next job from the store and drives it round by round.

The worker, not the job, owns the device: it opens a bench session, warms it up, runs the
timed iterations in rounds, optionally profiles layers in a separate pass, and writes the
result. This version runs one job's rounds back to back; interleaving rounds of the jobs that
wait for the same device only changes ``_run_rounds``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends.device import BenchError, BenchSession, DeviceBackend, JobInterrupted, Timed
from backends.events import (
    EventBus,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobProgress,
    JobQueued,
    JobStarted,
    LogLine,
)
from backends.power import EnergyWindows, PowerManager, measure_energy
from backends.records import Device, DeviceState, Job, Result, Stats
from backends.stats import live_median_p90, merge_summaries, summarize
from backends.store import Store

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.2
SETTLE_POLL_S = 2.0
POWER_TAIL_S = 0.3
RECENT_CAP = 200  # latencies carried by one progress event, for live plots


def split_runs(total: int | None, rounds: int) -> list[int | None]:
    """Iterations per round: ``total`` spread as evenly as possible over ``rounds``."""
    rounds = max(1, rounds)
    if total is None:
        return [None] * rounds
    rounds = min(rounds, max(total, 1))
    base, extra = divmod(total, rounds)
    return [base + (1 if index < extra else 0) for index in range(rounds)]


@dataclass
class Rounds:
    """The timed rounds of one job: every latency where the tool gives them, else summaries."""

    latencies: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    summaries: list[Stats] = field(default_factory=list)

    def add(self, timed: Timed) -> None:
        summary = summarize(timed.latencies_us) if timed.latencies_us else timed.summary
        assert summary is not None  # Timed.count > 0 guarantees one of the two
        self.latencies.extend(timed.latencies_us)
        self.sizes.append(timed.count)
        self.medians.append(summary.median if summary.median is not None else summary.mean)
        self.summaries.append(summary)

    @property
    def source(self) -> str:
        return "iterations" if len(self.latencies) == sum(self.sizes) else "tool summary"

    def stats(self) -> Stats:
        if self.source == "iterations":
            return summarize(self.latencies)
        return merge_summaries(self.summaries)


class DeviceWorker(threading.Thread):
    """A thread that runs the jobs of one device, one at a time."""

    def __init__(
        self,
        device: Device,
        backend: DeviceBackend,
        store: Store,
        events: EventBus,
        log_dir: Path,
        may_run: Callable[[], bool],
        wake: threading.Condition,
        power: PowerManager | None = None,
    ) -> None:
        super().__init__(name=f"devlab-worker-{device.id}", daemon=True)
        self.power = power
        self.device = device
        self.backend = backend
        self.store = store
        self.events = events
        self.log_dir = log_dir
        self._may_run = may_run
        self._wake = wake
        self._stopping = threading.Event()
        self._interrupting = threading.Event()
        self._cancelled: set[str] = set()
        self.current_job_id: str | None = None

    # -- control from the Lab --------------------------------------------------------------

    def stop(self, interrupt: bool) -> None:
        """Stop after the current job, or (``interrupt``) stop it now and re-queue it."""
        self._stopping.set()
        if interrupt:
            self._interrupting.set()
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> bool:
        """Ask the running job to stop; True when ``job_id`` is the one running here."""
        if self.current_job_id == job_id:
            self._cancelled.add(job_id)
            return True
        return False

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            ready = self._may_run() and self.device.state in (DeviceState.ONLINE, DeviceState.BUSY)
            job = self.store.claim_next([self.device.id]) if ready else None
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=0.5)
                continue
            self.current_job_id = job.id
            try:
                self._run_job(job)
            finally:
                self.current_job_id = None
                self._cancelled.discard(job.id)
                with self._wake:
                    self._wake.notify_all()

    def _run_job(self, job: Job) -> None:
        self.events.publish(JobStarted(job))
        session: BenchSession | None = None
        try:
            conditions_start = self.backend.conditions(self.device)
            self._progress(job, "load", 0, None, 0.0)
            session = self.backend.open_session(self.device, job, job.model)
            self._progress(job, "warmup", 0, job.settings.warmup, 0.0)
            session.warmup(job.settings.warmup)
            if job.settings.settle_c is not None:
                conditions_start.update(self._settle(job))
            warnings: list[str] = []
            rounds, power = self._timed(job, session, warnings)
            profile = None
            if job.settings.per_layer:
                done = sum(rounds.sizes)
                self._progress(job, "profile", done, done, 1.0)
                try:  # the timed runs are measured: a failing profiled pass must not lose them
                    profile = session.profile_layers(
                        job.settings.profile_runs, str(self.log_dir / job.id)
                    )
                except BenchError as error:
                    warnings.append(f"per-layer profiling failed: {error}")
            result = Result(
                job_id=job.id,
                latencies_us=rounds.latencies,
                stats=rounds.stats(),
                stats_source=rounds.source,
                round_sizes=rounds.sizes,
                round_medians_us=rounds.medians,
                forward_stats=profile.forward_stats if profile else None,
                layers_stats=profile.layers_stats if profile else None,
                layers=profile.layers if profile else [],
                load_us=session.info.load_us,
                first_inference_us=session.info.first_inference_us,
                tool=session.info.tool,
                tool_version=session.info.tool_version,
                device_properties=dict(self.device.properties),
                conditions_start=conditions_start,
                conditions_end=self.backend.conditions(self.device),
                raw_log_path=profile.raw_log_path if profile else None,
                power=power,
                warnings=warnings,
            )
            for warning in warnings:
                self.events.publish(LogLine(warning, job.id, level="warning"))
            finished = self.store.finish(job.id, result)
            self.events.publish(JobFinished(finished, result))
        except JobInterrupted:
            if job.id in self._cancelled:
                self.events.publish(JobCancelled(self.store.cancel(job.id)))
            else:  # the lab is shutting down or the device left: this job must run again
                self.events.publish(JobQueued(self.store.requeue(job.id)))
                self.events.publish(LogLine(f"{job.id} interrupted; re-queued", job.id))
        except BenchError as error:
            self._fail(job, str(error))
        except Exception as error:  # a backend bug must not kill the worker or lose the job
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            self._fail(job, f"{type(error).__name__}: {error}")
        finally:
            if session is not None:
                try:
                    session.close()
                except Exception:
                    log.exception("closing the session of job %s failed", job.id)

    def _fail(self, job: Job, error: str) -> None:
        self.events.publish(JobFailed(self.store.fail(job.id, error), error))

    def _settle(self, job: Job) -> dict[str, object]:
        """Wait until the battery is within ``settle_c`` of its idle temperature (the value
        read when the device was first described), or the timeout; say what happened."""
        idle = self.device.properties.get("battery_temperature_c")
        if not isinstance(idle, int | float):
            return {"settle": "skipped: the device reports no battery temperature"}
        limit = idle + (job.settings.settle_c or 0.0)
        started = time.monotonic()
        deadline = started + job.settings.settle_timeout_s
        while True:
            now_c = self.backend.conditions(self.device).get("battery_temperature_c")
            waited = time.monotonic() - started
            if isinstance(now_c, int | float) and now_c <= limit:
                return {
                    "settle": "reached",
                    "settle_wait_s": round(waited, 1),
                    "settle_limit_c": limit,
                    "settle_temperature_c": now_c,
                }
            if time.monotonic() >= deadline:
                return {
                    "settle": "timed out",
                    "settle_wait_s": round(waited, 1),
                    "settle_limit_c": limit,
                    "settle_temperature_c": now_c,
                }
            self._progress(job, "settle", 0, None, 0.0)  # also honours cancel and shutdown
            self.events.publish(
                LogLine(f"settling: battery {now_c} C, waiting for <= {limit:.1f} C", job.id)
            )
            self._stopping.wait(SETTLE_POLL_S)

    def _timed(
        self, job: Job, session: BenchSession, warnings: list[str]
    ) -> tuple[Rounds, dict | None]:
        """The timed rounds; with power capture, an idle baseline first and both recorded."""
        if not job.settings.power:
            return self._run_rounds(job, session), None
        if self.power is None:
            raise BenchError(
                f"{self.device.id}: power capture asked, but this lab has no "
                "power monitors configured ([[power.monitors]])"
            )
        channel = self.power.channel_for(self.device.id)
        trace = self.log_dir / job.id / "power.csv"
        dropped_before = channel.monsoon.counts.dropped
        with channel.capture(trace):
            baseline_start = time.time()
            self._pause(job, job.settings.power_baseline_s, "power baseline")
            timed_start = time.time()
            rounds = self._run_rounds(job, session)
            timed_end = time.time()
            self._pause(job, POWER_TAIL_S, "power")  # the window's last samples arrive
        windows = EnergyWindows(
            (baseline_start, timed_start), (timed_start, timed_end), sum(rounds.sizes)
        )
        dropped = channel.monsoon.counts.dropped - dropped_before
        try:
            return rounds, measure_energy(trace, windows, dropped)
        except BenchError as error:  # the latencies stand even when the trace is unusable
            warnings.append(f"energy not measured: {error}")
            return rounds, {"trace_path": str(trace), "dropped": dropped}

    def _pause(self, job: Job, seconds: float, phase: str) -> None:
        """Wait, reporting progress and honouring cancel and shutdown."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._progress(job, phase, 0, None, 0.0)
            time.sleep(min(left, 0.1))

    def _run_rounds(self, job: Job, session: BenchSession) -> Rounds:
        """Run the job's rounds back to back (interleaving them across jobs comes later)."""
        settings = job.settings
        per_round = split_runs(settings.runs, settings.rounds)
        seconds = settings.min_seconds / len(per_round) if settings.min_seconds else None
        rounds = Rounds()
        started = time.monotonic()
        for index, iterations in enumerate(per_round):
            callback = self._iteration_callback(
                job,
                f"round {index + 1}/{len(per_round)}",
                len(rounds.latencies),
                rounds.latencies,
                settings.runs,
                started,
            )
            timed = session.run(iterations, seconds, callback)
            if timed.count == 0:
                raise BenchError(f"{job.model.path}: the runtime returned no timed runs")
            rounds.add(timed)
        return rounds

    def _iteration_callback(
        self,
        job: Job,
        phase: str,
        offset: int,
        previous: list[float],
        total: int | None,
        started: float,
    ) -> Callable[[int, list[float]], None]:
        """A cheap per-iteration hook: checks for stop requests and reports a few times a second."""
        next_report = time.monotonic() + PROGRESS_INTERVAL_S
        min_seconds = job.settings.min_seconds
        reported = 0

        def on_iteration(done: int, latencies: list[float]) -> None:
            nonlocal next_report, reported
            now = time.monotonic()
            if now < next_report:
                return
            next_report = now + PROGRESS_INTERVAL_S
            if self._interrupting.is_set() or job.id in self._cancelled:
                raise JobInterrupted(job.id)
            count = offset + done
            if total:
                fraction = count / total
            elif min_seconds:
                fraction = min(1.0, (now - started) / min_seconds)
            else:
                fraction = 0.0
            median, p90 = live_median_p90(previous + latencies if offset else latencies)
            recent = tuple(latencies[max(reported, done - RECENT_CAP) : done])
            reported = done
            self.events.publish(
                JobProgress(job.id, phase, count, total, fraction, median, p90, recent)
            )

        return on_iteration

    def _progress(
        self, job: Job, phase: str, done: int, total: int | None, fraction: float
    ) -> None:
        if self._interrupting.is_set() or job.id in self._cancelled:
            raise JobInterrupted(job.id)
        self.events.publish(JobProgress(job.id, phase, done, total, fraction))
