"""A job's rounds: splitting runs, the headline, per-round records and what the gate judges."""

from __future__ import annotations

import pytest

from backends.core.records import Stats
from backends.devices.base import Timed
from backends.measure.rounds import Rounds, every_round_has_canary, headline, split_runs


def tool_summary(count: int, median: float, mean: float) -> Stats:
    """What a tool that prints only statistics gives for one round."""
    return Stats(count, median * 0.9, mean, median, None, None, median * 1.2, None, None)


@pytest.mark.parametrize(
    ("total", "rounds", "expected"),
    [
        (100, 5, [20, 20, 20, 20, 20]),
        (7, 3, [3, 2, 2]),
        (2, 5, [1, 1]),  # never a round of zero iterations
        (0, 3, [0]),
        (10, 0, [10]),  # at least one round
        (None, 3, [None, None, None]),  # timed by seconds: each round runs its share of time
    ],
)
def test_split_runs_spreads_iterations_evenly(total, rounds, expected) -> None:
    assert split_runs(total, rounds) == expected


def test_headline_is_the_median_of_round_medians_or_their_minimum() -> None:
    assert headline([30.0, 10.0, 20.0, 40.0], "median") == 25.0
    assert headline([30.0, 10.0, 20.0], "min") == 10.0


def test_every_round_needs_its_canary_for_normalisation() -> None:
    assert every_round_has_canary([5.0, 6.0])
    assert not every_round_has_canary([5.0, None])
    assert not every_round_has_canary([])


def test_rounds_of_iterations_keep_every_latency() -> None:
    rounds = Rounds()
    rounds.add(Timed([10.0, 12.0, 11.0]))
    rounds.add(Timed([20.0, 22.0]))
    rounds.add(Timed([30.0, 31.0, 32.0, 33.0]))
    assert rounds.source == "iterations"
    assert rounds.sizes == [3, 2, 4]
    assert rounds.medians == [11.0, 21.0, 31.5]
    assert rounds.latencies == [10.0, 12.0, 11.0, 20.0, 22.0, 30.0, 31.0, 32.0, 33.0]
    assert rounds.iterations_by_round == [
        [10.0, 12.0, 11.0],
        [20.0, 22.0],
        [30.0, 31.0, 32.0, 33.0],
    ]
    stats = rounds.stats()
    assert stats.count == 9 and stats.min == 10.0 and stats.max == 33.0
    assert stats.median == 21.0  # the headline: the median of the round medians
    assert rounds.stats("min").median == 11.0


def test_a_single_round_keeps_its_own_median() -> None:
    rounds = Rounds()
    rounds.add(Timed([10.0, 12.0, 11.0, 40.0]))
    assert rounds.stats().median == 11.5
    assert rounds.stats("min").median == 11.5  # the minimum of one round median


def test_rounds_from_tool_summaries_merge_them() -> None:
    rounds = Rounds()
    rounds.add(Timed([], tool_summary(50, 100.0, 101.0)))
    rounds.add(Timed([], tool_summary(50, 110.0, 111.0)))
    assert rounds.source == "tool summary"
    assert rounds.iterations_by_round is None
    assert rounds.sizes == [50, 50] and rounds.latencies == []
    stats = rounds.stats()
    assert stats.count == 100 and stats.mean == pytest.approx(106.0)
    assert stats.median == 105.0


def test_a_summary_without_median_counts_by_its_mean() -> None:
    rounds = Rounds()
    summary = Stats(10, 1.0, 7.0, None, None, None, 9.0, None, None)
    rounds.add(Timed([], summary))
    assert rounds.medians == [7.0]


def test_the_gate_judges_normalised_rounds_only_when_every_round_has_its_canary() -> None:
    rounds = Rounds()
    for latencies in ([100.0], [150.0], [200.0]):
        rounds.add(Timed(latencies))
    # the machine slowed down as the canary did: normalised, the rounds agree
    assert rounds.gate_medians([10.0, 15.0, 20.0]) == pytest.approx([150.0, 150.0, 150.0])
    assert rounds.gate_medians([10.0, None, 20.0]) == [100.0, 150.0, 200.0]
    assert rounds.gate_medians([]) == [100.0, 150.0, 200.0]
