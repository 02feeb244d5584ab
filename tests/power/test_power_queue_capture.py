"""One capture over a queue of beacon jobs (``--power-capture queue``): a virtual phone whose
clock runs 1.5 s ahead and 150 ppm fast, behind the real adb server, powered by a virtual
Monsoon on a pty.

Two beacons inside one job of a few seconds cannot resolve 150 ppm (their millisecond of
timing error reads as hundreds of ppm); six over a queue of three jobs must, while every job
keeps its own energy, and its energy by the queue's fit stays within 5 % of the waveform. The
queue's trace must be closed, complete, once no such job is left queued.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backends.core.lab import Lab
from backends.core.options import build_settings
from backends.core.records import Result
from backends.power.capture import MonitorLink, PowerManager
from backends.power.queue_capture import QueueCapture, member_from_power, read_spans
from backends.power.trace import TraceWriter, read_trace
from backends.virtual import PhoneProfile, VirtualPhone
from backends.virtual.monsoon import VirtualMonsoon
from console.cli.shared import add_bench_options
from support.power_jobs import ACTIVE_W, BASELINE_W, LoadLog, run_synced_jobs
from support.waiting import wait_until

OFFSET_S, DRIFT_PPM = 1.5, 150.0
# three jobs (settings differ, so they are not one job) whose rounds last 0.3-0.5 s: a stall
# of the Monsoon emulator's thread (tens of ms on a busy machine) moves a round's edges
QUEUE_RUNS = (3000, 2400, 1800)
# an idle baseline this long spreads the queue's six beacons over about 45 s (drift resolves
# with the span; the beacons' ~1 ms error stays), at no cost in CPU
BASELINE_S = 10.0
WAIT_S = 30.0
SAMPLE_S = 1 / 5000  # the Monsoon's sample period
TICK_S = 0.0005  # the Monsoon reads the phone's load this often: a beacon's edges to 0.5 ms


@pytest.fixture
def virtual_phone_profile() -> PhoneProfile:
    return PhoneProfile(clock_offset_s=OFFSET_S, clock_drift_ppm=DRIFT_PPM)


def waveform_mj(result: Result, load: LoadLog, ref: float) -> float:
    """The truth: the energy per inference the Monsoon's load implies over the job's windows
    (``device_windows``, its rounds' timed loops), placed on the host's clock by the phone's
    true clock (``ref`` its reference, seconds)."""
    assert result.power is not None

    def to_host(device_t: float) -> float:
        return ref + (device_t - ref - OFFSET_S) / (1.0 + DRIFT_PPM * 1e-6)

    windows = result.power["device_windows"]
    loaded = sum(load.load_seconds(to_host(start), to_host(end)) for start, end, _ in windows)
    assert loaded > 0.2, "the phone was hardly loaded inside the job's windows"
    return (ACTIVE_W - BASELINE_W) * loaded / sum(n for _, _, n in windows) * 1000.0


def monitor_clock_ppm(trace: pd.DataFrame, at: np.ndarray) -> float:
    """How fast the monitor's sample clock ran against the host's over the instants ``at``
    (trace times), in ppm. The emulator takes a sample every 200 us of the host's clock; the
    driver stamps sample i ``anchor + i / 5 kHz`` and slews its anchor earlier as data arrives
    sooner than it first guessed (about 2 ms over the first seconds of a stream), so the anchor
    at each instant is the monitor clock's error there; its least-squares slope over ``at`` is
    what it adds to a line fitted through those instants."""
    t = trace["t_s"].to_numpy(dtype=np.float64)
    assert np.diff(t).max() < 1.5 * SAMPLE_S, "the queue's trace has a gap: samples dropped"
    anchor = t - np.arange(t.size) * SAMPLE_S
    at_anchor = anchor[np.searchsorted(t, at)]
    return float(np.polyfit(at - at[0], at_anchor, 1)[0]) * 1e6


def test_power_capture_is_a_cli_option_with_two_choices() -> None:
    parser = argparse.ArgumentParser()
    add_bench_options(parser)
    args = parser.parse_args(["--power-sync", "beacon", "--power-capture", "queue"])
    assert build_settings(vars(args)).power_capture == "queue"
    assert build_settings({}).power_capture == "job"
    with pytest.raises(ValueError, match="--power-capture must be one of job, queue, got 'lab'"):
        build_settings(vars(parser.parse_args(["--power-capture", "lab"])))


def test_a_job_not_placed_by_beacon_joins_the_queue_without_windows_and_says_why() -> None:
    power = {
        "power_sync": "windows",
        "power_sync_reason": "the beacon did not run: power_beacon exited with 1",
        "energy_per_inference_mj": 1.2,
    }
    member = member_from_power("job-1", power)
    assert member.stamps is None and member.beacons == ()
    assert member.reason == (
        "not placed by beacon (the beacon did not run: power_beacon exited with 1)"
    )


def test_reading_a_growing_trace_keeps_the_spans_and_stops_at_the_complete_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.csv"
    t = 100.0 + np.arange(50_000) * SAMPLE_S  # 10 s
    with TraceWriter(path) as writer:
        writer.write_arrays(t, np.full(t.size, 0.25), np.full(t.size, 4.0))
    rows = read_spans(path, [(101.0, 102.0), (101.5, 103.0), (108.0, 120.0)], max_rows=45_000)
    times = rows["t_s"].to_numpy()
    assert np.all(np.diff(times) > 0)  # overlapping spans give each row once
    inside = ((times >= 101.0) & (times <= 103.0)) | ((times >= 108.0) & (times < 109.0))
    assert inside.all()
    assert len(rows) == pytest.approx(2.0 / SAMPLE_S + 1.0 / SAMPLE_S, abs=2)
    assert rows["watts"].to_numpy() == pytest.approx(1.0)


def test_a_closed_queue_trace_is_complete_and_takes_no_more_samples(tmp_path: Path) -> None:
    with VirtualMonsoon(serial_number=778, baseline_w=0.5, noise_w=0.005) as sim:
        manager = PowerManager([MonitorLink("adb:phone", port=sim.port)], lambda event: None)
        try:
            channel = manager.channel_for("adb:phone")

            def received() -> int:
                return channel.monsoon.counts.received

            before_open = received()
            queue = QueueCapture(channel, tmp_path / "power-queue.csv")
            opened = received()
            assert channel.recording == (queue.path,)
            assert wait_until(lambda: received() > opened + 12_000, WAIT_S)
            before_close = received()
            queue.close()
            closed = received()
            assert channel.recording == ()
            first = read_trace(queue.path)
            size = queue.path.stat().st_size
            assert wait_until(lambda: received() > closed + 12_000, WAIT_S)
            queue.close()  # twice is harmless
        finally:
            manager.close()
    assert queue.path.stat().st_size == size  # nothing written after the close
    assert queue.path.read_bytes().endswith(b"\n")
    # every sample between the open and the close (a batch in flight either side)
    assert before_close - opened - 2_000 <= len(first) <= closed - before_open
    assert not first.isna().any().any()
    assert first["watts"].mean() == pytest.approx(0.5, rel=0.05)


def test_a_queue_of_beacon_jobs_resolves_the_phones_drift_over_all_their_beacons(
    adb_server, virtual_phone: VirtualPhone, tmp_path: Path
) -> None:
    _, port = adb_server
    device_id = f"adb:{virtual_phone.serial}"
    queue = [
        {"runs": runs, "rounds": 3, "power_capture": "queue", "power_baseline_s": BASELINE_S}
        for runs in QUEUE_RUNS
    ]
    seen: dict[str, object] = {}

    def when_idle(lab: Lab) -> None:
        # the queue's fit of the last job, then the trace's close, follow its stored result
        channel = lab.power.channel_for(device_id)
        assert wait_until(lambda: not channel.recording, WAIT_S), channel.recording
        seen["results"] = [result for _, result in lab.store.rows()]

    _, load = run_synced_jobs(
        virtual_phone, port, tmp_path, "ort", queue, 4546, when_idle=when_idle, tick_s=TICK_S
    )
    results = seen["results"]
    assert isinstance(results, list) and len(results) == len(QUEUE_RUNS)
    own_drifts, rows = [], []
    for number, result in enumerate(results, 1):
        power = result.power
        assert power is not None
        # the job's own capture and energy, as without the queue
        assert power["power_sync"] == "beacon", result.warnings
        truth = waveform_mj(result, load, virtual_phone.clock_ref_ns / 1e9)
        assert power["energy_per_inference_mj"] == pytest.approx(truth, rel=0.05)
        own_drifts.append(power["clock_drift_ppm"])
        # and by the fit over every beacon of the queue so far
        figures = power["queue"]
        assert "error" not in figures, figures
        assert figures["power_sync"] == "beacon", figures["power_sync_reason"]
        assert figures["jobs"] == number
        assert figures["beacons_used"] == 2 * number, figures["power_sync_reason"]
        assert figures["trace_path"] == results[0].power["queue"]["trace_path"]
        mj = (power["energy_per_inference_mj"], figures["energy_per_inference_mj"], truth)
        rows.append("/".join(f"{value:.5f}" for value in mj))
        assert figures["energy_per_inference_mj"] == pytest.approx(truth, rel=0.05)
    last = results[-1].power["queue"]
    trace_path = Path(last["trace_path"])
    trace = read_trace(trace_path)
    beacons = [b for result in results for b in result.power["beacons"]]
    # the fit reads the phone against the monitor's sample clock: 150 ppm against the host's,
    # less how fast the monitor's clock ran against the host's at the beacons
    monitor_ppm = monitor_clock_ppm(trace, np.array([b["monitor_start"] for b in beacons]))
    truth_ppm = DRIFT_PPM - monitor_ppm
    print(
        f"RESULT queue_drift_ppm={last['clock_drift_ppm']:.1f} truth_ppm={truth_ppm:.1f} "
        f"(phone {DRIFT_PPM:g}, monitor clock {monitor_ppm:+.1f}) beacons={last['beacons_used']} "
        f"offset_s={last['clock_offset_s']:.5f} "
        f"residual_ms={last['clock_fit']['residual_ms_max']:.3f} "
        f"job_drifts_ppm={','.join(f'{d:.0f}' for d in own_drifts)} "
        f"job/queue/truth_mj={','.join(rows)}"
    )
    assert last["clock_drift_ppm"] == pytest.approx(truth_ppm, abs=50.0)
    # once the queue is over, every job is measured again by the fit over all six beacons
    for result in results:
        final = result.power["queue_final"]
        assert final["jobs"] == len(QUEUE_RUNS), final
        assert final["beacons_used"] == 2 * len(QUEUE_RUNS), final["power_sync_reason"]
        assert final["clock_drift_ppm"] == pytest.approx(last["clock_drift_ppm"], abs=1.0)
        truth = waveform_mj(result, load, virtual_phone.clock_ref_ns / 1e9)
        assert final["energy_per_inference_mj"] == pytest.approx(truth, rel=0.05)
    assert results[-1].power["queue_final"]["energy_per_inference_mj"] == pytest.approx(
        last["energy_per_inference_mj"], rel=1e-6
    )
    # the queue's trace: closed once the queue ended, complete over every job's own trace
    assert trace_path.parent == tmp_path / "lab" / "logs"
    assert trace_path.name.startswith("power-queue-adb_") and trace_path.suffix == ".csv"
    assert trace_path.read_bytes().endswith(b"\n")
    first_job = read_trace(results[0].power["trace_path"])["t_s"]
    last_job = read_trace(results[-1].power["trace_path"])["t_s"]
    assert trace["t_s"].iloc[0] <= first_job.iloc[0]
    assert trace["t_s"].iloc[-1] >= last_job.iloc[-1]
