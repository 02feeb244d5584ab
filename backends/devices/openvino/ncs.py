"""Intel Neural Compute Sticks (``ncs:<id>``): USB discovery and MYRIAD runs through OpenVINO.

Both sticks enumerate under vendor ``03e7``: the NCS 1 as ``2150`` and the NCS 2 as ``2485``
before firmware load, both as ``f63b`` after it (``shared/specs/bench-tools.md`` section 5.1).
Discovery reads sysfs (``/sys/bus/usb/devices``; the root is configurable for tests) and falls
back to pyusb where sysfs is absent and pyusb is installed. The device id is the USB bus path
(``ncs:1-1.2``), which a stick keeps when it re-enumerates after booting; the backend
remembers the model it saw unbooted so a booted stick is still named NCS 1 or NCS 2.

MYRIAD left OpenVINO in 2023.0 and the only pip wheels with the plugin are
``openvino==2021.4.2`` for Python 3.6-3.9, so sticks are driven by
``backends/devices/openvino/runner.py`` under the interpreter of such an environment, configured as
``[ncs] python = "/path/to/py39/bin/python"``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from backends.core.records import Capabilities, Device, Job, Model
from backends.devices.base import BenchError, BenchSession, DeviceBackend
from backends.devices.openvino.backend import DEFAULT_TIMEOUT_S, OpenVinoSession

SYSFS_USB_DEVICES = "/sys/bus/usb/devices"
MOVIDIUS_VENDOR = "03e7"
NCS1_UNBOOTED = "2150"
NCS2_UNBOOTED = "2485"
BOOTED = "f63b"
UNBOOTED_MODELS = {NCS1_UNBOOTED: "NCS1", NCS2_UNBOOTED: "NCS2"}
MODEL_NAMES = {
    "NCS1": "Intel Movidius Neural Compute Stick (Myriad 2)",
    "NCS2": "Intel Neural Compute Stick 2 (Myriad X)",
    None: "Intel Neural Compute Stick (booted, model unknown)",
}
DEVICE_PREFIX = "ncs:"
MYRIAD_RUNTIME = "openvino-myriad"
CONFIG_HINT = '[ncs] python = "/path/to/py39/bin/python"'


@dataclass(frozen=True)
class UsbStick:
    """One stick as USB shows it. ``model`` is ``None`` for a booted stick not seen unbooted."""

    bus_path: str
    product_id: str
    serial: str | None = None
    busnum: int | None = None
    devnum: int | None = None
    model: str | None = None

    @property
    def booted(self) -> bool:
        return self.product_id == BOOTED

    @property
    def usb_state(self) -> str:
        return "booted" if self.booted else "unbooted"

    @property
    def device_id(self) -> str:
        return f"{DEVICE_PREFIX}{self.bus_path}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def scan_sysfs(root: str | os.PathLike[str] = SYSFS_USB_DEVICES) -> list[UsbStick]:
    """The Movidius sticks under a sysfs ``usb/devices`` folder, sorted by bus path.

    Interfaces (``1-1.2:1.0``) and other vendors' devices are skipped; an unreadable or
    missing root gives an empty list.
    """
    base = Path(root)
    try:
        entries = sorted(base.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    sticks = []
    for entry in entries:
        if ":" in entry.name:
            continue
        vendor = (_read(entry / "idVendor") or "").lower()
        product = (_read(entry / "idProduct") or "").lower()
        if vendor != MOVIDIUS_VENDOR or product not in (NCS1_UNBOOTED, NCS2_UNBOOTED, BOOTED):
            continue
        sticks.append(
            UsbStick(
                bus_path=entry.name,
                product_id=product,
                serial=_read(entry / "serial") or None,
                busnum=_int_or_none(_read(entry / "busnum")),
                devnum=_int_or_none(_read(entry / "devnum")),
                model=UNBOOTED_MODELS.get(product),
            )
        )
    return sticks


def scan_pyusb() -> list[UsbStick]:
    """The sticks pyusb sees (for hosts without sysfs); empty if pyusb or a backend is missing."""
    try:
        import usb.core  # type: ignore[import-not-found]
    except Exception:
        return []
    sticks = []
    try:
        found = list(usb.core.find(find_all=True, idVendor=int(MOVIDIUS_VENDOR, 16)) or [])
    except Exception:  # no libusb backend, no permission
        return []
    for dev in found:
        product = f"{dev.idProduct:04x}"
        if product not in (NCS1_UNBOOTED, NCS2_UNBOOTED, BOOTED):
            continue
        ports = getattr(dev, "port_numbers", None) or ()
        bus_path = f"{dev.bus}-{'.'.join(str(p) for p in ports)}" if ports else f"{dev.bus}-0"
        sticks.append(
            UsbStick(
                bus_path=bus_path,
                product_id=product,
                busnum=dev.bus,
                devnum=dev.address,
                model=UNBOOTED_MODELS.get(product),
            )
        )
    return sorted(sticks, key=lambda s: s.bus_path)


def discover_sticks(
    root: str | os.PathLike[str] = SYSFS_USB_DEVICES, use_pyusb: bool = True
) -> list[UsbStick]:
    """sysfs when ``root`` exists, else pyusb (when allowed and installed)."""
    if Path(root).is_dir():
        return scan_sysfs(root)
    return scan_pyusb() if use_pyusb else []


@dataclass
class NcsConfig:
    """The ``[ncs]`` table: ``python`` (an interpreter with openvino 2021.4.2), ``sysfs_root``,
    ``timeout_s`` (per answer of the runner: loading, one round, parity), ``pyusb`` (fall back
    to pyusb without sysfs)."""

    python: str | None = None
    sysfs_root: str = SYSFS_USB_DEVICES
    timeout_s: float = DEFAULT_TIMEOUT_S
    pyusb: bool = True

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> NcsConfig:
        unknown = set(raw) - {"python", "sysfs_root", "timeout_s", "pyusb"}
        if unknown:
            raise ValueError(
                f"[ncs]: unknown key(s) {sorted(unknown)}; known: pyusb, python, sysfs_root, "
                "timeout_s"
            )
        python = raw.get("python")
        try:
            timeout_s = float(raw.get("timeout_s", DEFAULT_TIMEOUT_S))
        except (TypeError, ValueError):
            raise ValueError(
                f"[ncs] timeout_s must be a number of seconds, got {raw['timeout_s']!r}"
            ) from None
        return cls(
            python=str(Path(str(python)).expanduser()) if python else None,
            sysfs_root=str(raw.get("sysfs_root", SYSFS_USB_DEVICES)),
            timeout_s=timeout_s,
            pyusb=bool(raw.get("pyusb", True)),
        )


class NcsBackend(DeviceBackend):
    """``ncs:<bus path>``: every attached stick, booted or not (polled; sysfs reads are cheap)."""

    kind = "ncs"
    id_prefix = DEVICE_PREFIX
    machine_local = True  # a USB bus path names a port of this machine
    # a session holds a runner process with the model loaded on the stick, and a MYRIAD stick
    # serves one process: the jobs waiting for one stick run one after another
    interleave_rounds = False

    def __init__(self, config: NcsConfig | None = None) -> None:
        self.config = config or NcsConfig()
        self._models: dict[str, str] = {}  # bus path -> model seen while unbooted
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config_dir: Path | None) -> Self:
        """From the ``[ncs]`` table."""
        return cls(NcsConfig.from_raw(raw.get("ncs", {})))

    def sticks(self) -> list[UsbStick]:
        found = discover_sticks(self.config.sysfs_root, self.config.pyusb)
        with self._lock:
            for stick in found:
                if stick.model:
                    self._models[stick.bus_path] = stick.model
            return [
                stick
                if stick.model
                else UsbStick(**{**stick.__dict__, "model": self._models.get(stick.bus_path)})
                for stick in found
            ]

    def discover(self) -> list[Device]:
        return [self._device(stick) for stick in self.sticks()]

    def _device(self, stick: UsbStick) -> Device:
        properties: dict[str, Any] = {
            "usb_state": stick.usb_state,
            "usb_id": f"{MOVIDIUS_VENDOR}:{stick.product_id}",
            "bus_path": stick.bus_path,
            "model": stick.model or "unknown",
            "openvino_device": "MYRIAD",
            "python": self.config.python or f"not configured (add {CONFIG_HINT})",
        }
        if stick.serial:
            properties["serial"] = stick.serial
        return Device(
            id=stick.device_id,
            kind=self.kind,
            name=f"{MODEL_NAMES[stick.model]} at USB {stick.bus_path}",
            runtimes=[MYRIAD_RUNTIME],
            properties=properties,
        )

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        return Capabilities(extras={"runtime_python": self.config.python})

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        if job.runtime != MYRIAD_RUNTIME:
            raise BenchError(f"{device.id} offers runtime {MYRIAD_RUNTIME!r}, not {job.runtime!r}")
        python = self.config.python
        if not python:
            raise BenchError(
                f"{device.id}: no Python environment with OpenVINO's MYRIAD plugin is configured. "
                "MYRIAD needs openvino==2021.4.2 (Python 3.6-3.9); install it in a separate "
                f"environment and add to the config file: {CONFIG_HINT}"
            )
        if not Path(python).exists():
            raise BenchError(
                f"{device.id}: the interpreter set in [ncs] python does not exist: {python}"
            )
        return OpenVinoSession(
            python,
            "MYRIAD",
            model,
            threads=None,
            select=device.id[len(DEVICE_PREFIX) :],
            timeout_s=self.config.timeout_s,
            default_warmup=job.settings.warmup,
        )
