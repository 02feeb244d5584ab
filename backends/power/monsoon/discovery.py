"""Finding LVPMs: serial ports by USB id, each probed with a status request (spec section 1).

Probing opens the port with the driver (``Monsoon``), which stops a capture left running and
reads the serial number from the status reply, so discovery sits above the driver.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from serial.tools import list_ports

from backends.power.monsoon.driver import Monsoon
from backends.power.monsoon.protocol import MonsoonError

log = logging.getLogger(__name__)

USB_IDS: tuple[tuple[int, int], ...] = ((0x04D8, 0xFE23), (0x2AB9, 0x0001))
PRODUCT_STRING = "mobile device power monitor"


@dataclass
class MonitorInfo:
    """A serial port that is (or may be) an LVPM; the status fields are set once probed."""

    port: str
    description: str = ""
    vid: int | None = None
    pid: int | None = None
    serial_number: int | None = None
    firmware_version: int | None = None
    protocol_version: int | None = None
    hardware_revision: int | None = None

    @property
    def id(self) -> str:
        return f"monsoon:{self.serial_number}" if self.serial_number is not None else self.port


def candidate_ports() -> list[MonitorInfo]:
    """Serial ports whose USB id (or product string) is a serial-firmware LVPM's."""
    found = []
    for port in list_ports.comports():
        product = (port.product or port.description or "").lower()
        if (port.vid, port.pid) in USB_IDS or product.startswith(PRODUCT_STRING):
            found.append(
                MonitorInfo(
                    port=port.device, description=port.description or "", vid=port.vid, pid=port.pid
                )
            )
    return found


def discover_monitors(
    probe: bool = True, ports: Iterable[str] | None = None, timeout: float = 0.5
) -> list[MonitorInfo]:
    """LVPMs attached to this host.

    Without ``ports`` the serial ports are enumerated and kept by USB id 04D8:FE23 or 2AB9:0001
    (or the product string); ``ports`` names the candidates instead (e.g. a virtual Monsoon's
    pty). With ``probe`` each candidate must answer a status request within ``timeout`` and is
    returned with its serial number; ports that do not are left out (logged at info level).
    """
    candidates = candidate_ports() if ports is None else [MonitorInfo(port=str(p)) for p in ports]
    if not probe:
        return candidates
    monitors = []
    for info in candidates:
        try:
            with Monsoon(info.port, timeout=timeout) as monitor:
                status = monitor.last_status
        except MonsoonError as exc:
            log.info("skipping %s: %s", info.port, exc)
            continue
        assert status is not None
        info.serial_number = status.serial_number
        info.firmware_version = status.firmware_version
        info.protocol_version = status.protocol_version
        info.hardware_revision = status.hardware_revision
        monitors.append(info)
    return monitors


def find_monitor(
    serial_number: int, ports: Iterable[str] | None = None, timeout: float = 0.5
) -> MonitorInfo:
    """The attached LVPM with this serial number (printed on the back of the unit)."""
    monitors = discover_monitors(probe=True, ports=ports, timeout=timeout)
    for info in monitors:
        if info.serial_number == serial_number:
            return info
    seen = ", ".join(f"{m.serial_number} on {m.port}" for m in monitors) or "none"
    raise MonsoonError(f"no Monsoon with serial number {serial_number} (found: {seen})")
