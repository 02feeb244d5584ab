"""What the Lab tells its front ends. Both the CLI and the TUI subscribe to the same events.

Events are published from worker threads; a subscriber must be quick and thread-safe (the
TUI forwards them with ``call_from_thread``, the CLI updates rich progress bars).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backends.core.records import Device, Job, PowerMonitor, Result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of every Lab event."""


@dataclass(frozen=True)
class DeviceAdded(Event):
    device: Device


@dataclass(frozen=True)
class DeviceChanged(Event):
    device: Device


@dataclass(frozen=True)
class DeviceRemoved(Event):
    device_id: str


@dataclass(frozen=True)
class JobQueued(Event):
    job: Job


@dataclass(frozen=True)
class JobPriorityChanged(Event):
    """A job's priority changed (``job.priority`` is the new one), so every console shows it.

    Only the priority is news: the rest of ``job`` may be older than other events of the job
    (it can start between the change and its announcement)."""

    job: Job


@dataclass(frozen=True)
class JobStarted(Event):
    job: Job


@dataclass(frozen=True)
class JobProgress(Event):
    """Throttled progress of a running job (a few per second, never one per iteration)."""

    job_id: str
    phase: str
    done: int
    total: int | None
    fraction: float
    median_us: float | None = None
    p90_us: float | None = None
    recent_us: tuple[float, ...] = ()  # latencies since the previous report (capped)


@dataclass(frozen=True)
class JobFinished(Event):
    job: Job
    result: Result


@dataclass(frozen=True)
class JobFailed(Event):
    job: Job
    error: str


@dataclass(frozen=True)
class JobCancelled(Event):
    job: Job


@dataclass(frozen=True)
class PowerSamples(Event):
    """A batch of power readings from one monitor (never one event per sample).

    ``t0`` is the wall-clock time of the first sample, ``interval_s`` the sample period;
    ``volts`` and ``amps`` are the batch's means (None from a source that only knows watts).
    """

    monitor_id: str
    t0: float
    interval_s: float
    watts: tuple[float, ...]
    dropped: int = 0
    volts: float | None = None
    amps: float | None = None


@dataclass(frozen=True)
class MonitorChanged(Event):
    """A power monitor was found, opened, failed, started or stopped recording, or closed."""

    monitor: PowerMonitor


@dataclass(frozen=True)
class LogLine(Event):
    text: str
    job_id: str | None = None
    level: str = "info"


Subscriber = Callable[[Event], None]


@dataclass
class EventBus:
    """Fan-out of events to subscribers; one faulty subscriber never stops the others."""

    _subscribers: list[Subscriber] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # a broken view must not stop measurements
                log.exception("event subscriber %r failed on %r", subscriber, event)
