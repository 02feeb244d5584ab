"""Which device backends exist and the config tables they read: the one place that knows them.

The core never imports a device implementation; the front ends build the backends here and hand
them to the Lab. A new kind of device is one package under ``backends/devices`` plus a line here.
"""

from __future__ import annotations

from pathlib import Path

from backends.core.config import Config
from backends.devices.base import DeviceBackend


def default_backends(config: Config | None = None) -> list[DeviceBackend]:
    """The device backends of a plain installation: the host CPU is always one; phones
    appear when an adb server is running. Device modules load lazily (OpenVINO, zeroconf)."""
    from backends.devices.android.backend import AndroidBackend, AndroidConfig
    from backends.devices.android.snpe import load_snpe_config
    from backends.devices.dpu.backend import DpuBackend, DpuConfig
    from backends.devices.host import HostBackend
    from backends.devices.openvino.backend import OpenVinoBackend
    from backends.devices.openvino.ncs import NcsBackend, NcsConfig

    raw = config.raw if config is not None else {}
    android = AndroidConfig.from_raw(raw.get("android", {}))
    return [
        HostBackend(),
        AndroidBackend(android, load_snpe_config(raw)),
        NcsBackend(NcsConfig.from_raw(raw.get("ncs", {}))),
        OpenVinoBackend(),
        DpuBackend(DpuConfig.from_raw(raw.get("dpu", {}), config_dir(config))),
    ]


def config_dir(config: Config | None) -> Path | None:
    """Relative file names in the config (token files) are relative to the config file."""
    return config.path.parent if config is not None and config.path is not None else None
