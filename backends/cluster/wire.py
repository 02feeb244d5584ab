"""What crosses the cluster's wires: topic names, scheduler handler names, and Lab events as
JSON text.

Dask carries messages as msgpack, which turns lists into tuples; records therefore travel as
JSON text and come back as exactly the dataclasses that left. A finished job's event carries
no result (a result holds every iteration, and the scheduler keeps recent events in memory):
consoles fetch it from the dispatcher's store.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

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
    PowerSamples,
)
from backends.core.records import Device, Job, Result

WORKER_TOPIC = "devlab-worker"  # workers -> dispatcher: devices, job started, progress, logs
LAB_TOPIC = "devlab-lab"  # dispatcher -> consoles: every Lab event, in order
PLUGIN_NAME = "devlab-lab-host"  # the WorkerPlugin that holds a worker's devices
DISPATCHER_NAME = "devlab-dispatcher"  # the SchedulerPlugin


def cancel_event_name(job_id: str) -> str:
    """The ``distributed.Event`` a running job watches for a cancel request."""
    return f"devlab-cancel-{job_id}"


def task_key(job_id: str, attempt: int, dispatch: int) -> str:
    """The Dask key of one hand-out of one attempt: never reused, so a re-queued job never
    meets an earlier task's result."""
    return f"devlab-{job_id}-{attempt}-{dispatch}"


def job_of_key(key: str) -> str:
    """The job id in a ``task_key``."""
    return key.removeprefix("devlab-").rsplit("-", 2)[0]


_EVENTS: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        DeviceAdded,
        DeviceChanged,
        DeviceRemoved,
        JobQueued,
        JobPriorityChanged,
        JobStarted,
        JobProgress,
        JobFinished,
        JobFailed,
        JobCancelled,
        LogLine,
        PowerSamples,
    )
}


RELAY_POWER_HZ = 500.0  # live power readings a lab host relays: enough for a live plot


def relay_power(event: PowerSamples, host: str, max_hz: float = RELAY_POWER_HZ) -> PowerSamples:
    """A lab host's power batch as consoles get it: the monitor named ``<id>@<host>`` (two
    hosts may both have a ``monsoon:1``) and at most ``max_hz`` readings a second, each the
    mean of the samples it stands for. The host keeps the full-rate trace for the energy."""
    step = max(1, int(round(1.0 / (event.interval_s * max_hz)))) if event.interval_s > 0 else 1
    watts = event.watts
    if step > 1 and watts:
        values = np.asarray(watts, dtype=np.float64)
        whole = values.size // step * step
        means = values[:whole].reshape(-1, step).mean(axis=1).tolist()
        if whole < values.size:
            means.append(float(values[whole:].mean()))
        watts = tuple(means)
    return dataclasses.replace(
        event,
        monitor_id=f"{event.monitor_id}@{host}",
        interval_s=event.interval_s * step,
        watts=watts,
    )


def encode_event(event: Event) -> str:
    """A Lab event as JSON text (a finished job's result is left out, see the module doc)."""
    fields: dict[str, Any] = {"type": type(event).__name__}
    for name, value in vars(event).items():
        if isinstance(value, Job | Device):
            fields[name] = value.to_dict()
        elif isinstance(value, Result):
            fields[name] = None
        elif isinstance(value, tuple):
            fields[name] = list(value)
        else:
            fields[name] = value
    return json.dumps(fields)


def decode_event(text: str, result: Result | None = None) -> Event:
    """The event ``encode_event`` wrote; ``result`` fills a finished job's."""
    fields = json.loads(text)
    cls = _EVENTS[fields.pop("type")]
    if "job" in fields:
        fields["job"] = Job.from_dict(fields["job"])
    if "device" in fields:
        fields["device"] = Device.from_dict(fields["device"])
    if cls is JobFinished:
        fields["result"] = result
    for name in ("recent_us", "watts"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return cls(**fields)
