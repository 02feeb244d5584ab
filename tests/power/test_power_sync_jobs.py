"""Power jobs synced by beacon (``--power-sync beacon``) on a virtual phone whose clock runs
1.5 s ahead of the host's and 150 ppm fast, behind the real adb server, powered by a virtual
Monsoon on a pty.

The Monsoon draws ``ACTIVE_W`` while a tool (the benchmark or the beacon) marks the phone
loaded and ``BASELINE_W`` otherwise; the load it saw, and when, is recorded here. devlab must
find both beacons, solve the phone's clock, and report a net energy per inference within 5% of
what that waveform implies over the job's timed rounds; with the beacon tool missing it must
fall back to the host's windows and say why.
"""

from __future__ import annotations

import time
from pathlib import Path

import adbutils
import pytest

from backends.core.records import Result
from backends.devices.android.power_sync import parse_beacon_start, split_stamps, stamped_command
from backends.devices.base import BenchError
from backends.virtual import PhoneProfile, VirtualPhone
from support.power_jobs import ACTIVE_W, BASELINE_W, LoadLog, run_synced_job

OFFSET_S, DRIFT_PPM = 1.5, 150.0
RUNS, ROUNDS = 1500, 3


@pytest.fixture
def virtual_phone_profile() -> PhoneProfile:
    return PhoneProfile(clock_offset_s=OFFSET_S, clock_drift_ppm=DRIFT_PPM)


def run_power_job(phone: VirtualPhone, adb_port: int, tmp_path: Path) -> tuple[Result, LoadLog]:
    """One ``--power --power-sync beacon`` ort job on ``phone``; its result and the load log."""
    settings = {"runs": RUNS, "rounds": ROUNDS}
    return run_synced_job(phone, adb_port, tmp_path, "ort", settings, monsoon_serial=4545)


def implied_mj(result: Result, load: LoadLog) -> float:
    """The energy per inference the waveform implies over the host's window of the rounds
    (which holds neither beacon)."""
    assert result.power is not None
    start, end = result.power["host_timed_window"]
    loaded = load.loaded_seconds(start, end)
    assert loaded > 0.2, "the phone was hardly loaded inside the timed window"
    return (ACTIVE_W - BASELINE_W) * loaded / result.stats.count * 1000.0


def test_a_round_missing_a_stamp_has_no_device_span_and_keeps_its_output() -> None:
    output, span = split_stamps("devlab-clock:12.5\nRuns:100\n")  # the closing stamp is lost
    assert output == "Runs:100\n" and span is None
    output, span = split_stamps("devlab-clock:12.5\nRuns:100\ndevlab-clock:%s.N\n")  # no %N
    assert output == "Runs:100\n" and span is None
    output, span = split_stamps("devlab-clock:12.5\nRuns:100\ndevlab-clock:13.25\n")
    assert output == "Runs:100\n" and span == (12.5, 13.25)


def test_a_beacon_tool_that_prints_no_start_is_an_error_that_says_so() -> None:
    assert parse_beacon_start("beacon 1 start 1765001234.567890\n") == 1765001234.56789
    with pytest.raises(BenchError, match="no 'beacon 1 start"):
        parse_beacon_start("power_beacon: not found\n")


def test_the_phones_date_is_stamped_around_a_tool_whose_argv_stays_quoted(
    virtual_device: adbutils.AdbDevice,
) -> None:
    argv = ["sh", "-c", 'printf "%s\\n" "$1"; exit 3', "sh", "a b; echo injected $HOME"]
    before = time.time()
    result = virtual_device.shell2(stamped_command(argv), timeout=30)
    after = time.time()
    output, span = split_stamps(result.output)
    assert result.returncode == 3  # the tool's status, not the closing stamp's
    assert output == "a b; echo injected $HOME\n"
    assert span is not None
    # the phone's clock is OFFSET_S ahead (its drift adds well under a millisecond here)
    assert before + OFFSET_S - 0.01 < span[0] <= span[1] < after + OFFSET_S + 0.01


def test_a_beacon_synced_power_job_measures_energy_by_the_phones_clock(
    adb_server, virtual_phone: VirtualPhone, tmp_path: Path
) -> None:
    _, port = adb_server
    result, load = run_power_job(virtual_phone, port, tmp_path)
    power = result.power
    assert power is not None
    assert power["power_sync"] == "beacon", result.warnings
    assert power["power_sync_reason"] == ""
    assert [b["monitor_start"] is not None for b in power["beacons"]] == [True, True]
    # the clock the phone reported: 1.5 s ahead (drift over a few seconds is below the beacon's
    # timing error, so it is reported, not checked)
    assert power["clock_offset_s"] == pytest.approx(OFFSET_S, abs=0.01)
    assert power["clock_drift_ppm"] is not None
    assert power["baseline_w"] == pytest.approx(BASELINE_W, rel=0.03)
    implied = implied_mj(result, load)
    print(
        f"RESULT energy_mj={power['energy_per_inference_mj']:.5f} implied_mj={implied:.5f} "
        f"offset_s={power['clock_offset_s']:.5f} drift_ppm={power['clock_drift_ppm']:.0f} "
        f"rounds_mj={','.join(f'{r:.4f}' for r in power['round_energy_per_inference_mj'])}"
    )
    assert power["energy_per_inference_mj"] == pytest.approx(implied, rel=0.05)
    # each round against the waveform over that round, placed by the phone's true clock
    ref = virtual_phone.clock_ref_ns / 1e9

    def to_host(device_t: float) -> float:
        return ref + (device_t - ref - OFFSET_S) / (1.0 + DRIFT_PPM * 1e-6)

    truth = [
        (ACTIVE_W - BASELINE_W) * load.loaded_seconds(to_host(start), to_host(end)) / count * 1e3
        for start, end, count in power["device_rounds"]
    ]
    rounds = power["round_energy_per_inference_mj"]
    assert len(rounds) == len(truth) == ROUNDS
    assert rounds == pytest.approx(truth, rel=0.05)
    assert Path(power["trace_path"]).stat().st_size > 0
    assert not any("power sync" in warning for warning in result.warnings)


def test_a_phone_without_the_beacon_tool_falls_back_to_the_hosts_windows(
    adb_server, virtual_phone: VirtualPhone, tmp_path: Path
) -> None:
    _, port = adb_server
    (Path(virtual_phone.sandbox.root) / "system/bin/power_beacon").unlink()
    result, load = run_power_job(virtual_phone, port, tmp_path)
    power = result.power
    assert power is not None
    assert power["power_sync"] == "windows"
    assert "power_beacon" in power["power_sync_reason"]
    assert any(
        "power sync by beacon not used" in w and "power_beacon" in w for w in result.warnings
    )
    # today's method: the host's windows, no per-round figures
    assert "round_energy_per_inference_mj" not in power
    start, end = power["timed_window"]
    loaded = load.loaded_seconds(start, end)
    implied = (ACTIVE_W - BASELINE_W) * loaded / result.stats.count * 1000.0
    print(
        f"RESULT windows_energy_mj={power['energy_per_inference_mj']:.5f} implied_mj={implied:.5f}"
    )
    assert power["energy_per_inference_mj"] == pytest.approx(implied, rel=0.05)


def test_a_beacon_that_fails_after_the_rounds_leaves_the_offset_from_the_first(
    adb_server, virtual_phone: VirtualPhone, tmp_path: Path
) -> None:
    _, port = adb_server
    tools = Path(virtual_phone.sandbox.root) / "system/bin"
    (tools / "power_beacon").rename(tools / "power_beacon.real")
    once = (  # the first call runs the real beacon, every later one fails
        '#!/bin/sh\n[ -e "$HOME/beacon-ran" ] && { echo "power_beacon: busy" >&2; exit 1; }\n'
        ': > "$HOME/beacon-ran"\nexec power_beacon.real "$@"\n'
    )
    (tools / "power_beacon").write_text(once)
    (tools / "power_beacon").chmod(0o755)
    result, load = run_power_job(virtual_phone, port, tmp_path)
    power = result.power
    assert power is not None
    assert power["power_sync"] == "one beacon", result.warnings
    assert "drift not solved" in power["power_sync_reason"]
    assert "power_beacon exited with 1" in power["power_sync_reason"]
    assert any(w.startswith("power sync: ") for w in result.warnings)
    assert power["clock_offset_s"] == pytest.approx(OFFSET_S, abs=0.01)
    assert power["clock_drift_ppm"] is None
    # 150 ppm over a few seconds moves the rounds by well under a millisecond
    assert power["energy_per_inference_mj"] == pytest.approx(implied_mj(result, load), rel=0.05)
