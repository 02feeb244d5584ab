"""Typed messages the app posts; tests assert on them with ``run_test(message_hook=...)``."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from backends.core.plan import QueueReport
from backends.core.records import Device, Job, PowerMonitor, Result


class JobStateChanged(Message):
    """A job entered a new state (queued, running, done, failed, cancelled)."""

    def __init__(self, job: Job, error: str | None = None) -> None:
        super().__init__()
        self.job = job
        self.error = error


class DevicesChanged(Message):
    """The set of devices or one device's state changed."""

    def __init__(self, devices: list[Device]) -> None:
        super().__init__()
        self.devices = devices


class ModelsQueued(Message):
    """Models from the Add dialog were taken in and queued (bad items are in ``failed``)."""

    def __init__(self, report: QueueReport) -> None:
        super().__init__()
        self.report = report


class ExportFinished(Message):
    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths


class OperationFailed(Message):
    """A background operation failed; the app shows ``error`` with what to do."""

    def __init__(self, what: str, error: str) -> None:
        super().__init__()
        self.what = what
        self.error = error


class LabLoaded(Message):
    """The devices and jobs the lab held when the console opened (read off the UI thread: a
    cluster answers over the network)."""

    def __init__(
        self,
        devices: list[Device],
        rows: list[tuple[Job, Result | None]],
        monitors: list[PowerMonitor] | None = None,
    ) -> None:
        super().__init__()
        self.devices = devices
        self.rows = rows
        self.monitors = monitors or []


class RecordingChanged(Message):
    """A power recording started (``started``) or stopped; ``path`` is its file (None: there
    was none to stop)."""

    def __init__(self, monitor_id: str, path: str | None, started: bool) -> None:
        super().__init__()
        self.monitor_id = monitor_id
        self.path = path
        self.started = started


class PriorityApplied(Message):
    """A priority the operator asked for reached the lab (``job``), or failed (None: the
    error arrives as ``OperationFailed``)."""

    def __init__(self, job_id: str, priority: int, job: Job | None) -> None:
        super().__init__()
        self.job_id = job_id
        self.priority = priority
        self.job = job


class DispatchChanged(Message):
    """The lab paused or resumed its dispatch as asked (``done`` False: the call failed)."""

    def __init__(self, paused: bool, done: bool) -> None:
        super().__init__()
        self.paused = paused
        self.done = done
