"""Typed messages the app posts; tests assert on them with ``run_test(message_hook=...)``."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from backends.core.plan import QueueReport
from backends.core.records import Device, Job


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
