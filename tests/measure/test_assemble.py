"""A job's Result from synthetic rounds: statistics, canary-normalised headline, the precision
interval around the reported headline, and the gate's warning."""

from __future__ import annotations

import math
import statistics

import pytest

from backends.core.records import JobSettings, Stats
from backends.devices.base import LayerProfile, SessionInfo, Timed
from backends.measure.assemble import assemble_result
from backends.measure.canary import normalise_rounds
from backends.measure.precision import ConfidenceInterval, GateDecision
from backends.measure.rounds import Rounds
from support.records import make_job

INFO = SessionInfo(load_us=1500.0, first_inference_us=900.0, tool="ort", tool_version="1.2.3")


def three_rounds() -> Rounds:
    """Round medians 100, 150 and 200 us (the machine slowed down between rounds)."""
    rounds = Rounds()
    for median in (100.0, 150.0, 200.0):
        rounds.add(Timed([median - 1.0, median, median + 1.0]))
    return rounds


def interval(estimate: float, low: float, high: float, rounds: int = 3) -> ConfidenceInterval:
    half = max(estimate - low, high - estimate) / estimate * 100.0
    return ConfidenceInterval(estimate, low, high, half, "test", rounds)


def test_the_result_carries_what_the_worker_gathered() -> None:
    job = make_job("m")
    rounds = three_rounds()
    profile = LayerProfile(
        layers=[],
        forward_stats=Stats(20, 1.0, 2.0, 2.0, 3.0, 3.5, 4.0, 0.5, 0.25),
        layers_stats=None,
        raw_log_path="/tmp/raw.log",
    )
    warnings = ["per-layer profiling slow"]
    result = assemble_result(
        job,
        rounds,
        [None, None, None],
        INFO,
        profile=profile,
        extra_rounds=2,
        device_properties={"model": "Pixel"},
        conditions_start={"battery_temperature_c": 30.0},
        conditions_end={"battery_temperature_c": 31.0},
        power={"mean_w": 2.0},
        parity={"ok": True},
        drift={"drifting": False},
        warnings=warnings,
    )
    assert result.job_id == job.id
    assert result.latencies_us == rounds.latencies and result.round_sizes == [3, 3, 3]
    assert result.round_medians_us == [100.0, 150.0, 200.0]
    assert result.stats.median == 150.0 and result.stats.count == 9
    assert result.stats_source == "iterations"
    assert result.forward_stats == profile.forward_stats and result.layers_stats is None
    assert result.raw_log_path == "/tmp/raw.log" and result.layers == []
    assert (result.load_us, result.first_inference_us) == (1500.0, 900.0)
    assert (result.tool, result.tool_version) == ("ort", "1.2.3")
    assert result.device_properties == {"model": "Pixel"}
    assert result.conditions_start == {"battery_temperature_c": 30.0}
    assert result.conditions_end == {"battery_temperature_c": 31.0}
    assert result.power == {"mean_w": 2.0} and result.parity == {"ok": True}
    assert result.drift == {"drifting": False} and result.extra_rounds == 2
    assert result.round_canary_us == [None, None, None]
    assert result.warnings == ["per-layer profiling slow"]
    # no canary in some round: no normalised headline; no gate: no verdict, but an interval
    assert result.normalised_median_us is None and result.canary_reference_us is None
    assert result.converged is None
    assert result.ci_low_us is not None and result.ci_high_us is not None
    assert result.ci_low_us <= 150.0 <= result.ci_high_us
    assert result.ci_half_width_pct is not None and result.ci_half_width_pct > 0


def test_canaries_normalise_the_headline_against_the_devices_history() -> None:
    rounds = three_rounds()
    canaries = [10.0, 15.0, 20.0]
    history = [11.0, 12.0, 13.0]
    result = assemble_result(make_job("m"), rounds, canaries, INFO, canary_history=history)
    assert result.canary_reference_us == 12.0
    # the rounds moved with the canary: normalised to the usual pace they agree at 120 us
    assert result.normalised_median_us == pytest.approx(120.0)
    assert result.stats.median == 150.0  # the raw headline stays as measured
    # the gate's interval is of the normalised rounds: only the within-round jitter is left
    raw = assemble_result(make_job("m"), three_rounds(), [None] * 3, INFO)
    assert result.ci_half_width_pct is not None and raw.ci_half_width_pct is not None
    assert result.ci_half_width_pct < 2.0 < 20.0 < raw.ci_half_width_pct


def test_without_history_the_jobs_own_canaries_are_the_reference() -> None:
    result = assemble_result(make_job("m"), three_rounds(), [10.0, 15.0, 20.0], INFO)
    assert result.canary_reference_us == 15.0
    assert result.normalised_median_us == pytest.approx(150.0)


def test_the_min_round_stat_applies_to_both_headlines() -> None:
    job = make_job("m", settings=JobSettings(round_stat="min"))
    canaries = [10.0, 12.0, 20.0]
    result = assemble_result(job, three_rounds(), canaries, INFO, canary_history=[10.0])
    assert result.stats.median == 100.0
    expected = min(normalise_rounds([100.0, 150.0, 200.0], canaries, 10.0))
    assert result.normalised_median_us == pytest.approx(expected)


def test_a_gate_that_did_not_converge_warns_and_its_interval_follows_the_headline() -> None:
    canaries = [10.0, 15.0, 20.0]
    gate = GateDecision(
        run_more=False,
        converged=False,
        interval=interval(100.0, 95.0, 110.0),
        reason="not converged: +-10.00% > +-2% at the 60 s time cap",
    )
    warnings = ["earlier step"]
    result = assemble_result(
        make_job("m"),
        three_rounds(),
        canaries,
        INFO,
        gate=gate,
        canary_history=[20.0],
        warnings=warnings,
    )
    assert result.normalised_median_us == pytest.approx(200.0)
    # the gate judged an estimate of 100; reported around the normalised headline of 200
    assert result.ci_low_us == pytest.approx(190.0)
    assert result.ci_high_us == pytest.approx(220.0)
    assert result.ci_half_width_pct == pytest.approx(10.0)
    assert result.converged is False
    assert result.warnings == ["earlier step", f"precision gate: {gate.reason}"]
    assert warnings == ["earlier step"]  # the caller's list is not changed


def test_a_converged_gate_adds_no_warning() -> None:
    gate = GateDecision(False, True, interval(150.0, 149.0, 151.0), "converged")
    result = assemble_result(make_job("m"), three_rounds(), [None] * 3, INFO, gate=gate)
    assert result.converged is True and result.warnings == []
    assert result.ci_low_us == pytest.approx(149.0) and result.ci_high_us == pytest.approx(151.0)


def test_no_interval_from_one_round() -> None:
    rounds = Rounds()
    rounds.add(Timed([10.0, 11.0, 12.0]))
    result = assemble_result(make_job("m"), rounds, [None], INFO)
    assert result.ci_low_us is None and result.ci_high_us is None
    assert result.ci_half_width_pct is None
    single = ConfidenceInterval(11.0, None, None, math.inf, "single round: no interval", 1)
    gate = GateDecision(False, False, single, "not converged: 1 round(s), 3 needed")
    result = assemble_result(make_job("m"), rounds, [None], INFO, gate=gate)
    assert result.ci_low_us is None and result.ci_half_width_pct is None
    assert result.converged is False


def test_tool_summaries_give_the_merged_statistics() -> None:
    rounds = Rounds()
    for median in (100.0, 110.0, 120.0):
        summary = Stats(50, median - 5, median + 1, median, None, None, median + 9, None, None)
        rounds.add(Timed([], summary))
    result = assemble_result(make_job("m"), rounds, [None] * 3, INFO)
    assert result.stats_source == "tool summary" and result.latencies_us == []
    assert result.stats.count == 150 and result.stats.median == 110.0
    assert result.stats.mean == pytest.approx(statistics.mean([101.0, 111.0, 121.0]))
    assert result.ci_low_us is not None
