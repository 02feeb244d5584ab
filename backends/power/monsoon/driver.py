"""Driver for the white Monsoon Power Monitor (LVPM) with its serial-protocol firmware.

The unit is a USB CDC-ACM virtual serial port (``/dev/ttyACM<n>``, ``COM<n>``) that speaks the
framed binary protocol described in ``shared/specs/monsoon-lvpm.md``. This module owns the port
and the threads; the bytes are encoded in ``protocol``, status replies decoded in ``status`` and
the sample stream parsed in ``stream``. Where the spec says to improve on the reference drivers:

* every setter waits for its own status reply, so a later ``status()`` never returns a stale
  reply to an earlier command (quirk 4), and every read has its own deadline (quirk 5);
* every start gets a fresh stream parser, so calibration and sequence state are reset (quirk 8).

Use::

    monitors = discover_monitors()               # backends.power.monsoon.discovery
    with Monsoon(monitors[0].port) as mon:
        mon.set_voltage(3.7)
        mon.start_sampling(on_batch)             # on_batch(SampleBatch) from a delivery thread
        ...
        counts = mon.stop_sampling()

Threads: ``start_sampling`` starts a *reader* thread (reads and parses the port, nothing else)
and a *delivery* thread that calls ``on_batch``; a slow consumer therefore never stalls the
port. If the consumer falls more than ``queue_batches`` batches behind, batches are discarded
and counted (``undelivered``, included in ``dropped``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import serial

from backends.power.monsoon.protocol import (
    CMD_PRESTART,
    CMD_STATUS,
    CMD_STOP,
    DEFAULT_CALIBRATION_INTERVAL,
    NATIVE_RATE_HZ,
    PASSTHROUGH_MODES,
    MonsoonError,
    current_limit_raw,
    frame,
    start_payload,
    voltage_byte,
)
from backends.power.monsoon.status import MonsoonStatus, find_status_frame
from backends.power.monsoon.stream import LvpmStreamParser, SampleBatch, SampleCounts

log = logging.getLogger(__name__)

READ_POLL_S = 0.05  # read timeout while waiting for data
COALESCE_S = 0.02  # pause after a read so that the next one takes several frames at once


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
