"""The LVPM sample stream: bytes in, calibrated (t, amps, volts) samples and counters out.

Pure parsing (no port, no threads), following spec section 5 and improving on the reference
drivers where it says so:

* the stream is parsed from a byte buffer with **resynchronisation**: a frame is accepted only
  if its length byte is possible, its checksum matches and its payload passes the type checks;
  after garbage a candidate frame must also be followed by another valid frame before it is
  trusted; anything else discards one byte (counted in ``garbage_bytes``);
* a parser lives for one run, so calibration and sequence state start afresh (quirk 8);
  measurement packets that arrive before both a zero and a reference calibration are discarded
  (``uncalibrated``);
* dropped samples are counted from the 4-bit packet sequence (15 samples per lost packet; a
  gap of 16 packets is invisible, spec 5.9) plus the device's own dropped-sample counter.

Timestamps: the device sends none. Sample *i* of a run is given the wall-clock time
``anchor + i / rate`` where *i* also counts dropped samples, so gaps keep their place. The
anchor is set when the first packet arrives. When data arrives before its predicted time
(samples cannot arrive before they are taken: the first estimate had more latency, or the
device clock runs fast) the anchor slews earlier by at most half a sample period per read, so
timestamps stay strictly increasing; when data arrives more than ``REANCHOR_S`` late (the
stream stalled) the anchor jumps forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.power.monsoon.protocol import (
    COARSE_NUMERATOR_A,
    DEVICE_LENGTHS,
    FINE_NUMERATOR_A,
    MEAS_FRAME,
    MEAS_L,
    MEAS_SAMPLES,
    NATIVE_RATE_HZ,
    SAMPLE_BYTES,
    STATUS_L,
    STATUS_TYPE,
    TYPE_MEASUREMENT,
    TYPE_REF_CAL,
    TYPE_ZERO_CAL,
)

REANCHOR_S = 0.25  # data this late against the sample clock: the stream stalled, re-anchor


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
