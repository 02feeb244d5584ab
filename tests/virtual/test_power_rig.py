"""The virtual power rig (``backends/virtual/power_rig.py``) is the ground truth the beacon is
measured against, so its own books must balance: the trace it renders integrates to the energy
it says each job drew, its device clock is the offset and drift it was given, and its adb
delays stay inside the jitter it was given."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from backends.power.trace import window_stats
from backends.virtual.power_rig import START, DeviceClock, RigConfig, run_queue


def energy(frame: pd.DataFrame, start: float, end: float) -> tuple[float, float, int]:
    """``window_stats`` on times relative to START (epoch floats would quantise each sample's
    overlap with the window to 0.24 us steps, a 0.02 % bias at 5 kHz)."""
    relative = frame.assign(t_s=frame["t_s"] - START)
    return window_stats(relative, start - START, end - START, interval_s=1 / 5000)


QUIET = RigConfig(noise_w=0.0, wander_w=0.0, edge_jitter_s=0.0, jobs=3)


def test_the_device_clock_has_the_offset_and_drift_it_was_given() -> None:
    clock = DeviceClock(offset_s=1.234, drift_ppm=200.0, ref=START)
    assert clock.device(START) - START == pytest.approx(1.234)
    assert clock.device(START + 100.0) - clock.device(START) == pytest.approx(100.02)
    back = clock.monitor(clock.device(START + 7.5))
    assert back == pytest.approx(START + 7.5, abs=1e-6)  # epoch floats: 0.24 us steps


def test_a_noise_free_trace_holds_exactly_the_energy_drawn() -> None:
    config = dataclasses.replace(QUIET, beacon=None)
    run = run_queue(config)
    duration = len(run.frame) / 5000
    rate = 1 + config.drift_ppm * 1e-6  # device seconds per monitor second
    timed_j = sum(run.truth_mj[job.job_id] * job.iterations / 1000 for job in run.jobs)
    per_round_s = config.overhead_before_s + config.overhead_after_s
    overhead_s = len(run.jobs) * config.rounds * per_round_s
    expected = config.idle_w * duration + timed_j + config.overhead_w * overhead_s / rate
    # rel 1e-6: segment ends are epoch floats (0.24 us steps); one sample more or less is 3e-5
    assert run.frame["watts"].sum() / 5000 == pytest.approx(expected, rel=1e-6)


def test_each_jobs_truth_is_what_its_device_stamped_rounds_drew() -> None:
    run = run_queue(dataclasses.replace(QUIET, beacon=None))
    for job in run.jobs:
        net = 0.0
        for span in job.device_rounds:
            start, end = run.clock.monitor(span.start), run.clock.monitor(span.end)
            _, drawn, _ = energy(run.frame, start, end)
            net += drawn - QUIET.idle_w * (end - start)
        # exact but for the one sample at each edge, which also holds the round's other work
        assert net / job.iterations * 1000 == pytest.approx(run.truth_mj[job.job_id], rel=2e-3)


def test_the_beacon_draws_its_pattern_where_the_truth_says() -> None:
    run = run_queue(QUIET)
    pattern = QUIET.beacon
    assert pattern is not None
    busy_d = sum(end - start for start, end in pattern.on_spans())
    for began in run.beacon_truth:
        # the pattern's energy, in a window 2 ms wider each side (idle there)
        ended = run.clock.monitor(run.clock.device(began) + pattern.duration_s)
        window = (began - 0.002, ended + 0.002)
        _, drawn, _ = energy(run.frame, *window)
        busy_m = busy_d / (1 + QUIET.drift_ppm * 1e-6)
        expected = QUIET.idle_w * (window[1] - window[0]) + QUIET.beacon_w * busy_m
        assert drawn == pytest.approx(expected, rel=1e-6)
        # and it is the pattern: the busy chips are busy, the idle ones idle
        began_d = run.clock.device(began)
        for on, off in pattern.on_spans():
            start, end = run.clock.monitor(began_d + on), run.clock.monitor(began_d + off)
            mean_w, _, _ = energy(run.frame, start + 4e-4, end - 4e-4)
            assert mean_w == pytest.approx(QUIET.idle_w + QUIET.beacon_w, rel=1e-6)


def test_host_windows_bracket_the_device_work_within_the_adb_jitter() -> None:
    config = dataclasses.replace(QUIET, monitor_lag_s=0.0, beacon=None)
    run = run_queue(config)
    worst = config.adb_base_s + config.adb_jitter_s
    for job in run.jobs:
        first = run.clock.monitor(job.device_rounds[0].start)
        last = run.clock.monitor(job.device_rounds[-1].end)
        lead = first - job.host_timed.start - config.overhead_before_s
        tail = job.host_timed.end - last - config.overhead_after_s
        assert config.adb_base_s - 1e-9 <= lead <= worst + 1e-9
        assert config.adb_base_s - 1e-9 <= tail <= worst + 1e-9


def test_the_same_seed_runs_the_same_queue_with_the_beacon_on_or_off() -> None:
    on, off = run_queue(QUIET), run_queue(dataclasses.replace(QUIET, beacon=None))
    assert list(on.truth_mj) == list(off.truth_mj)
    np.testing.assert_allclose(list(on.truth_mj.values()), list(off.truth_mj.values()), rtol=1e-6)
    assert [j.iterations for j in on.jobs] == [j.iterations for j in off.jobs]


def test_a_bad_beacon_schedule_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match='beacon_every must be "job" or "round"'):
        RigConfig(beacon_every="queue")
