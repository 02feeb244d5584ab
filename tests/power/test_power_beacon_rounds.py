"""A beacon before every round (``--power-beacons round``) and a round's energy window over the
tool's timed loop, at the level of the pieces: the virtual rig's queue with one beacon lost
among many, the window rule on stamped rounds, the tools' real outputs that give the loop's
duration, and the option as the CLI parses it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from backends.core.options import build_settings
from backends.devices.android.power_sync import timed_loop_s
from backends.power.beacon import BeaconPattern
from backends.power.sync_capture import COMMAND, TIMED_LOOP, StampedRound
from backends.power.sync_energy import Span, sync_queue
from backends.runtimes import ort_perf, tflite
from backends.virtual.power_rig import RigConfig, run_queue
from console.cli.shared import add_bench_options

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench-output"
ROUNDS = RigConfig(offset_s=1.234, drift_ppm=200.0, jobs=2, rounds=4, beacon_every="round")


def test_a_beacon_lost_among_many_is_dropped_and_named_and_the_others_place_every_job() -> None:
    run = run_queue(ROUNDS)
    assert len(run.beacons) == 2 * 4 + 1
    # the fourth beacon drew nothing the monitor could see (it did not run, or was drowned)
    lost = run.beacon_truth[3]
    t = run.frame["t_s"].to_numpy()
    inside = (t >= lost) & (t < lost + BeaconPattern.default().duration_s)
    noise = np.random.default_rng(7).normal(0.0, 0.03, int(inside.sum()))
    run.frame.loc[inside, "watts"] = run.config.idle_w + noise

    sync = sync_queue(run.frame, run.jobs, run.beacons, BeaconPattern.default())

    assert [match.found for match in sync.matches] == [True] * 3 + [False] + [True] * 5
    assert sync.fit is not None and sync.fit.beacons == 8 and sync.fit.drift_solved
    assert abs(sync.fit.drift_ppm - 200.0) <= 20.0
    for row in sync.jobs:
        assert row.sync == "beacon"
        counts = {key: row.power[key] for key in ("beacons_run", "beacons_found", "beacons_used")}
        assert counts == {"beacons_run": 9, "beacons_found": 8, "beacons_used": 8}
        assert "1 of 9 beacons not found (beacon 4: no beacon: peak correlation" in row.sync_reason
        assert "the fit uses the other 8" in row.sync_reason
        error = row.power["energy_per_inference_mj"] / run.truth_mj[row.job_id] - 1
        assert abs(error) <= 0.02, (row.job_id, error)


def test_a_false_stamp_among_round_beacons_is_named_by_its_number() -> None:
    run = run_queue(ROUNDS)
    beacons = list(run.beacons)
    beacons[5] = dataclasses.replace(beacons[5], device_start=beacons[5].device_start + 0.05)
    sync = sync_queue(run.frame, run.jobs, beacons, BeaconPattern.default())
    assert sync.fit is not None and sync.fit.beacons == 8
    row = sync.jobs[0]
    assert row.power["beacons_found"] == 9 and row.power["beacons_used"] == 8
    assert "beacon 6 dropped: more than 2 ms off the others' line" in row.sync_reason


def test_all_beacons_found_leave_the_reason_empty() -> None:
    run = run_queue(dataclasses.replace(ROUNDS, jobs=1))
    (row,) = sync_queue(run.frame, run.jobs, run.beacons, BeaconPattern.default()).jobs
    assert row.sync == "beacon" and row.sync_reason == ""
    assert row.power["beacons_run"] == row.power["beacons_used"] == 5


def test_a_round_with_its_loops_duration_is_measured_over_the_end_of_its_command() -> None:
    command = Span(100.0, 101.5, 500)
    window, kind, why = StampedRound(command, loop_s=0.4).window()
    assert (window, kind, why) == (Span(101.1, 101.5, 500), TIMED_LOOP, "")


def test_a_round_without_a_usable_loop_duration_keeps_its_command_and_says_why() -> None:
    command = Span(100.0, 101.5, 500)
    window, kind, why = StampedRound(command).window()
    assert (window, kind) == (command, COMMAND)
    assert why == "the tool printed no duration of its timed loop"
    window, kind, why = StampedRound(command, loop_s=2.0).window()
    assert (window, kind) == (command, COMMAND)
    assert "timed loop (2.000000 s) does not fit its stamped command (1.500000 s)" in why


@pytest.mark.parametrize(
    ("fixture", "parse", "seconds"),
    [
        ("tflite_benchmark_model_2.txt", tflite.parse, 114 * 8677.03e-6),  # count x avg
        ("tflite_benchmark_model_6.txt", tflite.parse, 2112 * 464.545e-6),
        ("ort_perf_test_1.txt", ort_perf.parse, 0.494854),  # "Total inference run time"
        ("ort_perf_test_7.txt", ort_perf.parse, 0.18581),
    ],
)
def test_the_timed_loop_lasts_what_the_tools_real_output_says(
    fixture: str, parse, seconds: float
) -> None:
    run = parse((FIXTURES / fixture).read_text(encoding="utf-8"))
    assert timed_loop_s(run) == pytest.approx(seconds, rel=1e-9)


def test_a_tool_output_without_its_timed_runs_gives_no_loop_duration() -> None:
    run = tflite.parse((FIXTURES / "tflite_benchmark_model_3.txt").read_text(encoding="utf-8"))
    assert run.count is None and timed_loop_s(run) is None


def test_power_beacons_is_a_cli_option_with_two_choices() -> None:
    parser = argparse.ArgumentParser()
    add_bench_options(parser)
    args = parser.parse_args(["--power-sync", "beacon", "--power-beacons", "round"])
    settings = build_settings(vars(args))
    assert (settings.power_sync, settings.power_beacons) == ("beacon", "round")
    assert build_settings({}).power_beacons == "job"
    with pytest.raises(ValueError, match="--power-beacons must be one of job, round, got 'hourly'"):
        build_settings(vars(parser.parse_args(["--power-beacons", "hourly"])))
