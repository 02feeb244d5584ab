"""Which device backends exist and the config tables they read: the one place that knows them.

The core never imports a device implementation; the front ends build the backends here and hand
them to the Lab. A new kind of device is one package under ``backends/devices`` plus a line in
:func:`backend_kinds`. What a kind knows about itself (reading its tables, whether its ids are
machine-local, a hint for an unknown id) stays on its backend class; this module only asks.
"""

from __future__ import annotations

import functools
from pathlib import Path

from backends.core.config import Config
from backends.devices.base import DeviceBackend


def backend_kinds() -> list[tuple[type[DeviceBackend], tuple[str, ...]]]:
    """Every kind of device with the config tables its backend reads, in discovery order.

    Device modules load here, on first use (OpenVINO and zeroconf themselves load later still).
    """
    from backends.devices.android.backend import AndroidBackend
    from backends.devices.dpu.backend import DpuBackend
    from backends.devices.host import HostBackend
    from backends.devices.openvino.backend import OpenVinoBackend
    from backends.devices.openvino.ncs import NcsBackend

    return [
        (HostBackend, ()),
        (AndroidBackend, ("android", "snpe")),
        (NcsBackend, ("ncs",)),
        (OpenVinoBackend, ()),
        (DpuBackend, ("dpu",)),
    ]


def default_backends(config: Config | None = None) -> list[DeviceBackend]:
    """The device backends of a plain installation, each built from its own config tables: the
    host CPU is always one; phones appear when an adb server is running. ValueError names the
    bad setting."""
    raw = config.raw if config is not None else {}
    base = config_dir(config)
    return [
        backend.from_config({name: raw[name] for name in tables if name in raw}, base)
        for backend, tables in backend_kinds()
    ]


def config_dir(config: Config | None) -> Path | None:
    """Relative file names in the config (token files) are relative to the config file."""
    return config.path.parent if config is not None and config.path is not None else None


@functools.cache
def machine_local_prefixes() -> tuple[str, ...]:
    """The id prefixes (``host:``...) of the kinds whose ids name a part of this machine."""
    return tuple(backend.id_prefix for backend, _ in backend_kinds() if backend.machine_local)


def is_machine_local(device_id: str) -> bool:
    """Whether ``device_id`` names a part of this machine (``host:cpu``, ``ncs:1-2``), so the
    same id on another machine is another device."""
    return device_id.startswith(machine_local_prefixes())


def hint_for_unknown(device_id: str) -> str | None:
    """What to do about a device id nobody has (a config entry to add), if its kind knows."""
    for backend, _ in backend_kinds():
        hint = backend.hint_for_unknown(device_id)
        if hint:
            return hint
    return None
