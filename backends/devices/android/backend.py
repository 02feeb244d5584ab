"""Android phones over adb (adbutils): the ``[android]`` config, discovery, hot-plug,
properties and conditions, and opening a session for a phone runtime.

Device-side tools (``onnxruntime_perf_test``, TFLite ``benchmark_model``) are host files
named in the config and pushed once per device under ``/data/local/tmp/devlab/`` (cached by
content hash), or found on the phone's PATH. Models are pushed once, cached by sha256. The
sessions are :mod:`.sessions` (``ort``, ``tflite``) and :mod:`.snpe`; the adb plumbing is
:mod:`.adb`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shlex
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from adbutils import AdbDevice

from backends.core.records import Capabilities, Device, DeviceState, Job, Model
from backends.devices.android.adb import (
    DEVICE_PREFIX,
    VANISHED,
    WORKDIR,
    DevlabAdbClient,
    PushedFiles,
    listed_device,
    serial_of,
    server_reachable,
)
from backends.devices.android.power_sync import BEACON_TOOL, beacon_on_path
from backends.devices.android.props import (
    GOVERNOR_COMMAND,
    THERMAL_COMMAND,
    device_properties,
    parse_battery,
    parse_getprop,
    parse_thermal,
)
from backends.devices.android.sessions import TOOL_NAMES, PhoneSession
from backends.devices.android.snpe import SnpeSession
from backends.devices.android.snpe_config import (
    SNPE_RUNTIMES,
    SnpeConfig,
    load_snpe_config,
    snpe_runtimes,
)
from backends.devices.base import BenchError, BenchSession, DeviceBackend

log = logging.getLogger(__name__)


@dataclass
class AndroidConfig:
    """The ``[android]`` table of the config file."""

    adb_host: str = "127.0.0.1"
    adb_port: int = 5037
    tools: dict[str, str] = field(default_factory=dict)  # runtime -> host path of the binary
    convert: dict[str, list[str]] = field(default_factory=dict)  # runtime -> argv template
    ort_execution_provider: str = "cpu"
    command_timeout_s: float = 600.0
    power_beacon: str | None = None  # host path of the phone's power_beacon (--power-sync beacon)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> AndroidConfig:
        """From ``config.raw['android']``; ANDROID_ADB_SERVER_PORT sets the default port."""
        port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
        host = "127.0.0.1"
        if "adb_server" in raw:
            host, _, port_text = str(raw["adb_server"]).rpartition(":")
            try:
                host, port = host or "127.0.0.1", int(port_text)
            except ValueError:
                raise ValueError(
                    f"[android] adb_server = {raw['adb_server']!r}: expected "
                    '"HOST:PORT", e.g. "127.0.0.1:5037"'
                ) from None
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
            power_beacon=str(raw["power_beacon"]) if raw.get("power_beacon") else None,
        )


class AndroidBackend(DeviceBackend):
    """Phones the adb server sees: ``adb:<serial>``."""

    kind = "android"
    id_prefix = DEVICE_PREFIX
    machine_local = False  # a phone's serial names it wherever it is plugged in

    def __init__(self, config: AndroidConfig | None = None, snpe: SnpeConfig | None = None) -> None:
        self.config = config or AndroidConfig.from_raw({})
        self.snpe = snpe
        self.client = DevlabAdbClient(self.config.adb_host, self.config.adb_port)
        self._described: dict[str, Device] = {}
        self._runtimes_seen: dict[str, list[str]] = {}  # jobs can queue while it is offline
        self._pushed = PushedFiles()
        self.no_output_dump: set[tuple[str, str]] = set()  # (serial, tool) that cannot dump
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config_dir: Path | None) -> Self:
        """From the ``[android]`` and ``[snpe]`` tables."""
        return cls(AndroidConfig.from_raw(raw.get("android", {})), load_snpe_config(raw))

    # -- discovery -------------------------------------------------------------------------

    def server_reachable(self) -> bool:
        """Whether the adb server answers. adbutils would otherwise start one on the default
        port by itself; devlab never starts a server the operator did not."""
        return server_reachable(self.config.adb_host, self.config.adb_port)

    def discover(self) -> list[Device]:
        if not self.server_reachable():
            self._described.clear()
            return []
        devices = []
        for info in self.client.list():
            runtimes = self._runtimes_seen.get(info.serial, [])
            device = listed_device(info.serial, info.state, self.kind, runtimes)
            cached = self._described.get(info.serial)
            is_online = device.state is DeviceState.ONLINE
            devices.append(cached if is_online and cached is not None else device)
        online = {serial_of(d.id) for d in devices if d.state is DeviceState.ONLINE}
        for serial in list(self._described):
            if serial not in online:  # gone or offline: describe again when it returns
                del self._described[serial]
        return devices

    def describe(self, device: Device) -> Device:
        serial = serial_of(device.id)
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

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        """Every phone runtime profiles layers; SNPE's snpe-net-run takes no thread count."""
        runtime = runtime or (device.runtimes[0] if device.runtimes else None)
        return Capabilities(per_layer=True, threads=runtime not in SNPE_RUNTIMES)

    def conditions(self, device: Device) -> dict[str, Any]:
        try:
            return self.conditions_of(self.client.device(serial_of(device.id)))
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
            adb = self.client.device(serial_of(device.id))
            try:
                beacon, beacon_missing = self._beacon_for(adb, device.id, job)
                return SnpeSession(
                    adb,
                    device.id,
                    job,
                    model,
                    self.snpe,
                    functools.partial(self._push_once, adb),
                    WORKDIR,
                    beacon_tool=beacon,
                    beacon_missing=beacon_missing,
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
        adb = self.client.device(serial_of(device.id))
        try:
            tool = self.tool_on_device(adb, job.runtime, device.id)
            remote_model = self.push_model(adb, job.runtime, model)
            beacon, beacon_missing = self._beacon_for(adb, device.id, job)
        except VANISHED as error:
            raise BenchError(
                f"{device.id} vanished while preparing the job: {error}; "
                "reconnect it and retry the job"
            ) from error
        return PhoneSession(
            adb,
            device,
            job,
            tool,
            remote_model,
            execution_provider=self.config.ort_execution_provider,
            command_timeout_s=self.config.command_timeout_s,
            no_output_dump=self.no_output_dump,
            beacon_tool=beacon,
            beacon_missing=beacon_missing,
        )

    def _beacon_for(self, adb: AdbDevice, device_id: str, job: Job) -> tuple[str | None, str]:
        """The beacon tool for a power job synced by beacon; (None, "") for any other job."""
        if job.settings.power and job.settings.power_sync == "beacon":
            return self.beacon_on_device(adb, device_id)
        return None, ""

    def beacon_on_device(self, adb: AdbDevice, device_id: str) -> tuple[str | None, str]:
        """The beacon tool's path on the phone (``[android] power_beacon`` pushed once, or the
        PATH's), or None and why there is none."""
        host_path = self.config.power_beacon
        if host_path is None:
            if beacon_on_path(adb):
                return BEACON_TOOL, ""
            return None, (
                f"{device_id} has no {BEACON_TOOL}: set [android] power_beacon = "
                f'"/path/to/{BEACON_TOOL}" in the config (docs/power-sync.md)'
            )
        if not Path(host_path).is_file():
            return None, f"[android] power_beacon = {host_path!r}: no such file"
        remote = f"{WORKDIR}/bin/{_file_sha256(host_path)[:16]}/{BEACON_TOOL}"
        self._push_once(adb, host_path, remote, mode=0o755)
        return remote, ""

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
        self._pushed.push(adb, local, remote, mode)


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
