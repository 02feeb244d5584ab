"""A console's view of a cluster: the Lab API (as the CLI's ``--run`` and the TUI call it),
answered by the dispatcher beside the Dask scheduler.

Requests go to the dispatcher's scheduler handlers; its events arrive on the ``devlab-lab``
topic and are republished on this object's own EventBus as ordinary Lab events, from one
delivery thread (subscribers never run on Dask's event loop). The store lives with the
dispatcher; ``rows()`` reads it there.

A cluster is shared: the TUI shows every console's jobs, while a headless run
(``own_jobs_only``) follows, waits for and tabulates only the jobs it queued.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distributed import Client

from backends.cluster.wire import LAB_TOPIC, decode_event
from backends.core.events import (
    DeviceAdded,
    DeviceChanged,
    DeviceRemoved,
    Event,
    EventBus,
    JobCancelled,
    JobFailed,
    JobFinished,
)
from backends.core.lab import LabError, ModelRefused
from backends.core.records import (
    Device,
    Job,
    JobSettings,
    JobState,
    Model,
    PowerMonitor,
    Result,
)

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # wait_until_idle asks the dispatcher at least this often


class ClusterLab:
    """The Lab of a cluster, seen from one console (a ``LabApi``, as ``Lab`` is)."""

    def __init__(
        self,
        address: str,
        security: Any = None,
        timeout: float = 10.0,
        own_jobs_only: bool = False,
    ) -> None:
        self.address = address
        self.own_jobs_only = own_jobs_only
        self._mine: set[str] = set()  # ids of the jobs this console queued
        self.events = EventBus()
        self._client = Client(
            address, security=security, timeout=timeout, set_as_default=False, name="devlab"
        )
        self._devices: dict[str, Device] = {}
        self._devices_lock = threading.Lock()
        self._uploaded: set[str] = set()
        self._paused = False
        self._wake = threading.Condition()
        self._inbox: queue.Queue[str | None] = queue.Queue()
        self._closed = False
        self._delivery = threading.Thread(target=self._deliver, name="devlab-cluster-events")
        self._delivery.daemon = True
        self._delivery.start()
        self._client.subscribe_topic(LAB_TOPIC, self._on_topic)

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, subscriber: Callable[[Event], None]) -> Callable[[], None]:
        return self.events.subscribe(subscriber)

    def _on_topic(self, event: tuple[float, Any]) -> None:
        """Dask's event loop hands over a message; the delivery thread does the rest."""
        self._inbox.put(event[1])

    def _deliver(self) -> None:
        while (text := self._inbox.get()) is not None:
            try:
                self._publish(text)
            except Exception:  # a dispatcher gone mid-fetch must not kill the thread
                log.exception("could not deliver a cluster event")

    def _publish(self, text: str) -> None:
        if '"JobFinished"' in text:
            job_id = json.loads(text)["job"]["id"]
            event: Event | None = decode_event(text, self._result(job_id))
        else:
            event = decode_event(text)
        if isinstance(event, DeviceAdded | DeviceChanged | DeviceRemoved):
            event = self._track(event)  # None: discover() already told the subscribers
        if event is None or not self._follows(event):
            return
        self.events.publish(event)
        if isinstance(event, JobFinished | JobFailed | JobCancelled):
            with self._wake:
                self._wake.notify_all()

    def _follows(self, event: Event) -> bool:
        """Whether this console shows ``event`` (another console's job: only if not own-only)."""
        if not self.own_jobs_only:
            return True
        job = getattr(event, "job", None)
        job_id = job.id if job is not None else getattr(event, "job_id", None)
        return job_id is None or job_id in self._mine

    def _track(self, event: DeviceAdded | DeviceChanged | DeviceRemoved) -> Event | None:
        """Apply a device event to the local view; the event to publish (None: no news).

        Snapshots from ``discover()`` and the dispatcher's events may arrive in either order,
        so a device is announced as added the first time this console hears of it."""
        with self._devices_lock:
            if isinstance(event, DeviceRemoved):
                known = self._devices.pop(event.device_id, None)
                return event if known is not None else None
            device = event.device
            known = self._devices.get(device.id)
            if known == device:
                return None
            self._devices[device.id] = device
            return DeviceAdded(device) if known is None else DeviceChanged(device)

    # -- devices ---------------------------------------------------------------------------

    def discover(self) -> list[Device]:
        """Every device of every lab host (offline ones included, with the reason)."""
        answer = self._call("devlab_devices")
        self._paused = bool(answer["paused"])
        devices = [Device.from_dict(d) for d in answer["devices"]]
        seen = {device.id for device in devices}
        changes = [self._track(DeviceChanged(device)) for device in devices]
        changes += [self._track(DeviceRemoved(d)) for d in self._device_ids() if d not in seen]
        for event in changes:
            if event is not None:
                self.events.publish(event)
        return self.devices

    def _device_ids(self) -> list[str]:
        with self._devices_lock:
            return list(self._devices)

    @property
    def devices(self) -> list[Device]:
        with self._devices_lock:
            return list(self._devices.values())

    def device(self, device_id: str) -> Device:
        with self._devices_lock:
            found = self._devices.get(device_id)
        if found is None:
            known = ", ".join(sorted(self._devices)) or "none"
            raise LabError(f"unknown device {device_id!r} (cluster devices: {known})")
        return found

    def has_power_monitor(self, device_id: str) -> bool:
        """Monitors live on the lab hosts; a console does not see them here (yet)."""
        return False

    # -- power monitors: the lab hosts' own; their live readings arrive as PowerSamples ------

    def monitors(self) -> list[PowerMonitor]:
        return []

    def open_monitors(self) -> None:
        """Nothing to open here: each lab host opens its monitors for its power jobs."""

    def start_recording(self, monitor_id: str) -> str:
        raise LabError(
            f"{monitor_id}: recording a lab host's monitor from a cluster console is not "
            "supported; run devlab power on that host"
        )

    def stop_recording(self, monitor_id: str) -> str | None:
        return None

    # -- the queue -------------------------------------------------------------------------

    def submit(
        self,
        model: Model,
        device_id: str,
        runtime: str | None = None,
        settings: JobSettings | None = None,
        priority: int = 0,
    ) -> Job:
        """Queue ``model`` on a cluster device (its bytes go to the dispatcher once)."""
        self._upload(model)
        return self._job_call(
            "devlab_submit", _request(model, device_id, runtime, settings, priority)
        )

    def record_failure(
        self,
        model: Model,
        device_id: str,
        error: str,
        runtime: str | None = None,
        settings: JobSettings | None = None,
        priority: int = 0,
    ) -> Job:
        request = _request(model, device_id, runtime, settings, priority) | {"error": error}
        return self._job_call("devlab_record_failure", request)

    def cancel(self, job_id: str) -> None:
        self._checked(self._call_text("devlab_cancel", job_id=job_id))

    def retry(self, job_id: str) -> Job:
        answer = self._checked(self._call_text("devlab_retry", job_id=job_id))
        return self._own(Job.from_dict(answer["job"]))

    def set_priority(self, job_id: str, priority: int) -> Job:
        answer = self._call_text("devlab_set_priority", job_id=job_id, priority=priority)
        return Job.from_dict(self._checked(answer)["job"])

    def jobs(self, states: Sequence[JobState] | None = None) -> list[Job]:
        wanted = [s.value for s in states] if states is not None else None
        return [Job.from_dict(j) for j in self._call("devlab_jobs", states=wanted)]

    def pending(self) -> list[Job]:
        """Queued and running jobs on the cluster's devices (this console's, if own-only)."""
        jobs = [Job.from_dict(j) for j in self._call("devlab_pending")]
        return [job for job in jobs if self._shown(job.id)]

    def rows(self) -> list[tuple[Job, Result | None]]:
        """Every job with its result from the cluster's store (this console's, if own-only)."""
        return [
            (Job.from_dict(job), Result.from_dict(result) if result else None)
            for job, result in self._call("devlab_rows")
            if self._shown(job["id"])
        ]

    def _shown(self, job_id: str) -> bool:
        return not self.own_jobs_only or job_id in self._mine

    # -- dispatch --------------------------------------------------------------------------

    def start(self) -> None:
        """The dispatcher dispatches on its own; a console has nothing to start."""

    def pause(self) -> None:
        """Pause the whole cluster's dispatch (running jobs finish)."""
        self._paused = bool(self._call("devlab_pause", paused=True)["paused"])

    def resume(self) -> None:
        self._paused = bool(self._call("devlab_pause", paused=False)["paused"])

    @property
    def paused(self) -> bool:
        return self._paused

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until no job of a cluster device is queued or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            with self._wake:
                self._wake.wait(IDLE_POLL_S if remaining is None else min(IDLE_POLL_S, remaining))
        return True

    def shutdown(self, interrupt: bool = False, timeout: float = 30.0) -> None:
        """Leave the cluster. Its jobs are the cluster's: they keep running without this
        console (``interrupt`` is accepted for the Lab API and changes nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.unsubscribe_topic(LAB_TOPIC)
        except Exception:
            log.debug("unsubscribing from %s failed", LAB_TOPIC, exc_info=True)
        self._client.close(timeout=timeout)
        self._inbox.put(None)
        self._delivery.join(timeout=timeout)

    # -- plumbing --------------------------------------------------------------------------

    def _upload(self, model: Model) -> None:
        sha = model.sha256
        if sha in self._uploaded or self._client.sync(
            self._client.scheduler.devlab_has_model, sha256=sha
        ):
            self._uploaded.add(sha)
            return
        _refuse_external_data(model)
        try:
            data = Path(model.path).read_bytes()
        except OSError as error:
            raise LabError(f"{model.path}: cannot read the model to send it: {error}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise LabError(f"{model.path} changed since it was read; queue it again")
        answer = self._call_text(
            "devlab_put_model", sha256=sha, name=Path(model.path).name, data=data
        )
        self._checked(answer)
        self._uploaded.add(sha)

    def _result(self, job_id: str) -> Result | None:
        data = self._call("devlab_result", job_id=job_id)
        return Result.from_dict(data) if data else None

    def _job_call(self, op: str, request: dict[str, Any]) -> Job:
        answer = self._checked(self._call_text(op, request=json.dumps(request)))
        return self._own(Job.from_dict(answer["job"]))

    def _own(self, job: Job) -> Job:
        self._mine.add(job.id)
        return job

    def _call(self, op: str, **kwargs: Any) -> Any:
        return json.loads(self._call_text(op, **kwargs))

    def _call_text(self, op: str, **kwargs: Any) -> str:
        return self._client.sync(getattr(self._client.scheduler, op), **kwargs)

    @staticmethod
    def _checked(text: str) -> dict[str, Any]:
        answer = json.loads(text)
        if isinstance(answer, dict) and "error" in answer:
            raise LabError(answer["error"])
        return answer


def _request(
    model: Model,
    device_id: str,
    runtime: str | None,
    settings: JobSettings | None,
    priority: int,
) -> dict[str, Any]:
    return {
        "model": model.to_dict(),
        "device_id": device_id,
        "runtime": runtime,
        "settings": settings.to_dict() if settings else None,
        "priority": priority,
    }


def _refuse_external_data(model: Model) -> None:
    """Only the model file travels to lab hosts: weights kept in external files would be
    missing there, so such a model is refused here, with the fix."""
    import onnx
    from onnx import external_data_helper

    try:
        proto = onnx.load(model.path, load_external_data=False)
    except Exception:  # not readable as ONNX: the upload's own checks say why
        return
    if any(external_data_helper.uses_external_data(t) for t in proto.graph.initializer):
        raise ModelRefused(
            f"{model.path}: its weights live in external data files, which a cluster does not "
            "ship to lab hosts; save it as one file (onnx.save(onnx.load(path), out) for "
            "models under 2 GB) or run it on this machine without --cluster"
        )
