"""A job's timed rounds: how its runs split into rounds, what each round gave, the headline."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from backends.core.records import Stats
from backends.devices.base import Timed
from backends.measure.canary import judge_normalisation, normalise_rounds
from backends.measure.stats import merge_summaries, summarize


def split_runs(total: int | None, rounds: int) -> list[int | None]:
    """Iterations per round: ``total`` spread as evenly as possible over ``rounds``."""
    rounds = max(1, rounds)
    if total is None:
        return [None] * rounds
    rounds = min(rounds, max(total, 1))
    base, extra = divmod(total, rounds)
    return [base + (1 if index < extra else 0) for index in range(rounds)]


def headline(round_medians: Sequence[float], round_stat: str) -> float:
    """The reported latency: the median of the round medians, or their minimum on request."""
    return min(round_medians) if round_stat == "min" else statistics.median(round_medians)


def every_round_has_canary(canaries: Sequence[float | None]) -> bool:
    """True when a canary was measured before every round (and there was a round): only then
    can the rounds be drift-normalised."""
    return bool(canaries) and all(c is not None for c in canaries)


@dataclass
class Rounds:
    """The timed rounds of one job: every latency where the tool gives them, else summaries."""

    latencies: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    summaries: list[Stats] = field(default_factory=list)
    per_round: list[list[float]] = field(default_factory=list)

    def add(self, timed: Timed) -> None:
        summary = summarize(timed.latencies_us) if timed.latencies_us else timed.summary
        assert summary is not None  # Timed.count > 0 guarantees one of the two
        self.latencies.extend(timed.latencies_us)
        self.per_round.append(list(timed.latencies_us))
        self.sizes.append(timed.count)
        self.medians.append(summary.median if summary.median is not None else summary.mean)
        self.summaries.append(summary)

    @property
    def source(self) -> str:
        return "iterations" if len(self.latencies) == sum(self.sizes) else "tool summary"

    @property
    def iterations_by_round(self) -> list[list[float]] | None:
        """Each round's latencies for the bootstrap's within-round jitter; None when the tool
        reports only summaries."""
        return self.per_round if self.source == "iterations" else None

    def stats(self, round_stat: str = "median") -> Stats:
        """Summary of every timed run; its median is the headline from the round medians."""
        stats = summarize(self.latencies) if self.source == "iterations" else None
        stats = stats or merge_summaries(self.summaries)
        if len(self.medians) > 1 or round_stat == "min":
            stats.median = headline(self.medians, round_stat)
        return stats

    def gate_medians(self, canaries: Sequence[float | None]) -> list[float]:
        """The round medians the precision gate judges: drift-normalised when every round has
        its canary (a slow phase of the machine then does not count as imprecision) and that
        did not make them clearly noisier, else raw."""
        if every_round_has_canary(canaries):
            normalised = normalise_rounds(self.medians, canaries)  # type: ignore[arg-type]
            if judge_normalisation(self.medians, normalised).use_normalised:
                return normalised
        return list(self.medians)
