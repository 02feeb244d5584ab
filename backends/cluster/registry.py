"""The dispatcher's view of the cluster's devices: which lab hosts hold each id, and since
when an id has had no host to run on.

Every device ever announced stays known (offline once no host offers it), so its queued
jobs keep their device until the grace period runs out. The registry is fed by announcements
and worker departures and feeds the dispatcher's Lab through :class:`ClusterDevices`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from backends.core.records import Capabilities, Device, DeviceState, Job, Model
from backends.devices.base import BenchError, BenchSession, DeviceBackend

ONLINE_STATES = (DeviceState.ONLINE, DeviceState.BUSY)


@dataclass(frozen=True)
class Unoffered:
    """A known device no lab host runs now: since when, and where it was last seen."""

    device_id: str
    since: float  # time.monotonic()
    last_host: str


class DeviceRegistry:
    """Device id -> the lab hosts that hold it (by worker address), with their records."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hosts: dict[str, str] = {}  # worker address -> lab host name
        self._held: dict[str, dict[str, Device]] = {}  # worker address -> id -> device
        self._known: dict[str, Device] = {}  # last record of every id ever announced
        self._last_host: dict[str, str] = {}
        self._unoffered_since: dict[str, float] = {}

    def update(self, worker: str, host: str, devices: list[Device]) -> None:
        """A host announced its devices (all of them: ids it no longer lists are gone)."""
        self._hosts[worker] = host
        self._held[worker] = {device.id: device for device in devices}
        for device in devices:
            self._known[device.id] = device
            self._last_host[device.id] = host
        self._recount()

    def remove(self, worker: str) -> str | None:
        """A worker left the cluster; returns its lab host name (None if it never announced)."""
        self._held.pop(worker, None)
        host = self._hosts.pop(worker, None)
        self._recount()
        return host

    def host_name(self, worker: str) -> str:
        return self._hosts.get(worker, worker)

    def holds(self, worker: str, device_id: str) -> bool:
        device = self._held.get(worker, {}).get(device_id)
        return device is not None and device.state in ONLINE_STATES

    def online_holders(self) -> dict[str, list[str]]:
        """Device id -> the worker addresses where it is online now."""
        holders: dict[str, list[str]] = {}
        for worker, devices in self._held.items():
            for device_id, device in devices.items():
                if device.state in ONLINE_STATES:
                    holders.setdefault(device_id, []).append(worker)
        return holders

    def unoffered(self) -> list[Unoffered]:
        return [
            Unoffered(device_id, since, self._last_host.get(device_id, "?"))
            for device_id, since in self._unoffered_since.items()
        ]

    def devices(self, busy: Collection[str] = ()) -> list[Device]:
        """One record per id: a holder's (online first), with every host that holds it."""
        merged: list[Device] = []
        for device_id, last in self._known.items():
            holding = sorted(
                (
                    (self._hosts[worker], devices[device_id])
                    for worker, devices in self._held.items()
                    if device_id in devices
                ),
                key=lambda pair: (pair[1].state not in ONLINE_STATES, pair[0]),
            )
            properties = dict(holding[0][1].properties if holding else last.properties)
            properties.pop("lab_host", None)
            properties["lab_hosts"] = [host for host, _ in holding]
            if holding:
                state = holding[0][1].state
                if state in ONLINE_STATES:
                    state = DeviceState.BUSY if device_id in busy else DeviceState.ONLINE
                base = holding[0][1]
            else:
                state, base = DeviceState.OFFLINE, last
                properties["offline_reason"] = (
                    f"no lab host offers it (last seen on {self._last_host.get(device_id, '?')})"
                )
            merged.append(dataclasses.replace(base, state=state, properties=properties))
        return merged

    def _recount(self) -> None:
        online = self.online_holders()
        now = self._clock()
        for device_id in self._known:
            if device_id in online:
                self._unoffered_since.pop(device_id, None)
            else:
                self._unoffered_since.setdefault(device_id, now)


class ClusterDevices(DeviceBackend):
    """The registry as a device backend, so the dispatcher's Lab tracks cluster devices (and
    publishes their comings and goings) exactly as it tracks local ones. It never opens a
    session: jobs run on the lab hosts."""

    kind = "cluster"

    def __init__(self, registry: DeviceRegistry, busy: Callable[[], set[str]]) -> None:
        self.registry = registry
        self._busy = busy

    def discover(self) -> list[Device]:
        return self.registry.devices(self._busy())

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        """What the lab host's backend said (the announced record carries it); nothing
        optional where the host did not say."""
        return device.capabilities_for(runtime) or Capabilities()

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        raise BenchError(f"{device.id} runs on its lab host, not in the dispatcher")
