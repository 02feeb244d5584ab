"""Tests for backends.measure.precision: the round-level bootstrap interval and the gate."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from backends.measure.precision import (
    ROUNDS_METHOD,
    SINGLE_ROUND_METHOD,
    TWO_STAGE_METHOD,
    PrecisionGate,
    _bootstrap_medians,
    median_ci,
)


def rounds_of(
    factors: list[float], iterations: int = 100, base: float = 1000.0, jitter: float = 0.03
) -> tuple[list[float], list[list[float]]]:
    """Round medians and iterations: lognormal jitter, each round scaled by its factor."""
    rng = np.random.default_rng(42)
    latencies = [
        list(rng.lognormal(math.log(base), jitter, iterations) * factor) for factor in factors
    ]
    return [float(np.median(r)) for r in latencies], latencies


# --- median_ci -----------------------------------------------------------------------------


def test_estimate_is_the_median_of_round_medians() -> None:
    interval = median_ci([100.0, 130.0, 101.0, 99.0, 102.0])
    assert interval.estimate == 101.0
    assert interval.method == ROUNDS_METHOD
    assert interval.rounds == 5
    assert interval.low is not None and interval.high is not None
    assert interval.low <= interval.estimate <= interval.high


def test_same_seed_same_interval_other_seed_close() -> None:
    medians, latencies = rounds_of([1.0, 1.02, 0.99, 1.01, 1.0, 0.98])
    first = median_ci(medians, latencies, seed=7)
    assert median_ci(medians, latencies, seed=7) == first
    other = median_ci(medians, latencies, seed=8)
    assert other.half_width_pct == pytest.approx(first.half_width_pct, rel=0.5)


def test_half_width_is_the_larger_side_in_percent() -> None:
    interval = median_ci([100.0, 101.0, 103.0, 100.5, 99.0, 108.0, 100.2])
    assert interval.low is not None and interval.high is not None
    larger = max(interval.estimate - interval.low, interval.high - interval.estimate)
    assert interval.half_width_pct == pytest.approx(100 * larger / interval.estimate)


def test_one_round_has_no_interval() -> None:
    interval = median_ci([250.0], [[249.0, 250.0, 251.0]])
    assert interval.estimate == 250.0
    assert interval.low is None and interval.high is None
    assert math.isinf(interval.half_width_pct)
    assert not interval.finite
    assert interval.method == SINGLE_ROUND_METHOD
    assert interval.to_dict()["half_width_pct"] is None  # JSON has no infinity


def test_two_rounds_span_the_two_round_medians_widened() -> None:
    interval = median_ci([100.0, 104.0])
    assert interval.estimate == 102.0
    assert interval.low == pytest.approx(102.0 - 2 * math.sqrt(2))
    assert interval.high == pytest.approx(102.0 + 2 * math.sqrt(2))
    assert interval.half_width_pct == pytest.approx(100 * 2 * math.sqrt(2) / 102)


def test_identical_rounds_give_a_zero_width_interval_without_iterations() -> None:
    assert median_ci([500.0] * 5).half_width_pct == 0.0


def test_iterations_add_within_round_jitter() -> None:
    medians, latencies = rounds_of([1.0] * 5, iterations=30, jitter=0.10)
    rounds_only = median_ci([medians[0]] * 5)
    two_stage = median_ci([medians[0]] * 5, [latencies[0]] * 5)
    assert two_stage.method == TWO_STAGE_METHOD
    assert rounds_only.half_width_pct == 0.0
    assert two_stage.half_width_pct > 1.0


def test_iterations_enter_as_ratios_so_medians_may_be_normalised() -> None:
    """Raw iterations with drift-normalised (here: halved) round medians scale the interval."""
    medians, latencies = rounds_of([1.0, 1.01, 0.99, 1.02, 1.0])
    raw = median_ci(medians, latencies)
    halved = median_ci([m / 2 for m in medians], latencies)
    assert halved.estimate == pytest.approx(raw.estimate / 2)
    assert halved.half_width_pct == pytest.approx(raw.half_width_pct)


def test_a_burst_round_widens_the_interval_but_not_the_estimate() -> None:
    quiet_medians, quiet = rounds_of([1.0] * 7)
    burst_medians, burst = rounds_of([1.0, 1.0, 1.45, 1.0, 1.0, 1.45, 1.0])
    quiet_ci = median_ci(quiet_medians, quiet)
    burst_ci = median_ci(burst_medians, burst)
    assert burst_ci.estimate == pytest.approx(quiet_ci.estimate, rel=0.02)
    assert burst_ci.half_width_pct > 3 * quiet_ci.half_width_pct


def test_empty_rounds_among_the_iterations_are_taken_as_their_median() -> None:
    medians, latencies = rounds_of([1.0, 1.0, 1.0])
    interval = median_ci(medians, [latencies[0], [], latencies[2]])
    assert interval.method == TWO_STAGE_METHOD
    assert median_ci(medians, [[], [], []]).method == ROUNDS_METHOD


@pytest.mark.parametrize("n", [1, 2, 7, 8, 100, 101])
def test_within_round_draws_match_a_brute_force_bootstrap(n: int) -> None:
    """The order-statistic shortcut has the distribution of np.median of a real resample."""
    values = np.sort(np.random.default_rng(n).lognormal(0.0, 0.3, n))
    fast = _bootstrap_medians(values, np.random.default_rng(1), 40_000)
    resamples = values[np.random.default_rng(2).integers(0, n, (40_000, n))]
    brute = np.median(resamples, axis=1)
    spread = float(values[-1] - values[0]) or 1.0
    assert fast.mean() == pytest.approx(brute.mean(), abs=0.01 * spread)
    assert fast.std() == pytest.approx(brute.std(), rel=0.05, abs=1e-12)
    points = np.union1d(fast, brute)
    fast_freq = np.searchsorted(np.sort(fast), points, side="right") / fast.size
    brute_freq = np.searchsorted(np.sort(brute), points, side="right") / brute.size
    assert np.abs(fast_freq - brute_freq).max() < 0.015  # the two CDFs agree everywhere


def test_coverage_of_the_true_median_is_near_the_confidence() -> None:
    """Nine rounds per trial from a known distribution: ~95% of intervals hold its median."""
    rng = np.random.default_rng(3)
    trials, hits = 200, 0
    for trial in range(trials):
        medians = list(rng.normal(1000.0, 20.0, 9))
        interval = median_ci(medians, resamples=1000, seed=trial)
        assert interval.low is not None and interval.high is not None
        hits += interval.low <= 1000.0 <= interval.high
    assert 0.85 <= hits / trials <= 1.0


@pytest.mark.parametrize(
    ("medians", "latencies", "kwargs", "message"),
    [
        ([], None, {}, "no round medians"),
        ([1.0, float("nan")], None, {}, "finite"),
        ([1.0, 2.0], [[1.0]], {}, "1 rounds of latencies for 2"),
        ([1.0, 2.0], None, {"confidence": 1.0}, "confidence"),
        ([1.0, 2.0], None, {"resamples": 5}, "resamples"),
    ],
)
def test_bad_arguments_are_refused(
    medians: list[float], latencies: list[list[float]] | None, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        median_ci(medians, latencies, **kwargs)


def test_fast_enough_to_run_after_every_round() -> None:
    """10 rounds x 100 iterations; the target is 5 ms (tests/perf/bootstrap_speed.py), the
    bound here is loose because this machine is shared."""
    medians, latencies = rounds_of([1.0, 1.45, 1.0, 1.0, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0])
    median_ci(medians, latencies)
    start = time.perf_counter()
    for seed in range(20):
        median_ci(medians, latencies, seed=seed)
    assert (time.perf_counter() - start) / 20 < 0.05


# --- PrecisionGate -------------------------------------------------------------------------


def test_gate_stops_when_the_interval_is_narrow_enough() -> None:
    medians, latencies = rounds_of([1.0, 1.002, 0.998, 1.001, 0.999], jitter=0.01)
    decision = PrecisionGate(precision_pct=2.0).decide(medians, latencies, 3.0, 0)
    assert decision.converged and not decision.run_more
    assert decision.interval.half_width_pct <= 2.0
    assert decision.reason.startswith("converged: +-")
    assert "after 5 rounds" in decision.reason


def test_gate_asks_for_more_when_wide() -> None:
    medians, latencies = rounds_of([1.0, 1.45, 1.0, 1.3, 1.0])
    decision = PrecisionGate(precision_pct=2.0).decide(medians, latencies, 3.0, 0)
    assert decision.run_more and not decision.converged
    assert "> +-2%" in decision.reason and "one more round" in decision.reason


def test_gate_never_converges_on_too_few_rounds() -> None:
    decision = PrecisionGate(min_rounds=3).decide([100.0, 100.0])
    assert decision.run_more and not decision.converged
    assert "2 round(s), 3 needed" in decision.reason
    single = PrecisionGate().decide([100.0])
    assert single.run_more and not single.converged and not single.interval.finite


def test_gate_stops_unconverged_at_the_round_cap() -> None:
    medians, _ = rounds_of([1.0, 1.45, 1.0, 1.3, 1.0])
    decision = PrecisionGate(max_extra_rounds=4).decide(medians, None, 1.0, 4)
    assert not decision.run_more and not decision.converged
    assert "after 4 extra round(s) (cap 4)" in decision.reason


def test_gate_stops_unconverged_at_the_time_cap() -> None:
    medians, _ = rounds_of([1.0, 1.45, 1.0, 1.3, 1.0])
    decision = PrecisionGate(time_cap_s=30.0).decide(medians, None, 31.0, 1)
    assert not decision.run_more and not decision.converged
    assert "30 s time cap" in decision.reason


def test_gate_loop_converges_on_noisy_rounds() -> None:
    """Rounds scattered by 1.5% need more than the planned 5 to reach +-2%, then stop."""
    rng = np.random.default_rng(11)
    gate = PrecisionGate(precision_pct=2.0, max_extra_rounds=30)
    medians = list(rng.normal(1000.0, 15.0, 5))
    extra = 0
    while (decision := gate.decide(medians, None, 0.0, extra)).run_more:
        medians.append(float(rng.normal(1000.0, 15.0)))
        extra += 1
    assert decision.converged
    assert decision.interval.half_width_pct <= 2.0
    assert extra >= 1  # the planned five were not enough
    assert decision.to_dict()["interval"]["estimate"] == pytest.approx(1000.0, rel=0.02)


@pytest.mark.parametrize(
    "kwargs",
    [{"precision_pct": 0.0}, {"max_extra_rounds": -1}, {"time_cap_s": -1.0}, {"min_rounds": 0}],
)
def test_gate_refuses_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PrecisionGate(**kwargs)
