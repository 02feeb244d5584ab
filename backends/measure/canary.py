"""Drift normalisation against a reference canary, and each device's canary history.

A small fixed model (``assets/reference/canary.onnx``) is measured on the same device and
runtime just before every round. A burst that slows the machine down slows the canary by
about the same factor, so ``latency / canary`` cancels it; multiplying by the canary's
long-run median on that device turns the ratio back into microseconds:

    normalised = latency_us / canary_us * canary_long_run_median_us

No device code and no storage here: the worker measures, ``canary_store.CanaryStore`` keeps
each device's history across runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

REFERENCE_MODEL = "assets/reference/canary.onnx"  # relative to the repository root

DEFAULT_BAND_PCT = 10.0
DEFAULT_MIN_HISTORY = 5
MAD_TO_SIGMA = 1.4826  # MAD x this estimates the standard deviation of normal noise
NOISE_SIGMAS = 3.0  # the band widens to this many of the history's own robust sigmas


def normalise(latency_us: float, canary_us: float, canary_long_run_median_us: float) -> float:
    """``latency / canary x long-run canary median``: the latency on a machine at its usual pace."""
    for name, value in (
        ("latency", latency_us),
        ("canary latency", canary_us),
        ("canary long-run median", canary_long_run_median_us),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of microseconds, not {value}")
    return latency_us / canary_us * canary_long_run_median_us


def normalise_rounds(
    round_medians: Sequence[float],
    round_canaries: Sequence[float],
    long_run: float | None = None,
) -> list[float]:
    """Each round median normalised by the canary measured just before that round.

    ``long_run`` is the device's long-run canary median (from ``CanaryStore``);
    None (no history yet) uses the median of this job's own canaries, which still removes the
    drift between rounds.
    """
    if len(round_medians) != len(round_canaries):
        raise ValueError(
            f"{len(round_canaries)} canary measurements for {len(round_medians)} rounds: "
            "measure the canary once before every round"
        )
    if not round_medians:
        return []
    scale = long_run if long_run is not None else statistics.median(round_canaries)
    return [
        normalise(latency, canary, scale)
        for latency, canary in zip(round_medians, round_canaries, strict=True)
    ]


def relative_spread_pct(values: Sequence[float]) -> float:
    """Robust spread of ``values`` in percent of their median (1.4826 x MAD / median)."""
    centre = statistics.median(values)
    mad = statistics.median(abs(v - centre) for v in values)
    return 100.0 * MAD_TO_SIGMA * mad / centre if centre > 0 else math.inf


@dataclass
class Judgement:
    """Whether normalising by the canary made a job's round medians tighter."""

    use_normalised: bool
    raw_spread_pct: float | None
    normalised_spread_pct: float | None
    reason: str


# Normalisation is set aside only when it clearly adds noise: the normalised round medians
# scatter more than this many times the raw ones AND more than this percentage. Measured: with
# a looser rule (any normalised spread above the raw one) 11 of 68 rows of a quiet
# repeatability pass switched to raw on round spreads of 0.3-2.6% and the headline then
# carried the machine's 10% pace change between passes (agreement 73.5% instead of 100%).
NOISIER_FACTOR = 2.0
NOISIER_PCT = 5.0


def judge_normalisation(raw: Sequence[float], normalised: Sequence[float]) -> Judgement:
    """Normalisation must not hurt: when the normalised round medians scatter clearly more
    than the raw ones (``NOISIER_FACTOR`` times and above ``NOISIER_PCT``: the canary was
    disturbed by something the model was not), the raw figure is the headline. Within a job
    the rounds' spreads are small and noisy, while what normalisation removes is the machine's
    change of pace between runs, which no single job sees; so a small difference in spread
    is no evidence against it. With fewer than three rounds there is nothing to judge."""
    if len(raw) < 3 or len(raw) != len(normalised):
        return Judgement(True, None, None, "normalised (too few rounds to judge)")
    raw_spread, norm_spread = relative_spread_pct(raw), relative_spread_pct(normalised)
    figures = f"round spread {norm_spread:.2f}% normalised vs {raw_spread:.2f}% raw"
    if norm_spread > NOISIER_FACTOR * raw_spread and norm_spread > NOISIER_PCT:
        return Judgement(
            False,
            raw_spread,
            norm_spread,
            f"raw: the canary did not move with the model ({figures})",
        )
    return Judgement(True, raw_spread, norm_spread, f"normalised ({figures})")


@dataclass
class DriftStatus:
    """Is a device's canary away from its own history? ``ratio`` = median(recent)/median(history).

    ``band_pct`` is the band actually applied (the asked band, or wider for a noisy history).
    """

    drifting: bool
    ratio: float | None
    band_pct: float
    reason: str
    history_count: int = 0
    recent_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift_status(
    history_values: Sequence[float],
    recent_values: Sequence[float],
    band_pct: float = DEFAULT_BAND_PCT,
    min_history: int = DEFAULT_MIN_HISTORY,
) -> DriftStatus:
    """Flag a device whose recent canary median left a band around its history's median.

    The rule, robust by construction:
    - medians on both sides, so one burst among the recent values (say 2 of 5 rounds) or a
      few outliers in the history do not move the verdict;
    - the band is symmetric in log space: drifting when ratio > 1 + b or ratio < 1 / (1 + b);
    - b is ``band_pct``, widened to 3 robust sigmas of the history's own scatter
      (1.4826 x MAD / median) so a device that is always noisy is judged against its noise;
    - fewer than ``min_history`` history values: never drifting (not enough to know).
    ``history_values`` should not include ``recent_values``.
    """
    if band_pct <= 0:
        raise ValueError(f"band must be a positive percentage, not {band_pct}")
    history = [float(v) for v in history_values if math.isfinite(v) and v > 0]
    recent = [float(v) for v in recent_values if math.isfinite(v) and v > 0]
    counts = {"history_count": len(history), "recent_count": len(recent)}
    if not recent:
        return DriftStatus(False, None, band_pct, "no recent canary measurement", **counts)
    if len(history) < min_history:
        reason = f"not enough history ({len(history)} < {min_history} canary measurements)"
        return DriftStatus(False, None, band_pct, reason, **counts)
    centre = statistics.median(history)
    ratio = statistics.median(recent) / centre
    mad = statistics.median(abs(v - centre) for v in history)
    noise_pct = 100.0 * NOISE_SIGMAS * MAD_TO_SIGMA * mad / centre
    band = max(band_pct, noise_pct)
    limit = 1.0 + band / 100.0
    change = f"canary {100.0 * (ratio - 1.0):+.1f}% vs its history (band +-{band:.1f}%)"
    if ratio > limit:
        return DriftStatus(True, ratio, band, f"drifting: slower, {change}", **counts)
    if ratio < 1.0 / limit:
        return DriftStatus(True, ratio, band, f"drifting: faster, {change}", **counts)
    return DriftStatus(False, ratio, band, f"steady: {change}", **counts)
