"""How sure is a median? A round-level bootstrap interval and the gate that asks for more rounds.

The headline latency is the median of the round medians, and the noise that matters comes in
bursts of 10-20 s that slow a whole round down. Iterations inside a round are therefore not
independent evidence: resampling them alone gives intervals that are far too narrow. The
interval here is a cluster (two-stage) bootstrap: draw rounds with replacement and, when the
round's iterations are known, draw iterations with replacement inside each drawn round, then
take the median of the drawn round medians.

The within-round step is exact and cheap: the median of ``n`` draws from a sorted sample is
the sorted value at ``floor(n * U)`` where ``U`` is the matching order statistic of ``n``
uniforms (a Beta variable), so no resample is ever materialised (``tests/perf/
bootstrap_speed.py``: well under 5 ms for 10 rounds of 100 iterations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ROUNDS_METHOD = "cluster bootstrap over rounds"
TWO_STAGE_METHOD = "two-stage cluster bootstrap (rounds, then iterations)"
SINGLE_ROUND_METHOD = "single round: no interval"


@dataclass
class ConfidenceInterval:
    """A percentile bootstrap interval of the median of round medians.

    ``half_width_pct`` is the larger side, ``max(estimate - low, high - estimate)``, as a
    percentage of the estimate: the "+-P%" the precision gate compares against. With one
    round there is no interval: ``low``/``high`` are None and the half-width is infinite.
    """

    estimate: float
    low: float | None
    high: float | None
    half_width_pct: float
    method: str
    rounds: int
    confidence: float = 0.95

    @property
    def finite(self) -> bool:
        return math.isfinite(self.half_width_pct)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.finite:  # JSON has no infinity
            data["half_width_pct"] = None
        return data


def median_ci(
    round_medians: Sequence[float],
    round_latencies: Sequence[Sequence[float]] | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> ConfidenceInterval:
    """Bootstrap interval of ``median(round_medians)``; deterministic for a given ``seed``.

    ``round_latencies`` (one list of iterations per round, optional) add the within-round
    jitter. It enters as a ratio to that round's own median, so the iterations may be raw
    while ``round_medians`` are drift-normalised. A round with no iterations is taken as its
    median. Both sides of the percentile interval are widened by sqrt(R / (R - 1)) for R
    rounds, the usual correction of the bootstrap's narrowness on few clusters: on normal
    round medians the 95% interval then holds the true median 81% of the time with 3 rounds,
    90% with 4 and 90-95% from 5 on (the median of few values is coarse). With two rounds the
    interval is the span of the two round medians, widened by sqrt(2).
    """
    medians = np.asarray(round_medians, dtype=np.float64)
    if medians.ndim != 1 or medians.size == 0:
        raise ValueError("no round medians: measure at least one round before asking")
    if not np.all(np.isfinite(medians)):
        raise ValueError("round medians must be finite numbers")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if resamples < 10:
        raise ValueError(f"resamples must be at least 10, not {resamples}")
    if round_latencies is not None and len(round_latencies) != medians.size:
        raise ValueError(
            f"{len(round_latencies)} rounds of latencies for {medians.size} round medians"
        )
    estimate = float(np.median(medians))
    rounds = int(medians.size)
    if rounds == 1:
        return ConfidenceInterval(
            estimate, None, None, math.inf, SINGLE_ROUND_METHOD, rounds, confidence
        )

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, rounds, size=(resamples, rounds))
    drawn = medians[picks]
    method = ROUNDS_METHOD
    if round_latencies is not None:
        jitter = _within_round_ratios(round_latencies, picks, rng)
        if jitter is not None:
            drawn = drawn * jitter
            method = TWO_STAGE_METHOD
    statistic = np.median(drawn, axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = (float(q) for q in np.quantile(statistic, [tail, 1.0 - tail]))
    widen = math.sqrt(rounds / (rounds - 1))  # undo the bootstrap's small-sample narrowness
    low = estimate - widen * max(0.0, estimate - low)
    high = estimate + widen * max(0.0, high - estimate)
    half = max(estimate - low, high - estimate)
    half_pct = 100.0 * half / estimate if estimate > 0 else math.inf
    return ConfidenceInterval(estimate, low, high, half_pct, method, rounds, confidence)


def _within_round_ratios(
    round_latencies: Sequence[Sequence[float]], picks: np.ndarray, rng: np.random.Generator
) -> np.ndarray | None:
    """For each drawn round (``picks``), the median of its own resample of iterations divided
    by the round's observed median; a round drawn twice is resampled twice, independently.

    None when no round has iterations (then only the rounds are resampled).
    """
    ratios = np.ones(picks.shape)
    any_iterations = False
    for index, latencies in enumerate(round_latencies):
        values = np.sort(np.asarray(latencies, dtype=np.float64))
        if values.size == 0:
            continue
        observed = 0.5 * float(values[(values.size - 1) // 2] + values[values.size // 2])
        if observed <= 0 or not math.isfinite(observed):
            continue
        any_iterations = True
        slots = picks == index
        ratios[slots] = _bootstrap_medians(values, rng, int(slots.sum())) / observed
    return ratios if any_iterations else None


def _bootstrap_medians(
    sorted_values: np.ndarray, rng: np.random.Generator, count: int
) -> np.ndarray:
    """``count`` draws of ``np.median(resample)``, a resample being n draws with replacement.

    The k-th smallest of n draws from the sorted sample is ``sorted[floor(n * U_(k))]``, U_(k)
    the k-th order statistic of n uniforms (Beta(k, n - k + 1)); for even n the next one up is
    U_(k) plus (1 - U_(k)) times the smallest of the n - k uniforms left above it.
    """
    n = sorted_values.size
    if n == 1:
        return np.full(count, sorted_values[0])
    k = (n + 1) // 2
    lower = rng.beta(k, n - k + 1, size=count)
    median = sorted_values[_index(lower, n)]
    if n % 2 == 0:
        smallest_above = 1.0 - rng.random(count) ** (1.0 / (n - k))  # Beta(1, n - k), cheaply
        upper = lower + (1.0 - lower) * smallest_above
        median = 0.5 * (median + sorted_values[_index(upper, n)])
    return median


def _index(uniform: np.ndarray, n: int) -> np.ndarray:
    return np.minimum((uniform * n).astype(np.int64), n - 1)


@dataclass
class GateDecision:
    """What the gate says after a round: measure more, or stop (converged or capped)."""

    run_more: bool
    converged: bool
    interval: ConfidenceInterval
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_more": self.run_more,
            "converged": self.converged,
            "interval": self.interval.to_dict(),
            "reason": self.reason,
        }


@dataclass
class PrecisionGate:
    """Keep adding rounds until the interval is within +-``precision_pct`` or a cap is hit.

    ``min_rounds``: fewer rounds than this never count as converged, because two or three
    rounds that agree by chance give an interval that is too narrow. The caps are checked
    before each extra round, so the time cap is overshot by at most one round.
    """

    precision_pct: float = 2.0
    max_extra_rounds: int = 20
    time_cap_s: float = 120.0
    min_rounds: int = 3
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.precision_pct > 0:
            raise ValueError(f"precision must be a positive percentage, not {self.precision_pct}")
        if self.max_extra_rounds < 0:
            raise ValueError(f"max_extra_rounds must be >= 0, not {self.max_extra_rounds}")
        if self.time_cap_s < 0:
            raise ValueError(f"time_cap_s must be >= 0, not {self.time_cap_s}")
        if self.min_rounds < 1:
            raise ValueError(f"min_rounds must be >= 1, not {self.min_rounds}")

    def decide(
        self,
        round_medians: Sequence[float],
        round_latencies: Sequence[Sequence[float]] | None = None,
        elapsed_s: float = 0.0,
        extra_rounds_run: int = 0,
    ) -> GateDecision:
        """Judge the rounds so far; ``elapsed_s`` is the job's measuring time up to now."""
        interval = median_ci(
            round_medians, round_latencies, self.confidence, self.resamples, self.seed
        )
        target = f"+-{self.precision_pct:g}%"
        width = _shown(interval)
        rounds = interval.rounds
        if rounds >= self.min_rounds and interval.half_width_pct <= self.precision_pct:
            reason = f"converged: {width} <= {target} after {rounds} rounds"
            return GateDecision(False, True, interval, reason)
        why = (
            f"{rounds} round(s), {self.min_rounds} needed"
            if rounds < self.min_rounds
            else f"{width} > {target}"
        )
        if extra_rounds_run >= self.max_extra_rounds:
            reason = (
                f"not converged: {why} after {extra_rounds_run} extra round(s) "
                f"(cap {self.max_extra_rounds})"
            )
            return GateDecision(False, False, interval, reason)
        if elapsed_s >= self.time_cap_s:
            reason = f"not converged: {why} at the {self.time_cap_s:g} s time cap"
            return GateDecision(False, False, interval, reason)
        return GateDecision(True, False, interval, f"{why}: one more round")


def _shown(interval: ConfidenceInterval) -> str:
    if not interval.finite:
        return "no interval"
    return f"+-{interval.half_width_pct:.2f}%"
