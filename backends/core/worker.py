"""One device's worker: claims jobs from the store and drives them round by round.

The worker, not the job, owns the device. It claims the next job together with the others
waiting for the same device (same priority, no power capture), opens a session for each
(models stay loaded; for an in-process runtime, in the worker's measurement process:
``backends.measure.isolation``), warms them up, then runs their rounds interleaved in a
shuffled order, each round with the reference canary (paired inside the round in the
measurement process, else just before it). A slow phase of the machine then spreads over
every job instead of ruining one, and the canary measures it. After the planned rounds the
precision gate adds rounds to the jobs whose bootstrap interval is still too wide (within its
caps). Each job then gets its optional per-layer pass, its output parity check and its result.
Only one round runs on a device at any moment.

The worker schedules and gathers; what the numbers become is computed elsewhere: the rounds
and the Result in ``backends.measure`` (``rounds``, ``assemble``), a power job's energy windows
in ``backends.power.capture``.
"""

from __future__ import annotations

import logging
import random
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.core.events import (
    EventBus,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobProgress,
    JobQueued,
    JobStarted,
    LogLine,
)
from backends.core.records import Device, DeviceState, Job, JobState
from backends.core.store import Store
from backends.devices.base import (
    BenchError,
    BenchSession,
    DeviceBackend,
    JobInterrupted,
    returns_outputs,
)
from backends.measure.assemble import assemble_result
from backends.measure.canary import drift_status
from backends.measure.canary_store import CanaryStore
from backends.measure.isolation import IsolatedSession, MeasurementProcess, isolated_opener
from backends.measure.panel import blended_canaries
from backends.measure.precision import GateDecision, PrecisionGate
from backends.measure.probe import CanaryProbe
from backends.measure.rounds import Rounds, every_round_has_canary, split_runs
from backends.measure.stats import live_median_p90
from backends.power.capture import PowerChannel, PowerManager, capture_energy
from backends.power.queue_capture import QueueCapture
from backends.power.rails import rail_batch, rail_energy
from backends.power.sync_capture import StampedRound, capture_synced
from backends.power.sync_energy import Span

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.1  # live views get about ten updates a second
# a report may come this much early: the measurement process's chunks arrive about every
# 0.1 s, and a strict 0.1 s gate would skip every other one (5 updates a second)
PROGRESS_SLACK = 0.8
SETTLE_POLL_S = 2.0
RECENT_CAP = 200  # latencies carried by one progress event, for live plots
MAX_INTERLEAVED = 16  # jobs whose sessions one device keeps loaded at once
DRIFT_BAND_PCT = 10.0
CANARY_FILE = "canary.sqlite"  # beside the store when the lab names no shared history

DriftCallback = Callable[[str, dict[str, Any] | None], None]


@dataclass
class JobRun:
    """A claimed job while its batch runs: its session, rounds, canaries and outcome."""

    job: Job
    plan: list[int | None]
    session: BenchSession | None = None
    conditions_start: dict[str, Any] = field(default_factory=dict)
    rounds: Rounds = field(default_factory=Rounds)
    canaries: list[float | None] = field(default_factory=list)
    large_canaries: list[float | None] = field(default_factory=list)  # the large reference
    warnings: list[str] = field(default_factory=list)
    extra_rounds: int = 0
    gate_started: float | None = None
    gate: GateDecision | None = None  # the precision gate's last decision
    power: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None  # the device's canary against its history
    ended: bool = False  # done, failed or cancelled
    round_seconds: float | None = None  # how long each round runs at least (None: by count)
    device_rounds: list[StampedRound] = field(default_factory=list)  # on the device's clock
    before_round: Callable[[], None] | None = None  # a power sync beacon between rounds

    def fraction(self, done: int, round_elapsed_s: float = 0.0) -> float:
        """The whole job's progress, 0..1, so a live bar never falls back between rounds:
        planned rounds finished, plus the share of the current one (by its iterations and,
        for a round sized by time, by its seconds: it ends when both are reached)."""
        planned, finished = len(self.plan), len(self.rounds.sizes)
        if finished >= planned:
            return 1.0
        shares = []
        target = self.plan[finished]
        if target:
            shares.append((done - sum(self.rounds.sizes)) / target)
        if self.round_seconds:
            shares.append(round_elapsed_s / self.round_seconds)
        into = min(shares) if shares else 0.0
        return min(1.0, (finished + max(0.0, min(1.0, into))) / planned)

    @property
    def seconds_per_round(self) -> float | None:
        settings = self.job.settings
        return settings.min_seconds / len(self.plan) if settings.min_seconds else None


class DeviceWorker(threading.Thread):
    """A thread that runs the jobs of one device, one round at a time."""

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
        on_drift: DriftCallback | None = None,
        canaries: CanaryStore | None = None,
        isolate: bool = True,
    ) -> None:
        super().__init__(name=f"devlab-worker-{device.id}", daemon=True)
        self.power = power
        # in-process runtimes time in a process of their own (spawned at the first job)
        self.measurer = (
            MeasurementProcess(device.id, log_path=log_dir / _measure_log_name(device.id))
            if isolate and backend.isolation()
            else None
        )
        self._open_session = isolated_opener(backend, self.measurer)
        self.device = device
        self.backend = backend
        self.store = store
        self.events = events
        self.log_dir = log_dir
        self._may_run = may_run
        self._wake = wake
        self._on_drift = on_drift
        self.canaries = canaries or CanaryStore(store.path.parent / CANARY_FILE)
        self._stopping = threading.Event()
        self._interrupting = threading.Event()
        self._cancelled: set[str] = set()
        self.running_job_ids: set[str] = set()
        self._rng = random.Random()
        self._queue: QueueCapture | None = None  # --power-capture queue: the queue's trace

    # -- control from the Lab --------------------------------------------------------------

    def stop(self, interrupt: bool) -> None:
        """Stop after the current batch, or (``interrupt``) stop it now and re-queue its jobs."""
        self._stopping.set()
        if interrupt:
            self._interrupting.set()
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> bool:
        """Ask a running job to stop; True when ``job_id`` is one running here."""
        if job_id in self.running_job_ids:
            self._cancelled.add(job_id)
            return True
        return False

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._serve()
        finally:
            self._close_queue()
            if self.measurer is not None:
                self.measurer.close()

    def _serve(self) -> None:
        offline_since: float | None = None
        while not self._stopping.is_set():
            online = self.device.state in (DeviceState.ONLINE, DeviceState.BUSY)
            if online:
                offline_since = None
            else:
                offline_since = offline_since or time.monotonic()
                self._expire_waiting_jobs(time.monotonic() - offline_since)
            batch = self._claim() if online and self._may_run() else []
            if not batch:
                with self._wake:
                    self._wake.wait(timeout=0.5)
                continue
            self.running_job_ids = {job.id for job in batch}
            try:
                self._run_batch(batch)
            finally:
                self.running_job_ids = set()
                self._cancelled.clear()
                self._close_queue_when_over()
                with self._wake:
                    self._wake.notify_all()

    def _claim(self) -> list[Job]:
        """The next job, with the others that may share its rounds: jobs of several rounds
        and no power capture (an energy window must hold one job's runs only)."""
        limit = MAX_INTERLEAVED if self.backend.interleave_rounds else 1
        return self.store.claim_batch(self.device.id, limit, _interleavable)

    def _expire_waiting_jobs(self, offline_for_s: float) -> None:
        """Fail the queued jobs of a device gone longer than its backend's offline timeout."""
        timeout = self.backend.offline_timeout_s
        if timeout is None or offline_for_s < timeout:
            return
        reason = self.device.properties.get("offline_reason") or "no answer"
        error = (
            f"{self.device.id} has been {self.device.state} for {offline_for_s:.0f} s "
            f"({reason}); the job did not run. Retry it when the device is back"
        )
        for job in self.store.jobs([JobState.QUEUED]):
            if job.device_id == self.device.id:
                self.events.publish(JobFailed(self.store.fail(job.id, error), error))

    # -- a batch ---------------------------------------------------------------------------

    def _run_batch(self, jobs: list[Job]) -> None:
        runs = [JobRun(job, split_runs(job.settings.runs, job.settings.rounds)) for job in jobs]
        for run in runs:
            self.events.publish(JobStarted(run.job))
        probe = CanaryProbe(self.backend, self.device, opener=self._open_session)
        try:
            for run in runs:
                self._guard(run, self._open, run)
            live = [run for run in runs if not run.ended]
            if len(live) == 1 and live[0].job.settings.power:
                self._guard(live[0], self._with_power, live[0], probe)
            else:
                self._interleave(live, probe)
            self._record_canaries([run for run in runs if not run.ended])
            for run in runs:
                if not run.ended:
                    self._guard(run, self._finish, run, probe)
            for run in runs:
                self._fit_queue(run)
        except JobInterrupted:  # the lab is shutting down or the device left: run them again
            for run in runs:
                if not run.ended:
                    run.ended = True
                    self.events.publish(JobQueued(self.store.requeue(run.job.id)))
                    self.events.publish(LogLine(f"{run.job.id} interrupted; re-queued", run.job.id))
        finally:
            for run in runs:
                self._close(run)
            probe.close()

    def _guard(self, run: JobRun, step: Callable[..., None], *args: Any) -> None:
        """Run one step of one job; its failure or cancel ends that job only. A shutdown
        (JobInterrupted not caused by a cancel) propagates to the whole batch."""
        if run.ended:
            return
        job = run.job
        try:
            step(*args)
        except JobInterrupted:
            if job.id not in self._cancelled:
                raise
            if run.ended:  # an inner step already ended it (a round inside an energy window)
                return
            run.ended = True
            if run.session is not None:
                run.session.cancel()
            self.events.publish(JobCancelled(self._end(job, self.store.cancel)))
        except BenchError as error:
            self._fail(run, str(error))
        except Exception as error:  # a backend bug must not kill the worker or lose the job
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            self._fail(run, f"{type(error).__name__}: {error}")

    def _end(self, job: Job, transition: Callable[[str], Job]) -> Job:
        """Apply a final transition; the job leaves the running set before anyone hears."""
        self.running_job_ids = self.running_job_ids - {job.id}
        return transition(job.id)

    def _fail(self, run: JobRun, error: str) -> None:
        run.ended = True
        failed = self._end(run.job, lambda job_id: self.store.fail(job_id, error))
        self.events.publish(JobFailed(failed, error))

    def _close(self, run: JobRun) -> None:
        if run.session is None:
            return
        try:
            run.session.close()
        except Exception:
            log.exception("closing the session of job %s failed", run.job.id)
        run.session = None

    # -- steps -----------------------------------------------------------------------------

    def _open(self, run: JobRun) -> None:
        job = run.job
        run.conditions_start = self.backend.conditions(self.device)
        self._progress(job, "load", 0, None, 0.0)
        run.session = self._open_session(self.device, job, job.model)
        run.round_seconds = self._round_seconds(run)
        if self.measurer is not None:
            run.conditions_start["measured_in"] = "measurement process"
        if job.settings.pin is not None:
            run.conditions_start["pinned_core"] = job.settings.pin
        self._progress(job, "warmup", 0, job.settings.warmup, 0.0)
        run.session.warmup(job.settings.warmup)
        if job.settings.settle_c is not None:
            run.conditions_start.update(self._settle(job))

    def _interleave(self, runs: list[JobRun], probe: CanaryProbe) -> None:
        """Every job's planned rounds in shuffled order, then the precision gate's extras."""
        for index in range(max((len(run.plan) for run in runs), default=0)):
            order = [run for run in runs if index < len(run.plan)]
            self._rng.shuffle(order)
            for run in order:
                self._guard(run, self._round, run, run.plan[index], probe)
        while True:
            wanting = [run for run in runs if not run.ended and self._wants_more(run)]
            if not wanting:
                return
            self._rng.shuffle(wanting)
            for run in wanting:
                run.extra_rounds += 1
                self._guard(run, self._round, run, run.plan[0], probe)

    def _round(self, run: JobRun, iterations: int | None, probe: CanaryProbe) -> None:
        job = run.job
        assert run.session is not None
        number = len(run.rounds.sizes) + 1
        planned = len(run.plan)
        phase = f"round {number}/{planned}" if number <= planned else f"extra round {number}"
        done, total = sum(run.rounds.sizes), job.settings.runs
        # a cancel or shutdown is honoured between rounds too, however short they are
        self._progress(job, phase, done, total, run.fraction(done))
        if run.before_round is not None:
            run.before_round()
        # no canary inside a power job's energy window: its runs would count as the model's
        wants_canary = not (job.settings.skip_canary or job.settings.power)
        session, reference = run.session, probe.session(job) if wants_canary else None
        paired = isinstance(session, IsolatedSession) and isinstance(reference, IsolatedSession)
        canary = None if paired or not wants_canary else probe.measure(job)
        callback = self._iteration_callback(
            job,
            phase,
            len(run.rounds.latencies),
            run.rounds.latencies,
            job.settings.runs,
            time.monotonic(),
            run.fraction,
        )
        large = None
        if isinstance(session, IsolatedSession) and isinstance(reference, IsolatedSession):
            # model and references in alternating blocks: all see the same moments of the machine
            references = [reference]
            large_reference = probe.large_session(job)
            if isinstance(large_reference, IsolatedSession):
                references.append(large_reference)
            timed, measured = session.run_paired(
                references, iterations, run.round_seconds, callback
            )
            canary = statistics.median(measured[0]) if measured[0] else None
            if len(measured) > 1 and measured[1]:
                large = statistics.median(measured[1])
            run.conditions_start["canary_pairing"] = "alternating blocks within each round"
        else:
            timed = session.run(iterations, run.round_seconds, callback)
        if timed.count == 0:
            raise BenchError(f"{job.model.path}: the runtime returned no timed runs")
        run.rounds.add(timed)
        if timed.device_span is not None:  # a power job synced by beacon
            command = Span(*timed.device_span, timed.count)
            run.device_rounds.append(
                StampedRound(command, timed.device_loop_s, timed.device_head_s, timed.device_tail_s)
            )
        run.canaries.append(canary)
        run.large_canaries.append(large)

    @staticmethod
    def _round_seconds(run: JobRun) -> float | None:
        """Each round's minimum duration: the job's ``min_seconds`` share, and for a session
        that calibrates, at least ``min_round_s`` (so tiny models get enough samples)."""
        seconds = run.seconds_per_round
        floor = run.job.settings.min_round_s
        if run.session is not None and run.session.calibrates and floor:
            seconds = max(seconds or 0.0, floor)
        return seconds

    def _wants_more(self, run: JobRun) -> bool:
        """Ask the precision gate whether this job needs another round."""
        settings = run.job.settings
        if settings.precision_pct <= 0 or not run.rounds.medians:
            return False
        if run.gate_started is None:
            run.gate_started = time.monotonic()
        gate = PrecisionGate(
            precision_pct=settings.precision_pct,
            max_extra_rounds=max(0, settings.max_rounds - len(run.plan)),
            time_cap_s=settings.precision_time_cap_s,
            min_rounds=min(3, len(run.plan)),
        )
        run.gate = gate.decide(
            run.rounds.gate_medians(
                blended_canaries(run.rounds.medians, run.canaries, run.large_canaries)[0]
            ),
            run.rounds.iterations_by_round,
            time.monotonic() - run.gate_started,
            run.extra_rounds,
        )
        return run.gate.run_more

    def _with_power(self, run: JobRun, probe: CanaryProbe) -> None:
        """A power job runs alone, its rounds inside one energy window with a baseline."""
        job = run.job
        if self._measures_own_power(run):
            self._with_device_power(run, probe)
            return
        if self.power is None:
            raise BenchError(
                f"{self.device.id}: power capture asked, but this lab has no "
                "power monitors configured ([[power.monitors]])"
            )

        def timed() -> int | None:
            self._interleave([run], probe)
            return None if run.ended else sum(run.rounds.sizes)

        channel = self.power.channel_for(self.device.id)
        trace = self.log_dir / job.id / "power.csv"

        def wait(seconds: float, phase: str) -> None:
            self._pause(job, seconds, phase)

        if job.settings.power_sync == "beacon" and run.session is not None:
            session = run.session
            if _in_queue_capture(job):
                self._open_queue(channel)

            def rounds_with(before_round: Callable[[], None]) -> int | None:
                run.before_round = before_round
                try:
                    return timed()
                finally:
                    run.before_round = None

            reading = capture_synced(
                channel,
                trace,
                job.settings.power_baseline_s,
                lambda: self._beacon(run, session),
                rounds_with,
                lambda: run.device_rounds,
                wait,
                every_round=job.settings.power_beacons == "round",
            )
        else:
            reading = capture_energy(channel, trace, job.settings.power_baseline_s, timed, wait)
        if reading is not None:
            if reading.warning:
                run.warnings.append(reading.warning)
            run.power = reading.power

    def _open_queue(self, channel: PowerChannel) -> None:
        """The queue's trace, opened by its first job and kept over the jobs that follow."""
        if self._queue is not None and self._queue.channel is channel:
            return
        self._close_queue()  # the monitor was opened anew: a new trace
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.log_dir / f"power-queue-{_safe_name(self.device.id)}-{stamp}.csv"
        self._queue = QueueCapture(channel, path)
        self.events.publish(LogLine(f"{self.device.id}: power queue trace {path}"))

    def _fit_queue(self, run: JobRun) -> None:
        """Add a stored job to the queue's clock fit and its figures by that fit to its stored
        result. Its own result is stored first and never waits for this; a failure here is a
        note in the queue's figures, never the job's."""
        queue = self._queue
        job = run.job
        if queue is None or run.power is None or not _in_queue_capture(job):
            return
        if self.store.job(job.id).state is not JobState.DONE:
            return
        try:
            figures = queue.add(job.id, run.power)
        except Exception as error:  # a bad queue trace must not touch the job's own figures
            log.exception("power queue fit of %s failed", job.id)
            figures = {"trace_path": str(queue.path), "error": f"{type(error).__name__}: {error}"}
        try:
            self.store.set_power_field(job.id, "queue", figures)
        except (KeyError, ValueError) as error:
            log.error("power queue figures of %s not stored: %s", job.id, error)
            return
        drift = figures.get("clock_drift_ppm")
        note = figures.get("error") or (
            f"power queue fit: {figures.get('beacons_used')} beacons over {figures['jobs']} "
            f"job(s), drift {'not solved' if drift is None else f'{drift:.0f} ppm'}"
        )
        self.events.publish(LogLine(note, job.id))

    def _close_queue_when_over(self) -> None:
        """Close the queue's trace once no queued job of this device records into it."""
        if self._queue is None:
            return
        if not any(_in_queue_capture(job) for job in self.store.queued_on(self.device.id)):
            self._refit_queue()
            self._close_queue()

    def _refit_queue(self) -> None:
        """The queue is over: every job of it measured again by the fit over all its beacons,
        stored as ``Result.power["queue_final"]`` (its ``queue`` figures keep the fit as of
        its own end). One pass over the trace; a failure is a log line, never a job's."""
        queue = self._queue
        if queue is None or not queue.members:
            return
        try:
            final = queue.measure_all()
        except Exception:  # a bad queue trace must not touch the jobs' own figures
            log.exception("power queue final fit over %s failed", queue.path)
            return
        for job_id, figures in final.items():
            try:
                self.store.set_power_field(job_id, "queue_final", figures)
            except (KeyError, ValueError) as error:
                log.error("final power queue figures of %s not stored: %s", job_id, error)
        used = max((figures.get("beacons_used") or 0) for figures in final.values())
        self.events.publish(
            LogLine(f"power queue over: {len(final)} job(s) measured again by {used} beacons")
        )

    def _close_queue(self) -> None:
        queue, self._queue = self._queue, None
        if queue is None:
            return
        try:
            queue.close()
        except Exception:  # a full disk loses the queue's trace, not the worker
            log.exception("closing the power queue trace %s failed", queue.path)

    def _beacon(self, run: JobRun, session: BenchSession) -> float | None:
        """One power sync beacon on the device (cancel is honoured before it)."""
        done = sum(run.rounds.sizes)
        self._progress(run.job, "power beacon", done, run.job.settings.runs, run.fraction(done))
        return session.sync_beacon()

    def _measures_own_power(self, run: JobRun) -> bool:
        """No monitor powers the device, but its sessions can report the board's own rails
        (a Jetson agent's tegrastats)."""
        if self.power is not None and self.power.powers(self.device.id):
            return False
        session = run.session
        return session is not None and type(session).device_power is not BenchSession.device_power

    def _with_device_power(self, run: JobRun, probe: CanaryProbe) -> None:
        """The rounds, then energy per inference from the rails the device sampled over them
        (baseline and timed windows on its clock); without them, the latencies stand."""
        self._interleave([run], probe)
        if run.ended or run.session is None:
            return
        samples = run.session.device_power()
        if samples is None:
            run.warnings.append(
                f"power capture asked, but {self.device.id} measured none and no monitor "
                "powers it: start its agent with --tegrastats, or add [[power.monitors]]"
            )
            return
        reading = rail_energy(samples, self.log_dir / run.job.id / "power.csv")
        batch = rail_batch(self.device.id, samples)
        live = self.power is not None and self.power.streams_rails(self.device.id)
        if batch is not None and not live:  # the Power view shows the board's rail over the job
            self.events.publish(batch)
        if reading.warning:
            run.warnings.append(reading.warning)
        run.power = reading.power

    def _record_canaries(self, runs: list[JobRun]) -> None:
        """Add this batch's canaries to each runtime's history; flag a drifting device."""
        by_key: dict[str, list[float]] = {}
        large_by_key: dict[str, list[float]] = {}
        for run in runs:
            values = [c for c in run.canaries if c is not None]
            if values:
                by_key.setdefault(_canary_key(run), []).extend(values)
            large = [c for c in run.large_canaries if c is not None]
            if large:
                large_by_key.setdefault(_large_key(run), []).extend(large)
        for key, values in large_by_key.items():  # history only: drift is the small canary's
            self.canaries.add_canary(self.device.id, key, values)
        for key, values in by_key.items():
            history = self.canaries.canary_history(self.device.id, key)
            status = drift_status(history, values, DRIFT_BAND_PCT)
            for run in runs:
                if _canary_key(run) == key:
                    run.drift = status.to_dict()
            if self._on_drift is not None:
                self._on_drift(self.device.id, status.to_dict() if status.drifting else None)
            if status.drifting:
                self.events.publish(LogLine(f"{self.device.id}: {status.reason}", level="warning"))
            self.canaries.add_canary(self.device.id, key, values)

    def _finish(self, run: JobRun, probe: CanaryProbe) -> None:
        job = run.job
        assert run.session is not None
        profile = None
        if job.settings.per_layer:
            done = sum(run.rounds.sizes)
            self._progress(job, "profile", done, done, 1.0)
            try:  # the timed runs are measured: a failing profiled pass must not lose them
                profile = run.session.profile_layers(
                    job.settings.profile_runs, str(self.log_dir / job.id)
                )
            except BenchError as error:
                run.warnings.append(f"per-layer profiling failed: {error}")
        parity = None if job.settings.skip_parity else self._parity(run)
        accuracy = self._accuracy(run)
        if probe.unavailable and not job.settings.skip_canary and probe.supported:
            reason = probe.unavailable.get((job.runtime, job.settings.threads))
            if reason:
                run.warnings.append(f"no reference canary: {reason}")
        conditions_end = self.backend.conditions(self.device)
        history = (
            self.canaries.first_canaries(self.device.id, _canary_key(run))
            if every_round_has_canary(run.canaries)
            else []
        )
        large_history = (
            self.canaries.first_canaries(self.device.id, _large_key(run))
            if every_round_has_canary(run.large_canaries)
            else []
        )
        result = assemble_result(
            job,
            run.rounds,
            run.canaries,
            run.session.info,
            profile=profile,
            gate=run.gate,
            canary_history=history,
            large_canaries=run.large_canaries,
            large_history=large_history,
            extra_rounds=run.extra_rounds,
            device_properties=self.device.properties,
            conditions_start=run.conditions_start,
            conditions_end=conditions_end,
            power=run.power,
            parity=parity,
            drift=run.drift,
            warnings=run.warnings,
        )
        result.accuracy = accuracy
        for warning in result.warnings:
            self.events.publish(LogLine(warning, job.id, level="warning"))
        run.ended = True
        finished = self._end(job, lambda job_id: self.store.finish(job_id, result))
        self.events.publish(JobFinished(finished, result))

    def _parity(self, run: JobRun) -> dict[str, Any] | None:
        """One fixed input through the device and through host ONNX Runtime, compared."""
        session = run.session
        if session is None or not returns_outputs(session):
            return None
        from backends.measure.parity import (
            ParityError,
            compare_outputs,
            parity_inputs,
            reference_outputs,
        )

        try:
            feeds = parity_inputs(run.job.model)
            candidate = session.outputs(feeds)
            if candidate is None:
                return None
            report = compare_outputs(reference_outputs(run.job.model.path, feeds), candidate)
        except (ParityError, BenchError) as error:
            run.warnings.append(f"output parity not checked: {error}")
            return None
        if not report.ok:
            run.warnings.append(f"outputs differ from host ONNX Runtime: {report.reason}")
        return report.to_dict()

    def _accuracy(self, run: JobRun) -> dict[str, Any] | None:
        """The job's evaluation set (``--accuracy``) through its session, scored."""
        if not run.job.settings.accuracy_set or run.session is None:
            return None
        from backends.accuracy.job import job_accuracy

        job = run.job
        return job_accuracy(
            job,
            run.session,
            run.warnings,
            lambda done, total: self._progress(job, "accuracy", done, total, 1.0),
        )

    # -- waiting ---------------------------------------------------------------------------

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

    def _pause(self, job: Job, seconds: float, phase: str) -> None:
        """Wait, reporting progress and honouring cancel and shutdown."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._progress(job, phase, 0, None, 0.0)
            time.sleep(min(left, 0.1))

    # -- progress --------------------------------------------------------------------------

    def _iteration_callback(
        self,
        job: Job,
        phase: str,
        offset: int,
        previous: list[float],
        total: int | None,
        started: float,
        fraction_of: Callable[[int, float], float],
    ) -> Callable[[int, list[float]], None]:
        """A cheap per-iteration hook: checks for stop requests and reports a few times a second.
        ``fraction_of(iterations done, seconds into the round)`` is the whole job's progress."""
        next_report = time.monotonic() + PROGRESS_INTERVAL_S * PROGRESS_SLACK
        reported = 0

        def on_iteration(done: int, latencies: list[float]) -> None:
            nonlocal next_report, reported
            now = time.monotonic()
            if now < next_report:
                return
            next_report = now + PROGRESS_INTERVAL_S * PROGRESS_SLACK
            if self._interrupting.is_set() or job.id in self._cancelled:
                raise JobInterrupted(job.id)
            count = offset + done
            fraction = fraction_of(count, now - started)
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


def _interleavable(job: Job) -> bool:
    return job.settings.rounds > 1 and not job.settings.power


def _in_queue_capture(job: Job) -> bool:
    """A job recorded into its device's queue trace too (``--power-capture queue``)."""
    settings = job.settings
    return settings.power and settings.power_sync == "beacon" and settings.power_capture == "queue"


def _safe_name(device_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in device_id)


def _measure_log_name(device_id: str) -> str:
    """The measurement process's log file (a runtime's own messages go there)."""
    return "measure-" + _safe_name(device_id) + ".log"


def _canary_key(run: JobRun) -> str:
    """Canary histories are per runtime and thread count (both change the canary's speed),
    and per protocol: a canary paired with a model inside its rounds runs in other conditions
    than one measured alone before a round, so the two never share a history."""
    job = run.job
    paired = "/paired" if "canary_pairing" in run.conditions_start else ""
    return f"{job.runtime}/t{job.settings.threads or 0}{paired}"


def _large_key(run: JobRun) -> str:
    """The large reference's history: the canary's key with its own suffix."""
    return f"{_canary_key(run)}/large"
