"""The Lab: devices, the queue and its dispatch, and the events both front ends render.

The CLI and the TUI hold no benchmarking logic: they build a Lab, subscribe to its events and
call its methods. The store is the record of truth; the Lab keeps only what can be rebuilt
(the device registry and one worker thread per device).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from backends.core.events import (
    DeviceAdded,
    DeviceChanged,
    DeviceRemoved,
    Event,
    EventBus,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPriorityChanged,
    JobQueued,
    JobStarted,
)
from backends.core.records import (
    Device,
    DeviceState,
    Job,
    JobSettings,
    JobState,
    Model,
    PowerMonitor,
    Result,
)
from backends.core.store import Store
from backends.core.worker import CANARY_FILE, DeviceWorker
from backends.devices.base import DeviceBackend
from backends.measure.canary_store import CanaryStore
from backends.power.capture import MonitorLink
from backends.power.hub import MonitorError, MonitorHub, usb_monitor_ports

log = logging.getLogger(__name__)


class LabError(ValueError):
    """A request the Lab cannot take (unknown device, runtime the device lacks...)."""


class ModelRefused(LabError):
    """This one model cannot go where it was sent (the rest of a plan still can)."""


def discover_devices(
    backends: Sequence[DeviceBackend],
) -> dict[str, tuple[Device, DeviceBackend]]:
    """Every backend's devices, described, with what each of their runtimes can do (the
    ``Device.capabilities`` front ends read); one backend's failure never hides the others'."""
    seen: dict[str, tuple[Device, DeviceBackend]] = {}
    for backend in backends:
        try:
            for device in backend.discover():
                described = backend.describe(device)
                capabilities = {
                    runtime: backend.capabilities(described, runtime)
                    for runtime in described.runtimes
                }
                seen[device.id] = (
                    dataclasses.replace(described, capabilities=capabilities),
                    backend,
                )
        except Exception:
            log.exception("discovery failed in the %s backend", backend.kind)
    return seen


def job_key(model_sha256: str, device_id: str, runtime: str, settings: JobSettings) -> str:
    """What makes two submissions the same job: model bytes, device, runtime and settings."""
    identity = json.dumps([model_sha256, device_id, runtime, settings.to_dict()], sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def intake_key(path: str, device_id: str) -> str:
    """What identifies an input item that failed intake: its path and the device it was for."""
    resolved = str(Path(path).resolve())
    return hashlib.sha256(json.dumps(["intake", resolved, device_id]).encode()).hexdigest()


class Lab:
    """Owns devices, the store and the dispatch loop; publishes events to subscribers."""

    def __init__(
        self,
        store: Store,
        backends: Sequence[DeviceBackend],
        log_dir: str | Path | None = None,
        power_links: Sequence[MonitorLink] = (),
        canaries: CanaryStore | None = None,
        isolate: bool = True,
        monitor_ports: Callable[[], Iterable[str]] = usb_monitor_ports,
    ) -> None:
        self.store = store
        # in-process runtimes (host ONNX Runtime) time in a measurement process per device
        self.isolate = isolate
        # The reference canary's history: shared by every run on this machine when given (the
        # CLI and the TUI pass the user-level one), else a file beside the store.
        self.canaries = canaries or CanaryStore(store.path.parent / CANARY_FILE)
        self.events = EventBus()
        self.log_dir = Path(log_dir) if log_dir else store.path.parent / "logs"
        self._backends = list(backends)
        self._devices: dict[str, tuple[Device, DeviceBackend]] = {}
        self._workers: dict[str, DeviceWorker] = {}
        self._wake = threading.Condition()
        self._paused = False
        self._started = False
        self.events.subscribe(self._track_busy)
        self._drift: dict[str, dict] = {}  # device id -> its canary's drift, while drifting
        # monitor_ports: where monitors that no [[power.monitors]] names are looked for
        self.power = MonitorHub(list(power_links), self.events.publish, ports=monitor_ports)
        self._monitors_open = False  # open_monitors asked: boards that appear stream their rails
        self._discovering = threading.Lock()

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, subscriber: Callable[[Event], None]) -> Callable[[], None]:
        return self.events.subscribe(subscriber)

    # -- devices ---------------------------------------------------------------------------

    def discover(self) -> list[Device]:
        """Ask every backend for its devices; publish what appeared, changed or vanished.

        One backend's failure never hides the others' devices.
        """
        with self._discovering:  # the TUI's poll and a backend's hot-plug thread may overlap
            return self._discover()

    def _discover(self) -> list[Device]:
        seen = discover_devices(self._backends)
        for device_id in list(self._devices):
            if device_id not in seen:
                self._remove_device(device_id)
        for device, backend in seen.values():
            if device.state is DeviceState.ONLINE and self._running_jobs(device.id):
                device = dataclasses.replace(device, state=DeviceState.BUSY)
            self._put_device(device, backend)
        return self.devices

    @property
    def devices(self) -> list[Device]:
        return [device for device, _ in self._devices.values()]

    def device(self, device_id: str) -> Device:
        try:
            return self._devices[device_id][0]
        except KeyError:
            known = ", ".join(sorted(self._devices)) or "none"
            raise LabError(f"unknown device {device_id!r} (devices: {known})") from None

    def has_power_monitor(self, device_id: str) -> bool:
        return self.power.powers(device_id)

    # -- power monitors --------------------------------------------------------------------

    def monitors(self) -> list[PowerMonitor]:
        return self.power.monitors()

    def open_monitors(self) -> None:
        """Open every configured monitor in the background (again, for one that failed), and
        list the others found; until then a power job opens its monitor on first use. Boards
        that measure their own power (a Jetson's agent) stream their rails too, as they appear."""
        self._monitors_open = True
        self.power.open_all()
        for device, backend in list(self._devices.values()):
            self._open_rails(device, backend)

    def _open_rails(self, device: Device, backend: DeviceBackend) -> None:
        if not self._monitors_open or device.state is DeviceState.OFFLINE:
            return
        try:
            opener = backend.rail_stream(device)
        except Exception:  # one board's trouble never stops the lab
            log.exception("the live rails of %s", device.id)
            return
        if opener is not None:
            self.power.open_rails(device.id, opener)

    def start_recording(self, monitor_id: str) -> str:
        """Record a streaming monitor into ``<out>/power/<monitor>-<time>.csv``, the folder of
        the store."""
        try:
            return str(self.power.start_recording(monitor_id, self.store.path.parent / "power"))
        except MonitorError as error:
            raise LabError(str(error)) from None

    def stop_recording(self, monitor_id: str) -> str | None:
        try:
            path = self.power.stop_recording(monitor_id)
        except MonitorError as error:
            raise LabError(str(error)) from None
        return str(path) if path is not None else None

    def backend_for(self, device_id: str) -> DeviceBackend:
        self.device(device_id)
        return self._devices[device_id][1]

    def _put_device(self, device: Device, backend: DeviceBackend) -> None:
        drift = self._drift.get(device.id)
        if drift is not None and device.properties.get("drift") != drift:
            device = dataclasses.replace(device, properties={**device.properties, "drift": drift})
        previous = self._devices.get(device.id)
        self._devices[device.id] = (device, backend)
        self._open_rails(device, backend)
        if previous is None:
            self.events.publish(DeviceAdded(device))
            if self._started:
                self._start_worker(device.id)
        elif previous[0] != device:
            self.events.publish(DeviceChanged(device))
            if device.id in self._workers:
                self._workers[device.id].device = device

    def _remove_device(self, device_id: str) -> None:
        self._devices.pop(device_id, None)
        worker = self._workers.pop(device_id, None)
        if worker is not None:
            worker.stop(interrupt=True)
        self.events.publish(DeviceRemoved(device_id))

    # -- the queue -------------------------------------------------------------------------

    def submit(
        self,
        model: Model,
        device_id: str,
        runtime: str | None = None,
        settings: JobSettings | None = None,
        priority: int = 0,
    ) -> Job:
        """Queue ``model`` on a device. Submitting the same job again does not duplicate it:
        a done job keeps its result; a failed or cancelled one is queued again.
        """
        job = self._new_job(model, device_id, runtime, settings, priority)
        self._check_capabilities(job)
        self.store.forget_failed(intake_key(model.path, device_id))  # the item is fine now
        stored, inserted = self.store.add_job(
            job, job_key(model.sha256, device_id, job.runtime, job.settings)
        )
        if not inserted and stored.state in (JobState.FAILED, JobState.CANCELLED):
            stored = self.store.requeue(stored.id)
        elif not inserted and stored.state is JobState.QUEUED and stored.priority != priority:
            stored = self.store.set_priority(stored.id, priority)
        if stored.state is JobState.QUEUED:
            self.events.publish(JobQueued(stored))
            self._notify()
        return stored

    def record_failure(
        self,
        model: Model,
        device_id: str,
        error: str,
        runtime: str | None = None,
        settings: JobSettings | None = None,
        priority: int = 0,
    ) -> Job:
        """Record an input item that cannot run (a bad model file) as a failed job, so it shows
        in the tables with its reason next to what was measured. It is keyed by path and
        device, and forgotten once the same path is submitted successfully."""
        job = self._new_job(model, device_id, runtime, settings, priority)
        job.state, job.error, job.finished_at = JobState.FAILED, error, time.time()
        stored, inserted = self.store.add_job(job, intake_key(model.path, device_id))
        if not inserted:
            stored = self.store.fail(stored.id, error)
        self.events.publish(JobFailed(stored, error))
        return stored

    def cancel(self, job_id: str) -> None:
        """Cancel a queued job now, or ask the running one to stop at its next check."""
        for worker in self._workers.values():
            if worker.cancel(job_id):
                return
        cancelled = self.store.cancel_if_queued(job_id)
        if cancelled is not None:
            self.events.publish(JobCancelled(cancelled))

    def retry(self, job_id: str) -> Job:
        job = self.store.requeue(job_id)
        self.events.publish(JobQueued(job))
        self._notify()
        return job

    def set_priority(self, job_id: str, priority: int) -> Job:
        """Give a job a new priority (lower runs first); every subscriber hears of it."""
        job = self.store.set_priority(job_id, priority)
        self.events.publish(JobPriorityChanged(job))
        self._notify()
        return job

    def jobs(self, states: Sequence[JobState] | None = None) -> list[Job]:
        return self.store.jobs(states)

    def rows(self) -> list[tuple[Job, Result | None]]:
        return self.store.rows()

    def _new_job(
        self,
        model: Model,
        device_id: str,
        runtime: str | None,
        settings: JobSettings | None,
        priority: int,
    ) -> Job:
        """A new Job record for a known device and one of its runtimes (LabError otherwise)."""
        device = self.device(device_id)
        return Job(
            id=uuid.uuid4().hex[:12],
            model=model,
            device_id=device_id,
            runtime=self._runtime_for(device, runtime),
            settings=settings or JobSettings(),
            priority=priority,
        )

    def _check_capabilities(self, job: Job) -> None:
        """Refuse what the device cannot do with the job's runtime (a per-layer pass it does
        not have would silently measure nothing); unknown capabilities refuse nothing."""
        capabilities = self.device(job.device_id).capabilities_for(job.runtime)
        if job.settings.per_layer and capabilities is not None and not capabilities.per_layer:
            raise LabError(
                f"device {job.device_id} cannot profile per layer with runtime {job.runtime}: "
                "queue the job without per-layer profiling (no --per-layer; per_layer = false "
                "in the config's [defaults]) or on a device that can"
            )

    def _runtime_for(self, device: Device, runtime: str | None) -> str:
        if not device.runtimes and device.state is not DeviceState.ONLINE:
            if runtime is None:  # never seen online: the job may wait, but must name one
                raise LabError(
                    f"device {device.id} is {device.state} and has not told its runtimes "
                    "yet; name one with --runtime"
                )
            return runtime
        if runtime is None:
            if not device.runtimes:
                raise LabError(f"device {device.id} offers no runtime")
            return device.runtimes[0]
        if runtime not in device.runtimes:
            raise LabError(
                f"device {device.id} has no runtime {runtime!r} "
                f"(it offers: {', '.join(device.runtimes) or 'none'})"
            )
        return runtime

    # -- dispatch --------------------------------------------------------------------------

    def start(self) -> None:
        """Re-queue jobs a dead process left running, then start one worker per device."""
        if self._started:
            return
        for job in self.store.recover_interrupted():
            self.events.publish(JobQueued(job))
        self._started = True
        for device_id in self._devices:
            self._start_worker(device_id)
        for backend in self._backends:
            backend.watch(self._backend_changed)

    def _backend_changed(self) -> None:
        try:
            self.discover()
        except Exception:  # a hot-plug hiccup must not kill the backend's thread
            log.exception("discovery after a hot-plug event failed")

    def pause(self) -> None:
        """Stop taking new jobs (running ones finish)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._notify()

    @property
    def paused(self) -> bool:
        return self._paused

    def pending(self) -> list[Job]:
        """Queued and running jobs on the devices this lab has now."""
        return [
            job
            for job in self.store.jobs([JobState.QUEUED, JobState.RUNNING])
            if job.device_id in self._devices
        ]

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until no job of a present device is queued or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wake:
            while self.pending():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.wait(timeout=0.5 if remaining is None else min(0.5, remaining))
        return True

    def shutdown(self, interrupt: bool = False, timeout: float = 30.0) -> None:
        """Stop the workers; with ``interrupt`` the running jobs stop now and are re-queued."""
        workers = list(self._workers.values())
        for worker in workers:
            worker.stop(interrupt=interrupt)
        for worker in workers:
            worker.join(timeout=timeout)
        self._workers.clear()
        self._started = False
        for device in self.devices:
            if device.state is DeviceState.BUSY:
                self.mark_device(device.id, DeviceState.ONLINE)
        for backend in self._backends:
            try:
                backend.close()
            except Exception:
                log.exception("closing the %s backend failed", backend.kind)
        self.power.close()

    def _start_worker(self, device_id: str) -> None:
        device, backend = self._devices[device_id]
        worker = DeviceWorker(
            device,
            backend,
            self.store,
            self.events,
            self.log_dir,
            may_run=self._may_run,
            wake=self._wake,
            power=self.power,
            on_drift=self._device_drift,
            canaries=self.canaries,
            isolate=self.isolate,
        )
        self._workers[device_id] = worker
        worker.start()

    def _may_run(self) -> bool:
        return not self._paused

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def mark_device(self, device_id: str, state: DeviceState) -> None:
        """Set a device's state (busy, offline...) and tell the subscribers."""
        entry = self._devices.get(device_id)
        if entry is not None and entry[0].state is not state:
            self._put_device(dataclasses.replace(entry[0], state=state), entry[1])

    def _running_jobs(self, device_id: str) -> set[str]:
        worker = self._workers.get(device_id)
        return set(worker.running_job_ids) if worker is not None else set()

    def _device_drift(self, device_id: str, drift: dict | None) -> None:
        """A worker judged its device's canary: flag (or clear) drift on the device."""
        if drift is None:
            self._drift.pop(device_id, None)
        else:
            self._drift[device_id] = drift
        entry = self._devices.get(device_id)
        if entry is None:
            return
        properties = {k: v for k, v in entry[0].properties.items() if k != "drift"}
        if drift is not None:
            properties["drift"] = drift
        if properties != entry[0].properties:
            self._put_device(dataclasses.replace(entry[0], properties=properties), entry[1])

    def _track_busy(self, event: Event) -> None:
        """A device is busy while its worker runs a job; other jobs' events do not count."""
        entry = self._devices.get(event.job.device_id) if hasattr(event, "job") else None
        if entry is None:
            return
        if isinstance(event, JobStarted) and entry[0].state is DeviceState.ONLINE:
            self.mark_device(event.job.device_id, DeviceState.BUSY)
        elif (
            isinstance(event, JobFinished | JobFailed | JobCancelled)
            and entry[0].state is DeviceState.BUSY  # never revive a device that went offline
            and not self._running_jobs(event.job.device_id)  # the last of its batch ended
        ):
            self.mark_device(event.job.device_id, DeviceState.ONLINE)
