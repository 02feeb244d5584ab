"""DPU boards (and any box) running ``devlab agent``, reached over HTTP: the ``dpu:<url>`` devices.

Agents come from the config file (``[[dpu.endpoints]]``, :mod:`.config`) and, when asked, from
zeroconf browsing (:mod:`.watch`). Each is probed for its ``/v1/info``; one that does not
answer shows offline, keeping the runners it offered so queued jobs wait for it. A job becomes
one job on the agent (:mod:`.session`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from backends.core.records import Capabilities, Device, DeviceState, Job, Model
from backends.devices.base import BenchError, BenchSession, DeviceBackend
from backends.devices.dpu.client import AgentClient, AgentRefused, AgentUnreachable
from backends.devices.dpu.config import DEVICE_PREFIX, DpuConfig, Endpoint
from backends.devices.dpu.session import DpuSession
from backends.devices.dpu.watch import AnnouncedAgents

log = logging.getLogger(__name__)

PER_LAYER_RUNNERS = ("trtexec",)  # agent runners that return per-layer times
POWER_RUNNERS = ("trtexec",)  # agent runners that measure the rails of a board with --tegrastats
POWER_SOURCE = "power_source"  # the property naming the board's own power source (tegrastats)


class DpuBackend(DeviceBackend):
    """Every configured or announced agent is a device; unreachable ones show offline."""

    kind = "dpu"
    id_prefix = DEVICE_PREFIX
    machine_local = False  # an agent's URL names it from anywhere
    supports_canary = False  # each canary run would be a whole upload and agent job
    interleave_rounds = False  # the agent runs a job's rounds as one job of its own

    def __init__(self, config: DpuConfig | None = None) -> None:
        self.config = config or DpuConfig()
        self.offline_timeout_s = self.config.offline_timeout_s
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._announced = (
            AnnouncedAgents(
                self.config.browse_interfaces, self.config.browse_wait_s, self.config.token
            )
            if self.config.browse
            else None
        )
        self._last_states: dict[str, DeviceState] = {}
        self._last_online: dict[str, Device] = {}  # runners stay known while an agent is away

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config_dir: Path | None) -> Self:
        """From the ``[dpu]`` table; token files are relative to the config file."""
        return cls(DpuConfig.from_raw(raw.get("dpu", {}), config_dir))

    @classmethod
    def hint_for_unknown(cls, device_id: str) -> str | None:
        """An agent is a device once the config names it (or zeroconf browsing finds it)."""
        if not device_id.startswith(DEVICE_PREFIX):
            return None
        return (
            "add the agent to the config: [[dpu.endpoints]] with "
            f'url = "{device_id.removeprefix(DEVICE_PREFIX)}" and token_file = "..."'
        )

    # -- discovery --------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        """Configured agents, then those announced with zeroconf (when browsing)."""
        configured = {e.url for e in self.config.endpoints}
        found = self._announced.endpoints() if self._announced is not None else []
        announced = [e for e in found if e.url not in configured]
        return self.config.endpoints + announced

    def endpoint(self, device_id: str) -> Endpoint:
        for endpoint in self.endpoints():
            if endpoint.device_id == device_id:
                return endpoint
        raise BenchError(f"{device_id}: no such agent in the config ([[dpu.endpoints]])")

    def discover(self) -> list[Device]:
        if self._announced is not None:
            self._announced.start()
        endpoints = self.endpoints()
        if not endpoints:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(endpoints))) as pool:
            probed = list(pool.map(self._probe, endpoints))
        devices = []
        for device in probed:
            known = self._last_online.get(device.id)
            if device.state is DeviceState.ONLINE:
                self._last_online[device.id] = device
            elif known is not None:  # keep what it offered, so jobs can wait for it
                device = Device(
                    device.id,
                    device.kind,
                    known.name,
                    device.state,
                    list(known.runtimes),
                    {**known.properties, **device.properties},
                )
            devices.append(device)
        self._last_states = {d.id: d.state for d in devices}
        return devices

    def _probe(self, endpoint: Endpoint) -> Device:
        """The device an endpoint is now: its /v1/info, or why it is not reachable."""
        name = endpoint.name or endpoint.url
        base = {"url": endpoint.url, "source": endpoint.source}
        if not endpoint.token:
            return Device(
                endpoint.device_id,
                self.kind,
                name,
                DeviceState.UNAUTHORIZED,
                [],
                {
                    **base,
                    "offline_reason": "no token configured for this agent "
                    "(add token or token_file to its [[dpu.endpoints]] entry, or [dpu] token)",
                },
            )
        client = AgentClient(endpoint.url, endpoint.token, self.config.info_timeout_s)
        try:
            info = client.info()
        except AgentRefused as error:
            state = DeviceState.UNAUTHORIZED if error.status == 401 else DeviceState.OFFLINE
            return Device(
                endpoint.device_id,
                self.kind,
                name,
                state,
                [],
                {**base, "offline_reason": f"the agent refused: {error}"},
            )
        except AgentUnreachable as error:
            return Device(
                endpoint.device_id,
                self.kind,
                name,
                DeviceState.OFFLINE,
                [],
                {**base, "offline_reason": str(error)},
            )
        runners = [str(r) for r in info.get("runners", [])]
        default = info.get("default_runner")
        if default in runners:
            runners.remove(default)
            runners.insert(0, default)
        versions = info.get("versions") if isinstance(info.get("versions"), dict) else {}
        properties = {
            **base,
            "board": info.get("board"),
            "agent_kind": info.get("kind"),
            "api": info.get("api"),
            "max_upload_bytes": info.get("max_upload_bytes"),
            **_power_source(info),
            **{f"version_{k}": v for k, v in versions.items()},
        }
        return Device(
            endpoint.device_id,
            self.kind,
            endpoint.name or str(info.get("board") or endpoint.url),
            DeviceState.ONLINE,
            runners,
            properties,
        )

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        """trtexec (a Jetson agent) has a profiled pass, in the agent's own job, and measures
        power where the agent samples the board's rails (``--tegrastats``)."""
        runtime = runtime or (device.runtimes[0] if device.runtimes else None)
        return Capabilities(
            per_layer=runtime in PER_LAYER_RUNNERS,
            threads=True,
            power_capture=runtime in POWER_RUNNERS and bool(device.properties.get(POWER_SOURCE)),
        )

    def rail_stream(self, device: Device) -> Callable[[], Iterator[dict[str, Any]]] | None:
        """The agent's live rails (``GET /v1/power/stream``) where its info names a power
        source; each ``samples`` event's data, ``{}`` for a keep-alive ping."""
        if not device.properties.get(POWER_SOURCE):
            return None
        endpoint = self.endpoint(device.id)
        client = AgentClient(endpoint.url, endpoint.token, self.config.info_timeout_s)

        def stream() -> Iterator[dict[str, Any]]:
            for event in client.power_stream():
                if event.kind == "samples":
                    yield event.data
                elif event.kind == "end":
                    raise AgentUnreachable(f"{endpoint.url}: {event.data.get('reason', 'ended')}")
                else:
                    yield {}

        return stream

    # -- hot-plug ---------------------------------------------------------------------------

    def watch(self, on_change: Callable[[], None]) -> None:
        """Poll the agents (and browse zeroconf when asked); call back when one comes or goes."""
        if self._watcher is not None:
            return
        if not self.config.endpoints and not self.config.browse:
            return

        def poll() -> None:
            while not self._stop.wait(self.config.poll_s):
                before = dict(self._last_states)
                try:
                    now = {d.id: d.state for d in self.discover()}
                except Exception:
                    log.exception("polling the DPU agents failed")
                    continue
                if now != before:
                    on_change()

        self._watcher = threading.Thread(target=poll, name="devlab-dpu-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._announced is not None:
            self._announced.stop()

    # -- sessions ---------------------------------------------------------------------------

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        endpoint = self.endpoint(device.id)
        if not endpoint.token:
            raise BenchError(f"{device.id}: no token configured for this agent")
        if job.runtime not in device.runtimes:
            raise BenchError(
                f"{device.id} has no runner {job.runtime!r} "
                f"(it offers: {', '.join(device.runtimes) or 'none'})"
            )
        client = AgentClient(endpoint.url, endpoint.token)
        return DpuSession(client, device, job, model, self.config.retry_s)


def _power_source(info: dict[str, Any]) -> dict[str, str]:
    """``{"power_source": "tegrastats"}`` for an agent that measures its board's rails
    (``power`` in its info); nothing for one that does not."""
    power = info.get("power")
    if isinstance(power, dict) and power.get("source"):
        return {POWER_SOURCE: str(power["source"])}
    return {}
