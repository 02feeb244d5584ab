"""What the console shows, rebuilt from Lab events (plain Python: no textual here).

Lab threads push events into ``EventInbox`` (a lock-free deque append); the app drains it a
few times a second and applies the whole batch to ``LabState``, then re-renders only the
views whose data changed. High-rate streams (power samples, progress) are thereby coalesced:
the UI never handles one event per sample or per iteration.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from backends.core.events import (
    DeviceAdded,
    DeviceChanged,
    DeviceRemoved,
    Event,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPriorityChanged,
    JobProgress,
    JobQueued,
    JobStarted,
    LogLine,
    MonitorChanged,
    PowerSamples,
)
from backends.core.records import Device, Job, JobState, PowerMonitor, Result, Stats
from backends.power.trace import RollingPower

RECENT_LATENCIES = 600  # per-iteration latencies kept per job for the live plot
LOG_TAIL = 200
POWER_WINDOW_S = 60.0
POWER_BUCKET_S = 0.1  # the plot's resolution: one point per 100 ms


class EventInbox:
    """Collects events from any thread; ``drain`` hands them to the UI thread in one batch."""

    def __init__(self) -> None:
        self._events: collections.deque[Event] = collections.deque()

    def __call__(self, event: Event) -> None:
        self._events.append(event)

    def drain(self) -> list[Event]:
        batch = []
        while self._events:
            batch.append(self._events.popleft())
        return batch


@dataclass
class LiveJob:
    """The running numbers of one job."""

    phase: str = ""
    done: int = 0
    total: int | None = None
    fraction: float = 0.0
    median_us: float | None = None
    p90_us: float | None = None
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_LATENCIES)
    )


class PowerTrace:
    """One monitor's recent power for the Power view: ``RollingPower`` buckets (the same
    module the recorder uses) plus the running job's energy. Memory is bounded."""

    def __init__(self, monitor_id: str, window_s: float = POWER_WINDOW_S) -> None:
        self.monitor_id = monitor_id
        self.rolling = RollingPower(bucket_s=POWER_BUCKET_S, window_s=window_s)
        self.current_w: float | None = None
        self.volts: float | None = None  # the newest batch's mean (None: the source has no V)
        self.amps: float | None = None
        self.dropped = 0
        self._energy_j = 0.0
        self._energy_from: float | None = None  # wall time the running job started

    @property
    def samples(self) -> int:
        return self.rolling.samples

    def add(self, batch: PowerSamples) -> None:
        watts = np.asarray(batch.watts, dtype=np.float64)
        if watts.size == 0:
            return
        self.dropped += batch.dropped
        self.current_w = float(watts[-5:].mean())
        self.volts, self.amps = batch.volts, batch.amps
        times = batch.t0 + np.arange(watts.size) * batch.interval_s
        if self._energy_from is not None:  # V x I per sample x period, from the job's start
            self._energy_j += float(watts[times >= self._energy_from].sum()) * batch.interval_s
        self.rolling.add(times, watts)

    def start_energy(self, since: float) -> None:
        """Count energy from wall time ``since`` (the running job's start) on."""
        self._energy_j, self._energy_from = 0.0, since

    def stop_energy(self) -> None:
        self._energy_from = None

    @property
    def energy_j(self) -> float | None:
        return self._energy_j if self._energy_from is not None or self._energy_j else None

    @property
    def series(self) -> list[float]:
        """Mean watts of each 100 ms bucket in the window, oldest first."""
        return self.rolling.series()[1].tolist()

    def series_over(self, window_s: float) -> list[float]:
        """Mean watts of each 100 ms bucket in the newest ``window_s`` seconds."""
        times, means, _, _ = self.rolling.series()
        if not times.size:
            return []
        return means[times > times[-1] - window_s + POWER_BUCKET_S / 2].tolist()

    def window(self, window_s: float) -> tuple[float | None, float | None, float | None]:
        """(min, mean, max) watts over the newest ``window_s`` seconds."""
        low, mean, high = self.rolling.window(window_s)
        return _known(low), _known(mean), _known(high)

    @property
    def rate_hz(self) -> float | None:
        """Samples per second over the last second that is complete."""
        rate = self.rolling.rate_hz(1.0)
        return None if math.isnan(rate) else rate

    @property
    def mean_w(self) -> float | None:
        mean = self.rolling.mean_w()
        return None if math.isnan(mean) else mean

    @property
    def peak_w(self) -> float | None:
        peaks = self.rolling.series()[3]
        return float(peaks.max()) if peaks.size else None


def _known(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass
class Changes:
    """What one batch of events touched, so only those views re-render."""

    devices: set[str] = field(default_factory=set)
    removed_devices: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)
    finished_jobs: set[str] = field(default_factory=set)
    live: bool = False
    power: bool = False
    monitors: bool = False
    logs: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.devices
            or self.removed_devices
            or self.jobs
            or self.live
            or self.power
            or self.monitors
            or self.logs
        )


class LabState:
    """Devices, jobs, live numbers, power traces and log tails, as the views need them."""

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.jobs: dict[str, Job] = {}
        self.errors: dict[str, str] = {}
        self.stats: dict[str, Stats] = {}
        self.results: dict[str, Result] = {}  # accuracy and energy, for the Results view
        self.live: dict[str, LiveJob] = {}
        self.power: dict[str, PowerTrace] = {}
        self.monitors: dict[str, PowerMonitor] = {}
        self.logs: collections.deque[tuple[str | None, str]] = collections.deque(maxlen=LOG_TAIL)

    def load(
        self,
        devices: list[Device],
        rows: list[tuple[Job, Result | None]],
        monitors: list[PowerMonitor] | None = None,
    ) -> None:
        """Start from what the Lab and its store already hold."""
        self.devices = {device.id: device for device in devices}
        for monitor in monitors or []:  # a monitor's own events since then stay newer
            self.monitors.setdefault(monitor.id, monitor)
        self.jobs = {job.id: job for job, _ in rows}
        self.errors = {job.id: job.error for job, _ in rows if job.error}
        self.stats = {job.id: result.stats for job, result in rows if result is not None}
        self.results = {job.id: result for job, result in rows if result is not None}

    def apply(self, events: list[Event]) -> Changes:
        changes = Changes()
        for event in events:
            self._apply(event, changes)
        return changes

    def _apply(self, event: Event, changes: Changes) -> None:
        if isinstance(event, DeviceAdded | DeviceChanged):
            self.devices[event.device.id] = event.device
            changes.devices.add(event.device.id)
        elif isinstance(event, DeviceRemoved):
            self.devices.pop(event.device_id, None)
            changes.removed_devices.add(event.device_id)
        elif isinstance(event, JobQueued):
            self._put_job(event.job, changes)
        elif isinstance(event, JobPriorityChanged):
            self.set_priority(event.job.id, event.job.priority, changes, event.job)
        elif isinstance(event, JobStarted):
            self._put_job(event.job, changes)
            self.live[event.job.id] = LiveJob(phase="load")
            for trace in self.power.values():
                trace.start_energy(self._job_start(event.job))
            changes.live = True
        elif isinstance(event, JobProgress):
            self._progress(event)
            changes.live = True
        elif isinstance(event, JobFinished | JobFailed | JobCancelled):
            self._put_job(event.job, changes)
            if isinstance(event, JobFinished):
                self.stats[event.job.id] = event.result.stats
                self.results[event.job.id] = event.result
            if isinstance(event, JobFailed):
                self.errors[event.job.id] = event.error
                self.logs.append((event.job.id, f"failed: {event.error}"))
                changes.logs = True
            changes.finished_jobs.add(event.job.id)
            if self.live.pop(event.job.id, None) is not None and not self.live:
                for trace in self.power.values():
                    trace.stop_energy()
            changes.live = True
        elif isinstance(event, PowerSamples):
            trace = self.power.get(event.monitor_id)
            if trace is None:
                trace = self.power[event.monitor_id] = PowerTrace(event.monitor_id)
                running = self.running()
                if running:  # a monitor that appears mid-job still counts that job's energy
                    trace.start_energy(self._job_start(running[0]))
            trace.add(event)
            changes.power = True
        elif isinstance(event, MonitorChanged):
            self.monitors[event.monitor.id] = event.monitor
            changes.monitors = changes.power = True
        elif isinstance(event, LogLine):
            self.logs.append((event.job_id, event.text))
            changes.logs = True

    @staticmethod
    def _job_start(job: Job) -> float:
        return job.started_at if job.started_at is not None else time.time()

    def _put_job(self, job: Job, changes: Changes) -> None:
        self.jobs[job.id] = job
        changes.jobs.add(job.id)

    def set_priority(
        self, job_id: str, priority: int, changes: Changes, job: Job | None = None
    ) -> None:
        """A job's new priority; nothing else of the job changes (the record that announced
        it may be older than its last state). ``job`` is taken whole if the job is new here."""
        known = self.jobs.get(job_id)
        if known is None:
            if job is None:
                return
            known = job
        self._put_job(dataclasses.replace(known, priority=priority), changes)

    def _progress(self, event: JobProgress) -> None:
        live = self.live.setdefault(event.job_id, LiveJob())
        live.phase, live.done, live.total = event.phase, event.done, event.total
        live.fraction = event.fraction
        if event.median_us is not None:
            live.median_us, live.p90_us = event.median_us, event.p90_us
        live.latencies.extend(event.recent_us)

    # -- questions the views ask -----------------------------------------------------------

    def running(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.state is JobState.RUNNING]

    def counts(self) -> dict[JobState, int]:
        counts = collections.Counter(job.state for job in self.jobs.values())
        return {state: counts.get(state, 0) for state in JobState}

    def log_tail(self, job_id: str | None, lines: int = 20) -> list[str]:
        return [text for owner, text in self.logs if job_id is None or owner == job_id][-lines:]
