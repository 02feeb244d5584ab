"""A virtual Monsoon LVPM: the serial protocol of ``shared/specs/monsoon-lvpm.md`` on a pty.

``VirtualMonsoon`` opens a pseudo-terminal pair, puts the slave in raw mode and serves the
LVPM protocol on the master from one background thread: status packets, the setters, START /
STOP, and while sampling a 5 kHz stream paced by the wall clock (15-sample measurement packets,
L = 0x7E, with 4-bit sequence numbers, the device's dropped-sample counter, a calibration
burst after START and a zero/reference pair of 2-sample calibration packets every N
measurement packets; N comes from the START command unless ``calibration_interval`` overrides
it). Drivers open ``port`` with pyserial exactly like ``/dev/ttyACM0``.

It shares no code with the driver (``backends.power.monsoon.driver``) on purpose:
framing, the status layout and the sample encoding are written again here from the spec, so
the two check each other.

The waveform (main channel; USB and aux channels read zero):

* output off (voltage 0): I = 0, V = 0;
* otherwise the power drawn is ``P = baseline_w + (active_w - baseline_w) * clamp(load(), 0, 1)``
  plus white noise of standard deviation ``noise_w`` per sample (then clipped at 0 W);
  ``load`` is read every tick (10 ms); without ``load`` the unit stays at ``baseline_w``;
* the output voltage droops over a 0.05 ohm source resistance: V = Vset - 0.05 * I, and I is
  chosen so that V * I = P exactly.

**Energy**: while idle the device under test draws ``baseline_w`` joules per second, under full
load ``active_w`` joules per second (the noise is zero-mean, so it adds nothing on average).
Over a capture of T seconds with the load on for T_on of them, the expected energy is
``baseline_w * (T - T_on) + active_w * T_on``. The exact energy of what was sent is in
``counters()["energy_sent_j"]`` (sum of P_i / 5000 over the measurement samples sent). Decoding
adds at most about -50..+17 uA (fine range) or -2.2..+0.7 mA (coarse range, above ~0.96 A) per
sample, and calibration noise of +-2 counts up to ~0.4 % of the reading (spec 8.2 item 7).

Fault switches for tests (thread-safe, applied by the serving thread): ``inject_garbage``,
``drop_packets``, ``stall``, ``corrupt_packets``, ``inject_frame``, ``set_calibration``. If the
driver stops reading and ``tx_limit`` bytes are waiting, new samples are dropped and reported in
the next packet's dropped-sample counter (payload[3] + trailer), as the device does.

Command line: ``python -m backends.virtual.monsoon [--serial N] [--baseline-w X] [--active-w Y]``
prints the port path and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import struct
import sys
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

import numpy as np

RATE_HZ = 5000
SAMPLES_PER_PACKET = 15
FRAME_BYTES = 127  # a full measurement frame on the wire
STATUS_FORMAT = struct.Struct(">BBBhhhHhhhHBBBxBbHBHHHHBbbHHBBBbbbbbbbbbBH")
VOLT_LSB = 125e-6
SOURCE_OHM = 0.05
FINE_LIMIT = 0x7100  # |fine word| from here on: the coarse reading is sent
FINE_A = 0.0332
COARSE_A = 2.88

# Status flag bits [F]: 2 bad checksum, 4 STOP received, 5 opcode 05, 6 unknown command.
FLAG_CHECKSUM, FLAG_STOP, FLAG_RESET, FLAG_BAD_COMMAND = 0x04, 0x10, 0x20, 0x40

ACCEPTED_OPCODES = frozenset({0x00, 0x01, 0x02, 0x03} | set(range(0x05, 0x1D)))


def _frame(payload: bytes) -> bytes:
    size = len(payload) + 1
    return bytes((size,)) + payload + bytes(((size + sum(payload)) & 0xFF,))


def periodic_load(period_s: float = 2.0, duty: float = 0.25) -> Callable[[], float]:
    """A load that is on (1.0) for the first ``duty`` of every ``period_s`` seconds."""
    t0 = time.monotonic()

    def load() -> float:
        return 1.0 if ((time.monotonic() - t0) % period_s) < duty * period_s else 0.0

    return load


class VirtualMonsoon:
    """An LVPM with serial firmware (protocol 17, firmware 20, hardware revision 4) on a pty.

    ``voltage`` is the output voltage at start (0 = off; a real unit powers up with its output
    off, the default here is on at 3.70 V so that a capture shows power without a setter).
    ``calibration_interval`` (measurement packets between periodic calibrations) overrides the
    START command's; ``calibration_noise`` is the +-counts of noise on calibration words.
    ``record_truth`` keeps the ground truth of every measurement sample sent (up to
    ``truth_limit`` samples) for ``truth()``.
    """

    def __init__(
        self,
        serial_number: int = 12345,
        load: Callable[[], float] | None = None,
        baseline_w: float = 0.5,
        active_w: float = 2.5,
        noise_w: float = 0.01,
        voltage: float = 3.7,
        *,
        seed: int = 0,
        calibration_interval: int | None = None,
        calibration_noise: int = 2,
        record_truth: bool = False,
        truth_limit: int = 2_000_000,
        tx_limit: int = 4096,
        ignore_commands_while_sampling: bool = True,
        link: str | os.PathLike[str] | None = None,
        tick_s: float = 0.01,
    ) -> None:
        if not 0 <= serial_number <= 0xFFFF:
            raise ValueError("serial_number must fit 16 bits")
        self.serial_number = serial_number
        self.load = load
        self.baseline_w = float(baseline_w)
        self.active_w = float(active_w)
        self.noise_w = float(noise_w)
        self.calibration_interval = calibration_interval
        self.calibration_noise = int(calibration_noise)
        self.record_truth = record_truth
        self.truth_limit = truth_limit
        self.tx_limit = tx_limit
        self.ignore_commands_while_sampling = ignore_commands_while_sampling
        self.link = Path(link) if link else None
        self.tick_s = tick_s
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._quit = threading.Event()
        self._master = self._slave = -1
        self.port = ""
        # device state (spec 8.2 item 2, 8.3 defaults)
        code = 0xAA if voltage == 0 else round((voltage - 2.0) * 100)
        if not 1 <= code <= 255:
            raise ValueError("voltage must be 0 or 2.01-4.55 V")
        self._setpoint = code
        self._output_on = voltage != 0
        self._powerup_limit = 640
        self._runtime_limit = 0
        self._passthrough = 1
        self._mode_flag = False
        self._flags = 0
        self._cal = {"zf": 120, "zc": 95, "rf": 1120, "rc": 2095}
        self._cal_usb = (118, 93)
        self._cal_aux = (130, 101)
        # streaming state
        self._sampling = False
        self._counter = 0
        self._stop_limit = 0xFFFFFFFF
        self._cal_every = 0
        self._since_cal = 0
        self._t_start = 0.0
        self._paused = 0.0
        self._generated = 0  # measurement samples generated this run (sent or dropped)
        self._device_drop = 0  # samples dropped for back-pressure, not yet reported
        self._cal_due = False
        self._cal_pending: dict[str, int] = {}  # applied by the serving thread
        self._out = bytearray()
        self._in = bytearray()
        self._stall_until = 0.0
        # fault injection (guarded by _lock)
        self._garbage: list[bytes] = []
        self._garbage_at_start: list[bytes] = []
        self._drop = 0
        self._corrupt: list[str] = []
        self._inject: list[str] = []
        # ground truth and counters
        self._truth: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._truth_n = 0
        self._c = dict.fromkeys(
            (
                "runs",
                "commands",
                "bad_frames",
                "status_sent",
                "packets_sent",
                "measurement_packets_sent",
                "calibration_packets_sent",
                "samples_generated",
                "samples_sent",
                "injected_dropped_packets",
                "injected_dropped_samples",
                "backpressure_dropped_samples",
                "garbage_bytes_sent",
                "corrupted_packets",
                "injected_frames",
                "ignored_commands",
            ),
            0,
        )
        self._energy_sent = 0.0
        self._energy_generated = 0.0
        self.thread_cpu_s = 0.0

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> VirtualMonsoon:
        if self._thread is not None:
            return self
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation, no line buffering
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.port)
        self._quit.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"virtual-monsoon {self.serial_number}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the pty (a driver reading it then gets an I/O error)."""
        if self._thread is None:
            return
        self._quit.set()
        self._thread.join()
        self._thread = None
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def __enter__(self) -> VirtualMonsoon:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def sampling(self) -> bool:
        return self._sampling

    def counters(self) -> dict[str, float]:
        """What was generated and sent (samples, packets, injected faults, energy)."""
        with self._lock:
            data: dict[str, float] = dict(self._c)
            data["energy_sent_j"] = self._energy_sent
            data["energy_generated_j"] = self._energy_generated
        return data

    def truth(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground truth (amps, volts, watts) of the measurement samples sent, in order (all
        runs), when ``record_truth`` is on."""
        with self._lock:
            parts = list(self._truth)
        if not parts:
            empty = np.empty(0)
            return empty, empty, empty
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    def calibration(self) -> dict[str, int]:
        """The nominal main-channel calibration words (zf, zc, rf, rc) in use."""
        with self._lock:
            return dict(self._cal)

    # -- fault switches ----------------------------------------------------------------------

    def inject_garbage(self, nbytes: int, pattern: str = "random", *, at_start: bool = False):
        """Send ``nbytes`` of junk between two frames: ``pattern`` is "random", "zeros",
        "ff" or "mixed" (runs of 00, FF and random bytes). With ``at_start`` the junk goes out
        right after the next START, before the first packet of the run."""
        if pattern == "zeros":
            junk = bytes(nbytes)
        elif pattern == "ff":
            junk = b"\xff" * nbytes
        elif pattern == "random":
            junk = self._rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
        elif pattern == "mixed":
            third = nbytes // 3
            rand = self._rng.integers(0, 256, nbytes - 2 * third, dtype=np.uint8).tobytes()
            junk = bytes(third) + rand + b"\xff" * third
        else:
            raise ValueError(f"unknown garbage pattern {pattern!r}")
        with self._lock:
            (self._garbage_at_start if at_start else self._garbage).append(junk)

    def drop_packets(self, n: int) -> None:
        """Skip the next ``n`` measurement packets: their sequence numbers are used, their
        samples never sent (a sequence gap of n; n = 16 is invisible to the host)."""
        with self._lock:
            self._drop += int(n)

    def stall(self, seconds: float) -> None:
        """Send nothing for ``seconds``. The sample clock pauses too, so nothing is lost; the
        stream (and any command reply) continues afterwards."""
        with self._lock:
            now = time.monotonic()
            self._stall_until = max(self._stall_until, now) + seconds
            if self._sampling:
                self._paused += seconds

    def corrupt_packets(self, n: int = 1, where: str = "payload") -> None:
        """Damage the next ``n`` measurement packets: flip one bit in a sample ("payload"),
        in the length byte ("length") or in the checksum ("checksum"), or delete one byte of
        the payload ("delete"). Each costs the host that packet's 15 samples."""
        if where not in ("payload", "length", "checksum", "delete"):
            raise ValueError(f"unknown corruption {where!r}")
        with self._lock:
            self._corrupt.extend([where] * n)

    def inject_frame(self, kind: str) -> None:
        """Put one odd frame into the stream: "status" (a status frame), "unknown" (a sample
        frame of type 3, it uses a sequence number) or "flag6" (the next measurement packet has
        bit 6 of its type byte set)."""
        if kind not in ("status", "unknown", "flag6"):
            raise ValueError(f"unknown frame kind {kind!r}")
        with self._lock:
            self._inject.append(kind)

    def set_calibration(self, **words: int) -> None:
        """Change the main-channel calibration words (zf, zc, rf, rc) from now on; while
        sampling, a zero/ref calibration pair goes out before the next measurement packet."""
        unknown = set(words) - set(self._cal)
        if unknown:
            raise ValueError(f"unknown calibration words {sorted(unknown)}")
        with self._lock:
            self._cal_pending.update({key: int(value) for key, value in words.items()})

    # -- serving -----------------------------------------------------------------------------

    def _serve(self) -> None:
        cpu0 = time.thread_time()
        master = self._master
        while not self._quit.is_set():
            waiting_out = bool(self._out) or bool(self._garbage)
            timeout = self.tick_s if (self._sampling or waiting_out) else 0.05
            try:
                readable, _, _ = select.select([master], [], [], timeout)
            except (OSError, ValueError):
                break
            if readable:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError:
                    data = b""
                if data:
                    self._in += data
                    self._parse_input()
            now = time.monotonic()
            if now < self._stall_until:
                continue
            with self._lock:
                garbage, self._garbage = self._garbage, []
                if self._cal_pending:
                    self._cal.update(self._cal_pending)
                    self._cal_pending = {}
                    self._cal_due = self._sampling
            for junk in garbage:
                self._out += junk
                self._c["garbage_bytes_sent"] += len(junk)
            if self._sampling:
                self._produce(now)
            self._flush()
            self.thread_cpu_s = time.thread_time() - cpu0
        self.thread_cpu_s = time.thread_time() - cpu0

    def _flush(self) -> None:
        while self._out:
            try:
                written = os.write(self._master, self._out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._out.clear()
                return
            del self._out[:written]

    # -- host -> device ----------------------------------------------------------------------

    def _parse_input(self) -> None:
        buf = self._in
        while buf:
            size = buf[0]
            if not 3 <= size <= 126:
                del buf[0]  # resync: discard one byte
                self._flags |= FLAG_BAD_COMMAND
                continue
            if len(buf) < size + 1:
                return
            packet = bytes(buf[: size + 1])
            del buf[: size + 1]
            if (sum(packet[:-1]) & 0xFF) != packet[-1]:
                self._c["bad_frames"] += 1
                self._flags |= FLAG_CHECKSUM
                if not self._sampling:
                    self._send_status()
                continue
            self._command(packet[1:-1], size)

    def _command(self, payload: bytes, size: int) -> None:
        self._c["commands"] += 1
        cmd = payload[0]
        if cmd == 0x01 and size >= 4:
            if self._sampling and self.ignore_commands_while_sampling:
                self._c["ignored_commands"] += 1
                return
            self._set_value(payload[1], payload[2])
            self._send_status()
        elif cmd == 0x02 and size >= 8:
            if self._sampling:
                self._c["ignored_commands"] += 1
                return
            self._start(payload[1:7])
        elif cmd == 0x03 and size >= 3:
            if self._sampling:
                self._end_run()
            self._flags |= FLAG_STOP
            self._send_status()
        else:
            self._c["bad_frames"] += 1
            self._flags |= FLAG_BAD_COMMAND
            if not self._sampling:
                self._send_status()

    def _set_value(self, opcode: int, value: int) -> None:
        if opcode not in ACCEPTED_OPCODES:
            self._flags |= FLAG_BAD_COMMAND
        elif opcode == 0x01:
            if value == 0:
                self._output_on = False  # the setpoint is kept (spec 3.1)
            else:
                self._setpoint, self._output_on = value, True
        elif opcode == 0x08:
            self._powerup_limit = (self._powerup_limit & 0xFF00) | value
        elif opcode == 0x09:
            self._powerup_limit = (self._powerup_limit & 0x00FF) | ((value & 0x03) << 8)
        elif opcode == 0x0A:
            self._runtime_limit = (self._runtime_limit & 0xFF00) | value
        elif opcode == 0x0B:
            self._runtime_limit = (self._runtime_limit & 0x00FF) | ((value & 0x03) << 8)
        elif opcode == 0x10:
            if value <= 4:
                self._passthrough = value
            else:
                self._flags |= FLAG_BAD_COMMAND
        elif opcode == 0x1B:
            self._mode_flag = False
        elif opcode == 0x1C:
            self._mode_flag = True
        elif opcode == 0x05:
            self._flags |= FLAG_RESET
        # other accepted opcodes (EEPROM calibration constants...) are acknowledged only

    # -- device -> host ----------------------------------------------------------------------

    def _vout(self) -> float:
        return 2.0 + 0.01 * self._setpoint if self._output_on else 0.0

    def status_payload(self) -> bytes:
        """The 58-byte status payload for the current state (spec 4 defaults)."""
        zf, zc = self._cal["zf"], self._cal["zc"]
        v_word = round(self._vout() / VOLT_LSB)
        return STATUS_FORMAT.pack(
            0x10,
            20,  # firmware version
            17,  # protocol version
            zf + 10,  # latest main fine reading (idle)
            self._cal_usb[0],
            self._cal_aux[0] + 1,
            v_word,
            zc + 1,
            self._cal_usb[1] + 1,
            self._cal_aux[1],
            0,  # voltage2
            self._setpoint,
            30,  # temperature
            self._flags,
            0x08 if self._mode_flag else 0,  # leds: bit 3 mirrors the 1B/1C mode flag
            3,  # main fine resistor offset
            self.serial_number,
            5,  # sample rate, kHz
            0,
            0,  # DAC calibration
            self._powerup_limit,
            self._runtime_limit,
            10,  # power-up time
            -2,  # USB fine resistor offset
            1,  # aux fine resistor offset
            0,
            0,  # initial USB / aux voltage
            4,  # hardware revision
            80,  # temperature limit
            self._passthrough,
            0,
            0,
            0,  # coarse resistor offsets
            0,
            0,
            0,
            0,
            0,
            0,  # factory default resistor offsets
            0,  # event code
            0,  # event data
        )

    def _send_status(self) -> None:
        self._out += _frame(self.status_payload())
        self._flags = 0  # flags clear once a status has been sent
        self._c["status_sent"] += 1

    def _start(self, args: bytes) -> None:
        with self._lock:
            self._stop_limit = int.from_bytes(args[0:4], "little")
            interval = int.from_bytes(args[4:6], "little")
            self._cal_every = (
                self.calibration_interval if self.calibration_interval is not None else interval
            )
            junk, self._garbage_at_start = self._garbage_at_start, []
            self._sampling = True
            self._counter = 0
            self._since_cal = 0
            self._generated = 0
            self._paused = 0.0
            self._device_drop = 0
            self._cal_due = False
            self._t_start = time.monotonic()
            self._c["runs"] += 1
        for chunk in junk:
            self._out += chunk
            self._c["garbage_bytes_sent"] += len(chunk)
        for kind in (1, 2, 1, 2):  # the burst: zero, ref, zero, ref; 7 fine/coarse pairs each
            self._queue_packet(self._calibration_frame(kind, pairs=7), kind="calibration")

    def _end_run(self) -> None:
        """STOP while sampling: send the samples already due as a final short packet."""
        now = time.monotonic()
        remaining = self._due(now) - self._generated
        if 0 < remaining < SAMPLES_PER_PACKET and self._counter < self._stop_limit:
            self._measurement_packets(1, samples=remaining)
        self._sampling = False

    def _due(self, now: float) -> int:
        return int((now - self._t_start - self._paused) * RATE_HZ)

    def _produce(self, now: float) -> None:
        for _ in range(64):  # bounded catch-up per tick
            due = self._due(now) - self._generated
            if due < SAMPLES_PER_PACKET or self._counter >= self._stop_limit:
                return
            cal_due, self._cal_due = self._cal_due, False
            if cal_due or (self._cal_every and self._since_cal >= self._cal_every):
                self._queue_packet(self._calibration_frame(1, pairs=1), kind="calibration")
                self._queue_packet(self._calibration_frame(2, pairs=1), kind="calibration")
                self._since_cal = 0
            k = due // SAMPLES_PER_PACKET
            if self._cal_every:
                k = min(k, self._cal_every - self._since_cal)
            k = min(k, 200, self._stop_limit - self._counter)
            self._measurement_packets(k)

    def _queue_packet(self, packet: bytes, kind: str | None) -> None:
        self._counter += 1
        self._out += packet
        self._c["packets_sent"] += 1
        if kind is not None:
            self._c[f"{kind}_packets_sent"] += 1

    def _calibration_frame(self, kind: int, pairs: int) -> bytes:
        """A zero (1) or reference (2) calibration packet: even samples fine, odd coarse."""
        noise = self.calibration_noise
        cal = self._cal
        if kind == 1:
            fine = (cal["zf"], self._cal_usb[0], self._cal_aux[0])
            coarse = (cal["zc"], self._cal_usb[1], self._cal_aux[1])
        else:
            fine = (cal["rf"], self._cal_usb[0] + 1000, self._cal_aux[0] + 1000)
            coarse = (cal["rc"], self._cal_usb[1] + 2000, self._cal_aux[1] + 2000)
        v_word = round(self._vout() / VOLT_LSB)
        words = np.empty((2 * pairs, 4), dtype=np.int64)
        words[0::2, :3] = fine
        words[1::2, :3] = coarse
        if noise:
            words[:, :3] += self._rng.integers(-noise, noise + 1, (2 * pairs, 3))
        words[:, 3] = v_word
        return self._sample_frame(self._counter, kind, words, dropped=0)

    @staticmethod
    def _sample_frame(counter: int, type_byte: int, words: np.ndarray, dropped: int) -> bytes:
        body = (words & 0xFFFF).astype(">u2").tobytes()
        dropped = min(dropped, 0xFFFF)
        payload = bytes((0x20 | (counter & 0x0F), type_byte, 0, dropped & 0xFF))
        return _frame(payload + body + bytes((dropped >> 8,)))

    def _waveform(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground truth (amps, volts, watts) of the next ``n`` samples."""
        vset = self._vout()
        if vset == 0:
            zero = np.zeros(n)
            return zero, zero, zero
        level = 0.0
        if self.load is not None:
            try:
                level = min(1.0, max(0.0, float(self.load())))
            except Exception:
                level = 0.0
        watts = self.baseline_w + (self.active_w - self.baseline_w) * level
        power = np.full(n, watts)
        if self.noise_w:
            power += self._rng.normal(0.0, self.noise_w, n)
        np.maximum(power, 0.0, out=power)
        np.minimum(power, 0.99 * vset * vset / (4 * SOURCE_OHM), out=power)
        amps = (vset - np.sqrt(vset * vset - 4 * SOURCE_OHM * power)) / (2 * SOURCE_OHM)
        volts = vset - SOURCE_OHM * amps
        return amps, volts, volts * amps

    def _encode(self, amps: np.ndarray, volts: np.ndarray) -> np.ndarray:
        """Measurement words (n, 4): main current (fine, or coarse with bit 0 set), USB and aux
        (zero current), main voltage (spec 8.2 item 6)."""
        cal = self._cal
        fine_scale = FINE_A / (cal["rf"] - cal["zf"])
        coarse_scale = COARSE_A / (cal["rc"] - cal["zc"])
        fine = (np.rint(amps / fine_scale).astype(np.int64) + cal["zf"]) & ~1
        coarse = ((np.rint(amps / coarse_scale).astype(np.int64) + cal["zc"]) & ~1) | 1
        main = np.where(np.abs(fine) >= FINE_LIMIT, coarse, fine)
        words = np.empty((amps.size, 4), dtype=np.int64)
        words[:, 0] = np.clip(main, -32768, 32767)
        words[:, 1] = self._cal_usb[0] & ~1
        words[:, 2] = self._cal_aux[0] & ~1
        words[:, 3] = np.clip(np.rint(volts / VOLT_LSB), 0, 0xFFFF)
        return words

    def _measurement_packets(self, k: int, samples: int = SAMPLES_PER_PACKET) -> None:
        n = k * samples
        amps, volts, watts = self._waveform(n)
        self._generated += n
        self._c["samples_generated"] += n
        self._energy_generated += float(watts.sum()) / RATE_HZ
        words = self._encode(amps, volts)
        with self._lock:
            faults = bool(self._drop or self._corrupt or self._inject)
        room = max(0, (self.tx_limit - len(self._out)) // FRAME_BYTES)
        if not faults and samples == SAMPLES_PER_PACKET and k <= room:
            self._bulk_packets(k, words, amps, volts, watts)
            return
        for i in range(k):
            sl = slice(i * samples, (i + 1) * samples)
            self._one_packet(words[sl], amps[sl], volts[sl], watts[sl])

    def _bulk_packets(self, k, words, amps, volts, watts) -> None:
        arr = np.empty((k, FRAME_BYTES), dtype=np.uint8)
        arr[:, 0] = FRAME_BYTES - 1
        arr[:, 1] = 0x20 | ((self._counter + np.arange(k)) & 0x0F)
        arr[:, 2] = 0
        arr[:, 3] = 0
        arr[:, 4] = 0
        arr[:, 125] = 0
        if self._device_drop:
            dropped = min(self._device_drop, 0xFFFF)
            arr[0, 4], arr[0, 125] = dropped & 0xFF, dropped >> 8
            self._device_drop = 0
        body = (words & 0xFFFF).astype(">u2").view(np.uint8).reshape(k, -1)
        arr[:, 5:125] = body
        arr[:, 126] = arr[:, :126].sum(axis=1, dtype=np.uint32) & 0xFF
        self._out += arr.tobytes()
        self._counter += k
        self._since_cal += k
        self._c["packets_sent"] += k
        self._c["measurement_packets_sent"] += k
        self._sent(amps, volts, watts)

    def _one_packet(self, words, amps, volts, watts) -> None:
        with self._lock:
            inject = self._inject.pop(0) if self._inject else None
        if inject == "status":
            self._out += _frame(self.status_payload())
            self._c["injected_frames"] += 1
        elif inject == "unknown":
            self._queue_packet(self._sample_frame(self._counter, 3, words[:2], 0), None)
            self._c["injected_frames"] += 1
        if len(self._out) + FRAME_BYTES > self.tx_limit:
            self._device_drop += amps.size  # no free transmit buffer: samples lost, counted
            self._c["backpressure_dropped_samples"] += amps.size
            return
        with self._lock:
            drop = self._drop > 0
            if drop:
                self._drop -= 1
            corrupt = self._corrupt.pop(0) if (self._corrupt and not drop) else None
        self._since_cal += 1
        if drop:
            self._counter += 1
            self._c["injected_dropped_packets"] += 1
            self._c["injected_dropped_samples"] += amps.size
            return
        type_byte = 0x40 if inject == "flag6" else 0
        if inject == "flag6":
            self._c["injected_frames"] += 1
        packet = bytearray(self._sample_frame(self._counter, type_byte, words, self._device_drop))
        self._device_drop = 0
        if corrupt is not None:
            self._c["corrupted_packets"] += 1
            if corrupt == "payload":
                packet[7] ^= 0x10
            elif corrupt == "length":
                packet[0] ^= 0x01
            elif corrupt == "checksum":
                packet[-1] ^= 0x01
            else:
                del packet[9]
        self._queue_packet(bytes(packet), "measurement")
        if corrupt is None:
            self._sent(amps, volts, watts)

    def _sent(self, amps: np.ndarray, volts: np.ndarray, watts: np.ndarray) -> None:
        with self._lock:
            self._c["samples_sent"] += amps.size
            self._energy_sent += float(watts.sum()) / RATE_HZ
            if self.record_truth and self._truth_n < self.truth_limit:
                self._truth.append((amps, volts, watts))
                self._truth_n += amps.size


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


FAULTS: dict[str, Callable[[VirtualMonsoon], None]] = {
    "garbage": lambda monsoon: monsoon.inject_garbage(97),
    "drop": lambda monsoon: monsoon.drop_packets(3),
    "stall": lambda monsoon: monsoon.stall(0.5),
}


def start_fault_schedule(
    monsoon: VirtualMonsoon, faults: list[str], every_s: float
) -> threading.Thread | None:
    """Inject ``faults`` in turn, one every ``every_s`` seconds while it samples, from a daemon
    thread (it ends with the process); ValueError names an unknown fault."""
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; choose from {', '.join(FAULTS)}")
    if not faults:
        return None

    def inject() -> None:
        index = 0
        while True:
            time.sleep(every_s)
            if monsoon.sampling:
                FAULTS[faults[index % len(faults)]](monsoon)
                index += 1

    thread = threading.Thread(target=inject, name="virtual-monsoon-faults", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backends.virtual.monsoon",
        description="Serve a virtual Monsoon LVPM on a pseudo-terminal until Ctrl-C.",
    )
    parser.add_argument("--serial", type=int, default=12345, help="serial number (12345)")
    parser.add_argument("--baseline-w", type=float, default=0.5, help="idle power, W (0.5)")
    parser.add_argument("--active-w", type=float, default=2.5, help="power under load, W (2.5)")
    parser.add_argument("--noise-w", type=float, default=0.01, help="noise std, W (0.01)")
    parser.add_argument("--voltage", type=float, default=3.7, help="output voltage, V (3.7)")
    parser.add_argument(
        "--burst-period",
        type=float,
        default=0.0,
        help="seconds between load bursts (0: no load, baseline only)",
    )
    parser.add_argument("--burst-duty", type=float, default=0.25, help="fraction under load")
    parser.add_argument("--link", help="also create this symlink to the pty (e.g. ./ttyACM9)")
    args = parser.parse_args(argv)
    load = periodic_load(args.burst_period, args.burst_duty) if args.burst_period > 0 else None
    try:
        sim = VirtualMonsoon(
            serial_number=args.serial,
            load=load,
            baseline_w=args.baseline_w,
            active_w=args.active_w,
            noise_w=args.noise_w,
            voltage=args.voltage,
            link=args.link,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly on SIGTERM as on Ctrl-C
    sim.start()
    print(sim.port, flush=True)
    print(
        f"virtual Monsoon {args.serial} serving on {sim.port}; Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
