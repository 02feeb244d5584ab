"""The fake device backends and sessions the tests share: each stands in for a device at the
far end of the device contract (``backends.devices.base``), never for devlab itself.

- ``ScriptedBackend`` / ``ScriptedSession``: model names script the behaviour (``fail*``,
  ``crash*``, ``meet*``, ``summary*``, ``endless*``, ``badprofile*``); counts what ran at once.
- ``BrokenBackend``: discovery always fails (an adb server that is not running).
- ``PhasedDevice`` / ``PhasedSession``: a device whose pace changes after every round (canary
  and drift tests).
- ``PluggableBackend`` / ``FixedLatencySession``: devices that come and go (hot-plug) and run
  fixed latencies (console tests).
- ``FixedBackend``: the same devices always, running nothing (snapshot tests).
- ``SleepBackend`` / ``SleepSession`` with ``Session`` / ``SessionLog``: cluster lab hosts whose
  sessions sleep and log themselves; ``StampedSleepBackend`` / ``StampedSleepSession``: one
  stand-in device per host with wall-clock conditions (the cluster dispatch benchmark).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.core.records import Capabilities, Device, Job, Model, Stats
from backends.devices.base import (
    BenchError,
    BenchSession,
    DeviceBackend,
    IterationCallback,
    SessionInfo,
    Timed,
)

SAFETY_NET_S = 30.0  # an endless session stops by itself after this, should a stop never come
SCRIPTED_WAIT_S = 15.0  # the scripted device's bound: its meeting barrier and endless runs
FAIL_TEXT = "fake:a ran out of memory; try a smaller input shape"
CANARY_US = 300.0  # the phased device's canary latency at its normal pace
ITERATION_S = 0.01  # a SleepSession's iteration


# -- scripted jobs (core) -------------------------------------------------------------------------


class ScriptedBackend(DeviceBackend):
    """Phones for the Lab tests: sessions behave by model name (see ``ScriptedSession``) and the
    backend counts what was opened and what ran at once, per device and in total."""

    kind = "scripted"
    supports_canary = False  # the canary has its own tests (test_interleave.py)

    def __init__(self, device_ids: tuple[str, ...] = ("fake:a",), runtimes=("rt", "rt2")) -> None:
        self.device_ids = device_ids
        self.runtimes = list(runtimes)
        self.lock = threading.Lock()
        self.opened: list[tuple[str, str]] = []  # (device id, model name), in open order
        self.open_now: dict[str, int] = defaultdict(int)
        self.max_open: dict[str, int] = defaultdict(int)
        self.max_open_total = 0
        self.closed = 0
        self.endless_running = threading.Event()
        self.release_endless = threading.Event()
        self.meeting = threading.Barrier(2, timeout=SCRIPTED_WAIT_S)
        self.summaries: list[float] = []
        self.running_now: dict[str, int] = defaultdict(int)
        self.max_running: dict[str, int] = defaultdict(int)
        self.max_running_total = 0

    def discover(self) -> list[Device]:
        return [
            Device(id=i, kind=self.kind, name=f"Scripted {i}", runtimes=list(self.runtimes))
            for i in self.device_ids
        ]

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        return Capabilities(per_layer=runtime == "rt", threads=True)  # "rt2" has no profiler

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        with self.lock:
            self.opened.append((device.id, model.name))
            self.open_now[device.id] += 1
            self.max_open[device.id] = max(self.max_open[device.id], self.open_now[device.id])
            self.max_open_total = max(self.max_open_total, sum(self.open_now.values()))
        return ScriptedSession(self, device.id, model)

    def session_closed(self, device_id: str) -> None:
        with self.lock:
            self.open_now[device_id] -= 1
            self.closed += 1


class ScriptedSession(BenchSession):
    """By model name: ``fail*`` raises BenchError(FAIL_TEXT), ``crash*`` an unexpected error,
    ``meet*`` waits for a session on the other device, ``summary*`` reports only statistics,
    ``endless*`` runs until released or stopped, ``badprofile*`` fails its profiled pass;
    anything else returns fixed latencies at once."""

    def __init__(self, backend: ScriptedBackend, device_id: str, model: Model) -> None:
        self.backend = backend
        self.device_id = device_id
        self.model = model
        self.info = SessionInfo(
            load_us=10.0, first_inference_us=20.0, tool="scripted", tool_version="1"
        )

    def warmup(self, iterations: int) -> None:
        pass

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        backend, device_id = self.backend, self.device_id
        with backend.lock:
            backend.running_now[device_id] += 1
            backend.max_running[device_id] = max(
                backend.max_running[device_id], backend.running_now[device_id]
            )
            backend.max_running_total = max(
                backend.max_running_total, sum(backend.running_now.values())
            )
        try:
            return self._run(iterations, on_iteration)
        finally:
            with backend.lock:
                backend.running_now[device_id] -= 1

    def _run(self, iterations: int | None, on_iteration: IterationCallback) -> Timed:
        name = self.model.name
        if name.startswith("fail"):
            raise BenchError(FAIL_TEXT)
        if name.startswith("crash"):
            raise RuntimeError("boom in the driver")
        if name.startswith("meet"):
            self.backend.meeting.wait()  # BrokenBarrierError (job fails) unless both run at once
        if name.startswith("summary"):  # a tool that prints statistics, not iterations
            count = iterations or 1
            on_iteration(count, [])
            base = 1000.0 * (len(self.backend.summaries) + 1)
            self.backend.summaries.append(base)
            return Timed(
                [],
                summary=Stats(
                    count, base - 10, base, base, base + 20, base + 40, base + 50, 5.0, 5.0 / base
                ),
            )
        latencies: list[float] = []
        if name.startswith("endless"):
            self.backend.endless_running.set()
            deadline = time.monotonic() + SCRIPTED_WAIT_S  # never reached when stops work
            while True:
                time.sleep(0.002)
                latencies.append(500.0)
                on_iteration(len(latencies), latencies)
                if self.backend.release_endless.is_set() or time.monotonic() > deadline:
                    return Timed(latencies)
        for index in range(iterations or 1):
            latencies.append(100.0 + index)
            on_iteration(len(latencies), latencies)
        return Timed(latencies)

    def profile_layers(self, iterations: int, log_dir: str) -> None:
        if self.model.name.startswith("badprofile"):
            raise BenchError("the profiler crashed")
        return None

    def close(self) -> None:
        self.backend.session_closed(self.device_id)


# -- broken discovery -----------------------------------------------------------------------------


class BrokenBackend(DeviceBackend):
    """Discovery always fails (an adb server that is not running)."""

    kind = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def discover(self) -> list[Device]:
        self.calls += 1
        raise OSError("adb server is not running")

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        raise AssertionError("never reached: this backend has no devices")


# -- a device whose pace changes (canary, drift) --------------------------------------------------


class PhasedDevice(DeviceBackend):
    """A device whose pace changes after every round of a job (``slowdowns`` cycle), the same
    for the canary measured just before that round and for the round itself."""

    kind = "phased"

    def __init__(self, slowdowns: list[float], noise: float = 0.0) -> None:
        self.slowdowns = slowdowns
        self.noise = noise
        self.rng = np.random.default_rng(0)
        self.lock = threading.Lock()
        self.round_log: list[str] = []  # model name of every timed round, in run order
        self.canary_runs = 0
        self.running = 0
        self.max_running = 0
        self.max_open = 0
        self.open = 0
        self._phase = 0
        self.outputs_scale = 1.0  # parity: 1.0 is faithful, anything else is perturbed
        self.after_round: Callable[[str], None] | None = None  # called with the model name

    def slowdown(self) -> float:
        return self.slowdowns[self._phase % len(self.slowdowns)]

    def discover(self) -> list[Device]:
        return [Device("phased:a", self.kind, "Phased", runtimes=["rt"])]

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        with self.lock:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        return PhasedSession(self, model)


class PhasedSession(BenchSession):
    """A session of ``PhasedDevice``: latencies at the device's current pace (the canary at
    ``CANARY_US``, other models by name); real ONNX Runtime outputs, scaled, for parity."""

    def __init__(self, device: PhasedDevice, model: Model) -> None:
        self.device = device
        self.model = model
        self.info = SessionInfo(1.0, 2.0, "phased", "1")
        self.base = CANARY_US if model.name == "canary" else 1000.0 * (1 + len(model.name) % 3)

    def warmup(self, iterations: int) -> None:
        pass

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        device = self.device
        with device.lock:
            device.running += 1
            device.max_running = max(device.max_running, device.running)
            factor = device.slowdown()
        try:
            count = iterations or 1
            noise = 1 + device.noise * device.rng.standard_normal()
            latencies = [self.base * factor * noise * (1 + 0.001 * (i % 3)) for i in range(count)]
            on_iteration(count, latencies)
            return Timed(latencies)
        finally:
            with device.lock:
                device.running -= 1
                if self.model.name == "canary":
                    device.canary_runs += 1
                else:
                    device.round_log.append(self.model.name)
                    device._phase += 1  # the machine changes pace after each round
            if self.model.name != "canary" and device.after_round is not None:
                device.after_round(self.model.name)

    def outputs(self, feeds: dict) -> list:
        import onnxruntime as ort

        session = ort.InferenceSession(self.model.path, providers=["CPUExecutionProvider"])
        return [out * self.device.outputs_scale for out in session.run(None, feeds)]

    def close(self) -> None:
        with self.device.lock:
            self.device.open -= 1


# -- hot-plug and fixed latencies (console) -------------------------------------------------------


class FixedLatencySession(BenchSession):
    """Fixed latencies, by model name: ``explode*`` drops out mid-run with a BenchError;
    ``endless*`` runs (sleeping, not spinning) until the worker stops it."""

    def __init__(self, device: Device, model: Model) -> None:
        self.device = device
        self.model = model
        self.info = SessionInfo(
            load_us=10.0, first_inference_us=20.0, tool="fake", tool_version="1"
        )
        self.total = 0  # iterations over every round of this session

    def warmup(self, iterations: int) -> None:
        pass

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        latencies: list[float] = []
        if self.model.name.startswith("endless"):
            deadline = time.monotonic() + SAFETY_NET_S  # never reached when stops work
            while time.monotonic() < deadline:
                time.sleep(0.005)
                latencies.append(300.0)
                on_iteration(len(latencies), latencies)  # raises JobInterrupted on a stop
            return Timed(latencies)
        for index in range(iterations or 10):
            latencies.append(200.0 + index)
            self.total += 1
            on_iteration(len(latencies), latencies)
            if self.model.name.startswith("explode") and self.total == 5:
                raise BenchError(f"{self.device.id} went offline mid-run; reconnect it and retry")
        return Timed(latencies)


class PluggableBackend(DeviceBackend):
    """Devices come and go as the test edits ``ids``; ``calls`` counts discovery polls."""

    kind = "plug"

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.calls = 0
        self._lock = threading.Lock()

    def plug(self, device_id: str) -> None:
        with self._lock:
            self.ids.add(device_id)

    def unplug(self, device_id: str) -> None:
        with self._lock:
            self.ids.discard(device_id)

    def discover(self) -> list[Device]:
        with self._lock:
            self.calls += 1
            ids = sorted(self.ids)
        return [
            Device(id=i, kind=self.kind, name=f"Plugged {i}", runtimes=["fake-rt"]) for i in ids
        ]

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        return FixedLatencySession(device, model)


# -- fixed devices that run nothing (snapshots) ---------------------------------------------------


class FixedBackend(DeviceBackend):
    """Always the same three devices; it never runs anything (no worker is started)."""

    kind = "fixed"

    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = list(devices)

    def discover(self) -> list[Device]:
        return [dataclasses.replace(device) for device in self.devices]

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        return Capabilities(power_capture=device.kind == "adb", threads=device.kind == "bench")

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        raise BenchError("FixedBackend runs nothing: snapshot tests start no worker")


# -- sleeping sessions on cluster lab hosts -------------------------------------------------------


@dataclass
class Session:
    """One session on a physical device: which host, device and job, when, and how it ended."""

    host: str
    device_id: str  # the local id on that host
    job_id: str
    started: float
    ended: float | None = None
    completed: bool = False  # every planned iteration ran
    running: bool = False  # inside run(): timed iterations (what a power monitor would see)


@dataclass
class SessionLog:
    """Every session of every SleepBackend of a test, in start order (thread-safe)."""

    sessions: list[Session] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, session: Session) -> None:
        with self.lock:
            self.sessions.append(session)

    def busy(self, host: str) -> bool:
        """Whether a session on ``host`` is running timed iterations now."""
        with self.lock:
            return any(s.host == host and s.running for s in self.sessions)

    def for_job(self, job_id: str) -> list[Session]:
        with self.lock:
            return [s for s in self.sessions if s.job_id == job_id]

    def overlaps(self) -> list[tuple[Session, Session]]:
        """Pairs of sessions that ran on the same physical device at the same time."""
        with self.lock:
            sessions = list(self.sessions)
        clashes = []
        for i, a in enumerate(sessions):
            for b in sessions[i + 1 :]:
                if (a.host, a.device_id) != (b.host, b.device_id):
                    continue
                a_end, b_end = a.ended or time.time(), b.ended or time.time()
                if a.started < b_end and b.started < a_end:
                    clashes.append((a, b))
        return clashes


class SleepSession(BenchSession):
    """A session of ``SleepBackend``: sleeps per iteration and keeps its ``Session`` record."""

    def __init__(self, backend: SleepBackend, device: Device, job: Job) -> None:
        self.backend = backend
        self.info = SessionInfo(load_us=1.0, first_inference_us=1.0, tool="sleep", tool_version="1")
        self.record = Session(backend.host, device.id, job.id, time.time())
        backend.log.add(self.record)
        backend.started.set()

    def warmup(self, iterations: int) -> None:
        time.sleep(iterations * self.backend.iteration_s)

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        latencies: list[float] = []
        self.record.running = True
        try:
            for done in range(1, (iterations or 1) + 1):
                start = time.perf_counter()
                time.sleep(self.backend.iteration_s)
                latencies.append((time.perf_counter() - start) * 1e6)
                on_iteration(done, latencies)
        finally:
            self.record.running = False
        self.record.completed = True
        return Timed(latencies)

    def close(self) -> None:
        self.record.ended = time.time()


class SleepBackend(DeviceBackend):
    """Devices whose sessions sleep ``iteration_s`` per iteration and log themselves.

    Its kind is ``host``, so a worker publishes ``host:cpu`` as ``host:cpu@<worker>``; other
    ids (``sleep:...``) keep their names. ``device_ids`` may change under a running worker
    (hot-plug).
    """

    kind = "host"
    supports_canary = False

    def __init__(
        self,
        host: str,
        log: SessionLog,
        device_ids: tuple[str, ...] = ("host:cpu",),
        iteration_s: float = ITERATION_S,
    ) -> None:
        self.host = host
        self.log = log
        self.device_ids = list(device_ids)
        self.iteration_s = iteration_s
        self.started = threading.Event()

    def discover(self) -> list[Device]:
        return [
            Device(id=i, kind=self.kind, name=f"Sleep {i} on {self.host}", runtimes=["rt"])
            for i in list(self.device_ids)
        ]

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        return SleepSession(self, device, job)


# -- the cluster dispatch benchmark's stand-in device ---------------------------------------------


class StampedSleepSession(BenchSession):
    """A session of ``StampedSleepBackend``: sleeps per iteration, reports the nominal time."""

    def __init__(self, iteration_s: float) -> None:
        self.iteration_s = iteration_s
        self.info = SessionInfo(load_us=0.0, first_inference_us=0.0, tool="sleep", tool_version="1")

    def warmup(self, iterations: int) -> None:
        time.sleep(iterations * self.iteration_s)

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        latencies: list[float] = []
        for done in range(1, (iterations or 1) + 1):
            time.sleep(self.iteration_s)
            latencies.append(self.iteration_s * 1e6)
            on_iteration(done, latencies)
        return Timed(latencies)


class StampedSleepBackend(DeviceBackend):
    """One stand-in device, ``bench:<host>``; conditions carry wall-clock timestamps."""

    kind = "bench"
    supports_canary = False

    def __init__(self, host: str, iteration_s: float) -> None:
        self.host = host
        self.iteration_s = iteration_s

    def discover(self) -> list[Device]:
        return [Device(id=f"bench:{self.host}", kind=self.kind, name="bench", runtimes=["rt"])]

    def conditions(self, device: Device) -> dict[str, Any]:
        return {"t": time.time()}

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        return StampedSleepSession(self.iteration_s)
