"""Monsoon LVPM driver <-> virtual Monsoon over a real pty with pyserial (spec section 9),
plus the trace storage, window energy and rolling power.

Every wait is bounded polling (``wait_until``); nothing asserts on elapsed time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import pytest
import serial

from backends.power.monsoon.discovery import discover_monitors, find_monitor
from backends.power.monsoon.driver import Monsoon
from backends.power.monsoon.protocol import (
    MonsoonError,
    current_limit_raw,
    frame,
    start_payload,
    voltage_byte,
)
from backends.power.monsoon.status import MonsoonStatus, find_status_frame
from backends.power.monsoon.stream import LvpmStreamParser, SampleBatch, SampleCounts
from backends.power.trace import RollingPower, TraceWriter, read_trace, window_stats
from backends.virtual.monsoon import VirtualMonsoon, periodic_load
from support.waiting import wait_until

SPEC_STATUS_FRAME = bytes.fromhex(
    "3b 10 14 11 00 82 00 76 00 83 73 a0 00 60 00 5e 00 65 00 00 aa 1e 00 00 00 03 30 39 05"
    " 00 00 00 00 02 80 00 00 0a fe 01 00 00 00 00 04 50 01 00 00 00 00 00 00 00 00 00 00 00"
    " 00 3a"
)
SPEC_SAMPLE_FRAMES = bytes.fromhex(
    "16 20 01 00 00 00 78 00 76 00 82 73 a0 00 5f 00 5d 00 65 73 a0 00 ee"
    " 16 21 02 00 00 04 60 04 5e 04 6a 73 a0 08 2f 08 2d 08 35 73 a0 00 3c"
    " 16 22 00 00 00 12 1e 00 78 00 78 73 a0 04 71 00 78 00 78 73 9c 00 df"
)
FINE_SCALE = 0.0332 / 1000  # simulator default calibration: Rf - Zf = 1000
COARSE_SCALE = 2.88 / 2000


@pytest.fixture
def sim() -> Iterator[VirtualMonsoon]:
    with VirtualMonsoon(record_truth=True, calibration_interval=333) as device:
        yield device


@pytest.fixture
def mon(sim: VirtualMonsoon) -> Iterator[Monsoon]:
    with Monsoon(sim.port) as monitor:
        yield monitor


class Capture:
    """Collects batches from ``start_sampling``."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.lock = threading.Lock()

    def __call__(self, batch: SampleBatch) -> None:
        with self.lock:
            self.batches.append(batch)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self.lock:
            batches = list(self.batches)
        return (
            np.concatenate([b.t for b in batches]),
            np.concatenate([b.amps for b in batches]),
            np.concatenate([b.volts for b in batches]),
        )


def run_capture(
    mon: Monsoon, actions: Sequence[Callable[[], None]] = (), samples_between: int = 1500
) -> tuple[Capture, SampleCounts]:
    """Sample; after every ``samples_between`` received samples run the next action; stop
    ``samples_between`` samples after the last one."""
    capture = Capture()
    mon.start_sampling(capture)
    target = 0
    for action in [*actions, None]:
        target = mon.counts.received + samples_between
        wait_until(lambda t=target: mon.counts.received >= t, what=f"{target} samples")
        if action is not None:
            action()
    counts = mon.stop_sampling()
    return capture, counts


def assert_matches_truth(capture: Capture, sim: VirtualMonsoon, counts: SampleCounts) -> None:
    """Every decoded sample is the simulator's sample at the same position, within the
    encoding and calibration-noise error of spec 8.2 item 7."""
    _, amps, volts = capture.arrays()
    true_a, true_v, _ = sim.truth()
    assert amps.size == true_a.size == counts.received
    coarse = true_a > 0.9
    bound = np.where(coarse, 0.005 * true_a + 6e-3, 0.005 * true_a + 2.5e-4)
    assert np.all(np.abs(amps - true_a) <= bound)
    assert np.all(np.abs(volts - true_v) <= 1e-3)


def sample_frame(seq: int, kind: int, words: list[tuple[int, int, int, int]]) -> bytes:
    body = b"".join(
        sample[0].to_bytes(2, "big", signed=True)
        + sample[1].to_bytes(2, "big", signed=True)
        + sample[2].to_bytes(2, "big", signed=True)
        + sample[3].to_bytes(2, "big")
        for sample in words
    )
    return frame(bytes((0x20 | (seq & 0x0F), kind, 0, 0)) + body + b"\x00")


# ---------------------------------------------------------------------------------------------
# 1-4: framing, status decoding, encodings (no pty needed)


def test_frames_are_byte_exact() -> None:
    assert frame(b"\x01\x00\x00") == bytes.fromhex("04 01 00 00 05")
    assert frame(b"\x01\x01\xaa") == bytes.fromhex("04 01 01 AA B0")
    assert frame(b"\x01\x01\xc8") == bytes.fromhex("04 01 01 C8 CE")
    assert frame(b"\x01\x01\x00") == bytes.fromhex("04 01 01 00 06")
    assert frame(b"\x01\x10\x02") == bytes.fromhex("04 01 10 02 17")
    assert frame(b"\x01\x1b\x01") == bytes.fromhex("04 01 1B 01 21")
    assert frame(start_payload()) == bytes.fromhex("08 02 FF FF FF FF 03 E8 F1")
    assert frame(b"\x03\x00") == bytes.fromhex("03 03 00 06")
    assert frame(b"\x01\x0a\x00") + frame(b"\x01\x0b\x00") == bytes.fromhex("04010A000F 04010B0010")
    assert frame(b"\x01\x0a\xc0") + frame(b"\x01\x0b\x02") == bytes.fromhex("04010AC0CF 04010B0212")
    assert frame(SPEC_STATUS_FRAME[1:-1]) == SPEC_STATUS_FRAME
    rebuilt = b"".join(
        frame(SPEC_SAMPLE_FRAMES[i + 1 : i + 22]) for i in range(0, len(SPEC_SAMPLE_FRAMES), 23)
    )
    assert rebuilt == SPEC_SAMPLE_FRAMES


def test_status_example_decodes() -> None:
    payload, _ = find_status_frame(b"\x00\xff" + SPEC_STATUS_FRAME)
    assert payload is not None
    status = MonsoonStatus.from_payload(payload)
    assert (status.firmware_version, status.protocol_version) == (20, 17)
    assert status.serial_number == 12345
    assert status.voltage1 == pytest.approx(3.70)
    assert status.output_voltage_raw == 0xAA and status.output_voltage_setting == 3.70
    assert status.powerup_current_limit == pytest.approx(2.995, abs=1e-3)
    assert status.runtime_current_limit == 8.0
    assert status.sample_rate_hz == 5000 and status.hardware_revision == 4
    assert status.usb_passthrough_mode == 1 and status.status_flags == 0
    assert (status.temperature, status.temperature_limit, status.powerup_time) == (30, 80, 10)
    assert (status.main_fine_current, status.usb_fine_current, status.aux_fine_current) == (
        130,
        118,
        131,
    )
    assert status.main_fine_resistor == pytest.approx(0.0503)
    assert status.usb_fine_resistor == pytest.approx(0.0498)
    assert status.aux_fine_resistor == pytest.approx(0.1001)
    assert status.aux_coarse_resistor == pytest.approx(0.10)
    assert status.voltage_lsb == 125e-6


def test_voltage_and_current_limit_encoding() -> None:
    assert voltage_byte(3.70) == 0xAA
    assert voltage_byte(2.01) == 0x01  # truncation would give 00 = output off
    assert voltage_byte(4.55) == 0xFF
    assert voltage_byte(0) == 0
    assert all(voltage_byte(2.0 + k / 100) == k for k in range(1, 256))
    for bad in (1.0, 2.0, 4.56, 5.0, -1.0):
        with pytest.raises(ValueError):
            voltage_byte(bad)
    assert current_limit_raw(8.0) == 0
    assert current_limit_raw(2.5) == 0x2C0
    assert current_limit_raw(0.0) == 1023
    assert current_limit_raw(7.8) == 26
    with pytest.raises(ValueError):
        current_limit_raw(8.5)


def test_parser_decodes_spec_frames_and_ranges() -> None:
    parser = LvpmStreamParser()
    parser.accept_unconfirmed_status = True
    t, amps, volts = parser.feed(SPEC_SAMPLE_FRAMES + SPEC_STATUS_FRAME, now=100.0)
    assert amps == pytest.approx([0.150, 1.499], abs=1e-3)
    assert volts == pytest.approx([3.700, 3.6995], abs=1e-6)
    assert parser.counts.status_packets == 1 and parser.counts.garbage_bytes == 0
    assert np.all(np.diff(t) > 0)
    # fine/coarse handover around 0x7100, negative fine currents, voltage above 4.096 V;
    # a recalibration changes the scale of later samples only
    parser = LvpmStreamParser()
    stream = sample_frame(0, 1, [(120, 0, 0, 0), (95, 0, 0, 0)])
    stream += sample_frame(1, 2, [(1120, 0, 0, 0), (2095, 0, 0, 0)])
    words = [(0x70FE, 0, 0, 36000), (0x0300 | 1, 0, 0, 36000), (20, 0, 0, 36000)]
    stream += sample_frame(2, 0, words)
    stream += sample_frame(3, 2, [(2120, 0, 0, 0), (4095, 0, 0, 0)])
    stream += sample_frame(4, 0, words)
    stream += sample_frame(5, 0, words)  # confirms the previous frame
    _, amps, volts = parser.feed(stream, now=100.0)
    first = [(0x70FE - 120) * FINE_SCALE, (0x0300 - 95) * COARSE_SCALE, (20 - 120) * FINE_SCALE]
    later = [
        (0x70FE - 120) * FINE_SCALE / 2,
        (0x0300 - 95) * COARSE_SCALE / 2,
        -100 * FINE_SCALE / 2,
    ]
    assert amps == pytest.approx(first + later + later, rel=1e-9)
    assert volts == pytest.approx([36000 * 125e-6] * 9)
    assert amps[2] < 0


# ---------------------------------------------------------------------------------------------
# Driver <-> simulator over a pty


def test_simulator_status_frame_is_the_spec_example(sim: VirtualMonsoon) -> None:
    with serial.Serial(sim.port, timeout=1) as port:
        port.write(bytes.fromhex("04 01 01 AA B0"))
        reply = port.read(60)
    assert reply == SPEC_STATUS_FRAME


def test_status_probe_and_serial_number(mon: Monsoon) -> None:
    status = mon.status()
    assert mon.serial_number == status.serial_number == 12345
    assert status.firmware_version == 20 and status.sample_rate_hz == 5000


def test_opening_a_unit_left_streaming(sim: VirtualMonsoon) -> None:
    with serial.Serial(sim.port, timeout=0.05) as port:  # a capture whose host went away
        port.write(frame(start_payload()))
        wait_until(lambda: sim.counters()["samples_sent"] > 1000)
    with Monsoon(sim.port) as mon:  # STOP, skip the stream, then a fresh status
        assert mon.serial_number == 12345 and not sim.sampling
        _, counts = run_capture(mon)
        assert counts.dropped == counts.garbage_bytes == 0


def test_slow_consumer_loses_batches_not_the_port(mon: Monsoon, sim: VirtualMonsoon) -> None:
    delivered: list[SampleBatch] = []
    release = threading.Event()

    def slow(batch: SampleBatch) -> None:
        release.wait()
        delivered.append(batch)

    mon.start_sampling(slow, batch_samples=100, queue_batches=5)
    wait_until(lambda: mon.counts.undelivered > 1000)
    release.set()
    counts = mon.stop_sampling()
    assert counts.lost_packets == counts.device_dropped == counts.garbage_bytes == 0
    assert counts.dropped == counts.undelivered
    assert sum(b.dropped for b in delivered) == counts.dropped
    assert sum(len(b) for b in delivered) == counts.received - counts.undelivered


def test_set_voltage_rounds_and_off_keeps_setpoint(mon: Monsoon) -> None:
    assert mon.set_voltage(2.01).output_voltage_raw == 1
    status = mon.set_voltage(4.55)
    assert status.output_voltage_setting == 4.55 and status.voltage1 == pytest.approx(4.55)
    status = mon.set_voltage(0)
    assert status.output_voltage_setting == 4.55  # setpoint kept
    assert status.voltage1 == 0.0  # output off
    with pytest.raises(ValueError):
        mon.set_voltage(4.6)


def test_current_limits_and_passthrough_round_trip(mon: Monsoon) -> None:
    status = mon.set_current_limits(runtime_a=2.5, powerup_a=0.0)
    assert status.runtime_current_limit_raw == 0x2C0 and status.powerup_current_limit_raw == 1023
    assert status.runtime_current_limit == pytest.approx(8 * (1023 - 704) / 1023)
    status = mon.set_current_limits(runtime_a=8.0)
    assert status.runtime_current_limit == 8.0 and status.powerup_current_limit == 0.0
    assert mon.set_usb_passthrough("auto").usb_passthrough_mode == 2
    assert mon.set_usb_passthrough(0).usb_passthrough_mode == 0


def test_setter_then_status_is_never_stale(mon: Monsoon) -> None:
    mon.set_voltage(3.3)
    mon.set_voltage(4.0)
    assert mon.status().output_voltage_setting == 4.0
    assert mon.status().output_voltage_setting == 4.0


def test_start_stop_counts_and_restart(mon: Monsoon, sim: VirtualMonsoon) -> None:
    for run in (1, 2):  # the second run starts with fresh sequence and calibration state
        before = sim.counters()["samples_sent"]
        capture, counts = run_capture(mon)
        sent = sim.counters()
        assert counts.received == sent["samples_sent"] - before  # incl. the short last packet
        assert counts.dropped == counts.garbage_bytes == counts.uncalibrated == 0
        assert counts.lost_packets == 0 and counts.status_packets == 1
        assert counts.calibration_packets >= 4
        t, _, _ = capture.arrays()
        spacing = np.diff(t)  # 200 us; at most 100 us less where the clock slews back
        assert np.all(spacing >= 0.0001 - 1e-6) and np.all(spacing <= 0.0002 + 1e-6)
        assert np.median(spacing) == pytest.approx(0.0002, abs=1e-6)  # epoch floats: 0.24 us
        assert sent["runs"] == run
    assert mon.last_status is not None and mon.last_status.status_flags & 0x10  # STOP seen
    assert mon.status().serial_number == 12345  # commands work again after stopping


def test_calibration_applied_fine_coarse_and_high_voltage() -> None:
    with (
        VirtualMonsoon(
            record_truth=True,
            calibration_interval=100,
            load=periodic_load(0.2, 0.5),
            baseline_w=0.4,
            active_w=8.0,  # about 1.8 A at 4.5 V: the coarse range
        ) as sim,
        Monsoon(sim.port) as mon,
    ):
        mon.set_voltage(4.5)  # voltage words above 32767 (4.096 V)
        capture, counts = run_capture(mon, samples_between=4000)
        assert_matches_truth(capture, sim, counts)
        true_a = sim.truth()[0]
        assert (true_a > 1.5).any() and (true_a < 0.2).any()
        assert counts.calibration_packets > 4  # periodic pairs arrived and were applied


def test_recalibration_mid_stream_applies_to_later_samples() -> None:
    with VirtualMonsoon(record_truth=True, calibration_noise=0) as sim, Monsoon(sim.port) as mon:
        capture, counts = run_capture(
            mon, [lambda: sim.set_calibration(zf=300, rf=2300, zc=40, rc=4040)]
        )
        _, amps, _ = capture.arrays()
        true_a = sim.truth()[0]
        assert amps.size == true_a.size == counts.received
        error = amps - true_a
        # encoding error only (-1.5..+0.5 counts); a wrong scale would be off by ~50 %
        assert error.min() >= -1.6 * FINE_SCALE and error.max() <= 0.6 * FINE_SCALE


@pytest.mark.parametrize("pattern", ["random", "zeros", "ff", "mixed"])
def test_garbage_mid_stream_resyncs(mon: Monsoon, sim: VirtualMonsoon, pattern: str) -> None:
    capture, counts = run_capture(
        mon, [lambda: sim.inject_garbage(500, pattern), lambda: sim.inject_garbage(37, pattern)]
    )
    assert counts.garbage_bytes == 537 == sim.counters()["garbage_bytes_sent"]
    assert counts.dropped == 0 and counts.resyncs == 2
    assert_matches_truth(capture, sim, counts)


def test_corrupted_and_shortened_packets_cost_only_themselves(
    mon: Monsoon, sim: VirtualMonsoon
) -> None:
    capture, counts = run_capture(
        mon,
        [lambda w=w: sim.corrupt_packets(1, w) for w in ("payload", "length", "checksum")]
        + [lambda: sim.corrupt_packets(1, "delete")],
    )
    assert sim.counters()["corrupted_packets"] == 4
    assert counts.lost_packets == 4 and counts.dropped == 4 * 15
    assert counts.garbage_bytes == 3 * 127 + 126
    assert_matches_truth(capture, sim, counts)


def test_dropped_packets_are_counted(mon: Monsoon, sim: VirtualMonsoon) -> None:
    capture, counts = run_capture(mon, [lambda: sim.drop_packets(3), lambda: sim.drop_packets(5)])
    injected = sim.counters()["injected_dropped_samples"]
    assert injected == 8 * 15
    assert counts.dropped == injected and counts.lost_packets == 8
    assert counts.garbage_bytes == 0
    assert_matches_truth(capture, sim, counts)
    t, _, _ = capture.arrays()
    # The lost samples keep their place in time. The clock may slew earlier by up to half a
    # sample period at a read (module docstring), so a gap may be up to 0.5 period short;
    # epoch-second float64 timestamps carry about 0.001 period of rounding.
    gaps = np.diff(t) * 5000
    big = np.sort(gaps[gaps > 2])
    assert big.size == 2
    for gap, expected in zip(big, [3 * 15 + 1, 5 * 15 + 1], strict=True):
        assert expected - 0.51 <= gap <= expected + 0.01


def test_sixteen_dropped_packets_are_invisible(mon: Monsoon, sim: VirtualMonsoon) -> None:
    """The documented blind spot of a 4-bit sequence number (spec 5.9)."""
    _, counts = run_capture(mon, [lambda: sim.drop_packets(16)])
    assert sim.counters()["injected_dropped_packets"] == 16
    assert counts.lost_packets == 0 and counts.received == sim.counters()["samples_sent"]


def test_junk_before_the_first_packet(mon: Monsoon, sim: VirtualMonsoon) -> None:
    sim.inject_garbage(300, "mixed", at_start=True)
    capture, counts = run_capture(mon)
    assert counts.garbage_bytes == 300 and counts.dropped == 0 and counts.uncalibrated == 0
    assert_matches_truth(capture, sim, counts)


def test_stall_gives_no_false_drops(mon: Monsoon, sim: VirtualMonsoon) -> None:
    capture, counts = run_capture(mon, [lambda: sim.stall(1.5)])
    assert counts.dropped == 0 and counts.garbage_bytes == 0 and mon.error is None
    assert_matches_truth(capture, sim, counts)
    t, _, _ = capture.arrays()
    assert np.all(np.diff(t) > 0)


def test_status_and_unknown_frames_mid_stream_are_skipped(
    mon: Monsoon, sim: VirtualMonsoon
) -> None:
    capture, counts = run_capture(
        mon,
        [lambda: sim.inject_frame("status"), lambda: sim.inject_frame("unknown")]
        + [lambda: sim.inject_frame("flag6")],
    )
    assert counts.status_packets == 2  # the injected one and the reply to STOP
    assert counts.unknown_packets == 1 and counts.flagged_packets == 1
    assert counts.dropped == 0 and counts.garbage_bytes == 0
    assert_matches_truth(capture, sim, counts)


def test_commands_while_sampling(mon: Monsoon, sim: VirtualMonsoon) -> None:
    mon.start_sampling(lambda batch: None)
    try:
        with pytest.raises(MonsoonError, match="while sampling"):
            mon.status()
    finally:
        mon.stop_sampling()
    mon.close()
    # the simulator ignores 01 commands while it streams: no status until STOP
    parser = LvpmStreamParser()
    with serial.Serial(sim.port, timeout=0.05) as port:
        port.write(frame(b"\x01\x1b\x01") + frame(start_payload()))
        port.write(frame(b"\x01\x00\x00"))
        wait_until(lambda: sim.counters()["ignored_commands"] == 1)
        wait_until(lambda: parser.feed(port.read(4096), time.time()) and parser.counts.received > 0)
        wait_until(lambda: parser.feed(port.read(4096), time.time()) and parser.counts.packets > 50)
        assert parser.counts.status_packets == 1  # the reply to 01 1B 01 only
        parser.accept_unconfirmed_status = True
        port.write(frame(b"\x03\x00"))
        wait_until(
            lambda: parser.feed(port.read(4096), time.time()) and parser.counts.status_packets == 2
        )
    assert parser.counts.garbage_bytes == 0


def test_backpressure_is_reported_by_the_device(sim: VirtualMonsoon) -> None:
    parser = LvpmStreamParser()
    with serial.Serial(sim.port, timeout=0.05) as port:
        port.write(frame(start_payload()))
        # nobody reads: the pty fills, then the device drops samples and counts them
        wait_until(lambda: sim.counters()["backpressure_dropped_samples"] > 1000)
        # reading again: every dropped sample is reported in the next packet sent
        wait_until(
            lambda: (
                parser.feed(port.read(4096), time.time())
                and parser.counts.device_dropped == sim.counters()["backpressure_dropped_samples"]
                and parser.counts.received > 5000
            )
        )
        port.write(frame(b"\x03\x00"))
    assert parser.counts.dropped == parser.counts.device_dropped > 1000
    assert parser.counts.lost_packets == 0 and parser.counts.garbage_bytes == 0


def test_port_closed_mid_stream_is_a_clean_error(sim: VirtualMonsoon) -> None:
    mon = Monsoon(sim.port)
    errors: list[MonsoonError] = []
    mon.start_sampling(lambda batch: None, on_error=errors.append)
    wait_until(lambda: mon.counts.received > 500)
    sim.stop()
    wait_until(lambda: bool(errors))
    assert sim.port in str(errors[0]) and mon.error is errors[0]
    with pytest.raises(MonsoonError):
        mon.stop_sampling()
    mon.close()


@pytest.fixture
def silent_pty() -> Iterator[str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


@pytest.fixture
def babbling_pty() -> Iterator[str]:
    """A pty whose other end sends random bytes (a modem, a GPS, a wrong baud rate)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()
    rng = np.random.default_rng(7)

    os.set_blocking(master, False)

    def babble() -> None:
        while not stop.wait(0.01):
            with contextlib.suppress(BlockingIOError):
                os.write(master, rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
            with contextlib.suppress(BlockingIOError):
                os.read(master, 4096)  # whatever the driver sends

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    yield os.ttyname(slave)
    stop.set()
    thread.join()
    os.close(master)
    os.close(slave)


def test_port_that_answers_nothing(silent_pty: str) -> None:
    with pytest.raises(MonsoonError, match="no answer") as info:
        Monsoon(silent_pty, timeout=0.3)
    assert silent_pty in str(info.value)


def test_port_that_answers_garbage(babbling_pty: str) -> None:
    with pytest.raises(MonsoonError, match="no valid LVPM status packet") as info:
        Monsoon(babbling_pty, timeout=0.3)
    assert babbling_pty in str(info.value)


def test_two_monitors_selected_by_serial_number(silent_pty: str) -> None:
    with VirtualMonsoon(serial_number=111) as a, VirtualMonsoon(serial_number=222) as b:
        found = discover_monitors(ports=[a.port, silent_pty, b.port], timeout=0.3)
        assert [(m.port, m.serial_number) for m in found] == [(a.port, 111), (b.port, 222)]
        assert found[1].id == "monsoon:222"
        assert find_monitor(222, ports=[a.port, b.port]).port == b.port
        with pytest.raises(MonsoonError, match="no Monsoon with serial number 999"):
            find_monitor(999, ports=[a.port, b.port])


# ---------------------------------------------------------------------------------------------
# Traces


def synthetic(n: int, t0: float = 1000.0, dt: float = 0.0002) -> pd.DataFrame:
    """1 W for the first half, 3 W for the second, at 4 V."""
    t = t0 + np.arange(n) * dt
    watts = np.where(np.arange(n) < n // 2, 1.0, 3.0)
    volts = np.full(n, 4.0)
    return pd.DataFrame({"t_s": t, "amps": watts / volts, "volts": volts, "watts": watts})


@pytest.mark.parametrize("name", ["trace.csv", "trace.parquet"])
def test_trace_round_trip(tmp_path, name: str) -> None:
    df = synthetic(10_000, t0=1_700_000_000.0)  # epoch times must survive the CSV exactly
    df["amps"] += np.random.default_rng(1).normal(0, 1e-3, len(df))  # awkward floats
    df["watts"] = df["amps"] * df["volts"]
    with TraceWriter(tmp_path / name, flush_every=1_000) as writer:
        for start in range(0, len(df), 333):
            part = df.iloc[start : start + 333]
            writer.write_arrays(part["t_s"], part["amps"], part["volts"], part["watts"])
            assert writer._pending < 1_000 + 333  # bounded buffer
    assert writer.samples_written == len(df)
    pd.testing.assert_frame_equal(read_trace(tmp_path / name), df)


def test_window_energy_exact(tmp_path) -> None:
    df = synthetic(10_000)  # 2 s: 1 W for 1 s, then 3 W for 1 s
    t0 = df["t_s"].iloc[0]
    path = tmp_path / "trace.csv"
    with TraceWriter(path, flush_every=777) as writer:
        writer.write_arrays(df["t_s"], df["amps"], df["volts"], df["watts"])
    for source in (df, path):
        mean_w, energy, samples = window_stats(source, t0 + 0.5, t0 + 1.5, chunk_rows=999)
        assert energy == pytest.approx(0.5 * 1 + 0.5 * 3, rel=1e-9)
        assert mean_w == pytest.approx(2.0, rel=1e-9) and samples == 5000
        # whole trace, window wider than the data: 1 J + 3 J, mean over the measured 2 s
        mean_w, energy, samples = window_stats(source, t0 - 5, t0 + 10, chunk_rows=999)
        assert energy == pytest.approx(4.0, rel=1e-9) and mean_w == pytest.approx(2.0, rel=1e-9)
        assert samples == 10_000
        # boundaries inside samples: 0.25 of a 1 W sample + 0.75 of a 3 W sample
        mid = t0 + 1.0
        mean_w, energy, samples = window_stats(source, mid - 0.00015, mid + 0.00005)
        assert energy == pytest.approx(0.00015 * 1 + 0.00005 * 3, rel=1e-6)
        assert mean_w == pytest.approx(0.0003 / 0.0002, rel=1e-6) and samples == 1
    # a sine over whole periods averages to its offset exactly
    n = 50_000
    t = 1000.0 + np.arange(n) * 0.0002
    watts = 2.0 + np.sin(2 * np.pi * 5.0 * (t - 1000.0))
    sine = pd.DataFrame({"t_s": t, "amps": watts / 4, "volts": 4.0, "watts": watts})
    mean_w, energy, _ = window_stats(sine, 1000.0, 1010.0)
    assert energy == pytest.approx(20.0, rel=1e-9) and mean_w == pytest.approx(2.0, rel=1e-9)


def test_window_energy_gaps_are_not_measured_time() -> None:
    df = pd.concat([synthetic(5000), synthetic(5000, t0=1100.0)], ignore_index=True)
    t0 = df["t_s"].iloc[0]
    mean_w, energy, samples = window_stats(df, t0, t0 + 200)
    assert samples == 10_000
    assert energy == pytest.approx(2 * (2500 * 1 + 2500 * 3) * 0.0002, rel=1e-9)
    assert mean_w == pytest.approx(2.0, rel=1e-9)
    slewed = synthetic(10_000)
    slewed.loc[100:, "t_s"] -= 0.0001  # the driver's clock slewed back by half a period
    assert window_stats(slewed, 0, 5000)[1] == pytest.approx(4.0, rel=1e-9)


def test_rolling_power_is_bounded() -> None:
    rolling = RollingPower(bucket_s=0.1, window_s=10.0)
    dt = 0.0002
    for second in range(120):  # two minutes at 5 kHz, in 50 ms batches
        for part in range(20):
            start = second * 5000 + part * 250
            t = 5000.0 + (start + np.arange(250)) * dt
            rolling.add(t, np.full(250, 1.0 + (second % 2)))
    assert len(rolling.buckets) == 100 and rolling.samples == 120 * 5000
    starts, means, lows, highs = rolling.series()
    assert starts[-1] == pytest.approx(5000.0 + 119.9)
    assert means[-1] == 2.0 and means[-11] == 1.0  # second 119 at 2 W, second 118 at 1 W
    assert np.all(lows <= means) and np.all(means <= highs)
    assert rolling.mean_w(2.0) == pytest.approx(1.5)


def test_end_to_end_energy_through_the_trace(tmp_path) -> None:
    active = threading.Event()
    with (
        VirtualMonsoon(
            load=lambda: 1.0 if active.is_set() else 0.0, baseline_w=0.5, active_w=2.5
        ) as sim,
        Monsoon(sim.port) as mon,
        TraceWriter(tmp_path / "e2e.parquet") as writer,
    ):
        marks: list[float] = []

        def toggle() -> None:
            marks.append(time.time())
            if active.is_set():
                active.clear()
            else:
                active.set()

        mon.start_sampling(writer.write)
        for _ in range(3):  # idle, active, idle, active
            target = mon.counts.received + 2500
            wait_until(lambda t=target: mon.counts.received >= t)
            toggle()
        target = mon.counts.received + 2500
        wait_until(lambda: mon.counts.received >= target)
        mon.stop_sampling()
        sent = sim.counters()
    trace = read_trace(tmp_path / "e2e.parquet")
    assert len(trace) == sent["samples_sent"]
    span = (trace["t_s"].iloc[0] - 1, trace["t_s"].iloc[-1] + 1)
    mean_w, energy, samples = window_stats(trace, *span)
    assert samples == len(trace)
    assert energy == pytest.approx(sent["energy_sent_j"], rel=2e-3)
    margin = 0.1  # the load is read every 10 ms; timestamps lag arrival by a few ms
    idle_w, _, _ = window_stats(trace, marks[1] + margin, marks[2] - margin)
    active_w, _, _ = window_stats(trace, marks[0] + margin, marks[1] - margin)
    assert idle_w == pytest.approx(0.5, rel=0.02) and active_w == pytest.approx(2.5, rel=0.02)
