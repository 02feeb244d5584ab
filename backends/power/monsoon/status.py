"""The LVPM's 58-byte status packet: decoding it and finding it in a byte stream (spec 4)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from backends.power.monsoon.protocol import (
    STATUS_L,
    STATUS_PAYLOAD_LEN,
    STATUS_TYPE,
    MonsoonError,
    current_limit_amps,
)

# Status packet, payload offsets 0..57, big-endian (spec section 4).
_STATUS_STRUCT = struct.Struct(">BBBhhhHhhhHBBBxBbHBHHHHBbbHHBBBbbbbbbbbbBH")
assert _STATUS_STRUCT.size == STATUS_PAYLOAD_LEN


@dataclass(frozen=True)
class MonsoonStatus:
    """The 58-byte status packet, decoded (volts, amps, ohms, Hz); raw ADC words stay raw."""

    firmware_version: int
    protocol_version: int
    main_fine_current: int
    usb_fine_current: int
    aux_fine_current: int
    voltage1: float
    main_coarse_current: int
    usb_coarse_current: int
    aux_coarse_current: int
    voltage2: float
    output_voltage_raw: int
    output_voltage_setting: float
    temperature: int
    status_flags: int
    leds: int
    main_fine_resistor: float
    serial_number: int
    sample_rate_hz: int
    dac_cal_low: int
    dac_cal_high: int
    powerup_current_limit_raw: int
    powerup_current_limit: float
    runtime_current_limit_raw: int
    runtime_current_limit: float
    powerup_time: int
    usb_fine_resistor: float
    aux_fine_resistor: float
    initial_usb_voltage: float
    initial_aux_voltage: float
    hardware_revision: int
    temperature_limit: int
    usb_passthrough_mode: int
    main_coarse_resistor: float
    usb_coarse_resistor: float
    aux_coarse_resistor: float
    default_main_fine_resistor: float
    default_usb_fine_resistor: float
    default_aux_fine_resistor: float
    default_main_coarse_resistor: float
    default_usb_coarse_resistor: float
    default_aux_coarse_resistor: float
    event_code: int
    event_data: int
    raw: bytes = field(repr=False, default=b"")

    @property
    def voltage_lsb(self) -> float:
        """Volts per count of a sample's voltage word (62.5 uV on hardware revision 1)."""
        return 62.5e-6 if self.hardware_revision == 1 else 125e-6

    @classmethod
    def from_payload(cls, payload: bytes) -> MonsoonStatus:
        if len(payload) != STATUS_PAYLOAD_LEN or payload[0] != STATUS_TYPE:
            raise MonsoonError(f"not a status payload: {bytes(payload[:8]).hex(' ')}...")
        (
            _type,
            fw,
            proto,
            main_f,
            usb_f,
            aux_f,
            v1,
            main_c,
            usb_c,
            aux_c,
            v2,
            setting,
            temp,
            flags,
            leds,
            main_f_res,
            serial_no,
            rate,
            dac_lo,
            dac_hi,
            pu_limit,
            rt_limit,
            pu_time,
            usb_f_res,
            aux_f_res,
            init_usb_v,
            init_aux_v,
            hw_rev,
            temp_limit,
            passthrough,
            main_c_res,
            usb_c_res,
            aux_c_res,
            d_main_f,
            d_usb_f,
            d_aux_f,
            d_main_c,
            d_usb_c,
            d_aux_c,
            event_code,
            event_data,
        ) = _STATUS_STRUCT.unpack(bytes(payload))

        def ohm(raw: int, aux: bool = False) -> float:
            return round((0.10 if aux else 0.05) + 0.0001 * raw, 6)

        return cls(
            firmware_version=fw,
            protocol_version=proto,
            main_fine_current=main_f,
            usb_fine_current=usb_f,
            aux_fine_current=aux_f,
            voltage1=v1 * 125e-6,
            main_coarse_current=main_c,
            usb_coarse_current=usb_c,
            aux_coarse_current=aux_c,
            voltage2=v2 * 125e-6,
            output_voltage_raw=setting,
            output_voltage_setting=round(2.0 + 0.01 * setting, 2),
            temperature=temp,
            status_flags=flags,
            leds=leds,
            main_fine_resistor=ohm(main_f_res),
            serial_number=serial_no,
            sample_rate_hz=rate * 1000,
            dac_cal_low=dac_lo,
            dac_cal_high=dac_hi,
            powerup_current_limit_raw=pu_limit,
            powerup_current_limit=current_limit_amps(pu_limit),
            runtime_current_limit_raw=rt_limit,
            runtime_current_limit=current_limit_amps(rt_limit),
            powerup_time=pu_time,
            usb_fine_resistor=ohm(usb_f_res),
            aux_fine_resistor=ohm(aux_f_res, aux=True),
            initial_usb_voltage=init_usb_v * 125e-6,
            initial_aux_voltage=init_aux_v * 125e-6,
            hardware_revision=hw_rev,
            temperature_limit=temp_limit,
            usb_passthrough_mode=passthrough,
            main_coarse_resistor=ohm(main_c_res),
            usb_coarse_resistor=ohm(usb_c_res),
            aux_coarse_resistor=ohm(aux_c_res, aux=True),
            default_main_fine_resistor=ohm(d_main_f),
            default_usb_fine_resistor=ohm(d_usb_f),
            default_aux_fine_resistor=ohm(d_aux_f, aux=True),
            default_main_coarse_resistor=ohm(d_main_c),
            default_usb_coarse_resistor=ohm(d_usb_c),
            default_aux_coarse_resistor=ohm(d_aux_c, aux=True),
            event_code=event_code,
            event_data=event_data,
            raw=bytes(payload),
        )


def find_status_frame(buf: bytes | bytearray) -> tuple[bytes | None, int]:
    """The payload of the first complete, checksum-valid status frame in ``buf`` and the offset
    just past it; ``(None, offset)`` when there is none yet, bytes before ``offset`` can go."""
    start = 0
    while True:
        i = buf.find(b"\x3b\x10", start)
        if i < 0:
            return None, max(0, len(buf) - 1)
        end = i + STATUS_L + 1
        if end > len(buf):
            return None, i
        if (sum(buf[i : end - 1]) & 0xFF) == buf[end - 1]:
            return bytes(buf[i + 1 : end - 1]), end
        start = i + 1
