"""Driver for the white Monsoon Power Monitor (LVPM) with its serial-protocol firmware.

The unit is a USB CDC-ACM virtual serial port (``/dev/ttyACM<n>``, ``COM<n>``) that speaks the
framed binary protocol described in ``shared/specs/monsoon-lvpm.md``; this module follows that
spec and improves on the reference drivers where the spec says so:

* the output voltage byte is **rounded** (2.01 V -> 01, not 00 = output off);
* every setter waits for its own status reply, so a later ``status()`` never returns a stale
  reply to an earlier command (quirk 4), and every read has its own deadline (quirk 5);
* the sample stream is parsed from a byte buffer with **resynchronisation**: a frame is
  accepted only if its length byte is possible, its checksum matches and its payload passes
  the type checks; after garbage a candidate frame must also be followed by another valid frame
  before it is trusted; anything else discards one byte (counted in ``garbage_bytes``);
* calibration and sequence state are reset at every start (quirk 8); measurement packets that
  arrive before both a zero and a reference calibration are discarded (``uncalibrated``);
* dropped samples are counted from the 4-bit packet sequence (15 samples per lost packet; a
  gap of 16 packets is invisible, spec 5.9) plus the device's own dropped-sample counter.

Use::

    monitors = discover_monitors()               # USB id 04D8:FE23 / 2AB9:0001, status-probed
    with Monsoon(monitors[0].port) as mon:
        mon.set_voltage(3.7)
        mon.start_sampling(on_batch)             # on_batch(SampleBatch) from a delivery thread
        ...
        counts = mon.stop_sampling()

Threads: ``start_sampling`` starts a *reader* thread (reads and parses the port, nothing else)
and a *delivery* thread that calls ``on_batch``; a slow consumer therefore never stalls the
port. If the consumer falls more than ``queue_batches`` batches behind, batches are discarded
and counted (``undelivered``, included in ``dropped``).

Timestamps: the device sends none. Sample *i* of a run is given the wall-clock time
``anchor + i / rate`` where *i* also counts dropped samples, so gaps keep their place. The
anchor is set when the first packet arrives. When data arrives before its predicted time
(samples cannot arrive before they are taken: the first estimate had more latency, or the
device clock runs fast) the anchor slews earlier by at most half a sample period per read, so
timestamps stay strictly increasing; when data arrives more than ``REANCHOR_S`` late (the
stream stalled) the anchor jumps forward.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import serial
from serial.tools import list_ports

from backends.core.events import PowerSamples

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Protocol constants (spec sections 1-5)

USB_IDS: tuple[tuple[int, int], ...] = ((0x04D8, 0xFE23), (0x2AB9, 0x0001))
PRODUCT_STRING = "mobile device power monitor"

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

# Status packet, payload offsets 0..57, big-endian (spec section 4).
_STATUS_STRUCT = struct.Struct(">BBBhhhHhhhHBBBxBbHBHHHHBbbHHBBBbbbbbbbbbBH")
assert _STATUS_STRUCT.size == STATUS_PAYLOAD_LEN

READ_POLL_S = 0.05  # read timeout while waiting for data
COALESCE_S = 0.02  # pause after a read so that the next one takes several frames at once
REANCHOR_S = 0.25  # data this late against the sample clock: the stream stalled, re-anchor


class MonsoonError(Exception):
    """The monitor cannot be used: no answer, not a Monsoon, port gone, protocol error."""


# ---------------------------------------------------------------------------------------------
# Encoding helpers


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


# ---------------------------------------------------------------------------------------------
# Status packet


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


# ---------------------------------------------------------------------------------------------
# Sample stream


@dataclass
class SampleCounts:
    """Cumulative counters of one sampling run (``Monsoon.counts``)."""

    received: int = 0  # calibrated measurement samples handed out
    dropped: int = 0  # samples lost: lost_packets * 15 + device_dropped + undelivered
    lost_packets: int = 0  # sample packets missing from the sequence numbers
    device_dropped: int = 0  # samples the device reports it could not send
    undelivered: int = 0  # samples discarded because the consumer fell behind
    garbage_bytes: int = 0  # bytes discarded while resynchronising
    resyncs: int = 0  # times framing was lost
    uncalibrated: int = 0  # measurement samples before the first complete calibration
    packets: int = 0  # sample packets accepted (measurement + calibration + unknown type)
    calibration_packets: int = 0
    status_packets: int = 0
    unknown_packets: int = 0  # sample frames of type 3 (skipped)
    flagged_packets: int = 0  # packets with bit 6 of the type byte (temperature change)


@dataclass(frozen=True)
class SampleBatch:
    """A run of decoded samples. ``t`` is wall-clock seconds (time.time() scale).

    ``received``, ``dropped`` and ``garbage_bytes`` count what happened since the previous
    batch; ``counts`` is the run's cumulative snapshot when the batch was made.
    """

    t: np.ndarray
    amps: np.ndarray
    volts: np.ndarray
    watts: np.ndarray
    received: int
    dropped: int
    garbage_bytes: int
    interval_s: float
    counts: SampleCounts

    def __len__(self) -> int:
        return int(self.t.size)


class _Calibration:
    """Main-channel calibration from the latest zero and reference packets (spec 5.5)."""

    def __init__(self) -> None:
        self.zero_fine: float | None = None
        self.zero_coarse: float | None = None
        self.ref_fine: float | None = None
        self.ref_coarse: float | None = None
        self.fine_scale = 0.0
        self.coarse_scale = 0.0

    @property
    def ready(self) -> bool:
        return self.fine_scale != 0.0 and self.coarse_scale != 0.0

    def update(self, kind: int, main_words: np.ndarray) -> None:
        # even samples are fine readings, odd samples coarse; use all pairs of the packet
        fine = float(main_words[0::2].mean())
        coarse = float(main_words[1::2].mean())
        if kind == TYPE_ZERO_CAL:
            self.zero_fine, self.zero_coarse = fine, coarse
        else:
            self.ref_fine, self.ref_coarse = fine, coarse
        if None in (self.zero_fine, self.zero_coarse, self.ref_fine, self.ref_coarse):
            return  # a zero-cal alone gives meaningless scales (spec 5.5): wait for its ref
        span_f = self.ref_fine - self.zero_fine
        span_c = self.ref_coarse - self.zero_coarse
        if span_f != 0 and span_c != 0:
            self.fine_scale = FINE_NUMERATOR_A / span_f
            self.coarse_scale = COARSE_NUMERATOR_A / span_c

    def amps(self, main: np.ndarray) -> np.ndarray:
        """Main-channel words -> amps: bit 0 set = coarse range (spec 5.6)."""
        main = main.astype(np.int64)
        coarse = (main & 1).astype(bool)
        fine_a = (main - self.zero_fine) * self.fine_scale
        coarse_a = ((main & ~1) - self.zero_coarse) * self.coarse_scale
        return np.where(coarse, coarse_a, fine_a)


class LvpmStreamParser:
    """Incremental, resynchronising parser of the LVPM device->host byte stream.

    ``feed(data, now)`` returns the newly decoded measurement samples as
    ``(t, amps, volts)`` float64 arrays and updates ``counts``. Status frames are kept in
    ``last_status``. Full 127-byte measurement frames are checked and decoded in bulk with
    numpy; other frames (calibration, status, short packets) and resynchronisation go one
    frame (or one discarded byte) at a time.
    """

    def __init__(self, rate_hz: int = NATIVE_RATE_HZ, voltage_lsb: float = 125e-6) -> None:
        self.rate_hz = rate_hz
        self.voltage_lsb = voltage_lsb
        self.counts = SampleCounts()
        self.last_status: bytes | None = None
        self.accept_unconfirmed_status = False  # set once STOP is sent: nothing follows it
        self._buf = bytearray()
        self._synced = False  # the previous frame was valid, so this one starts a frame
        self._expected_seq = 0  # the first packet of a run has sequence 0
        self._cal = _Calibration()
        self._index = 0  # sample index of the next measurement sample (drops included)
        self._anchor: float | None = None

    # -- framing -----------------------------------------------------------------------------

    def _frame_kind(self, buf: bytearray, pos: int, length: int) -> str | None:
        """ "status" / "sample" for a valid complete frame at ``pos``, else None."""
        end = pos + length
        if (sum(buf[pos:end]) & 0xFF) != buf[end]:
            return None
        first = buf[pos + 1]
        if length == STATUS_L:
            return "status" if first == STATUS_TYPE else None
        if (first & 0xF0) == 0x20:
            return "sample"
        return None

    def feed(self, data: bytes, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        counts = self.counts
        while pos < n:
            if self._synced and n - pos >= MEAS_FRAME:
                taken = self._bulk(buf, pos, n, parts)
                if taken:
                    pos += taken * MEAS_FRAME
                    continue
            length = buf[pos]
            if length not in DEVICE_LENGTHS:
                pos = self._discard(pos)
                continue
            end = pos + length + 1
            if end > n:
                break  # wait for the rest of the frame
            kind = self._frame_kind(buf, pos, length)
            if kind is None:
                pos = self._discard(pos)
                continue
            if not self._synced and not (kind == "status" and self.accept_unconfirmed_status):
                # after garbage, trust a candidate only if another valid frame follows it
                if end >= n:
                    break
                next_length = buf[end]
                if next_length not in DEVICE_LENGTHS:
                    pos = self._discard(pos)
                    continue
                if end + next_length + 1 > n:
                    break
                if self._frame_kind(buf, end, next_length) is None:
                    pos = self._discard(pos)
                    continue
            self._synced = True
            if kind == "status":
                counts.status_packets += 1
                self.last_status = bytes(buf[pos + 1 : end - 1])
            else:
                self._sample_frame(bytes(buf[pos:end]), parts)
            pos = end
        del buf[:pos]
        return self._assemble(parts, now)

    def _discard(self, pos: int) -> int:
        if self._synced:
            self._synced = False
            self.counts.resyncs += 1
        self.counts.garbage_bytes += 1
        return pos + 1

    def _sequence(self, seq: int) -> int:
        """Account for the packets missing before a packet with sequence ``seq``."""
        gap = (seq - self._expected_seq) & 0x0F
        self._expected_seq = (seq + 1) & 0x0F
        return gap

    # -- packets -----------------------------------------------------------------------------

    def _sample_frame(self, raw: bytes, parts: list) -> None:
        counts = self.counts
        length = raw[0]
        n_samples = (length - 6) // SAMPLE_BYTES
        counts.packets += 1
        gap = self._sequence(raw[1] & 0x0F)
        device_dropped = raw[4] | (raw[length - 1] << 8)
        counts.lost_packets += gap
        counts.device_dropped += device_dropped
        counts.dropped += gap * MEAS_SAMPLES + device_dropped
        self._index += gap * MEAS_SAMPLES + device_dropped
        type_byte = raw[2]
        if type_byte & 0x40:
            counts.flagged_packets += 1
        kind = type_byte & 0x03
        words = np.frombuffer(raw, dtype=">i2", count=n_samples * 4, offset=5).reshape(-1, 4)
        if kind == TYPE_MEASUREMENT:
            self._measurements(np.arange(n_samples) + self._index, words, parts)
            self._index += n_samples
        elif kind in (TYPE_ZERO_CAL, TYPE_REF_CAL) and n_samples >= 2:
            counts.calibration_packets += 1
            self._cal.update(kind, words[:, 0])
        else:
            counts.unknown_packets += 1

    def _bulk(self, buf: bytearray, pos: int, n: int, parts: list) -> int:
        """Consume the run of full measurement frames at ``pos``; returns how many."""
        if buf[pos] != MEAS_L:
            return 0
        k = min((n - pos) // MEAS_FRAME, 4096)
        arr = np.frombuffer(bytes(buf[pos : pos + k * MEAS_FRAME]), dtype=np.uint8)
        arr = arr.reshape(k, MEAS_FRAME)
        ok = (
            (arr[:, 0] == MEAS_L)
            & ((arr[:, 1] & 0xF0) == 0x20)
            & ((arr[:, 2] & 0x03) == TYPE_MEASUREMENT)
            & ((arr[:, :-1].sum(axis=1, dtype=np.uint32) & 0xFF) == arr[:, -1])
        )
        m = k if ok.all() else int(np.argmin(ok))
        if m == 0:
            return 0
        good = arr[:m]
        counts = self.counts
        seqs = (good[:, 1] & 0x0F).astype(np.int64)
        previous = np.empty(m, dtype=np.int64)
        previous[0] = self._expected_seq - 1
        previous[1:] = seqs[:-1]
        gaps = (seqs - previous - 1) & 0x0F
        self._expected_seq = int(seqs[-1] + 1) & 0x0F
        device_dropped = good[:, 4].astype(np.int64) | (
            good[:, MEAS_FRAME - 2].astype(np.int64) << 8
        )
        before = gaps * MEAS_SAMPLES + device_dropped
        counts.packets += m
        counts.lost_packets += int(gaps.sum())
        counts.device_dropped += int(device_dropped.sum())
        counts.dropped += int(before.sum())
        counts.flagged_packets += int(np.count_nonzero(good[:, 2] & 0x40))
        starts = self._index + np.cumsum(before + MEAS_SAMPLES) - MEAS_SAMPLES
        self._index = int(starts[-1]) + MEAS_SAMPLES
        index = (starts[:, None] + np.arange(MEAS_SAMPLES)).ravel()
        words = np.ascontiguousarray(good[:, 5 : 5 + MEAS_SAMPLES * SAMPLE_BYTES])
        words = words.view(">i2").reshape(-1, 4)
        self._measurements(index, words, parts)
        return m

    def _measurements(self, index: np.ndarray, words: np.ndarray, parts: list) -> None:
        if not self._cal.ready:
            self.counts.uncalibrated += int(index.size)
            return
        amps = self._cal.amps(words[:, 0])
        volts = (words[:, 3].astype(np.int64) & 0xFFFC) * self.voltage_lsb
        self.counts.received += int(index.size)
        parts.append((index, amps, volts))

    def _assemble(self, parts: list, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._index > 0:  # keep the sample clock honest (see module docstring)
            if self._anchor is None:
                self._anchor = now - self._index / self.rate_hz
            else:
                late = now - (self._anchor + self._index / self.rate_hz)
                if late > REANCHOR_S:  # the stream stalled: jump (forward: order is kept)
                    self._anchor += late
                elif late < 0:  # data earlier than predicted: slew back, never reorder
                    self._anchor += max(late, -0.5 / self.rate_hz)
        if not parts:
            empty = np.empty(0)
            return empty, empty, empty
        if len(parts) == 1:
            index, amps, volts = parts[0]
        else:
            index = np.concatenate([p[0] for p in parts])
            amps = np.concatenate([p[1] for p in parts])
            volts = np.concatenate([p[2] for p in parts])
        assert self._anchor is not None
        return self._anchor + index / self.rate_hz, amps, volts


# ---------------------------------------------------------------------------------------------
# Discovery


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


# ---------------------------------------------------------------------------------------------
# The driver


class Monsoon:
    """One LVPM on a serial port. Opening it stops any running capture and probes the status;
    a port that does not answer, or answers with something else, raises ``MonsoonError``.

    ``timeout`` is the deadline for each command's status reply. Commands are refused while
    sampling (the firmware ignores them then, spec 3.2): stop first.
    """

    def __init__(self, port: str, timeout: float = 1.0, *, probe: bool = True) -> None:
        self.port = port
        self.timeout = float(timeout)
        self.last_status: MonsoonStatus | None = None
        self._lock = threading.Lock()  # one command at a time
        self._counts_lock = threading.Lock()
        self._sampling = False
        self._reader: threading.Thread | None = None
        self._delivery: threading.Thread | None = None
        self._parser: LvpmStreamParser | None = None
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._error: MonsoonError | None = None
        self._undelivered = 0
        self._reader_cpu_s = 0.0
        self._status_mark = 0
        kwargs: dict = {"exclusive": True} if sys.platform != "win32" else {}
        try:
            self._ser = serial.Serial(
                port=port,
                baudrate=9600,  # ignored by the device (virtual COM port); pyserial default
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=READ_POLL_S,
                write_timeout=max(self.timeout, 1.0),
                xonxoff=False,
                rtscts=False,
                dsrdtr=False,
                **kwargs,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise MonsoonError(f"{port}: cannot open the port: {exc}") from exc
        if probe:
            try:
                self._probe()
            except BaseException:
                self._ser.close()
                raise

    # -- context and lifetime ------------------------------------------------------------------

    def __enter__(self) -> Monsoon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop sampling (if running) and release the port. Never raises."""
        if self._sampling:
            with contextlib.suppress(MonsoonError):
                self.stop_sampling()
        with contextlib.suppress(Exception):
            self._ser.close()

    @property
    def serial_number(self) -> int | None:
        return self.last_status.serial_number if self.last_status else None

    @property
    def sampling(self) -> bool:
        return self._sampling

    @property
    def error(self) -> MonsoonError | None:
        """Why the last sampling run ended on its own (port closed, read error), if it did."""
        return self._error

    # -- commands ------------------------------------------------------------------------------

    def _probe(self) -> None:
        with self._lock:
            self._ser.reset_input_buffer()
            self._write(CMD_STOP)  # a capture left running answers with data, then status
            self._read_status("the STOP command")
            self._ser.reset_input_buffer()
            self._write(CMD_STATUS)
            self.last_status = self._read_status("the status request")

    def _write(self, payload: bytes) -> None:
        try:
            self._ser.write(frame(payload))
            self._ser.flush()
        except (serial.SerialException, OSError) as exc:
            raise MonsoonError(f"{self.port}: write failed: {exc}") from exc

    def _read_status(self, what: str) -> MonsoonStatus:
        """Read until a valid status frame arrives or ``timeout`` passes (skipping anything
        else: sample frames of a capture that was running, noise)."""
        deadline = time.monotonic() + self.timeout
        buf = bytearray()
        received = 0
        head = b""
        while True:
            try:
                data = self._ser.read(self._ser.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise MonsoonError(f"{self.port}: read failed: {exc}") from exc
            if data:
                if not head:
                    head = bytes(data[:16])
                received += len(data)
                buf += data
                payload, consumed = find_status_frame(buf)
                if payload is not None:
                    return MonsoonStatus.from_payload(payload)
                del buf[:consumed]
            if time.monotonic() >= deadline:
                break
        if received == 0:
            raise MonsoonError(
                f"{self.port}: no answer to {what} within {self.timeout:g} s; is it a Monsoon "
                "LVPM with its serial-protocol firmware, powered and connected?"
            )
        raise MonsoonError(
            f"{self.port}: answered {what} with {received} bytes but no valid LVPM status "
            f"packet (first bytes: {head.hex(' ')}); not a Monsoon LVPM (serial firmware)?"
        )

    def _command(self, payload: bytes, what: str) -> MonsoonStatus:
        if self._sampling:
            raise MonsoonError(
                f"{self.port}: cannot send {what} while sampling (the LVPM ignores commands "
                "then); call stop_sampling() first"
            )
        with self._lock:
            self._ser.reset_input_buffer()  # nothing unsolicited may be taken as the reply
            self._write(payload)
            status = self._read_status(what)
        self.last_status = status
        return status

    def status(self) -> MonsoonStatus:
        """Request and decode a fresh status packet."""
        return self._command(CMD_STATUS, "the status request")

    def set_voltage(self, volts: float) -> MonsoonStatus:
        """Set the output voltage (2.01-4.55 V, rounded to 10 mV) or 0 to switch it off.

        Switching off keeps the previous setpoint in ``output_voltage_setting`` (spec 3.1).
        The reference drivers ramp up from 3 V in 0.1 V steps to avoid tripping the unit with
        some phones; do that with repeated calls if needed.
        """
        code = voltage_byte(volts)
        status = self._command(b"\x01\x01" + bytes((code,)), f"set voltage {volts:g} V")
        if code and status.output_voltage_raw != code:
            raise MonsoonError(
                f"{self.port}: voltage setpoint reads back {status.output_voltage_setting} V, "
                f"expected {2.0 + code / 100:.2f} V"
            )
        return status

    def set_current_limits(
        self, runtime_a: float | None = None, powerup_a: float | None = None
    ) -> MonsoonStatus:
        """Set the runtime ("max") and/or power-up current limits in amps (0-8 A, about
        7.8 mA steps); each is sent as a low-byte then a high-byte command."""
        if runtime_a is None and powerup_a is None:
            raise ValueError("give runtime_a and/or powerup_a")
        status = self.last_status
        for amps, low_op, name in ((runtime_a, 0x0A, "runtime"), (powerup_a, 0x08, "power-up")):
            if amps is None:
                continue
            raw = current_limit_raw(amps)
            what = f"set {name} current limit {amps:g} A"
            self._command(bytes((0x01, low_op, raw & 0xFF)), what)
            status = self._command(bytes((0x01, low_op + 1, raw >> 8)), what)
            read_back = (
                status.runtime_current_limit_raw
                if low_op == 0x0A
                else status.powerup_current_limit_raw
            )
            if read_back != raw:
                raise MonsoonError(
                    f"{self.port}: {name} limit reads back raw {read_back}, not {raw}"
                )
        assert status is not None
        return status

    def set_usb_passthrough(self, mode: str | int, settle_s: float = 3.0) -> MonsoonStatus:
        """USB passthrough ``"off"``/``"on"``/``"auto"`` (or 0/1/2). Real units may take a
        moment to switch (quirk 14): the command is re-sent until the status agrees."""
        code = PASSTHROUGH_MODES.get(mode, -1) if isinstance(mode, str) else int(mode)
        if code not in (0, 1, 2):
            raise ValueError(f"passthrough mode {mode!r}: use 'off', 'on', 'auto' or 0, 1, 2")
        deadline = time.monotonic() + settle_s
        while True:
            status = self._command(bytes((0x01, 0x10, code)), f"set USB passthrough {mode}")
            if status.usb_passthrough_mode == code:
                return status
            if time.monotonic() >= deadline:
                raise MonsoonError(
                    f"{self.port}: USB passthrough still {status.usb_passthrough_mode}, "
                    f"wanted {code}"
                )
            time.sleep(0.25)

    # -- sampling ------------------------------------------------------------------------------

    def start_sampling(
        self,
        on_batch: Callable[[SampleBatch], None],
        batch_samples: int = 250,
        *,
        calibration_interval: int = DEFAULT_CALIBRATION_INTERVAL,
        on_error: Callable[[MonsoonError], None] | None = None,
        queue_batches: int = 2000,
    ) -> None:
        """Start the 5 kHz capture. ``on_batch`` gets ``SampleBatch`` es of about
        ``batch_samples`` samples from the delivery thread; ``on_error`` (if given) is called
        once if the port fails mid-run (the run then ends; ``error`` holds the cause)."""
        status = self._command(CMD_PRESTART, "the pre-start command 01 1B 01")
        rate = status.sample_rate_hz or NATIVE_RATE_HZ
        parser = LvpmStreamParser(rate_hz=rate, voltage_lsb=status.voltage_lsb)
        with self._lock:
            self._write(start_payload(calibration_interval))
        self._parser = parser
        self._error = None
        self._undelivered = 0
        self._reader_cpu_s = 0.0
        self._stopping.clear()
        self._abort.clear()
        self._sampling = True
        batches: queue.Queue[SampleBatch | None] = queue.Queue(maxsize=queue_batches)
        self._reader = threading.Thread(
            target=self._read_loop,
            args=(parser, batches, max(1, batch_samples), on_error),
            name=f"monsoon-reader {self.port}",
            daemon=True,
        )
        self._delivery = threading.Thread(
            target=self._deliver_loop,
            args=(batches, on_batch),
            name=f"monsoon-delivery {self.port}",
            daemon=True,
        )
        self._delivery.start()
        self._reader.start()

    def stop_sampling(self) -> SampleCounts:
        """Send STOP, read the stream up to the device's status reply (or ``timeout``), hand
        out the last batch and return the run's counts. Raises ``MonsoonError`` if the run
        had already failed (the counts are still in ``counts``)."""
        if not self._sampling:
            return self.counts
        assert self._parser is not None and self._reader is not None
        with self._counts_lock:
            self._status_mark = self._parser.counts.status_packets
            self._parser.accept_unconfirmed_status = True
        self._stopping.set()
        if self._reader.is_alive():
            with contextlib.suppress(MonsoonError):
                self._write(CMD_STOP)
        self._reader.join(self.timeout + 1.0)
        if self._reader.is_alive():
            log.warning("%s: no status reply to STOP within %.1f s", self.port, self.timeout)
            self._abort.set()
            self._reader.join()
        if self._delivery is not None:
            self._delivery.join()
        self._sampling = False
        if self._parser.last_status is not None:
            with contextlib.suppress(MonsoonError):
                self.last_status = MonsoonStatus.from_payload(self._parser.last_status)
        if self._error is not None:
            raise self._error
        return self.counts

    @property
    def counts(self) -> SampleCounts:
        """Cumulative counters of the current (or last) sampling run."""
        if self._parser is None:
            return SampleCounts()
        with self._counts_lock:
            counts = replace(self._parser.counts)
            counts.undelivered = self._undelivered
            counts.dropped += self._undelivered
        return counts

    @property
    def reader_cpu_s(self) -> float:
        """CPU seconds (``time.thread_time``) the reader thread used in the current run."""
        return self._reader_cpu_s

    def _read_loop(
        self,
        parser: LvpmStreamParser,
        batches: queue.Queue[SampleBatch | None],
        batch_samples: int,
        on_error: Callable[[MonsoonError], None] | None,
    ) -> None:
        cpu0 = time.thread_time()
        ser = self._ser
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        pending_n = 0
        last = SampleCounts()
        stop_deadline: float | None = None

        def emit(final: bool = False) -> None:
            nonlocal pending, pending_n, last
            now_counts = self.counts
            t = np.concatenate([p[0] for p in pending]) if pending else np.empty(0)
            amps = np.concatenate([p[1] for p in pending]) if pending else np.empty(0)
            volts = np.concatenate([p[2] for p in pending]) if pending else np.empty(0)
            batch = SampleBatch(
                t=t,
                amps=amps,
                volts=volts,
                watts=amps * volts,
                received=now_counts.received - last.received,
                dropped=now_counts.dropped - last.dropped,
                garbage_bytes=now_counts.garbage_bytes - last.garbage_bytes,
                interval_s=1.0 / parser.rate_hz,
                counts=now_counts,
            )
            pending, pending_n = [], 0
            try:  # the last batch (the run's final counts) may wait for the consumer a bit
                batches.put(batch, timeout=self.timeout) if final else batches.put_nowait(batch)
                last = now_counts
            except queue.Full:
                # the consumer is too slow: these samples are lost. ``last`` stays, so the next
                # delivered batch reports them in ``dropped`` (counts.dropped includes them)
                with self._counts_lock:
                    self._undelivered += len(batch)

        try:
            while not self._abort.is_set():
                data = ser.read(ser.in_waiting or 1)
                if data:
                    with self._counts_lock:
                        t, amps, volts = parser.feed(data, time.time())
                    if t.size:
                        pending.append((t, amps, volts))
                        pending_n += t.size
                    if pending_n >= batch_samples:
                        emit()
                        self._reader_cpu_s = time.thread_time() - cpu0
                if self._stopping.is_set():
                    if parser.counts.status_packets > self._status_mark:
                        break  # the reply to STOP: the stream has ended
                    if stop_deadline is None:
                        stop_deadline = time.monotonic() + self.timeout
                    elif time.monotonic() > stop_deadline:
                        break
                if data:
                    time.sleep(COALESCE_S)
        except (serial.SerialException, OSError, TypeError) as exc:
            # pyserial raises TypeError when the port is closed under a running read
            self._error = MonsoonError(f"{self.port}: reading the sample stream failed: {exc}")
            log.warning("%s", self._error)
        finally:
            if pending_n or self._error is None:
                emit(final=True)  # the last samples (and final counts) of the run
            self._reader_cpu_s = time.thread_time() - cpu0
            batches.put(None)
            if self._error is not None and on_error is not None:
                try:
                    on_error(self._error)
                except Exception:
                    log.exception("on_error callback failed")

    def _deliver_loop(
        self, batches: queue.Queue[SampleBatch | None], on_batch: Callable[[SampleBatch], None]
    ) -> None:
        while True:
            batch = batches.get()
            if batch is None:
                return
            try:
                on_batch(batch)
            except Exception:  # a broken consumer must not stop the capture
                log.exception("%s: on_batch callback failed", self.port)


def as_power_samples(monitor_id: str, batch: SampleBatch) -> PowerSamples:
    """A ``SampleBatch`` as the Lab's ``PowerSamples`` event (t0 = first sample's time).

    ``PowerSamples`` assumes evenly spaced samples; samples dropped inside the batch shift the
    later ones by the gap (``dropped`` says how many were lost).
    """
    t0 = float(batch.t[0]) if len(batch) else time.time()
    return PowerSamples(
        monitor_id=monitor_id,
        t0=t0,
        interval_s=batch.interval_s,
        watts=tuple(batch.watts.tolist()),
        dropped=batch.dropped,
    )


__all__ = [
    "DEFAULT_CALIBRATION_INTERVAL",
    "LvpmStreamParser",
    "MonitorInfo",
    "Monsoon",
    "MonsoonError",
    "MonsoonStatus",
    "SampleBatch",
    "SampleCounts",
    "as_power_samples",
    "candidate_ports",
    "current_limit_amps",
    "current_limit_raw",
    "discover_monitors",
    "find_monitor",
    "find_status_frame",
    "frame",
    "start_payload",
    "voltage_byte",
]
