"""devlab's dispatcher: it sits beside the Dask scheduler, owns the store (the record of
truth: the scheduler keeps its state in memory only) and hands queued jobs to the lab hosts.

It is a SchedulerPlugin, so it hears at once when a worker joins, announces its devices,
starts a job, reports progress or leaves. For every device id some lab host holds, it claims
queued jobs from the store (at most ``prefetch`` per holder, so a host can start its next job
the moment the current one ends) and submits one Dask task per hand-out, keyed
``devlab-<job id>-<attempt>-<n>`` and pinned by the ``device:<id>`` resource. Every
transition is written to the store as it happens, and published as an ordinary Lab event on
the ``devlab-lab`` topic, where consoles follow it (``console_api`` answers their requests).

Failure semantics (the scheduler runs with ``allowed_failures = 0``):
- the host of a running job dies: the task errs with ``KilledWorker`` at once; the job is
  re-queued under the same id and runs again (attempts + 1) on another holder of its device;
  a job handed to that host but not started yet goes back to the queue uncounted;
- no host offers the device any more: its jobs wait ``grace_s``, then fail with the reason;
- cancel sets the ``distributed.Event`` the job's host watches; the job stops at its next
  check, and a job still waiting for its device is withdrawn at once;
- a result is written once: only the current attempt of a running job may finish it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from distributed import Client, Event, Future, KilledWorker
from distributed.client import FutureCancelledError
from distributed.diagnostics.plugin import SchedulerPlugin

from backends.cluster.console_api import console_handlers
from backends.cluster.model_files import ModelFiles
from backends.cluster.registry import ClusterDevices, DeviceRegistry
from backends.cluster.remote import host_announcement, run_remote_job
from backends.cluster.resources import resource_name
from backends.cluster.wire import (
    DISPATCHER_NAME,
    LAB_TOPIC,
    WORKER_TOPIC,
    cancel_event_name,
    encode_event,
    task_key,
)
from backends.core.events import (
    Event as LabEvent,
)
from backends.core.events import (
    JobCancelled,
    JobFailed,
    JobFinished,
    JobQueued,
    JobStarted,
    LogLine,
)
from backends.core.lab import Lab
from backends.core.records import Device, Job, JobState, Result
from backends.core.store import Store

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 300.0
DEFAULT_PREFETCH = 2  # jobs per holder handed out at once: one runs, the next waits on the host
MAX_ATTEMPTS = 5  # a job interrupted this often fails with the last reason
INLINE_MODEL_BYTES = 8 << 20  # models up to this size travel with their task
TICK_S = 0.25  # how often waiting devices and stuck tasks are looked at without a wake-up


@dataclass
class Flight:
    """One attempt of a job handed to the cluster."""

    job: Job
    key: str
    future: Future
    worker: str | None = None  # the address of the worker the scheduler gave it to
    host: str | None = None  # that lab host's name
    started: bool = False
    cancel_requested: bool = False


class Dispatcher(SchedulerPlugin):
    """Claims jobs from the store, submits them to the lab hosts, records what happens."""

    name = DISPATCHER_NAME

    def __init__(
        self,
        store: Store,
        grace_s: float = DEFAULT_GRACE_S,
        prefetch: int = DEFAULT_PREFETCH,
        security: Any = None,
    ) -> None:
        self.store = store
        self.grace_s = grace_s
        self.prefetch = max(1, prefetch)
        self.security = security
        self.registry = DeviceRegistry()
        self.lab = Lab(store, [ClusterDevices(self.registry, self._busy_devices)])
        self.models = ModelFiles(store.path.parent / "cluster-models")
        self.flights: dict[str, Flight] = {}  # job id -> its current attempt
        self._by_key: dict[str, Flight] = {}
        self.paused = False
        self.scheduler: Any = None
        self.client: Client | None = None
        self._wake: asyncio.Event | None = None
        self._pump: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._closed = False
        self._dispatches = 0  # task keys stay unique when an attempt is handed out again

    # -- life --------------------------------------------------------------------------------

    async def attach(self, scheduler: Any) -> None:
        """Join ``scheduler`` (already listening): hooks, handlers, a client, the dispatch loop."""
        self.scheduler = scheduler
        scheduler.allowed_failures = 0  # a host death errs the task: the store decides the rest
        self._wake = asyncio.Event()
        for job in self.store.recover_interrupted():  # a dispatcher died with these handed out
            log.info("job %s was running when the dispatcher stopped; re-queued", job.id)
        self.lab.subscribe(self._broadcast)
        scheduler.handlers.update(console_handlers(self))
        scheduler.add_plugin(self, name=DISPATCHER_NAME)
        self.client = await Client(
            scheduler.address,
            asynchronous=True,
            security=self.security,
            name="devlab-dispatcher",
            set_as_default=False,
        )
        announcements = await self.client.run(host_announcement)  # hosts that came first
        for worker, announcement in announcements.items():
            if announcement:
                self._on_devices(worker, announcement)
        self._pump = asyncio.create_task(self._dispatch_loop())

    async def close(self) -> None:
        """Stop dispatching. Jobs handed out stay ``running`` in the store and are re-queued
        by the next dispatcher on this store (their hosts go down with the scheduler)."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in [self._pump, *self._background] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.close()

    # -- scheduler hooks ---------------------------------------------------------------------

    def log_event(self, topic: str, msg: Any) -> None:
        if topic != WORKER_TOPIC or not isinstance(msg, dict):
            return
        kind = msg.get("kind")
        if kind == "devices":
            self._on_devices(msg["worker"], msg)
        elif kind == "started":
            self._on_started(msg)
        elif kind == "event":
            self.scheduler.log_event(LAB_TOPIC, msg["event"])

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        host = self.registry.remove(worker)
        self._refresh_devices()
        for flight in [f for f in self.flights.values() if f.worker == worker]:
            self._lost(flight, f"lab host {host or worker} left")
        self._kick()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        flight = self._by_key.get(key) if isinstance(key, str) else None
        if flight is not None and finish == "processing":
            task = self.scheduler.tasks.get(key)
            placed = getattr(task, "processing_on", None)
            if placed is not None:
                flight.worker, flight.host = placed.address, self.registry.host_name(placed.address)

    # -- what the hosts say ------------------------------------------------------------------

    def _on_devices(self, worker: str, announcement: dict[str, Any]) -> None:
        if worker not in self.scheduler.workers:
            return  # a late message from a worker that has left
        devices = [Device.from_dict(d) for d in json.loads(announcement["devices"])]
        self.registry.update(worker, announcement["host"], devices)
        self._refresh_devices()
        for flight in list(self.flights.values()):  # handed out, then the device went away
            idle = flight.worker == worker and not flight.started
            if idle and not self.registry.holds(worker, flight.job.device_id):
                self._lost(flight, f"{flight.job.device_id} left lab host {announcement['host']}")
        self._kick()

    def _on_started(self, msg: dict[str, Any]) -> None:
        flight = self.flights.get(msg.get("job_id", ""))
        if flight is None or flight.job.attempts != msg.get("attempt"):
            return
        flight.started, flight.worker = True, msg.get("worker")
        flight.host = msg.get("host") or flight.host
        self.lab.events.publish(JobStarted(self.store.job(flight.job.id)))
        self._refresh_devices()

    # -- dispatch ----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                self._dispatch()
                self._expire_unoffered()
                self._unstick()
            except Exception:  # one bad record must not stop the lab
                log.exception("devlab dispatch failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()

    def _dispatch(self) -> None:
        if self.paused or self.client is None:
            return
        in_flight = Counter(flight.job.device_id for flight in self.flights.values())
        for device_id, holders in self.registry.online_holders().items():
            room = len(holders) * self.prefetch - in_flight[device_id]
            while room > 0:
                claimed = self.store.claim_batch(device_id, 1, lambda job: True)
                if not claimed:
                    break
                self._submit(claimed[0])
                room -= 1

    def _submit(self, job: Job) -> None:
        assert self.client is not None
        self._dispatches += 1
        key = task_key(job.id, job.attempts, self._dispatches)
        future = self.client.submit(
            run_remote_job,
            job.to_dict(),
            self._inline_model(job),
            key=key,
            resources={resource_name(job.device_id): 1},
            pure=False,
            retries=0,
            priority=-job.priority,  # devlab: lower first; Dask: higher first
        )
        flight = Flight(job, key, future)
        self.flights[job.id] = flight
        self._by_key[key] = flight
        self._spawn(self._follow(flight))

    async def _follow(self, flight: Flight) -> None:
        try:
            outcome = await flight.future
        except KilledWorker:
            self._lost(flight, f"lab host {flight.host or flight.worker} died while running it")
            return
        except FutureCancelledError:
            self._settle(flight, {"state": "cancelled" if flight.cancel_requested else "lost"})
            return
        except Exception as error:  # the task itself broke (not the measurement)
            self._settle(flight, {"state": "failed", "error": f"{type(error).__name__}: {error}"})
            return
        finally:
            flight.future.release()  # a host that dies later must not recompute a kept result
        self._settle(flight, outcome)

    def _settle(self, flight: Flight, outcome: dict[str, Any]) -> None:
        """Write an attempt's outcome, if it is still the job's current attempt."""
        if not self._forget(flight):
            return
        job_id, state = flight.job.id, outcome.get("state")
        stored = self.store.job(job_id)
        if stored.state is not JobState.RUNNING or stored.attempts != flight.job.attempts:
            log.warning("ignoring a stale outcome of %s (attempt %s)", job_id, flight.job.attempts)
            return
        publish = self.lab.events.publish
        if state == "done":
            result = Result.from_dict(outcome["result"])
            publish(JobFinished(self.store.finish(job_id, result), result))
        elif state == "failed":
            error = str(outcome.get("error") or "failed on its lab host")
            publish(JobFailed(self.store.fail(job_id, error), error))
        elif state == "cancelled" or flight.cancel_requested:
            publish(JobCancelled(self.store.cancel(job_id)))
        else:  # interrupted on the host (it left, or the device did): run it again
            self._run_again(flight, str(outcome.get("error") or "interrupted"))
        self._refresh_devices()  # busy while another holder still runs one of its jobs
        self._kick()

    def _lost(self, flight: Flight, reason: str) -> None:
        """The attempt's host or device went away: run the job again (or end a cancelled one)."""
        if not self._forget(flight):
            return
        self._withdraw(flight)
        stored = self.store.job(flight.job.id)
        if stored.state is JobState.RUNNING and stored.attempts == flight.job.attempts:
            if flight.cancel_requested:
                self.lab.events.publish(JobCancelled(self.store.cancel(flight.job.id)))
            else:
                self._run_again(flight, reason)
        self._kick()

    def _run_again(self, flight: Flight, reason: str) -> None:
        """Back to the queue: a counted attempt if it had started on its device (the host's
        "started" message precedes its result), handed back uncounted if not."""
        if not flight.started:
            self.lab.events.publish(JobQueued(self.store.release(flight.job.id)))
            return
        if flight.job.attempts >= MAX_ATTEMPTS:  # hosts keep dying under it: stop trying
            self._fail(flight.job.id, f"gave up after {flight.job.attempts} attempts: {reason}")
            return
        job = self.store.requeue(flight.job.id)
        self.lab.events.publish(JobQueued(job))
        self.lab.events.publish(
            LogLine(
                f"{job.model.name} on {job.device_id} (attempt {flight.job.attempts}): "
                f"{reason}; re-queued",
                job.id,
                level="warning",
            )
        )

    def _forget(self, flight: Flight) -> bool:
        """Drop a finished attempt; False if it was not the current one (already handled)."""
        if self.flights.get(flight.job.id) is not flight:
            return False
        del self.flights[flight.job.id]
        self._by_key.pop(flight.key, None)
        if flight.cancel_requested:
            self._spawn(self._clear_cancel(flight.job.id))
        return True

    def _expire_unoffered(self) -> None:
        """Fail the jobs of devices no lab host has offered for longer than the grace period."""
        now = time.monotonic()
        expired = {
            u.device_id: (
                f"no lab host offers device {u.device_id} for {now - u.since:.0f} s "
                f"(last seen on worker {u.last_host})"
            )
            for u in self.registry.unoffered()
            if now - u.since >= self.grace_s
        }
        if not expired:
            return
        for flight in [f for f in self.flights.values() if f.job.device_id in expired]:
            if not flight.started and self._forget(flight):
                self._withdraw(flight)
                self._fail(flight.job.id, expired[flight.job.device_id])
        for device_id, reason in expired.items():
            for job in self.store.queued_on(device_id):
                self._fail(job.id, reason)

    def _fail(self, job_id: str, reason: str) -> None:
        self.lab.events.publish(JobFailed(self.store.fail(job_id, reason), reason))

    def _unstick(self) -> None:
        """A task that found no host (its device left between claim and placement) is
        withdrawn and its job re-queued, so it is placed again when a holder is back."""
        holders = self.registry.online_holders()
        for flight in list(self.flights.values()):
            task = self.scheduler.tasks.get(flight.key)
            if task is not None and task.state == "no-worker" and flight.job.device_id in holders:
                self._lost(flight, "no lab host took it")

    # -- what consoles ask (see console_api) -------------------------------------------------

    async def cancel(self, job_id: str) -> None:
        """Cancel a job: a queued one at once, a handed-out one at its next check."""
        flight = self.flights.get(job_id)
        if flight is None:
            self.lab.cancel(job_id)
            return
        flight.cancel_requested = True
        if self.client is not None:
            await Event(cancel_event_name(job_id), client=self.client).set()
        if not flight.started:  # still waiting for its device: withdraw it now
            self._withdraw(flight)

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the whole cluster's dispatch (running jobs finish)."""
        self.paused = paused
        self._kick()

    # -- helpers -----------------------------------------------------------------------------

    def _inline_model(self, job: Job) -> bytes | None:
        """The model's bytes when small enough to travel with the task, else None (the
        host fetches it once; the scheduler keeps task arguments in memory)."""
        path = self.models.find(job.model.sha256)
        if path is None or path.stat().st_size > INLINE_MODEL_BYTES:
            return None
        return path.read_bytes()

    def _withdraw(self, flight: Flight) -> None:
        """Cancel an attempt's task (a task already running stops at its next check)."""
        if self.client is not None:
            self._spawn(self.client.cancel([flight.future]))

    def _busy_devices(self) -> set[str]:
        return {flight.job.device_id for flight in self.flights.values() if flight.started}

    def _refresh_devices(self) -> None:
        self.lab.discover()  # publishes DeviceAdded / DeviceChanged like a local lab

    def _broadcast(self, event: LabEvent) -> None:
        if isinstance(event, JobQueued):
            self._kick()
        if self.scheduler is not None:
            self.scheduler.log_event(LAB_TOPIC, encode_event(event))

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _clear_cancel(self, job_id: str) -> None:
        if self.client is not None:
            await Event(cancel_event_name(job_id), client=self.client).clear()
