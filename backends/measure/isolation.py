"""Timed loops in a process of their own, so nothing else shares their interpreter.

A device worker of an in-process runtime (host ONNX Runtime) drives its sessions through one
spawned *measurement process*. The sessions are opened there and stay loaded across
interleaved rounds; only small messages cross the pipe: open, warm up, run a round, the
round's latencies (in chunks, about ten times a second, so live views keep moving), close.
The console, the store, the progress renderer and the other devices' workers never run in the
timing interpreter, so they never take its GIL or its caches in the middle of a timed call.

The process is also a crash boundary. A runtime that segfaults, aborts or hangs (no iteration
for ``stall_timeout_s``) takes down this process only: the call raises
:class:`RuntimeCrashed` naming the signal and the round, the next call starts a fresh process,
and the other sessions that lived in the dead one are opened again there (and warmed up)
before their next round, so the other jobs of the batch go on and nothing measured is lost.

A backend opts in by returning a picklable factory from ``DeviceBackend.isolation()``; the
child (``python -m backends.measure.child``, a fresh interpreter that never imports the
caller's ``__main__``) builds its own backend from it. ``pin`` (a CPU core) is applied in the
child before each round with ``os.sched_setaffinity``. POSIX only (the child's end of the pipe
is an inherited socket); elsewhere sessions stay in the worker's process.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from backends.core.exits import exit_cause
from backends.core.records import Device, Job, Model
from backends.devices.base import (
    BenchError,
    BenchSession,
    DeviceBackend,
    IterationCallback,
    JobInterrupted,
    LayerProfile,
    Timed,
)

log = logging.getLogger(__name__)

BackendFactory = Callable[[], DeviceBackend]

CHUNK_INTERVAL_S = 0.1  # how often the child sends the latencies measured so far
PAIRED_BLOCK_S = 0.02  # a paired round alternates this much of the model ...
REFERENCE_BLOCK_S = 0.0012  # ... with about this much of each drift reference
REFERENCE_BLOCK_MAX_RUNS = 8
DEFAULT_STALL_TIMEOUT_S = 300.0  # no finished iteration for this long: the runtime hung
POLL_S = 0.25  # how often the parent checks that the child is alive while waiting
START_TIMEOUT_S = 120.0


class RuntimeCrashed(BenchError):
    """The measurement process died (a signal, an abort) or hung inside the runtime."""


class MeasurementProcess:
    """One spawned child that hosts the sessions of one device worker; restarted after a crash.

    Thread-safe: one request at a time (a device worker runs one round at a time anyway).
    """

    def __init__(
        self,
        name: str,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.stall_timeout_s = stall_timeout_s
        self.log_path = log_path  # the child's stdout and stderr (a runtime's own messages)
        self.generation = 0  # bumped on every (re)start: sessions of an older one are gone
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.RLock()
        self._handles = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    def _ensure(self) -> Connection:
        if self._process is not None and self._process.poll() is None and self._conn is not None:
            return self._conn
        self._discard()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # the child imports what this process can (the backend factory's module included)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "backends.measure.child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C is the parent's to handle
            )
        finally:
            theirs.close()
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        self._process, self._conn = process, Connection(ours.detach())
        self.pid = process.pid
        self.generation += 1
        return self._conn

    def _discard(self) -> None:
        """Forget the current child, killing it if it still runs (it is ours: we spawned it).
        The sessions it held are gone: a new generation makes theirs stale."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None:
            self.generation += 1
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
        if process is not None:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    def close(self) -> None:
        """Ask the child to exit; kill it when it does not within a few seconds."""
        with self._lock:
            process, conn = self._process, self._conn
            if process is not None and conn is not None and process.poll() is None:
                with contextlib.suppress(OSError, EOFError):
                    conn.send(("exit", 0))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            self._discard()

    # -- requests ----------------------------------------------------------------------------

    def new_handle(self) -> int:
        return next(self._handles)

    def request(
        self,
        message: tuple[Any, ...],
        what: str,
        on_chunk: Callable[[int, list[float]], None] | None = None,
    ) -> Any:
        """Send ``message``, wait for its reply; ``on_chunk(done, new latencies)`` gets a
        round's progress and may raise JobInterrupted (the round is then stopped in the child
        and the exception re-raised once the child has answered)."""
        with self._lock:
            conn = self._ensure()
            try:
                conn.send(message)
            except OSError as error:
                raise self._crashed(what) from error
            interrupted: JobInterrupted | None = None
            last_heard = time.monotonic()
            # a round and a warmup report every iteration; a profiled pass only at its end
            timeout = {"open": START_TIMEOUT_S, "profile": 4 * self.stall_timeout_s}.get(
                message[0], self.stall_timeout_s
            )
            while True:
                try:
                    ready = conn.poll(POLL_S)
                except (OSError, EOFError) as error:
                    raise self._crashed(what) from error
                if not ready:
                    if self._process is None or self._process.poll() is not None:
                        raise self._crashed(what)
                    if time.monotonic() - last_heard > timeout:
                        raise self._hung(what, timeout)
                    continue
                try:
                    reply = conn.recv()
                except (OSError, EOFError) as error:
                    raise self._crashed(what) from error
                last_heard = time.monotonic()
                kind = reply[0]
                if kind == "chunk":
                    if on_chunk is not None and interrupted is None:
                        try:
                            on_chunk(reply[1], reply[2])
                        except JobInterrupted as stop:
                            interrupted = stop
                            conn.send(("stop", 0))
                    continue
                if interrupted is not None:
                    raise interrupted
                if kind == "ok":
                    return reply[1]
                if kind == "bench_error":
                    raise BenchError(reply[1])
                if kind == "stopped":
                    raise JobInterrupted(what)
                raise BenchError(f"{what} failed in the measurement process: {reply[1]}")

    def _crashed(self, what: str) -> RuntimeCrashed:
        process = self._process
        code = None
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=5)
        self._discard()
        cause = "the measurement process vanished" if code is None else exit_cause(code)
        return RuntimeCrashed(f"runtime crashed: {cause} {what}")

    def _hung(self, what: str, timeout: float) -> RuntimeCrashed:
        self._discard()
        return RuntimeCrashed(
            f"runtime hung: no iteration finished in {timeout:g} s {what}; the measurement "
            "process was killed"
        )


class IsolatedSession(BenchSession):
    """A session that lives in the measurement process; this object only sends requests.

    When the process was restarted (another session crashed it) the session is opened and
    warmed up again before its next request, so the job's remaining rounds go on."""

    def __init__(
        self,
        process: MeasurementProcess,
        factory: BackendFactory,
        device: Device,
        job: Job,
        model: Model,
    ) -> None:
        self.process = process
        self._open_args = (factory, device, job, model)
        self.job = job
        self._warmup = 0
        self._runs = 0
        self._handle = 0
        self._generation = 0
        self.calibrates = False
        self._returns_outputs = False
        self._open()

    def _open(self) -> None:
        handle = self.process.new_handle()
        reply = self.process.request(("open", handle, *self._open_args), "while loading the model")
        self._handle, self._generation = handle, self.process.generation
        self.info = reply["info"]
        self.calibrates = reply["calibrates"]
        self._returns_outputs = reply["returns_outputs"]

    def _call(self, op: str, what: str, *args: Any, on_chunk: Any = None) -> Any:
        self.ensure_loaded(what)
        return self.process.request((op, self._handle, *args), what, on_chunk)

    def warmup(self, iterations: int) -> None:
        self._warmup = iterations
        self._call("warmup", "during warmup", iterations)

    def run(
        self,
        iterations: int | None,
        min_seconds: float | None,
        on_iteration: IterationCallback,
    ) -> Timed:
        self._runs += 1
        latencies: list[float] = []

        def on_chunk(done: int, chunk: list[float]) -> None:
            latencies.extend(chunk)
            on_iteration(done, latencies)

        pin = self.job.settings.pin
        reply = self._call(
            "run", f"in round {self._runs}", iterations, min_seconds, pin, on_chunk=on_chunk
        )
        latencies.extend(reply["rest"])
        return Timed(latencies, reply["summary"])

    def run_paired(
        self,
        references: Sequence[IsolatedSession],
        iterations: int | None,
        min_seconds: float | None,
        on_iteration: IterationCallback,
    ) -> tuple[Timed, list[list[float]]]:
        """A round of this session in alternating blocks with ``references`` (the drift
        references, in the same process): this session's Timed and, per reference, every
        latency it measured in the round."""
        self._runs += 1
        latencies: list[float] = []

        def on_chunk(done: int, chunk: list[float]) -> None:
            latencies.extend(chunk)
            on_iteration(done, latencies)

        what = f"in round {self._runs}"
        for reference in references:
            reference.ensure_loaded(what)
        self.ensure_loaded(what)
        pin = self.job.settings.pin
        handles = tuple(reference._handle for reference in references)
        reply = self.process.request(
            ("run_paired", self._handle, iterations, min_seconds, pin, *handles),
            what,
            on_chunk,
        )
        latencies.extend(reply["rest"])
        return Timed(latencies, None), reply["references"]

    def ensure_loaded(self, what: str) -> None:
        """Load the model again if the process restarted since it was opened."""
        if self._generation != self.process.generation:
            self._open()
            if self._warmup:
                self.process.request(("warmup", self._handle, self._warmup), what)

    def outputs(self, feeds: Mapping[str, Any]) -> list[Any] | None:
        if not self._returns_outputs:
            return None
        return self._call("outputs", "while computing outputs", dict(feeds))

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile | None:
        return self._call("profile", "during per-layer profiling", iterations, log_dir)

    def close(self) -> None:
        if self._generation == self.process.generation and self._handle:
            with contextlib.suppress(BenchError):
                self.process.request(("close", self._handle), "while closing")
        self._handle = 0


def isolated_opener(
    backend: DeviceBackend, process: MeasurementProcess | None
) -> Callable[[Device, Job, Model], BenchSession]:
    """``open_session`` for a worker: through ``process`` when the backend can be rebuilt in
    a child (``backend.isolation()``), else the backend's own, in this process."""
    factory = backend.isolation() if process is not None and os.name == "posix" else None
    if factory is None or process is None:
        return backend.open_session

    def open_isolated(device: Device, job: Job, model: Model) -> BenchSession:
        return IsolatedSession(process, factory, device, job, model)

    return open_isolated


# -- the child ---------------------------------------------------------------------------------


class _Stopped(Exception):
    """The parent asked the running round to stop (a cancel or a shutdown)."""


def serve(conn: Connection) -> None:
    """The measurement process: open sessions and run their requests until told to exit."""
    backends: dict[Any, DeviceBackend] = {}
    sessions: dict[int, BenchSession] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        op, handle, *args = message
        if op == "exit":
            for session in sessions.values():
                with contextlib.suppress(Exception):
                    session.close()
            return
        if op == "stop":
            continue  # a stop that arrived after its round ended
        try:
            reply = _handle(conn, op, handle, args, backends, sessions)
        except _Stopped:
            conn.send(("stopped", None))
            continue
        except BenchError as error:
            conn.send(("bench_error", str(error)))
            continue
        except Exception as error:  # a runtime's own exception types
            log.debug("measurement request failed:\n%s", traceback.format_exc())
            conn.send(("error", f"{type(error).__name__}: {error}"))
            continue
        conn.send(("ok", reply))


def _handle(
    conn: Connection,
    op: str,
    handle: int,
    args: list[Any],
    backends: dict[Any, DeviceBackend],
    sessions: dict[int, BenchSession],
) -> Any:
    from backends.devices.base import returns_outputs

    if op == "open":
        factory, device, job, model = args
        backend = backends.get(factory) or backends.setdefault(factory, factory())
        session = backend.open_session(device, job, model)
        sessions[handle] = session
        return {
            "info": session.info,
            "calibrates": getattr(session, "calibrates", False),
            "returns_outputs": returns_outputs(session),
        }
    session = sessions.get(handle)
    if session is None:
        raise BenchError(f"no session {handle} in the measurement process")
    if op == "warmup":
        for done in range(1, args[0] + 1):  # one at a time: the parent hears it is not hung
            session.warmup(1)
            conn.send(("chunk", done, []))
        return None
    if op in ("run", "run_paired"):
        iterations, min_seconds, pin, *reference_handles = args
        if pin is not None:
            _pin(pin)
        if op == "run":
            return _run_round(conn, session, iterations, min_seconds)
        references = [sessions.get(handle) for handle in reference_handles]
        if not references or any(reference is None for reference in references):
            raise BenchError("a reference session is not in the measurement process")
        return _run_paired(conn, session, references, iterations, min_seconds)  # type: ignore[arg-type]
    if op == "outputs":
        return session.outputs(args[0])
    if op == "profile":
        return session.profile_layers(args[0], args[1])
    if op == "close":
        sessions.pop(handle, None)
        session.close()
        return None
    raise BenchError(f"unknown measurement request {op!r}")


def _pin(core: int) -> None:
    try:
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError, ValueError) as error:
        raise BenchError(
            f"cannot pin the measurement process to CPU core {core}: {error}. Choose a core "
            f"between 0 and {(os.cpu_count() or 1) - 1}, or drop --pin"
        ) from error


class _Chunks:
    """Sends a round's new latencies to the parent about every ``CHUNK_INTERVAL_S``, and
    takes the parent's stop. The per-iteration check compares a counter only; the clock is
    read at iteration counts spaced to land about that far apart, so the timed loop stays as
    bare as a hand-written one."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sent = 0
        self.next_check = 1
        self.started = self.last = time.perf_counter()

    def check(self, total: int, pending: Callable[[int], list[float]]) -> None:
        """``total`` iterations done in the round; ``pending(sent)`` gives those not sent."""
        if total < self.next_check:
            return
        now = time.perf_counter()
        per_iteration = (now - self.started) / total
        self.next_check = total + max(1, int(CHUNK_INTERVAL_S / max(per_iteration, 1e-7)))
        if now - self.last < CHUNK_INTERVAL_S / 2:
            return
        self.last = now
        self.conn.send(("chunk", total, pending(self.sent)))
        self.sent = total
        if self.conn.poll() and self.conn.recv()[0] == "stop":
            raise _Stopped


def _run_round(
    conn: Connection, session: BenchSession, iterations: int | None, min_seconds: float | None
) -> dict[str, Any]:
    """One round, its latencies streamed in chunks; only the unsent rest is in the reply."""
    chunks = _Chunks(conn)

    def on_iteration(done: int, latencies: list[float]) -> None:
        chunks.check(done, lambda sent: latencies[sent:done])

    try:
        timed = session.run(iterations, min_seconds, on_iteration)
    except JobInterrupted as error:  # a session may turn a stop into its own interrupt
        raise _Stopped from error
    return {"rest": list(timed.latencies_us[chunks.sent :]), "summary": timed.summary}


def _run_paired(
    conn: Connection,
    session: BenchSession,
    references: Sequence[BenchSession],
    iterations: int | None,
    min_seconds: float | None,
) -> dict[str, Any]:
    """One round in alternating blocks: ``PAIRED_BLOCK_S`` of the model, then about
    ``REFERENCE_BLOCK_S`` of each reference (at least one run), until the round's iterations
    and seconds are reached. All see the same moments of the machine, so their ratio cancels
    interference that a reference measured before the round misses."""
    chunks = _Chunks(conn)
    model: list[float] = []
    measured: list[list[float]] = [[] for _ in references]
    started = time.perf_counter()
    wanted = max(iterations or 1, 1)
    block = 1  # iterations in the next model block: sized to PAIRED_BLOCK_S once timed
    while True:
        if not min_seconds:  # a round sized by count gets exactly its count
            block = min(block, wanted - len(model))
        base = len(model)

        def on_iteration(done: int, latencies: list[float], base: int = base) -> None:
            chunks.check(
                base + done, lambda sent: model[sent:] + latencies[max(0, sent - base) : done]
            )

        try:
            timed = session.run(block, None, on_iteration)
        except JobInterrupted as error:
            raise _Stopped from error
        model.extend(timed.latencies_us)
        for reference, values in zip(references, measured, strict=True):
            values.extend(reference.run(_reference_runs(values), None, _quiet).latencies_us)
        if len(model) >= wanted and time.perf_counter() - started >= (min_seconds or 0.0):
            break
        mean_us = sum(timed.latencies_us) / max(len(timed.latencies_us), 1)
        block = max(1, int(PAIRED_BLOCK_S * 1e6 / max(mean_us, 1e-3)))
    return {"rest": model[chunks.sent :], "summary": None, "references": measured}


def _reference_runs(measured: Sequence[float]) -> int:
    """Runs of a reference in its next block: ``REFERENCE_BLOCK_S`` at its pace so far (two
    before it is timed), never fewer than one or more than ``REFERENCE_BLOCK_MAX_RUNS``."""
    if not measured:
        return 2
    recent = measured[-8:]
    mean_us = sum(recent) / len(recent)
    runs = int(REFERENCE_BLOCK_S * 1e6 / max(mean_us, 1e-3))
    return min(REFERENCE_BLOCK_MAX_RUNS, max(1, runs))


def _quiet(done: int, latencies: list[float]) -> None:
    """The reference's blocks report no progress of their own."""
