"""Statistics: from every iteration, and merged from a tool's per-round summaries."""

from __future__ import annotations

import numpy as np
import pytest

from backends.core.records import Stats
from backends.measure.stats import merge_summaries, summarize


def test_summarize_matches_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    stats = summarize(values)
    assert (stats.count, stats.min, stats.max) == (6, 1.0, 100.0)
    assert stats.median == pytest.approx(np.median(values))
    assert stats.p90 == pytest.approx(np.percentile(values, 90))
    assert stats.cv == pytest.approx(np.std(values) / np.mean(values))


def test_summarize_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="no timed runs"):
        summarize([])


def test_merging_round_summaries_is_exact_where_it_can_be() -> None:
    first, second = [10.0, 12.0, 14.0], [20.0, 22.0, 24.0, 26.0]
    merged = merge_summaries([summarize(first), summarize(second)])
    whole = summarize(first + second)
    assert merged.count == 7
    assert (merged.min, merged.max) == (whole.min, whole.max)
    assert merged.mean == pytest.approx(whole.mean)
    assert merged.std == pytest.approx(whole.std)  # pooled std is exact
    assert merged.median == pytest.approx(np.median([12.0, 23.0]))  # median of round medians


def test_merging_keeps_missing_fields_missing() -> None:
    partial = Stats(
        count=10, min=1.0, mean=2.0, median=None, p90=None, p99=None, max=3.0, std=None, cv=None
    )
    merged = merge_summaries([partial, partial])
    assert merged.count == 20 and merged.mean == 2.0
    assert merged.median is None and merged.std is None and merged.cv is None


def test_one_round_is_returned_as_it_is() -> None:
    stats = summarize([1.0, 2.0])
    assert merge_summaries([stats]) is stats
