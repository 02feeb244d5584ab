"""A virtual phone's identity and sensors: what ``getprop``, ``dumpsys battery``, the thermal
zones, the CPU governor files and the adb CNXN banner of the emulator report.

One ``PhoneProfile`` feeds every one of those, so ``adb devices -l``, ``getprop`` and the sysfs
files always agree. Profiles load from JSON or TOML; every field has a default::

    # phone.toml
    serial = "VP0002"
    model = "Pixel 8 (virtual)"
    battery_level = 64

    [[thermal_zones]]
    type = "cpu-0-0-usr"
    temp_c = 41.5

    [extra_props]
    "ro.vendor.build.security_patch" = "2024-05-01"
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class ProfileError(ValueError):
    """A profile file that cannot be read or has unknown or mistyped keys."""


@dataclass
class ThermalZone:
    """One ``/sys/class/thermal/thermal_zoneN``: its ``type`` and its temperature in deg C."""

    type: str
    temp_c: float


def _default_zones() -> list[ThermalZone]:
    return [ThermalZone("cpu-0-0-usr", 38.0), ThermalZone("gpuss-0-usr", 35.5)]


@dataclass
class PhoneProfile:
    """Everything the virtual phone says about itself. Temperatures are in deg C here; the files
    use the units of a real phone (thermal zones in millidegrees, battery in tenths)."""

    serial: str = "VP0001"
    name: str = "devlab_vp"  # ro.product.name
    model: str = "VirtualPhone"  # ro.product.model
    device: str = "vp"  # ro.product.device
    manufacturer: str = "devlab"  # ro.product.manufacturer
    brand: str = "devlab"  # ro.product.brand
    board_platform: str = "kalama"  # ro.board.platform
    soc_model: str = "SM8550"  # ro.soc.model
    soc_manufacturer: str = "QTI"  # ro.soc.manufacturer
    cpu_abi: str = "arm64-v8a"  # ro.product.cpu.abi
    sdk: int = 34  # ro.build.version.sdk
    release: str = "14"  # ro.build.version.release
    cpu_count: int = 8
    cpu_governor: str = "schedutil"
    battery_level: int = 87  # percent
    battery_temp_c: float = 31.2
    battery_voltage_mv: int = 4123
    thermal_zones: list[ThermalZone] = field(default_factory=_default_zones)
    # the phone's clock against the host's: ahead by clock_offset_s, running clock_drift_ppm
    # fast (its `date` and power_beacon report it; docs/power-sync.md)
    clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0
    # the share of a full load the stand-in benchmark_model draws in its warm-up runs (a
    # virtual Monsoon powering the phone sees it; the timed loop draws a full load)
    tool_warmup_load: float = 1.0
    extra_props: dict[str, str] = field(default_factory=dict)

    # -----------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhoneProfile:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ProfileError(
                f"unknown profile key(s): {', '.join(unknown)}; known: {', '.join(known)}"
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "thermal_zones":
                try:
                    values[key] = [
                        zone if isinstance(zone, ThermalZone) else ThermalZone(**zone)
                        for zone in value
                    ]
                except TypeError as error:
                    raise ProfileError(
                        f"thermal_zones: each zone needs exactly 'type' and 'temp_c' ({error})"
                    ) from error
            elif key == "extra_props":
                if not isinstance(value, dict):
                    raise ProfileError("extra_props must be a table of property = value")
                values[key] = {str(k): str(v) for k, v in value.items()}
            else:
                values[key] = value
        profile = cls(**values)
        profile._check()
        return profile

    @classmethod
    def load(cls, path: str | Path) -> PhoneProfile:
        """A profile from a ``.json`` or ``.toml`` file (chosen by the suffix)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ProfileError(f"{path}: cannot read the profile: {error.strerror}") from error
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise ProfileError(f"{path}: a profile must be a .json or .toml file")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
            raise ProfileError(f"{path}: {error}") from error
        if not isinstance(data, dict):
            raise ProfileError(f"{path}: the profile must be a table/object at the top level")
        try:
            return cls.from_dict(data)
        except ProfileError as error:
            raise ProfileError(f"{path}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _check(self) -> None:
        checks = {
            "sdk": isinstance(self.sdk, int),
            "cpu_count": isinstance(self.cpu_count, int) and self.cpu_count >= 1,
            "battery_level": isinstance(self.battery_level, int) and 0 <= self.battery_level <= 100,
            "battery_temp_c": isinstance(self.battery_temp_c, int | float),
            "battery_voltage_mv": isinstance(self.battery_voltage_mv, int),
            "clock_offset_s": isinstance(self.clock_offset_s, int | float),
            "clock_drift_ppm": isinstance(self.clock_drift_ppm, int | float)
            and abs(self.clock_drift_ppm) < 1000,
            "tool_warmup_load": isinstance(self.tool_warmup_load, int | float)
            and 0 <= self.tool_warmup_load <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ProfileError(f"bad value for {', '.join(bad)}")
        for name in ("serial", "name", "model", "device"):
            value = getattr(self, name)
            # ';', ':' and '=' would break the CNXN banner; newlines would break getprop.
            if not isinstance(value, str) or any(c in value for c in ";:=\n\r\0"):
                raise ProfileError(f"{name} must be text without ; : = or line breaks")

    # -----------------------------------------------------------------------------------------
    # What the phone reports

    def props(self) -> dict[str, str]:
        """The system properties, as ``getprop`` lists them (sorted by key)."""
        abilist = {"arm64-v8a": "arm64-v8a,armeabi-v7a,armeabi", "x86_64": "x86_64,x86"}
        fingerprint = (
            f"{self.brand}/{self.name}/{self.device}:{self.release}/VP1A.000001/1:user/release-keys"
        )
        props = {
            "ro.serialno": self.serial,
            "ro.boot.serialno": self.serial,
            "ro.product.name": self.name,
            "ro.product.model": self.model,
            "ro.product.device": self.device,
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.brand": self.brand,
            "ro.product.board": self.board_platform,
            "ro.board.platform": self.board_platform,
            "ro.hardware": self.board_platform,
            "ro.soc.model": self.soc_model,
            "ro.soc.manufacturer": self.soc_manufacturer,
            "ro.product.cpu.abi": self.cpu_abi,
            "ro.product.cpu.abilist": abilist.get(self.cpu_abi, self.cpu_abi),
            "ro.build.version.sdk": str(self.sdk),
            "ro.build.version.release": self.release,
            "ro.build.type": "user",
            "ro.build.tags": "release-keys",
            "ro.build.fingerprint": fingerprint,
            "ro.debuggable": "0",
            "ro.secure": "1",
            "sys.boot_completed": "1",
            "init.svc.adbd": "running",
            "persist.sys.timezone": "UTC",
        }
        props.update(self.extra_props)
        return dict(sorted(props.items()))

    def to_getprop(self) -> str:
        """The output of ``getprop`` with no argument: ``[key]: [value]`` lines."""
        return "".join(f"[{key}]: [{value}]\n" for key, value in self.props().items())

    def banner(self, features: tuple[str, ...] | list[str]) -> str:
        """The device's CNXN banner: ``device::ro.product.name=...;...;features=...``."""
        return (
            f"device::ro.product.name={self.name};ro.product.model={self.model};"
            f"ro.product.device={self.device};features={','.join(features)}"
        )

    def battery_temp_tenths(self) -> int:
        return round(self.battery_temp_c * 10)
