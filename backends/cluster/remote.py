"""What runs inside a devlab worker process: the worker plugin that owns the lab host's
devices, and the task function the dispatcher submits for every job attempt.

The plugin announces the host's devices once the worker is registered, polls discovery (and
listens to the backends' hot-plug hooks), and keeps the worker's Dask resources in step with
``Worker.set_resources``, so the scheduler never places a job on a host that lost its device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from distributed import Event, get_client, get_worker
from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

from backends.cluster.lab_host import DeviceHost
from backends.cluster.wire import PLUGIN_NAME, WORKER_TOPIC, cancel_event_name
from backends.core.records import Job

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 2.0  # discovery poll, as the console's
CANCEL_POLL_S = 0.25  # how often running jobs' cancel events are looked at
# Two jobs starting at once on one lab host (two devices) would both create the worker's client:
# distributed's get_client is not safe against that race (its handshake then fails with a bare
# AssertionError in Client._ensure_connected), so the first call is made one at a time.
_CLIENT_LOCK = threading.Lock()


class LabHostPlugin(WorkerPlugin):
    """Holds a worker's :class:`DeviceHost`; announces and follows its devices."""

    name = PLUGIN_NAME

    def __init__(self, host: DeviceHost, poll_s: float = DEFAULT_POLL_S) -> None:
        self.host = host
        self.poll_s = poll_s
        self._worker: Any = None
        self._advertised: dict[str, float] = {}
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._cancels: CancelWatcher | None = None
        self._lock = threading.Lock()

    def cancel_watcher(self, client: Any) -> CancelWatcher:
        """The host's cancel watcher (made with the first job's client)."""
        with self._lock:
            if self._cancels is None:
                self._cancels = CancelWatcher(client)
            return self._cancels

    async def setup(self, worker: Any) -> None:
        self._worker = worker
        self._advertised = dict(worker.state.total_resources)
        self._kick = asyncio.Event()
        self.host.emit = self._emit
        self._task = asyncio.create_task(self._follow_devices())
        for backend in self.host.backends:
            backend.watch(self._hot_plug)

    async def teardown(self, worker: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.host.interrupt_all()

    def _emit(self, payload: dict[str, Any]) -> None:
        self._worker.log_event(WORKER_TOPIC, payload)

    def _hot_plug(self) -> None:
        """A backend saw a device come or go (any thread): rescan now."""
        if self._worker is not None and self._kick is not None:
            self._worker.loop.add_callback(self._kick.set)

    async def _follow_devices(self) -> None:
        while self._worker.status not in (Status.running, Status.closing, Status.closed):
            await asyncio.sleep(0.02)  # messages sent before registration would be lost
        self._emit(self.host.announcement())
        assert self._kick is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.poll_s)
            self._kick.clear()
            try:
                changed = await asyncio.to_thread(self.host.scan)
                await self._advertise()
            except Exception:  # a flaky backend must not stop the polling
                log.exception("device discovery on lab host %s failed", self.host.name)
                continue
            if changed:
                self._emit(self.host.announcement())

    async def _advertise(self) -> None:
        """Bring the worker's Dask resources in line with the devices online now."""
        wanted = self.host.resources()
        update = {k: v for k, v in wanted.items() if self._advertised.get(k) != v}
        update |= {k: 0.0 for k, v in self._advertised.items() if k not in wanted and v}
        if update:
            await self._worker.set_resources(**update)
            self._advertised.update(update)


def host_announcement(dask_worker: Any) -> dict[str, Any] | None:
    """Run on a worker with ``Client.run``: its devices, or None if it is no devlab worker."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return plugin.host.announcement() if isinstance(plugin, LabHostPlugin) else None


def run_remote_job(job: dict[str, Any], model_bytes: bytes | None = None) -> dict[str, Any]:
    """The task of one job attempt on a lab host: measure it, return its outcome.

    A small model travels with the task (it reaches the host while the job waits for its
    device); a large one is fetched from the dispatcher once per host.
    """
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, LabHostPlugin):
        return {"state": "interrupted", "error": f"worker {worker.name} is not a devlab worker"}
    with _CLIENT_LOCK:
        client = get_client()

    def fetch_model(sha256: str) -> bytes:
        if model_bytes is not None:
            return model_bytes
        return client.sync(client.scheduler.devlab_model, sha256=sha256)

    return plugin.host.run(Job.from_dict(job), fetch_model, plugin.cancel_watcher(client).watch)


class CancelWatcher:
    """Asks, every ``CANCEL_POLL_S``, whether a running job's cancel ``distributed.Event``
    is set; one thread per lab host, started with its first job."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._jobs: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, job_id: str, on_cancel: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_cancel`` once if ``job_id`` is cancelled; returns ``stop``."""
        with self._lock:
            self._jobs[job_id] = on_cancel
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._poll, name="devlab-cancel-watch", daemon=True
                )
                self._thread.start()
        return lambda: self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def _poll(self) -> None:
        while True:
            time.sleep(CANCEL_POLL_S)
            with self._lock:
                jobs = list(self._jobs.items())
            for job_id, on_cancel in jobs:
                try:
                    cancelled = Event(cancel_event_name(job_id), client=self._client).is_set()
                except Exception:  # the worker is closing; its jobs end with it
                    continue
                if cancelled:
                    self._forget(job_id)
                    on_cancel()
