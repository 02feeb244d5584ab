"""A lab host's side of the cluster: its devices as the cluster sees them, and the runner that
measures a job with the same device code as the single-machine Lab.

A job runs through ``backends.core.worker.DeviceWorker`` against a store private to this host (its
canary history stays here), so rounds, the canary, the precision gate, parity and per-layer
passes behave exactly as they do on one machine. Only one job touches a physical device at a
time: Dask's ``device:<id>=1`` resource guarantees it per id, and a lock per local device
covers an alias and its device (two ids, one phone).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.cluster.model_files import ModelFileError, ModelFiles
from backends.cluster.resources import cluster_device_id, resource_name
from backends.cluster.wire import encode_event, relay_power
from backends.core.events import Event, EventBus, JobProgress, JobStarted, LogLine, PowerSamples
from backends.core.lab import discover_devices
from backends.core.records import Device, DeviceState, Job, JobState
from backends.core.store import STORE_FILE, Store
from backends.core.worker import DeviceWorker
from backends.devices.base import DeviceBackend
from backends.power.capture import MonitorLink, PowerManager

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
FetchModel = Callable[[str], bytes]
WatchCancel = Callable[[str, Callable[[], None]], Callable[[], None]]
"""``watch(job_id, on_cancel)`` starts watching for a cancel request; returns ``stop``."""


@dataclass(frozen=True)
class HostedDevice:
    """One id this host publishes: the device as published and the local one behind it."""

    device: Device  # id as the cluster knows it (``host:cpu@lab-a``, ``sim:gpu0``...)
    local: Device  # as its backend described it (``host:cpu``)
    backend: DeviceBackend

    @property
    def online(self) -> bool:
        return self.local.state in (DeviceState.ONLINE, DeviceState.BUSY)


class DeviceHost:
    """The devices of one devlab worker and the runner of their jobs."""

    def __init__(
        self,
        name: str,
        backends: Sequence[DeviceBackend],
        work_dir: Path,
        aliases: dict[str, str] | None = None,
        power_links: Sequence[MonitorLink] = (),
    ) -> None:
        self.name = name
        self.work_dir = Path(work_dir)
        self.backends = list(backends)
        self.aliases = dict(aliases or {})
        self.devices: dict[str, HostedDevice] = {}
        self.store = Store(self.work_dir / STORE_FILE)
        self.models = ModelFiles(self.work_dir / "models")
        self.log_dir = self.work_dir / "logs"
        self.events = EventBus()
        self.power = PowerManager(list(power_links), self.events.publish)
        self.emit: Emit = lambda payload: None  # the worker plugin points it at log_event
        self._physical: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._running: dict[str, tuple[DeviceWorker, str]] = {}  # job id -> (worker, id)
        self._drift: dict[str, dict[str, Any]] = {}  # local device id -> drift, while drifting
        self._lock = threading.Lock()
        self.events.subscribe(self._forward)

    # -- devices ---------------------------------------------------------------------------

    def scan(self) -> bool:
        """Discover the devices now; True when what this host publishes changed.

        A running job whose device vanished (or went offline) is interrupted; the dispatcher
        re-queues it.
        """
        seen = discover_devices(self.backends)
        hosted: dict[str, HostedDevice] = {}
        for local_id, (device, backend) in seen.items():
            published = cluster_device_id(local_id, self.name)
            hosted[published] = self._hosted(published, device, backend, alias_of=None)
        for shared, local_id in self.aliases.items():
            if local_id in seen:
                device, backend = seen[local_id]
                hosted[shared] = self._hosted(shared, device, backend, alias_of=local_id)
        with self._lock:
            changed = {k: v.device for k, v in hosted.items()} != {
                k: v.device for k, v in self.devices.items()
            }
            self.devices = hosted
            running = list(self._running.values())
        for worker, device_id in running:
            entry = hosted.get(device_id)
            if entry is None or not entry.online:
                worker.stop(interrupt=True)
        return changed

    def _hosted(
        self, published: str, device: Device, backend: DeviceBackend, alias_of: str | None
    ) -> HostedDevice:
        extra: dict[str, Any] = {"lab_host": self.name}
        if alias_of is not None:
            extra["alias_of"] = cluster_device_id(alias_of, self.name)
        drift = self._drift.get(device.id)
        if drift is not None:  # consoles show it as on a single machine
            extra["drift"] = drift
        local = dataclasses.replace(device, properties={**device.properties, "lab_host": self.name})
        shown = dataclasses.replace(device, id=published, properties={**device.properties, **extra})
        return HostedDevice(shown, local, backend)

    def resources(self) -> dict[str, float]:
        """One Dask resource unit per online device id (0 for an offline one)."""
        return {resource_name(k): 1.0 if v.online else 0.0 for k, v in self.devices.items()}

    def missing_aliases(self) -> list[str]:
        """Aliases whose local device is not here (a typo, or a phone not plugged in yet)."""
        return [
            f"{shared}={local}"
            for shared, local in self.aliases.items()
            if shared not in self.devices
        ]

    def announcement(self) -> dict[str, Any]:
        """What the dispatcher learns of this host's devices (the ``devices`` message)."""
        with self._lock:
            devices = [entry.device.to_dict() for entry in self.devices.values()]
        return {"kind": "devices", "host": self.name, "devices": json.dumps(devices)}

    # -- jobs ------------------------------------------------------------------------------

    def run(self, job: Job, fetch_model: FetchModel, watch_cancel: WatchCancel) -> dict[str, Any]:
        """Measure ``job`` here; returns its outcome: ``{"state": done|failed|cancelled|
        interrupted, "result": Result dict (done), "error": text (failed)}``."""
        entry = self.devices.get(job.device_id)
        if entry is None or not entry.online:
            return {
                "state": "interrupted",
                "error": f"{job.device_id} is not online on lab host {self.name}",
            }
        try:
            name = Path(job.model.path).name or f"{job.model.name}.onnx"
            path = self.models.ensure(job.model.sha256, name, fetch_model)
        except ModelFileError as error:  # the dispatcher has no such file, or bad bytes
            return {"state": "failed", "error": f"{job.model.name}: {error}"}
        except Exception as error:  # the way to the dispatcher broke: try again
            return {
                "state": "interrupted",
                "error": f"lab host {self.name} could not fetch {job.model.name}: {error}",
            }
        local_job = dataclasses.replace(
            job,
            device_id=entry.local.id,
            model=dataclasses.replace(job.model, path=str(path)),
            state=JobState.RUNNING,
        )
        with self._physical[entry.local.id]:
            return self._run_here(local_job, job.device_id, entry, watch_cancel)

    def _run_here(
        self, job: Job, published_id: str, entry: HostedDevice, watch_cancel: WatchCancel
    ) -> dict[str, Any]:
        _, inserted = self.store.add_job(job, key=job.id)
        if not inserted:
            earlier = self.store.result(job.id)
            if earlier is not None:  # measured here already; the answer was lost on the way
                return {"state": "done", "result": earlier.to_dict()}
        worker = DeviceWorker(
            entry.local,
            entry.backend,
            self.store,
            self.events,
            self.log_dir,
            may_run=lambda: True,
            wake=threading.Condition(),
            power=self.power,
            on_drift=self._device_drift,
        )
        worker.running_job_ids = {job.id}
        with self._lock:
            self._running[job.id] = (worker, published_id)
        stop_watching = watch_cancel(job.id, lambda: worker.cancel(job.id))
        try:
            worker._run_batch([job])
        finally:
            stop_watching()
            with self._lock:
                self._running.pop(job.id, None)
        return self._outcome(job.id)

    def _device_drift(self, local_id: str, drift: dict[str, Any] | None) -> None:
        """A job's canary judged its device: flag (or clear) drift on every id it is
        published under, and tell the dispatcher when that changed what consoles see."""
        with self._lock:
            if drift is None:
                self._drift.pop(local_id, None)
            else:
                self._drift[local_id] = drift
            changed = False
            for published, entry in list(self.devices.items()):
                if entry.local.id != local_id:
                    continue
                properties = {k: v for k, v in entry.device.properties.items() if k != "drift"}
                if drift is not None:
                    properties["drift"] = drift
                if properties != entry.device.properties:
                    device = dataclasses.replace(entry.device, properties=properties)
                    self.devices[published] = dataclasses.replace(entry, device=device)
                    changed = True
        if changed:
            self.emit(self.announcement())

    def _outcome(self, job_id: str) -> dict[str, Any]:
        job = self.store.job(job_id)
        if job.state is JobState.DONE:
            result = self.store.result(job_id)
            assert result is not None  # written in the same transaction as the state
            return {"state": "done", "result": result.to_dict()}
        if job.state is JobState.FAILED:
            return {"state": "failed", "error": job.error or "failed"}
        if job.state is JobState.CANCELLED:
            return {"state": "cancelled"}
        return {"state": "interrupted", "error": f"interrupted on lab host {self.name}"}

    def interrupt_all(self) -> None:
        """Stop every running job now (the host is leaving); the dispatcher re-queues them."""
        with self._lock:
            running = list(self._running.values())
        for worker, _ in running:
            worker.stop(interrupt=True)

    def close(self) -> None:
        self.interrupt_all()
        for backend in self.backends:
            try:
                backend.close()
            except Exception:
                log.exception("closing the %s backend failed", backend.kind)
        self.power.close()
        self.store.close()

    # -- events ----------------------------------------------------------------------------

    def _forward(self, event: Event) -> None:
        """Progress, log lines and live power readings go to the dispatcher; outcomes travel as
        the task's result."""
        if isinstance(event, JobStarted):
            self.emit(
                {
                    "kind": "started",
                    "job_id": event.job.id,
                    "attempt": event.job.attempts,
                    "host": self.name,
                }
            )
        elif isinstance(event, JobProgress | LogLine):
            self.emit({"kind": "event", "event": encode_event(event)})
        elif isinstance(event, PowerSamples):
            self.emit({"kind": "event", "event": encode_event(relay_power(event, self.name))})
