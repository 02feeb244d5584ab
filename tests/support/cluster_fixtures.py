"""An in-process devlab cluster on 127.0.0.1 for tests: the real scheduler with its
dispatcher and real Dask workers with their lab hosts, all on one event loop in a background
thread, with lab hosts whose device backend's sessions sleep and record where and when they
ran.

Only the far end of a device is a test double (``support.fakes.SleepBackend``); the store,
the dispatcher, Dask, the worker plugin and ``DeviceWorker`` are the production code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from distributed import Client

from backends.cluster.client import ClusterLab
from backends.cluster.dispatcher import Dispatcher
from backends.cluster.lab_host import DeviceHost
from backends.cluster.services import TlsFiles, cluster_security, lab_scheduler, lab_worker
from backends.core.events import Event
from backends.core.records import JobSettings, Model
from backends.core.store import STORE_FILE, Store
from backends.power.capture import MonitorLink
from support.fakes import ITERATION_S, SessionLog, SleepBackend

T = TypeVar("T")
WAIT_S = 30.0

# One iteration sleeps ITERATION_S; no canary, no parity, no precision gate: a job's length is
# its runs x ITERATION_S, and progress (and every stop check) comes every 0.2 s.
QUICK = JobSettings(warmup=0, runs=5, rounds=1, precision_pct=0, skip_canary=True, skip_parity=True)


def settings_for(seconds: float) -> JobSettings:
    """Settings for a job that keeps its device busy about ``seconds``."""
    runs = max(1, round(seconds / ITERATION_S))
    return JobSettings(
        warmup=0, runs=runs, rounds=1, precision_pct=0, skip_canary=True, skip_parity=True
    )


def model_file(folder: Path, name: str) -> Model:
    """A model file whose bytes are unique to ``name`` (SleepBackend never parses it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    data = f"not really onnx: {name}".encode()
    path.write_bytes(data)
    return Model(
        path=str(path), name=name, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=WAIT_S)
        self.loop.close()


@dataclass
class LabWorker:
    host: DeviceHost
    worker: Any
    stack: contextlib.AsyncExitStack


class InProcessCluster:
    """Scheduler + dispatcher + named workers on 127.0.0.1, and consoles to talk to them."""

    def __init__(
        self,
        folder: Path,
        grace_s: float = 60.0,
        prefetch: int = 2,
        tls: TlsFiles | None = None,
    ) -> None:
        self.folder = folder
        self.tls = tls
        self.log = SessionLog()
        self.store = Store(folder / "dispatcher" / STORE_FILE)
        self.loop = LoopThread()
        self.workers: dict[str, LabWorker] = {}
        self.labs: list[ClusterLab] = []
        self._stack = contextlib.AsyncExitStack()
        self.dispatcher: Dispatcher = self.loop.run(
            self._stack.enter_async_context(
                lab_scheduler(
                    self.store,
                    port=0,
                    grace_s=grace_s,
                    prefetch=prefetch,
                    security=cluster_security(tls, "scheduler"),
                )
            )
        )
        self.address: str = self.dispatcher.scheduler.address
        # Inside a task, get_client() takes the process's default client. One devlab worker
        # runs per process in production; here several share a process, and the first
        # worker's own client would die with it. A client of the test's owns that role.
        self._default_client = Client(
            self.address, set_as_default=True, security=cluster_security(tls, "client")
        )

    def add_worker(
        self,
        name: str,
        device_ids: tuple[str, ...] = ("host:cpu",),
        aliases: dict[str, str] | None = None,
        iteration_s: float = ITERATION_S,
        power_links: Sequence[MonitorLink] = (),
    ) -> SleepBackend:
        backend = SleepBackend(name, self.log, device_ids, iteration_s)
        host = DeviceHost(name, [backend], self.folder / f"worker-{name}", aliases, power_links)

        async def start() -> LabWorker:
            stack = contextlib.AsyncExitStack()
            worker = await stack.enter_async_context(
                lab_worker(
                    self.address,
                    host,
                    nthreads=4,
                    poll_s=0.2,
                    security=cluster_security(self.tls, "worker"),
                )
            )
            return LabWorker(host, worker, stack)

        self.workers[name] = self.loop.run(start())
        return backend

    def kill_worker(self, name: str) -> None:
        """Cut the worker off as a crash would (its stream to the scheduler just breaks)."""
        entry = self.workers.pop(name)

        async def kill() -> None:
            entry.worker.batched_stream.abort()
            await entry.stack.aclose()

        self.loop.run(kill())
        entry.host.close()

    def open_lab(self) -> ClusterLab:
        lab = ClusterLab(self.address, security=cluster_security(self.tls, "client"))
        self.labs.append(lab)
        return lab

    def close(self) -> None:
        for lab in self.labs:
            lab.shutdown()
        for name in list(self.workers):
            entry = self.workers.pop(name)
            self.loop.run(entry.stack.aclose())
            entry.host.close()
        self._default_client.close()
        self.loop.run(self._stack.aclose())
        self.loop.stop()
        self.store.close()


class Recorder:
    """Keeps every event a lab publishes (subscribe it)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]


def make_tls_files(folder: Path) -> TlsFiles:
    """A throwaway CA and one certificate for 127.0.0.1 signed by it (openssl, EC keys)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=devlab test CA",
    )
    openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=devlab node")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )
    return TlsFiles(str(folder / "ca.pem"), str(folder / "node.pem"), str(folder / "node.key"))
