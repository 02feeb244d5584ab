"""``--power-beacons round`` and the timed-loop energy window, end to end: jobs on a virtual
phone whose clock runs 1.5 s ahead and 150 ppm fast, behind the real adb server, powered by a
virtual Monsoon on a pty whose load the test records.

The Monsoon draws ``BASELINE_W`` plus ``ACTIVE_W - BASELINE_W`` times the phone's load: 1.0
while a tool's timed loop (or a beacon) runs, ``WARMUP_LOAD`` while the stand-in
``benchmark_model`` runs its warm-up, nothing while it loads the model. The truth is that
waveform over each round's command, placed by the phone's true clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from backends.core.records import Result
from backends.power.clock_fit import ClockFit
from backends.power.sync_energy import Span, job_energy
from backends.power.trace import read_trace
from backends.virtual import PhoneProfile, VirtualPhone
from support.power_jobs import ACTIVE_W, BASELINE_W, COPY_CONVERTER, LoadLog, run_synced_job

OFFSET_S, DRIFT_PPM = 1.5, 150.0
WARMUP_LOAD = 0.4
RUNS, ROUNDS = 1500, 3


@pytest.fixture
def virtual_phone_profile() -> PhoneProfile:
    return PhoneProfile(
        clock_offset_s=OFFSET_S, clock_drift_ppm=DRIFT_PPM, tool_warmup_load=WARMUP_LOAD
    )


def run_job(
    phone: VirtualPhone, adb_port: int, tmp_path: Path, runtime: str, beacons: str
) -> tuple[Result, LoadLog]:
    """One ``--power --power-sync beacon --power-beacons <beacons>`` job on ``phone``."""
    settings = {"runs": RUNS, "rounds": ROUNDS, "power_beacons": beacons}
    convert = {"tflite": COPY_CONVERTER}
    return run_synced_job(phone, adb_port, tmp_path, runtime, settings, 4646, convert)


def true_host_clock(phone: VirtualPhone) -> Callable[[float], float]:
    """Phone clock -> host clock, as the phone's profile really runs it."""
    ref = phone.clock_ref_ns / 1e9
    return lambda device_t: ref + (device_t - ref - OFFSET_S) / (1.0 + DRIFT_PPM * 1e-6)


def truth_mj(result: Result, load: LoadLog, phone: VirtualPhone, only: float | None) -> float:
    """Net energy per inference the waveform holds over the rounds' commands (``only``: just
    the time the load was at that level)."""
    assert result.power is not None
    to_host = true_host_clock(phone)
    seconds = sum(
        load.load_seconds(to_host(start), to_host(end), only)
        for start, end, _ in result.power["device_rounds"]
    )
    return (ACTIVE_W - BASELINE_W) * seconds / result.stats.count * 1000.0


def test_a_beacon_before_every_round_places_each_round_and_holds_the_energy(
    adb_server, virtual_phone: VirtualPhone, tmp_path: Path
) -> None:
    _, port = adb_server
    result, load = run_job(virtual_phone, port, tmp_path, "ort", "round")
    power = result.power
    assert power is not None
    assert power["power_sync"] == "beacon", result.warnings
    assert power["power_beacons"] == "round"
    assert power["power_sync_reason"] == ""
    assert [b["monitor_start"] is not None for b in power["beacons"]] == [True] * (ROUNDS + 1)
    counts = [power[key] for key in ("beacons_run", "beacons_found", "beacons_used")]
    assert counts == [ROUNDS + 1] * 3
    assert power["clock_fit"]["beacons"] == ROUNDS + 1
    # beacon 1 before the baseline and round 1, then one between every two rounds, one after
    starts = [b["device_start"] for b in power["beacons"]]
    rounds = power["device_rounds"]
    assert starts[0] < rounds[0][0]
    for number, (start, end, _) in enumerate(rounds):
        assert start < end < starts[number + 1]
        if number + 2 < len(starts):
            assert starts[number + 1] < rounds[number + 1][0]
    assert power["clock_offset_s"] == pytest.approx(OFFSET_S, abs=0.01)
    assert power["power_window"] == "timed loop"
    truth = truth_mj(result, load, virtual_phone, None)
    between = [later[0] - earlier[1] for earlier, later in zip(rounds, rounds[1:], strict=False)]
    print(
        f"RESULT round_beacons energy_mj={power['energy_per_inference_mj']:.5f} "
        f"truth_mj={truth:.5f} offset_s={power['clock_offset_s']:.5f} "
        f"drift_ppm={power['clock_drift_ppm']:.0f} "
        f"residual_ms={power['clock_fit']['residual_ms_max']:.3f} "
        f"between_rounds_s={max(between):.3f}"
    )
    assert power["energy_per_inference_mj"] == pytest.approx(truth, rel=0.05)
    to_host = true_host_clock(virtual_phone)
    each = [
        (ACTIVE_W - BASELINE_W) * load.load_seconds(to_host(start), to_host(end)) / count * 1e3
        for start, end, count in rounds
    ]
    assert power["round_energy_per_inference_mj"] == pytest.approx(each, rel=0.05)


def test_the_timed_loops_window_gives_the_loops_energy_where_the_command_counts_warmup(
    adb_server, virtual_phone: VirtualPhone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, port = adb_server
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):  # the converter's cache
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))
    result, load = run_job(virtual_phone, port, tmp_path, "tflite", "job")
    power = result.power
    assert power is not None
    assert power["power_sync"] == "beacon", result.warnings
    assert power["power_window"] == "timed loop" and power["power_window_reason"] == ""
    assert power["round_windows"] == ["timed loop"] * ROUNDS
    for (start, end, count), window in zip(
        power["device_rounds"], power["device_windows"], strict=True
    ):
        assert start < window[0] < window[1] == end and window[2] == count
    loop_truth = truth_mj(result, load, virtual_phone, only=1.0)  # the timed loops alone
    command_truth = truth_mj(result, load, virtual_phone, None)  # warm-up included
    # the same trace, baseline and clock fit, with each round over its whole command
    fit = ClockFit(**{**power["clock_fit"], "dropped": tuple(power["clock_fit"]["dropped"])})
    frame = read_trace(Path(power["trace_path"]))
    period = float(np.median(np.diff(frame["t_s"].to_numpy())))
    commands = [
        Span(fit.to_monitor(start), fit.to_monitor(end), count)
        for start, end, count in power["device_rounds"]
    ]
    by_command = job_energy(frame, Span(*power["baseline_window"]), commands, period)
    loop_mj, command_mj = power["energy_per_inference_mj"], by_command["energy_per_inference_mj"]
    print(
        f"RESULT timed_loop_mj={loop_mj:.5f} command_mj={command_mj:.5f} "
        f"loop_truth_mj={loop_truth:.5f} command_truth_mj={command_truth:.5f}"
    )
    assert loop_mj == pytest.approx(loop_truth, rel=0.05)
    assert command_mj == pytest.approx(command_truth, rel=0.05)
    assert command_mj > loop_truth * 1.10  # the warm-up counted as the loop's
    assert abs(loop_mj - loop_truth) < abs(command_mj - loop_truth)
