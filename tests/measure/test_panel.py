"""The two-reference blend: which reference a model follows, and that dividing by the blend
removes a slowdown the small canary alone cannot see."""

from __future__ import annotations

import math
import statistics

import pytest

from backends.measure.canary import normalise_rounds
from backends.measure.panel import blended_canaries, effective_canaries, large_weight


def test_weight_follows_the_models_latency_between_the_references() -> None:
    assert large_weight(16.0, 250.0, 650.0) == 0.0  # faster than the small canary
    assert large_weight(250.0, 250.0, 650.0) == 0.0
    assert large_weight(650.0, 250.0, 650.0) == 1.0
    assert large_weight(2500.0, 250.0, 650.0) == 1.0  # slower than the large one
    middle = large_weight(math.sqrt(250.0 * 650.0), 250.0, 650.0)
    assert middle == pytest.approx(0.5)


def test_references_without_spread_leave_the_small_canary_alone() -> None:
    assert large_weight(1000.0, 300.0, 320.0) == 0.0  # large not clearly slower
    assert large_weight(1000.0, 300.0, float("nan")) == 0.0
    assert large_weight(0.0, 300.0, 600.0) == 0.0


def test_blend_removes_a_slowdown_that_only_the_large_reference_sees() -> None:
    # a neighbour takes the last-level cache in rounds 3-4: a weight-streaming model and the
    # large reference slow by 12%, the small canary (in L2) does not move
    slow = [1.0, 1.0, 1.12, 1.12, 1.0]
    model = [1300.0 * f for f in slow]
    small = [250.0] * 5
    large = [650.0 * f for f in slow]
    by_small = normalise_rounds(model, small)
    assert max(by_small) / min(by_small) == pytest.approx(1.12)  # the small canary misses it
    blended, weight = blended_canaries(model, small, large, [250.0] * 10, [650.0] * 10)
    assert weight == 1.0
    normalised = normalise_rounds(model, blended, 250.0)
    assert max(normalised) / min(normalised) == pytest.approx(1.0)
    assert statistics.median(normalised) == pytest.approx(1300.0)


def test_blend_on_the_small_canarys_scale_keeps_the_unit() -> None:
    # the whole machine 1.4x slower than its history: both references and the model move
    model, small, large = [1820.0] * 3, [350.0] * 3, [910.0] * 3
    blended, weight = blended_canaries(model, small, large, [250.0], [650.0])
    assert weight == 1.0
    assert normalise_rounds(model, blended, 250.0) == pytest.approx([1300.0] * 3)
    half = effective_canaries(small, large, 0.5, 250.0, 650.0)
    assert half == pytest.approx([350.0] * 3)  # both say 1.4x, so any blend does


def test_a_round_without_the_large_reference_falls_back_to_the_small_canary() -> None:
    small: list[float | None] = [250.0, 251.0]
    assert blended_canaries([1000.0, 1000.0], small, [650.0, None]) == (small, None)
    assert blended_canaries([1000.0, 1000.0], small, []) == (small, None)


def test_effective_canaries_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="rounds"):
        effective_canaries([1.0], [1.0, 2.0], 0.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="weight"):
        effective_canaries([1.0], [1.0], 1.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="large scale"):
        effective_canaries([1.0], [1.0], 0.5, 1.0, 0.0)
