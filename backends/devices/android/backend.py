"""Android phones over adb (adbutils): discovery, hot-plug, properties and phone runtimes.

Device-side tools (``onnxruntime_perf_test``, TFLite ``benchmark_model``) are host files
named in the config and pushed once per device under ``/data/local/tmp/devlab/`` (cached by
content hash), or found on the phone's PATH. Models are pushed once, cached by sha256. Every
shell command is an argv list joined with ``shlex.join``: nothing from the operator reaches
the phone's shell unquoted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shlex
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adbutils
from adbutils import AdbClient, AdbConnection, AdbDevice, AdbError

from backends.core.records import Device, DeviceState, Job, Model, Stats
from backends.devices.android.outputs import ort_outputs
from backends.devices.android.props import (
    GOVERNOR_COMMAND,
    THERMAL_COMMAND,
    device_properties,
    parse_battery,
    parse_getprop,
    parse_thermal,
)
from backends.devices.android.snpe import SNPE_RUNTIMES, SnpeConfig, SnpeSession, snpe_runtimes
from backends.devices.base import (
    BenchError,
    BenchSession,
    Capabilities,
    DeviceBackend,
    IterationCallback,
    LayerProfile,
    SessionInfo,
    Timed,
)
from backends.devices.host import parse_ort_profile
from backends.runtimes import ort_perf, tflite
from backends.runtimes.common import ToolOutputError, ToolRun

log = logging.getLogger(__name__)

WORKDIR = "/data/local/tmp/devlab"
ADB_STATES = {
    "device": DeviceState.ONLINE,
    "offline": DeviceState.OFFLINE,
    "unauthorized": DeviceState.UNAUTHORIZED,
}
TOOL_NAMES = {"ort": "onnxruntime_perf_test", "tflite": "benchmark_model"}
VANISHED = (AdbError, OSError)  # adbutils raises BrokenPipeError (an OSError) mid-transfer


class _NoAutostartConnection(AdbConnection):
    """adbutils runs ``adb start-server`` when it cannot connect; devlab never starts a server
    the operator did not, so a missing server is an error here."""

    def _safe_connect(self):  # noqa: ANN202 - adbutils' own socket type
        return self._create_socket()


class DevlabAdbClient(AdbClient):
    """An AdbClient whose connections fail instead of starting an adb server."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        self._address = (host, port)

    def make_connection(self, timeout: float | None = None) -> AdbConnection:
        connection = _NoAutostartConnection(*self._address)
        if timeout:
            connection.conn.settimeout(timeout)
        return connection


@dataclass
class AndroidConfig:
    """The ``[android]`` table of the config file."""

    adb_host: str = "127.0.0.1"
    adb_port: int = 5037
    tools: dict[str, str] = field(default_factory=dict)  # runtime -> host path of the binary
    convert: dict[str, list[str]] = field(default_factory=dict)  # runtime -> argv template
    ort_execution_provider: str = "cpu"
    command_timeout_s: float = 600.0

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> AndroidConfig:
        """From ``config.raw['android']``; ANDROID_ADB_SERVER_PORT sets the default port."""
        port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
        host = "127.0.0.1"
        if "adb_server" in raw:
            host, _, port_text = str(raw["adb_server"]).rpartition(":")
            host, port = host or "127.0.0.1", int(port_text)
        unknown = set(raw.get("tools", {})) - set(TOOL_NAMES)
        if unknown:
            raise ValueError(
                f"[android.tools]: unknown runtime(s) {sorted(unknown)}; "
                f"known: {sorted(TOOL_NAMES)}"
            )
        return cls(
            adb_host=host,
            adb_port=port,
            tools={k: str(v) for k, v in raw.get("tools", {}).items()},
            convert={k: [str(a) for a in v] for k, v in raw.get("convert", {}).items()},
            ort_execution_provider=str(raw.get("ort_execution_provider", "cpu")),
        )


class AndroidBackend(DeviceBackend):
    """Phones the adb server sees: ``adb:<serial>``."""

    kind = "android"

    def __init__(self, config: AndroidConfig | None = None, snpe: SnpeConfig | None = None) -> None:
        self.config = config or AndroidConfig.from_raw({})
        self.snpe = snpe
        self.client = DevlabAdbClient(self.config.adb_host, self.config.adb_port)
        self._described: dict[str, Device] = {}
        self._runtimes_seen: dict[str, list[str]] = {}  # jobs can queue while it is offline
        self._pushed: set[tuple[str, str]] = set()
        self.no_output_dump: set[tuple[str, str]] = set()  # (serial, tool) that cannot dump
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- discovery -------------------------------------------------------------------------

    def server_reachable(self) -> bool:
        """Whether the adb server answers. adbutils would otherwise start one on the default
        port by itself; devlab never starts a server the operator did not."""
        try:
            with socket.create_connection((self.config.adb_host, self.config.adb_port), 0.5):
                return True
        except OSError:
            return False

    def discover(self) -> list[Device]:
        if not self.server_reachable():
            self._described.clear()
            return []
        devices = []
        for info in self.client.list():
            state = ADB_STATES.get(info.state, DeviceState.OFFLINE)
            cached = self._described.get(info.serial)
            if state is DeviceState.ONLINE and cached is not None:
                devices.append(cached)
                continue
            device = Device(
                id=f"adb:{info.serial}",
                kind=self.kind,
                name=info.serial,
                state=state,
                properties={"adb_state": info.state},
                runtimes=list(self._runtimes_seen.get(info.serial, [])),
            )
            if state is DeviceState.UNAUTHORIZED:
                device.properties["hint"] = (
                    "accept the 'Allow USB debugging' prompt on the phone, then it appears"
                )
            devices.append(device)
        online = {d.id.removeprefix("adb:") for d in devices if d.state is DeviceState.ONLINE}
        for serial in list(self._described):
            if serial not in online:  # gone or offline: describe again when it returns
                del self._described[serial]
        return devices

    def describe(self, device: Device) -> Device:
        serial = device.id.removeprefix("adb:")
        if device.state is not DeviceState.ONLINE or serial in self._described:
            return device
        adb = self.client.device(serial)
        try:
            props = parse_getprop(adb.shell("getprop", timeout=30))
            properties = {**device_properties(props), **self.conditions_of(adb)}
            runtimes = [rt for rt in TOOL_NAMES if self._tool_available(adb, rt)]
            runtimes += snpe_runtimes(self.snpe)
        except VANISHED as error:
            log.warning("describing %s failed: %s", device.id, error)
            return device
        described = Device(
            id=device.id,
            kind=self.kind,
            name=f"{props.get('ro.product.manufacturer', '')} "
            f"{props.get('ro.product.model', serial)}".strip(),
            state=DeviceState.ONLINE,
            runtimes=runtimes,
            properties=properties,
        )
        self._described[serial] = described
        self._runtimes_seen[serial] = runtimes
        return described

    def watch(self, on_change: Callable[[], None]) -> None:
        """Follow hot-plug with ``track_devices`` in a background thread."""
        if self._watcher is not None:
            return
        self._watcher = threading.Thread(
            target=self._track, args=(on_change,), daemon=True, name="devlab-adb-track"
        )
        self._watcher.start()

    def _track(self, on_change: Callable[[], None]) -> None:
        while not self._stop.is_set():
            if not self.server_reachable():
                self._stop.wait(2.0)
                continue
            try:
                for _event in self.client.track_devices():
                    if self._stop.is_set():
                        return
                    on_change()
            except VANISHED as error:  # the adb server went away: try again shortly
                log.info("adb device tracking stopped (%s); retrying", error)
            self._stop.wait(2.0)

    def close(self) -> None:
        self._stop.set()

    # -- conditions ------------------------------------------------------------------------

    def capabilities(self, device: Device) -> Capabilities:
        return Capabilities(per_layer=True, threads=True)

    def conditions(self, device: Device) -> dict[str, Any]:
        try:
            return self.conditions_of(self.client.device(device.id.removeprefix("adb:")))
        except VANISHED as error:
            return {"error": f"conditions unreadable: {error}"}

    def conditions_of(self, adb: AdbDevice) -> dict[str, Any]:
        """Battery level and temperature, thermal zones and the CPU governor."""
        found: dict[str, Any] = parse_battery(adb.shell("dumpsys battery", timeout=30))
        zones = parse_thermal(adb.shell(THERMAL_COMMAND, timeout=30))
        if zones:
            found["thermal_c"] = zones
            found["temperature_c"] = max(zones.values())
        governor = adb.shell(GOVERNOR_COMMAND, timeout=30).strip()
        if governor and "No such file" not in governor:
            found["governor"] = governor
        return found

    # -- sessions --------------------------------------------------------------------------

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        if job.runtime in SNPE_RUNTIMES:
            adb = self.client.device(device.id.removeprefix("adb:"))
            try:
                return SnpeSession(
                    adb,
                    device.id,
                    job,
                    model,
                    self.snpe,
                    functools.partial(self._push_once, adb),
                    WORKDIR,
                )
            except VANISHED as error:
                raise BenchError(
                    f"{device.id} vanished while preparing the job: {error}; "
                    "reconnect it and retry the job"
                ) from error
        if job.runtime not in TOOL_NAMES:
            raise BenchError(
                f"{device.id}: unknown phone runtime {job.runtime!r} "
                f"(known: {', '.join(TOOL_NAMES)})"
            )
        adb = self.client.device(device.id.removeprefix("adb:"))
        try:
            tool = self.tool_on_device(adb, job.runtime, device.id)
            remote_model = self.push_model(adb, job.runtime, model)
        except VANISHED as error:
            raise BenchError(
                f"{device.id} vanished while preparing the job: {error}; "
                "reconnect it and retry the job"
            ) from error
        return PhoneSession(self, adb, device, job, tool, remote_model)

    def _tool_available(self, adb: AdbDevice, runtime: str) -> bool:
        if runtime in self.config.tools:
            return True
        name = TOOL_NAMES[runtime]
        result = adb.shell2(shlex.join(["command", "-v", name]), timeout=30)
        return result.returncode == 0 and bool(result.output.strip())

    def tool_on_device(self, adb: AdbDevice, runtime: str, device_id: str) -> str:
        """The tool's path on the phone: the configured binary (pushed once) or the PATH's."""
        host_path = self.config.tools.get(runtime)
        if host_path is None:
            if self._tool_available(adb, runtime):
                return TOOL_NAMES[runtime]
            raise BenchError(
                f"{device_id} has no {TOOL_NAMES[runtime]}: set [android.tools] "
                f'{runtime} = "/path/to/{TOOL_NAMES[runtime]}" in the config'
            )
        if not Path(host_path).is_file():
            raise BenchError(f"[android.tools] {runtime} = {host_path!r}: no such file")
        digest = _file_sha256(host_path)[:16]
        remote = f"{WORKDIR}/bin/{digest}/{TOOL_NAMES[runtime]}"
        self._push_once(adb, host_path, remote, mode=0o755)
        return remote

    def push_model(self, adb: AdbDevice, runtime: str, model: Model) -> str:
        """Push the model (converted first where the runtime needs another format)."""
        if runtime == "tflite":
            converted = self._convert(runtime, model)
            remote = f"{WORKDIR}/models/{model.sha256}.tflite"
            self._push_once(adb, converted, remote)
            return remote
        remote = f"{WORKDIR}/models/{model.sha256}.onnx"
        self._push_once(adb, model.path, remote)
        return remote

    def _convert(self, runtime: str, model: Model) -> str:
        template = self.config.convert.get(runtime)
        if template is None:
            raise BenchError(
                f"{model.path}: the {runtime} runtime takes .tflite models; convert first, or "
                f'set [android.convert] {runtime} = ["converter", "{{input}}", "{{output}}"]'
            )
        from backends.models.convert import run_converter

        return run_converter(template, model, suffix=".tflite")

    def _push_once(self, adb: AdbDevice, local: str, remote: str, mode: int = 0o644) -> None:
        key = (adb.serial, remote)
        if key in self._pushed:
            return
        size = os.path.getsize(local)
        try:
            existing = adb.sync.stat(remote)
        except AdbError:
            existing = None
        if existing is None or existing.size != size:
            adb.shell(shlex.join(["mkdir", "-p", remote.rsplit("/", 1)[0]]), timeout=30)
            adb.sync.push(local, remote, mode=mode)
        self._pushed.add(key)


class PhoneSession(BenchSession):
    """One model on one phone with one tool; each round is one run of the tool."""

    def __init__(
        self,
        backend: AndroidBackend,
        adb: AdbDevice,
        device: Device,
        job: Job,
        tool: str,
        remote_model: str,
    ) -> None:
        self.backend, self.adb, self.device, self.job = backend, adb, device, job
        self.tool, self.remote_model = tool, remote_model
        self.info = SessionInfo(
            load_us=None, first_inference_us=None, tool=TOOL_NAMES[job.runtime], tool_version=""
        )
        self._warmup = 0

    def _argv(
        self,
        runs: int,
        *,
        warmup: int = 0,
        profile: str | None = None,
        min_seconds: float | None = None,
    ) -> list[str]:
        threads = self.job.settings.threads or 1
        if self.job.runtime == "ort":
            if min_seconds:
                raise BenchError(
                    "onnxruntime_perf_test runs a fixed count here: give --runs "
                    "instead of --min-seconds for the ort runtime"
                )
            return ort_perf.build_command(
                self.tool,
                self.remote_model,
                runs=runs,
                threads=threads,
                execution_provider=self.backend.config.ort_execution_provider,
                profile_file=profile,
            )
        return tflite.build_command(
            self.tool,
            self.remote_model,
            num_runs=runs,
            warmup_runs=warmup,
            num_threads=threads,
            op_profiling=profile is not None,
            # a fixed count means exactly that many runs: benchmark_model's own default
            # (--min_secs=1) would otherwise add runs until a second has passed
            min_secs=min_seconds if min_seconds else 0,
        )

    def _run_tool(self, argv: list[str]) -> ToolRun:
        command = shlex.join(argv)
        try:
            result = self.adb.shell2(command, timeout=self.backend.config.command_timeout_s)
        except VANISHED as error:
            raise BenchError(
                f"{self.device.id} vanished during the benchmark ({error}); "
                "measurements already finished are kept; reconnect the phone "
                "and retry the job"
            ) from error
        parse = ort_perf.parse if self.job.runtime == "ort" else tflite.parse
        try:
            run = parse(result.output, exit_code=result.returncode)
        except ToolOutputError as error:
            raise BenchError(
                f"{self.device.id}: {TOOL_NAMES[self.job.runtime]} failed: {error}"
            ) from error
        if run.tool_version:
            self.info.tool_version = run.tool_version
        if self.info.load_us is None:
            self.info.load_us = run.init_us
            self.info.first_inference_us = run.first_inference_us
        return run

    def warmup(self, iterations: int) -> None:
        if self.job.runtime == "tflite":
            self._warmup = iterations  # benchmark_model warms up inside each run
        elif iterations:
            self._run_tool(self._argv(iterations))  # discarded; also proves the tool works

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        runs = iterations or 1  # with min_seconds, benchmark_model runs at least that long
        tool_run = self._run_tool(
            self._argv(runs, warmup=self._warmup, min_seconds=None if iterations else min_seconds)
        )
        summary = tool_summary(tool_run, runs)
        on_iteration(summary.count, [])
        return Timed([], summary=summary)

    def outputs(self, feeds: dict[str, Any]) -> list[Any] | None:
        """The phone's outputs for the parity input: ``ort`` only, and only when its
        onnxruntime_perf_test can dump them (see :mod:`backends.devices.android.outputs`);
        None else."""
        key = (self.adb.serial, self.tool)
        if self.job.runtime != "ort" or key in self.backend.no_output_dump:
            return None
        try:
            values = ort_outputs(
                self.adb,
                tool=self.tool,
                remote_model=self.remote_model,
                model=self.job.model,
                feeds=feeds,
                workdir=WORKDIR,
                threads=self.job.settings.threads or 1,
                execution_provider=self.backend.config.ort_execution_provider,
                timeout_s=self.backend.config.command_timeout_s,
            )
        except VANISHED as error:
            raise BenchError(f"{self.device.id} vanished while reading outputs: {error}") from error
        if values is None:  # a release build: do not ask again for this phone and tool
            self.backend.no_output_dump.add(key)
        return values

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile | None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        if self.job.runtime == "tflite":
            run = self._run_tool(self._argv(iterations, warmup=self._warmup, profile="on"))
            total = run.layers_total_us
            layers_stats = (
                Stats(iterations, total, total, total, None, None, total, None, None)
                if total is not None
                else None
            )
            return LayerProfile(layers=run.layers, forward_stats=None, layers_stats=layers_stats)
        prefix = f"{WORKDIR}/profiles/{self.job.id}"
        self.adb.shell(shlex.join(["mkdir", "-p", f"{WORKDIR}/profiles"]), timeout=30)
        # the tool's own first (warm-up) inference is profiled too: skip_runs=1 drops it
        self._run_tool(self._argv(iterations, profile=prefix))
        listing = self.adb.shell(shlex.join(["ls", f"{WORKDIR}/profiles"]), timeout=30)
        names = [n for n in listing.split() if n.startswith(self.job.id) and n.endswith(".json")]
        if not names:
            return None
        local = str(Path(log_dir) / names[-1])
        self.adb.sync.pull(f"{WORKDIR}/profiles/{names[-1]}", local)
        self.adb.shell(shlex.join(["rm", "-f", f"{WORKDIR}/profiles/{names[-1]}"]), timeout=30)
        return parse_ort_profile(local, skip_runs=1)


def tool_summary(run: ToolRun, runs: int) -> Stats:
    """The tool's statistics as devlab's Stats (fields the tool did not print stay None)."""
    if run.avg_us is None:
        raise BenchError(f"{run.tool} printed no average latency; its output is not understood")
    cv = run.std_us / run.avg_us if run.std_us is not None and run.avg_us else None
    return Stats(
        count=run.count or runs,
        min=run.min_us if run.min_us is not None else run.avg_us,
        mean=run.avg_us,
        median=run.median_us,
        p90=run.p90_us,
        p99=run.p99_us,
        max=run.max_us if run.max_us is not None else run.avg_us,
        std=run.std_us,
        cv=cv,
    )


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adb_available() -> bool:
    """Whether the adb binary (bundled with adbutils) can be found."""
    with contextlib.suppress(Exception):
        return Path(adbutils.adb_path()).is_file()
    return False
