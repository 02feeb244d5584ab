"""Drift normalisation that cannot hurt: the raw figure is the headline when normalising by
the canary made the round medians scatter more."""

from __future__ import annotations

import pytest

from backends.devices.base import Timed
from backends.measure.canary import judge_normalisation, relative_spread_pct
from backends.measure.rounds import Rounds


def test_spread_is_robust_to_one_outlier() -> None:
    assert relative_spread_pct([100, 101, 99, 100, 300]) == pytest.approx(1.4826, rel=1e-3)


def test_a_canary_that_moves_with_the_model_is_used() -> None:
    raw = [100.0, 110.0, 95.0, 120.0, 100.0]  # the machine changed pace
    normalised = [100.0, 100.5, 99.8, 100.2, 100.0]  # and the canary saw it
    judgement = judge_normalisation(raw, normalised)
    assert judgement.use_normalised
    assert judgement.normalised_spread_pct < judgement.raw_spread_pct
    assert judgement.reason.startswith("normalised")


def test_a_canary_that_does_not_move_with_the_model_is_not_used() -> None:
    raw = [100.0, 100.4, 99.7, 100.1, 100.0]
    normalised = [100.0, 108.0, 93.0, 104.0, 97.0]  # the canary alone was disturbed
    judgement = judge_normalisation(raw, normalised)
    assert not judgement.use_normalised
    assert "raw: the canary did not move with the model" in judgement.reason


def test_a_slightly_wider_normalised_spread_keeps_the_normalised_headline() -> None:
    """Round spreads of a few tenths of a percent differ by chance; the normalised figure
    stands unless it is clearly noisier (measured: switching on such differences let the
    machine's pace change between passes into the headline)."""
    raw = [100.0, 100.3, 99.8, 100.1, 100.0]
    normalised = [100.0, 101.2, 99.0, 100.6, 99.5]  # wider, but 1%: no evidence against it
    judgement = judge_normalisation(raw, normalised)
    assert judgement.use_normalised
    assert judgement.normalised_spread_pct > judgement.raw_spread_pct


def test_two_rounds_are_not_judged() -> None:
    assert judge_normalisation([1.0, 2.0], [3.0, 1.0]).use_normalised


def test_the_gate_judges_raw_medians_when_normalising_hurts() -> None:
    rounds = Rounds()
    for median in (100.0, 100.4, 99.7, 100.1, 100.0):
        rounds.add(Timed([median] * 3))
    noisy_canary = [10.0, 10.8, 9.3, 10.4, 9.7]
    assert rounds.gate_medians(noisy_canary) == rounds.medians
    steady_pace = [10.0, 10.04, 9.97, 10.01, 10.0]  # moves with the model: normalised
    assert rounds.gate_medians(steady_pace) != rounds.medians
