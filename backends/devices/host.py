"""The host CPU through ONNX Runtime: the device every lab has, hardware or not.

The timed loop is as bare as a hand-written one (two clock reads, ``session.run``, an
append), so devlab adds no measurable overhead (``tests/perf/host_overhead.py``). Per-layer
times come from ONNX Runtime's profiler in a separate session and pass, so profiling never
inflates the timed runs.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort

from backends.core.records import Capabilities, Device, Job, Model
from backends.devices.base import (
    BenchError,
    BenchSession,
    DeviceBackend,
    IterationCallback,
    LayerProfile,
    SessionInfo,
    Timed,
    ort_layer_profile,
)
from backends.devices.host_cold import cold_weights_us
from backends.models.intake import ort_model_source, random_inputs
from backends.models.null_model import null_model_bytes
from backends.runtimes.ort_session import session_options

HOST_DEVICE_ID = "host:cpu"
CALL_COST_WARMUP = 50
CALL_COST_RUNS = 200  # and at least CALL_COST_SECONDS of them
CALL_COST_SECONDS = 0.05
ORT_RUNTIME = "onnxruntime"
TOOL = "onnxruntime-python"


class HostSession(BenchSession):
    """An ONNX Runtime CPU session kept alive across warmup, rounds and profiling."""

    calibrates = True  # run() takes iterations and min_seconds as two lower bounds

    def __init__(self, model: Model, threads: int | None) -> None:
        self.model = model
        self.threads = threads
        self.feeds = random_inputs(model)
        self.source = ort_model_source(model.path)  # may read the file: before the timed load
        started = time.perf_counter_ns()
        self.session = _create_session(model, self.source, session_options(threads))
        loaded = time.perf_counter_ns()
        outputs = self._run_once()
        first = time.perf_counter_ns()
        self.info = SessionInfo(
            load_us=(loaded - started) / 1e3,
            first_inference_us=(first - loaded) / 1e3,
            tool=TOOL,
            tool_version=ort.__version__,
            call_cost_us=self._call_cost_us(outputs),
            cold_weights_us=self._cold_weights_us(),
        )

    def _run_once(self) -> list[Any]:
        try:
            return self.session.run(None, self.feeds)
        except Exception as error:  # ORT raises its own exception types
            raise BenchError(f"{self.model.path}: inference failed: {error}") from error

    def _call_cost_us(self, outputs: list[Any]) -> float | None:
        """The median time of a null model with this model's inputs and outputs, timed by the
        same loop: what every call costs besides the forward pass."""
        names = [output.name for output in self.session.get_outputs()]
        try:
            null = ort.InferenceSession(
                null_model_bytes(self.feeds, list(zip(names, outputs, strict=True))),
                session_options(self.threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception:  # an output ONNX cannot hold as a constant: no forward time then
            return None
        run, feeds, clock = null.run, self.feeds, time.perf_counter_ns
        for _ in range(CALL_COST_WARMUP):
            run(None, feeds)
        samples = []
        deadline = clock() + int(CALL_COST_SECONDS * 1e9)
        while len(samples) < CALL_COST_RUNS or clock() < deadline:
            start = clock()
            run(None, feeds)
            samples.append(clock() - start)
        return statistics.median(samples) / 1e3

    def _cold_weights_us(self) -> float | None:
        """For a module (a model that declares its ModuleUID, as the space's module files do),
        what its calls cost more with the weights out of the per-core cache, as inside the
        network its Forward Propagate row is summed into; None for a whole model."""
        if not self.model.uid:
            return None
        return cold_weights_us(self.source, self.feeds, self.threads, _weight_bytes(self.model))

    def warmup(self, iterations: int) -> None:
        for _ in range(iterations):
            self._run_once()

    def run(
        self,
        iterations: int | None,
        min_seconds: float | None,
        on_iteration: IterationCallback,
    ) -> Timed:
        run, feeds, clock = self.session.run, self.feeds, time.perf_counter_ns
        latencies: list[float] = []
        append = latencies.append
        # both are lower bounds: at least `iterations` runs and at least `min_seconds`
        deadline = clock() + int(min_seconds * 1e9) if min_seconds else 0
        limit = max(iterations or 1, 1)
        done = 0
        while True:
            start = clock()
            run(None, feeds)
            end = clock()
            append((end - start) / 1e3)
            done += 1
            on_iteration(done, latencies)
            if done >= limit and end >= deadline:
                break
        return Timed(latencies)

    def outputs(self, feeds: dict[str, Any]) -> list[Any]:
        """The model's outputs for ``feeds`` (output parity against the host reference)."""
        try:
            return list(self.session.run(None, feeds))
        except Exception as error:  # ORT raises its own exception types
            raise BenchError(f"{self.model.path}: inference failed: {error}") from error

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        prefix = str(Path(log_dir) / f"ort_profile_{self.model.name}")
        profiled = _create_session(self.model, self.source, session_options(self.threads, prefix))
        for _ in range(max(iterations, 1) + 1):  # the first run is dropped as warm-up
            profiled.run(None, self.feeds)
        return ort_layer_profile(profiled.end_profiling(), skip_runs=1)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


class HostBackend(DeviceBackend):
    """``host:cpu``: always present."""

    kind = "host"
    id_prefix = "host:"
    machine_local = True

    def discover(self) -> list[Device]:
        return [
            Device(
                id=HOST_DEVICE_ID,
                kind=self.kind,
                name=f"Host CPU ({platform.node() or 'localhost'})",
                runtimes=[ORT_RUNTIME],
                properties=host_properties(),
            )
        ]

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        return Capabilities(per_layer=True, threads=True)

    def isolation(self) -> type[HostBackend]:
        """Host sessions time in devlab's measurement process (ONNX Runtime runs in-process)."""
        return HostBackend

    def conditions(self, device: Device) -> dict[str, Any]:
        return host_conditions()

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        if job.runtime != ORT_RUNTIME:
            raise BenchError(f"{device.id} offers runtime {ORT_RUNTIME!r}, not {job.runtime!r}")
        return HostSession(model, job.settings.threads)


def _weight_bytes(model: Model) -> int:
    """At least the model's weight bytes: the file's size (an ONNX file is its weights, give or
    take a few kB), or one byte per parameter where the weights are in external data."""
    size = model.size_bytes
    if size is None:
        try:
            size = os.path.getsize(model.path)
        except OSError:
            size = 0
    return max(size, model.parameters or 0)


def _create_session(
    model: Model, source: str | bytes, options: ort.SessionOptions
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise BenchError(f"{model.path}: ONNX Runtime cannot load the model: {error}") from error


def host_properties() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


def host_conditions() -> dict[str, Any]:
    """Load average and CPU temperature where the kernel exposes them."""
    conditions: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        conditions["loadavg_1m"] = os.getloadavg()[0]
    temperature = _cpu_temperature_c()
    if temperature is not None:
        conditions["temperature_c"] = temperature
    return conditions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_temperature_c() -> float | None:
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            return int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return None
