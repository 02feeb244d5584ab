"""OpenVINO devices (``openvino:CPU``, ``openvino:GPU``, ``openvino:NPU``) and the runner
session that they share with the Neural Compute Sticks (``ncs:<id>``,
see ``backends.devices.openvino.ncs``).

Every measurement runs ``backends/devices/openvino/runner.py`` in a subprocess under a chosen
interpreter: devlab's own for current OpenVINO, or an older Python environment with
``openvino==2021.4.2`` for MYRIAD sticks (the last pip wheels with that plugin, Python 3.6-3.9).
The runner prints one JSON object with every timed iteration's latency; this module turns it
into :class:`~backends.devices.base.Timed` and :class:`~backends.devices.base.SessionInfo`.

Each round is one runner process: the model is read and compiled again for it and warmed up
before timing, so rounds are independent and a cancelled job stops at the end of its round.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.core.records import Capabilities, Device, Job, Model
from backends.devices.base import (
    BenchError,
    BenchSession,
    DeviceBackend,
    IterationCallback,
    SessionInfo,
    Timed,
)

RUNNER_PATH = Path(__file__).with_name("runner.py")
OPENVINO_RUNTIME = "openvino"
TOOL = "openvino-runner"
DEVICE_PREFIX = "openvino:"
#: OpenVINO device kinds devlab offers as ``openvino:<DEVICE>`` (MYRIAD goes through ``ncs:``).
OFFERED_DEVICES = ("CPU", "GPU", "NPU")
DEFAULT_TIMEOUT_S = 900.0


@dataclass
class RunnerOutput:
    """What one runner invocation reported (times in microseconds)."""

    latencies_us: list[float]
    load_us: float | None
    first_inference_us: float | None
    device: str
    device_full_name: str
    openvino_version: str
    api: str
    extra: dict[str, Any] = field(default_factory=dict)


def parse_runner_output(stdout: str, stderr: str = "", exit_code: int | None = 0) -> RunnerOutput:
    """The runner's JSON as a :class:`RunnerOutput`; BenchError with its message on failure."""
    payload = None
    for line in reversed(stdout.strip().splitlines()):
        try:
            payload = json.loads(line)
            break
        except ValueError:
            continue
    if not isinstance(payload, dict):
        quoted = " | ".join(line for line in stderr.strip().splitlines()[-5:] if line.strip())
        raise BenchError(
            f"the OpenVINO runner printed no result (exit code {exit_code})"
            + (f": {quoted}" if quoted else "")
        )
    if "error" in payload:
        raise BenchError(f"OpenVINO ({payload.get('stage', 'run')}): {payload['error']}".strip())
    try:
        latencies = [float(value) for value in payload["latencies_us"]]
        return RunnerOutput(
            latencies_us=latencies,
            load_us=_optional_float(payload.get("load_us")),
            first_inference_us=_optional_float(payload.get("first_inference_us")),
            device=str(payload.get("device", "")),
            device_full_name=str(payload.get("device_full_name", "")),
            openvino_version=str(payload.get("openvino_version", "")),
            api=str(payload.get("api", "")),
            extra={k: v for k, v in payload.items() if k != "latencies_us"},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BenchError(f"the OpenVINO runner printed an unexpected result: {error}") from error


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def runner_command(
    python: str,
    model_path: str,
    device: str,
    warmup: int,
    runs: int | None,
    min_seconds: float | None = None,
    threads: int | None = None,
    select: str | None = None,
) -> list[str]:
    """The argv that runs the runner under ``python``."""
    argv = [python, str(RUNNER_PATH), "--model", model_path, "--device", device]
    argv += ["--warmup", str(max(warmup, 0))]
    if runs is not None:
        argv += ["--runs", str(runs)]
    if min_seconds:
        argv += ["--min-seconds", str(min_seconds)]
    if threads:
        argv += ["--threads", str(threads)]
    if select:
        argv += ["--select", select]
    return argv


def run_runner(argv: list[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> RunnerOutput:
    """Run the runner to completion and parse its JSON (BenchError on any failure)."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as error:
        raise BenchError(f"cannot start the OpenVINO runner with {argv[0]!r}: {error}") from error
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"the OpenVINO runner did not finish within {timeout_s:g} s") from error
    return parse_runner_output(proc.stdout, proc.stderr, proc.returncode)


class OpenVinoSession(BenchSession):
    """A model on an OpenVINO device through runner subprocesses (one per round).

    Opening the session runs the runner once (no warmup, one inference) so a bad model or a
    device that cannot compile it fails at once, and records the load (read + compile) time,
    the first inference, OpenVINO's version and the device's full name.
    """

    def __init__(
        self,
        python: str,
        device: str,
        model: Model,
        threads: int | None,
        select: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        default_warmup: int = 10,
    ) -> None:
        self.python = python
        self.device = device
        self.model = model
        self.threads = threads
        self.select = select
        self.timeout_s = timeout_s
        self._warmup = default_warmup
        probe = self._invoke(warmup=0, runs=1, min_seconds=None)
        self.probe = probe
        self.info = SessionInfo(
            load_us=probe.load_us,
            first_inference_us=probe.first_inference_us,
            tool=f"{TOOL} ({probe.api})" if probe.api else TOOL,
            tool_version=probe.openvino_version,
        )

    def _invoke(self, warmup: int, runs: int | None, min_seconds: float | None) -> RunnerOutput:
        argv = runner_command(
            self.python,
            self.model.path,
            self.device,
            warmup,
            runs,
            min_seconds,
            self.threads,
            self.select,
        )
        try:
            return run_runner(argv, self.timeout_s)
        except BenchError as error:
            raise BenchError(f"{self.model.path} on {self.device}: {error}") from error

    def outputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The device's outputs for ``feeds`` (output parity): one more runner process that
        also runs them once and saves what the device computed."""
        with tempfile.TemporaryDirectory(prefix="devlab-openvino-parity-") as folder:
            inputs, outputs = Path(folder) / "inputs.npz", Path(folder) / "outputs.npz"
            names = list(feeds)
            np.savez(inputs, **{f"in_{i}": feeds[name] for i, name in enumerate(names)})
            Path(f"{inputs}.names.json").write_text(json.dumps(names))
            argv = runner_command(
                self.python, self.model.path, self.device, 0, 1, None, self.threads, self.select
            )
            argv += ["--parity-inputs", str(inputs), "--parity-outputs", str(outputs)]
            try:
                run_runner(argv, self.timeout_s)
            except BenchError as error:
                raise BenchError(f"{self.model.path} on {self.device}: {error}") from error
            with np.load(outputs) as data:
                return [data[f"out_{i}"] for i in range(len(data.files))]

    def warmup(self, iterations: int) -> None:
        # Each round is a fresh process, so the warmup runs there, right before the timing.
        self._warmup = iterations

    def run(
        self,
        iterations: int | None,
        min_seconds: float | None,
        on_iteration: IterationCallback,
    ) -> Timed:
        # A fresh process compiles again; its first inferences are slow, so warm up at least once.
        output = self._invoke(max(self._warmup, 1), iterations, min_seconds)
        latencies: list[float] = []
        for index, value in enumerate(output.latencies_us, start=1):
            latencies.append(value)
            on_iteration(index, latencies)
        return Timed(latencies)


class OpenVinoBackend(DeviceBackend):
    """``openvino:CPU`` / ``openvino:GPU`` / ``openvino:NPU``: what devlab's OpenVINO reports.

    Discovery asks OpenVINO in process (imported lazily) and caches the answer for
    ``refresh_s`` seconds, so polling stays cheap; without OpenVINO there are no devices.
    """

    kind = "openvino"
    id_prefix = DEVICE_PREFIX
    machine_local = True  # openvino:CPU is the CPU of whichever machine says it

    def __init__(
        self,
        python: str | None = None,
        refresh_s: float = 60.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.python = python or sys.executable
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Device]] | None = None

    def discover(self) -> list[Device]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.refresh_s:
                self._cached = (now, self._query())
            return list(self._cached[1])

    def _query(self) -> list[Device]:
        try:
            import openvino as ov
        except Exception:
            return []
        core = ov.Core()
        version = str(ov.get_version())
        devices = []
        for name in core.available_devices:
            if name.split(".")[0] not in OFFERED_DEVICES:
                continue
            try:
                full_name = str(core.get_property(name, "FULL_DEVICE_NAME"))
            except Exception:
                full_name = name
            devices.append(
                Device(
                    id=f"{DEVICE_PREFIX}{name}",
                    kind=self.kind,
                    name=f"OpenVINO {name} ({full_name})",
                    runtimes=[OPENVINO_RUNTIME],
                    properties={
                        "openvino_device": name,
                        "full_device_name": full_name,
                        "openvino": version,
                        "python": self.python,
                    },
                )
            )
        return devices

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        return Capabilities(threads=device.id.split(":", 1)[1].startswith("CPU"))

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        if job.runtime != OPENVINO_RUNTIME:
            raise BenchError(
                f"{device.id} offers runtime {OPENVINO_RUNTIME!r}, not {job.runtime!r}"
            )
        return OpenVinoSession(
            self.python,
            device.id[len(DEVICE_PREFIX) :],
            model,
            job.settings.threads,
            timeout_s=self.timeout_s,
            default_warmup=job.settings.warmup,
        )
