"""OpenVINO devices (``openvino:CPU``, ``openvino:GPU``, ``openvino:NPU``) and the runner
session that they share with the Neural Compute Sticks (``ncs:<id>``,
see ``backends.devices.openvino.ncs``).

Every measurement runs ``backends/devices/openvino/runner.py`` in a subprocess under a chosen
interpreter: devlab's own for current OpenVINO, or an older Python environment with
``openvino==2021.4.2`` for MYRIAD sticks (the last pip wheels with that plugin, Python 3.6-3.9).
The runner reports JSON with every timed iteration's latency; this module turns it into
:class:`~backends.devices.base.Timed` and :class:`~backends.devices.base.SessionInfo`.

A session keeps one runner alive (``--serve``) from open to close: the model is read and
compiled once and every round is a request on the runner's stdin, so rounds measure the same
warm, compiled model instead of paying a fresh process, read and compile each. A runner that
dies or stops answering fails its round with the reason, and the next round starts a fresh one.
"""

from __future__ import annotations

import json
import logging
import os
import select as io_select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.core.exits import exit_reason
from backends.core.extras import available, missing_message
from backends.core.records import Capabilities, Device, Job, Model
from backends.devices.base import (
    BenchError,
    BenchSession,
    DeviceBackend,
    IterationCallback,
    SessionInfo,
    Timed,
)

log = logging.getLogger(__name__)

RUNNER_PATH = Path(__file__).with_name("runner.py")
OPENVINO_RUNTIME = "openvino"
TOOL = "openvino-runner"
DEVICE_PREFIX = "openvino:"
#: OpenVINO device kinds devlab offers as ``openvino:<DEVICE>`` (MYRIAD goes through ``ncs:``).
OFFERED_DEVICES = ("CPU", "GPU", "NPU")
DEFAULT_TIMEOUT_S = 900.0
#: How long ``close`` lets a runner exit on its own before killing it.
CLOSE_GRACE_S = 2.0
#: The pip extra that installs OpenVINO for devlab's own interpreter.
EXTRA = "openvino"


def missing_openvino() -> str | None:
    """Why ``openvino:`` devices cannot exist here (the extra to install), None when they can."""
    if available("openvino"):
        return None
    return missing_message("openvino", EXTRA, "OpenVINO devices")


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


def _runner_failure(payload: dict[str, Any]) -> BenchError | None:
    """The error a runner reported in ``payload``, if it reported one."""
    if "error" not in payload:
        return None
    return BenchError(f"OpenVINO ({payload.get('stage', 'run')}): {payload['error']}".strip())


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
    failure = _runner_failure(payload)
    if failure is not None:
        raise failure
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
    """The argv that runs the runner once (one round) under ``python``."""
    argv = [python, str(RUNNER_PATH), "--model", model_path, "--device", device]
    argv += ["--warmup", str(max(warmup, 0))]
    if runs is not None:
        argv += ["--runs", str(runs)]
    if min_seconds:
        argv += ["--min-seconds", str(min_seconds)]
    return argv + _device_options(threads, select)


def serve_command(
    python: str,
    model_path: str,
    device: str,
    threads: int | None = None,
    select: str | None = None,
) -> list[str]:
    """The argv that starts a runner which keeps the model loaded (``--serve``)."""
    argv = [python, str(RUNNER_PATH), "--model", model_path, "--device", device, "--serve"]
    return argv + _device_options(threads, select)


def _device_options(threads: int | None, select: str | None) -> list[str]:
    argv: list[str] = []
    if threads:
        argv += ["--threads", str(threads)]
    if select:
        argv += ["--select", select]
    return argv


def run_runner(argv: list[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> RunnerOutput:
    """Run the one-shot runner (``runner_command``) to completion and parse its JSON
    (BenchError on any failure): for a single measurement; sessions keep a runner instead."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as error:
        raise BenchError(f"cannot start the OpenVINO runner with {argv[0]!r}: {error}") from error
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"the OpenVINO runner did not finish within {timeout_s:g} s") from error
    return parse_runner_output(proc.stdout, proc.stderr, proc.returncode)


class RunnerProcess:
    """One runner in ``--serve`` mode: the model compiled once, one JSON line per request.

    Its stderr goes to an unnamed temporary file, not a pipe: nobody reads stderr while a
    round runs, and a full pipe would block the runner mid-round. The file's tail names what
    went wrong when the runner dies. Replies are read under a deadline (``select`` on the
    stdout pipe), so a hung runtime fails its round instead of the device worker.
    """

    def __init__(self, argv: list[str], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # lives as long as the runner: close() closes it
        self._stderr = tempfile.TemporaryFile(prefix="devlab-openvino-runner-")  # noqa: SIM115
        self._pending: list[bytes] = []  # stdout read but not yet a whole line
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
            )
        except OSError as error:
            self._stderr.close()
            raise BenchError(
                f"cannot start the OpenVINO runner with {argv[0]!r}: {error}"
            ) from error
        try:
            self.opened = self._read("opening the model")
        except BenchError:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, message: dict[str, Any], doing: str) -> dict[str, Any]:
        """Send one request and wait for its reply. BenchError when the runner reports an error
        (it stays usable), dies or does not answer within ``timeout_s`` (it is gone then)."""
        assert self.proc.stdin is not None
        if self.proc.poll() is not None:  # it died after its last reply, between requests
            raise self._died(f"idle, before {doing}")
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # the runner died since its last reply: say how
            raise self._died(doing) from None
        return self._read(doing)

    def _read(self, doing: str) -> dict[str, Any]:
        payload = self._read_line(doing)
        failure = _runner_failure(payload)
        if failure is not None:
            raise failure
        return payload

    def _read_line(self, doing: str) -> dict[str, Any]:
        """The next JSON object on the runner's stdout, within the deadline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout_s
        while True:
            line = self._next_line()
            if line is not None:
                try:
                    payload = json.loads(line)
                except ValueError:
                    continue  # not ours (the runner keeps native prints off stdout)
                if isinstance(payload, dict):
                    return payload
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._hung(doing)
            readable, _, _ = io_select.select([fd], [], [], remaining)
            if not readable:
                raise self._hung(doing)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died(doing)
            self._pending.append(chunk)

    def _next_line(self) -> bytes | None:
        """A complete line from what was read so far (a long round's reply comes in many
        chunks: joined once, when its newline arrives), or None."""
        if not self._pending or b"\n" not in self._pending[-1]:
            return None
        line, _, rest = b"".join(self._pending).partition(b"\n")
        self._pending = [rest] if rest else []
        return line

    def _died(self, doing: str) -> BenchError:
        try:
            code = self.proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:  # stdout closed but still running: end it
            self._kill()
            code = self.proc.returncode
        message = f"the OpenVINO runner died while {doing} ({exit_reason(code)})"
        self._release()
        return BenchError(message + self._stderr_tail())

    def _hung(self, doing: str) -> BenchError:
        self._kill()
        message = (
            f"the OpenVINO runner did not answer within {self.timeout_s:g} s while {doing}; "
            "it was stopped"
        )
        self._release()
        return BenchError(message + self._stderr_tail())

    def _stderr_tail(self, lines: int = 5, limit: int = 4096) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            text = self._stderr.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return ""
        tail = [line for line in text.strip().splitlines()[-lines:] if line.strip()]
        return f": {' | '.join(tail)}" if tail else ""

    def _kill(self) -> None:
        """SIGKILL this runner, by its pid only, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _release(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass

    def close(self) -> None:
        """Ask the runner to exit; kill it if it has not within ``CLOSE_GRACE_S``."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "exit"}\n')
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=CLOSE_GRACE_S)
            except subprocess.TimeoutExpired:
                self._kill()
        self._release()
        self._stderr.close()


class OpenVinoSession(BenchSession):
    """A model on an OpenVINO device through one runner process kept from open to close.

    Opening starts the runner (``--serve``), which reads and compiles the model and runs one
    inference, so a bad model or a device that cannot compile it fails at once; that records
    the load (read + compile) time, the first inference, OpenVINO's version and the device's
    full name. Rounds and the parity run are requests to the same process. A session is driven
    by one thread at a time (its device worker).
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
        self._runner: RunnerProcess | None = None
        self._warm = False  # whether the current runner has run the warmup
        #: Runners started so far (1 unless one died and a round started a fresh one).
        self.starts = 0
        self.probe = self._start()
        self.info = SessionInfo(
            load_us=self.probe.load_us,
            first_inference_us=self.probe.first_inference_us,
            tool=f"{TOOL} ({self.probe.api})" if self.probe.api else TOOL,
            tool_version=self.probe.openvino_version,
        )

    @property
    def runner_pid(self) -> int | None:
        """The pid of the live runner, None between a failure and the next round."""
        return self._runner.pid if self._runner is not None else None

    def _start(self) -> RunnerOutput:
        argv = serve_command(self.python, self.model.path, self.device, self.threads, self.select)
        try:
            runner = RunnerProcess(argv, self.timeout_s)
        except BenchError as error:
            raise self._named(error) from error
        self._runner, self._warm = runner, False
        self.starts += 1
        opened = runner.opened
        return RunnerOutput(
            latencies_us=[],
            load_us=_optional_float(opened.get("load_us")),
            first_inference_us=_optional_float(opened.get("first_inference_us")),
            device=str(opened.get("device", "")),
            device_full_name=str(opened.get("device_full_name", "")),
            openvino_version=str(opened.get("openvino_version", "")),
            api=str(opened.get("api", "")),
            extra=dict(opened),
        )

    def _named(self, error: BenchError) -> BenchError:
        return BenchError(f"{self.model.path} on {self.device}: {error}")

    def _request(self, message: dict[str, Any], doing: str) -> dict[str, Any]:
        """One request to the runner. A runner that died (even between rounds) or hung fails
        this request with the reason and is dropped; the next request starts a fresh one (it
        reads, compiles and warms up again)."""
        runner = self._live_runner()
        try:
            return runner.request(message, doing)
        except BenchError as error:
            if not runner.alive():
                self._drop()
            raise self._named(error) from error

    def _live_runner(self) -> RunnerProcess:
        """The session's runner, started afresh if the last one was dropped."""
        if self._runner is None:
            self._start()
        assert self._runner is not None
        return self._runner

    def _drop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def outputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The device's outputs for ``feeds`` (output parity), computed by the runner that
        times the rounds, so parity checks the very compiled model that was measured."""
        with tempfile.TemporaryDirectory(prefix="devlab-openvino-parity-") as folder:
            inputs, outputs = Path(folder) / "inputs.npz", Path(folder) / "outputs.npz"
            names = list(feeds)
            np.savez(inputs, **{f"in_{i}": feeds[name] for i, name in enumerate(names)})
            Path(f"{inputs}.names.json").write_text(json.dumps(names))
            message = {"op": "parity", "inputs": str(inputs), "outputs": str(outputs)}
            self._request(message, "running the parity input")
            with np.load(outputs) as data:
                return [data[f"out_{i}"] for i in range(len(data.files))]

    def warmup(self, iterations: int) -> None:
        # The runner warms up right before the first round it times (see ``run``).
        self._warmup = iterations

    def run(
        self,
        iterations: int | None,
        min_seconds: float | None,
        on_iteration: IterationCallback,
    ) -> Timed:
        """One round in the session's runner. Only a runner's first round warms up: later
        rounds reuse its warm, compiled model, so warming again would only cost time. A fresh
        runner (after one died) warms up again before its first round."""
        self._live_runner()  # first, so a fresh runner is known to be cold
        message = {
            "op": "run",
            "warmup": 0 if self._warm else max(self._warmup, 0),
            "runs": iterations,
            "min_seconds": min_seconds,
        }
        reply = self._request(message, "timing a round")
        self._warm = True
        try:
            measured = [float(value) for value in reply["latencies_us"]]
        except (KeyError, TypeError, ValueError) as error:
            raise self._named(
                BenchError(f"the OpenVINO runner sent an unexpected reply: {error}")
            ) from error
        latencies: list[float] = []
        for index, value in enumerate(measured, start=1):
            latencies.append(value)
            on_iteration(index, latencies)
        return Timed(latencies)

    def close(self) -> None:
        """Ask the runner to exit (killing it after a short grace) so no process outlives it."""
        self._drop()


class OpenVinoBackend(DeviceBackend):
    """``openvino:CPU`` / ``openvino:GPU`` / ``openvino:NPU``: what devlab's OpenVINO reports.

    Discovery asks OpenVINO in process (imported lazily) and caches the answer for
    ``refresh_s`` seconds, so polling stays cheap; without OpenVINO (the ``openvino`` extra)
    there are no devices and :meth:`unavailable` says which extra to install.
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

    @classmethod
    def hint_for_unknown(cls, device_id: str) -> str | None:
        if device_id.startswith(DEVICE_PREFIX):
            return missing_openvino()
        return None

    def unavailable(self) -> str | None:
        return missing_openvino()  # discovery asks devlab's own OpenVINO, in process

    def _query(self) -> list[Device]:
        if missing_openvino() is not None:
            return []  # unavailable() says why; discovery polls, so no log line each time
        try:
            import openvino as ov
        except Exception:  # installed but broken: no devices, the reason in the log
            log.warning("OpenVINO is installed but does not import", exc_info=True)
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
        reason = missing_openvino() if self.python == sys.executable else None
        if reason is not None:  # a job kept from an install that had the extra
            raise BenchError(reason)
        return OpenVinoSession(
            self.python,
            device.id[len(DEVICE_PREFIX) :],
            model,
            job.settings.threads,
            timeout_s=self.timeout_s,
            default_warmup=job.settings.warmup,
        )
