"""The LVPM serial protocol as bytes: framing, wire constants and command payloads.

Pure encodings of ``shared/specs/monsoon-lvpm.md`` (sections 2-5) with no I/O, shared by the
status decoder, the stream parser and the driver. The output voltage byte is **rounded**
(2.01 V -> 01, not 00 = output off), unlike the reference drivers that truncate.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Wire constants (spec sections 2-5)

STATUS_TYPE = 0x10
STATUS_L = 0x3B  # length byte of a status frame: 58-byte payload + checksum
STATUS_PAYLOAD_LEN = 58
SAMPLE_BYTES = 8
MEAS_SAMPLES = 15  # samples in a full measurement packet
MEAS_L = SAMPLE_BYTES * MEAS_SAMPLES + 6  # 0x7E
MEAS_FRAME = MEAS_L + 1  # 127 bytes on the wire
SAMPLE_LENGTHS = frozenset(SAMPLE_BYTES * n + 6 for n in range(1, 32))
DEVICE_LENGTHS = SAMPLE_LENGTHS | {STATUS_L}

TYPE_MEASUREMENT, TYPE_ZERO_CAL, TYPE_REF_CAL = 0, 1, 2
FINE_NUMERATOR_A = 0.0332  # A per (Rf - Zf) counts
COARSE_NUMERATOR_A = 2.88  # A per (Rc - Zc) counts
NATIVE_RATE_HZ = 5000
DEFAULT_CALIBRATION_INTERVAL = 0xE803  # what the reference drivers' "03 E8" means (spec 3.1)

CMD_STATUS = b"\x01\x00\x00"
CMD_PRESTART = b"\x01\x1b\x01"
CMD_STOP = b"\x03\x00"

PASSTHROUGH_MODES = {"off": 0, "on": 1, "auto": 2}


class MonsoonError(Exception):
    """The monitor cannot be used: no answer, not a Monsoon, port gone, protocol error."""


# ---------------------------------------------------------------------------------------------
# Encodings


def frame(payload: bytes) -> bytes:
    """Wrap a payload as ``[L][payload][C]``: L = len(payload) + 1, C = (L + sum) mod 256."""
    length = len(payload) + 1
    if length > 255:
        raise ValueError(f"payload of {len(payload)} bytes does not fit one frame")
    return bytes((length,)) + bytes(payload) + bytes(((length + sum(payload)) & 0xFF,))


def voltage_byte(volts: float) -> int:
    """Setpoint byte for ``volts``: 0 = output off, else round((V - 2.00) / 0.01) in 1..255.

    Rounds (the classic drivers truncate, which turns 2.01 V into "output off").
    """
    if volts == 0:
        return 0
    code = round((float(volts) - 2.0) * 100.0)
    if not 1 <= code <= 255:
        raise ValueError(f"voltage {volts!r} V out of range: use 0 (output off) or 2.01-4.55 V")
    return code


def current_limit_raw(amps: float) -> int:
    """10-bit current-limit word: raw = 1023 - int(A / 8 * 1023), A in 0..8 (spec 3.1)."""
    if not 0.0 <= float(amps) <= 8.0:
        raise ValueError(f"current limit {amps!r} A out of range 0-8 A")
    return 1023 - int(float(amps) / 8.0 * 1023.0 + 1e-9)


def current_limit_amps(raw: int) -> float:
    return 8.0 * (1023 - raw) / 1023.0


def start_payload(calibration_interval: int = DEFAULT_CALIBRATION_INTERVAL) -> bytes:
    """START: run forever (stop limit FFFFFFFF), periodic calibration every N packets (LSB
    first; 0 = never). The reference drivers' ``03 E8`` is interval 0xE803."""
    if not 0 <= calibration_interval <= 0xFFFF:
        raise ValueError("calibration_interval must be 0..65535 packets")
    return b"\x02\xff\xff\xff\xff" + calibration_interval.to_bytes(2, "little")
