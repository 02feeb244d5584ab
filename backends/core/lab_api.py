"""The Lab API: what a front end may ask of a lab, whether it runs in this process or on a cluster.

``backends.core.lab.Lab`` (in process) and ``backends.cluster.client.ClusterLab`` (a Dask
cluster seen from one console) both satisfy this Protocol; the TUI and the headless CLI are typed
against it and never against either class (tests/core/test_lab_api.py checks both classes, and
that the front ends call nothing else). Calls may block on the network (cluster): a UI makes
them off its event loop. Only ``devices``, ``paused`` and ``has_power_monitor`` answer from
what the lab knows already (a UI may read them on its loop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from backends.core.events import Event
from backends.core.records import (
    Device,
    Job,
    JobSettings,
    JobState,
    Model,
    PowerMonitor,
    Result,
)


@runtime_checkable
class LabApi(Protocol):
    """Devices, a queue of jobs, their results, and a stream of events."""

    # -- events ----------------------------------------------------------------------------
    def subscribe(self, subscriber: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``subscriber`` with every event from now on; returns the unsubscribe."""
        ...

    # -- devices ---------------------------------------------------------------------------
    def discover(self) -> list[Device]:
        """Look for devices now (publishing added/changed/removed events); the devices."""
        ...

    @property
    def devices(self) -> list[Device]:
        """The devices known now, without looking again."""
        ...

    def device(self, device_id: str) -> Device:
        """One device; ``LabError`` names the known ones when the id is unknown."""
        ...

    def has_power_monitor(self, device_id: str) -> bool:
        """Whether a power monitor powers this device (so a job may capture power)."""
        ...

    # -- power monitors --------------------------------------------------------------------
    def monitors(self) -> list[PowerMonitor]:
        """The power monitors configured or found, with their state."""
        ...

    def open_monitors(self) -> None:
        """Open every configured monitor (again, for one that failed) in the background and
        look for others; states arrive as ``MonitorChanged``, samples as ``PowerSamples``."""
        ...

    def start_recording(self, monitor_id: str) -> str:
        """Record every sample of a streaming monitor to a new CSV; its path."""
        ...

    def stop_recording(self, monitor_id: str) -> str | None:
        """Stop that recording; the finished file's path (None if none ran)."""
        ...

    # -- the queue -------------------------------------------------------------------------
    def submit(
        self,
        model: Model,
        device_id: str,
        runtime: str | None = None,
        settings: JobSettings | None = None,
        priority: int = 0,
    ) -> Job:
        """Queue ``model`` on a device (the same job twice is one job)."""
        ...

    def record_failure(
        self,
        model: Model,
        device_id: str,
        error: str,
        runtime: str | None = None,
        settings: JobSettings | None = None,
        priority: int = 0,
    ) -> Job:
        """Keep a job that could not even be queued (a bad model) as failed, with the reason."""
        ...

    def cancel(self, job_id: str) -> None:
        """Cancel a queued job now, a running one at its next check (``JobCancelled``)."""
        ...

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again (``JobQueued``)."""
        ...

    def set_priority(self, job_id: str, priority: int) -> Job:
        """A new priority, lower runs first (``JobPriorityChanged``: every console sees it)."""
        ...

    def jobs(self, states: Sequence[JobState] | None = None) -> list[Job]: ...

    def pending(self) -> list[Job]:
        """Queued and running jobs."""
        ...

    def rows(self) -> list[tuple[Job, Result | None]]:
        """Every job with its result, if any."""
        ...

    # -- dispatch --------------------------------------------------------------------------
    def start(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    @property
    def paused(self) -> bool: ...

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; False on timeout."""
        ...

    def shutdown(self, interrupt: bool = False, timeout: float = 30.0) -> None:
        """Stop (``interrupt``: running jobs are re-queued at their next check)."""
        ...
