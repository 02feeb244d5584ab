"""A job's Result from what its rounds measured: statistics, the canary-normalised headline,
the precision interval and the warnings (pure: the worker gathers, this computes)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from backends.core.records import Job, Result, Stats
from backends.devices.base import LayerProfile, SessionInfo
from backends.measure.canary import judge_normalisation, normalise_rounds
from backends.measure.panel import blended_canaries
from backends.measure.precision import GateDecision, median_ci
from backends.measure.rounds import Rounds, every_round_has_canary, headline
from backends.measure.stats import summarize


def assemble_result(
    job: Job,
    rounds: Rounds,
    canaries: Sequence[float | None],
    info: SessionInfo,
    *,
    profile: LayerProfile | None = None,
    gate: GateDecision | None = None,
    canary_history: Sequence[float] = (),
    large_canaries: Sequence[float | None] = (),
    large_history: Sequence[float] = (),
    extra_rounds: int = 0,
    device_properties: dict[str, Any] | None = None,
    conditions_start: dict[str, Any] | None = None,
    conditions_end: dict[str, Any] | None = None,
    power: dict[str, Any] | None = None,
    parity: dict[str, Any] | None = None,
    drift: dict[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> Result:
    """The finished job's Result. ``gate`` is the precision gate's last decision (None when
    it never ran); ``canary_history`` the device's first canaries for this runtime, whose
    median is the fixed scale of the normalised figures (used only when every round has its
    canary); ``large_canaries``/``large_history`` the same for the large-footprint reference
    where rounds paired it (``panel.py``: the model is divided by a blend of the two);
    ``warnings`` those of the earlier steps, to which the gate's own is added when it did not
    converge."""
    stats = rounds.stats(job.settings.round_stat)
    result = Result(
        job_id=job.id,
        latencies_us=rounds.latencies,
        stats=stats,
        stats_source=rounds.source,
        round_sizes=rounds.sizes,
        round_medians_us=rounds.medians,
        forward_stats=forward_stats(rounds, stats, info, profile),
        layers_stats=profile.layers_stats if profile else None,
        layers=profile.layers if profile else [],
        call_cost_us=info.call_cost_us,
        cold_weights_us=info.cold_weights_us,
        load_us=info.load_us,
        first_inference_us=info.first_inference_us,
        tool=info.tool,
        tool_version=info.tool_version,
        device_properties=dict(device_properties or {}),
        conditions_start=conditions_start if conditions_start is not None else {},
        conditions_end=conditions_end if conditions_end is not None else {},
        raw_log_path=profile.raw_log_path if profile else None,
        power=power,
        warnings=list(warnings),
        round_canary_us=list(canaries),
        round_canary_large_us=list(large_canaries),
        extra_rounds=extra_rounds,
        parity=parity,
        drift=drift,
    )
    drift_canaries, weight = blended_canaries(
        rounds.medians, canaries, large_canaries, canary_history, large_history
    )
    if weight is not None:
        result.reference_large_weight = weight
        result.canary_large_reference_us = statistics.median(
            large_history or [c for c in large_canaries if c is not None]  # type: ignore[misc]
        )
    add_trust_figures(
        result, rounds, drift_canaries, gate, canary_history, job.settings.round_stat, canaries
    )
    return result


def add_trust_figures(
    result: Result,
    rounds: Rounds,
    canaries: Sequence[float | None],
    gate: GateDecision | None,
    canary_history: Sequence[float],
    round_stat: str,
    small_canaries: Sequence[float | None] | None = None,
) -> None:
    """The canary-normalised headline and the precision gate's interval, set on ``result``.
    ``canaries`` are what each round is divided by (the small canary's, or the blend of both
    references on its scale); ``small_canaries`` the small canary's own, for its scale."""
    result.headline_us = result.stats.median if result.stats.median is not None else None
    result.headline_basis = "raw (no canary)"
    small = canaries if small_canaries is None else small_canaries
    if every_round_has_canary(canaries) and every_round_has_canary(small):
        long_run = statistics.median(canary_history or small)  # type: ignore[type-var]
        normalised = normalise_rounds(rounds.medians, canaries, long_run)  # type: ignore[arg-type]
        result.canary_reference_us = long_run
        result.normalised_median_us = headline(normalised, round_stat)
        judgement = judge_normalisation(rounds.medians, normalised)
        result.headline_basis = judgement.reason
        if judgement.use_normalised:
            result.headline_us = result.normalised_median_us
    interval = gate.interval if gate is not None else None
    if interval is None and len(rounds.medians) > 1:
        interval = median_ci(rounds.gate_medians(canaries), rounds.iterations_by_round)
    if interval is not None and interval.finite:
        # The interval is relative to what the gate judged; expressed around the headline
        # it is reported with (the normalised one when the canary ran).
        centre = result.headline_us or result.stats.median or result.stats.mean
        scale = centre / interval.estimate if interval.estimate else 1.0
        result.ci_low_us = interval.low * scale if interval.low is not None else None
        result.ci_high_us = interval.high * scale if interval.high is not None else None
        result.ci_half_width_pct = interval.half_width_pct
    if gate is not None:
        result.converged = bool(gate.converged)
        if not result.converged:
            result.warnings.append(f"precision gate: {gate.reason}")


def forward_stats(
    rounds: Rounds, stats: Stats, info: SessionInfo, profile: LayerProfile | None
) -> Stats | None:
    """The "Forward Propagate" key: every timed run less the session's fixed per-call cost,
    so module times add up to a model's (the cost is paid once per call, not once per module),
    plus what the call costs more with its weights out of the per-core cache (a module's weights
    are cold inside a network; ``cold_weights_us``, 0 or None for a model that evicts its own);
    its median is the headline's shifted the same way. Else the profiled pass's forward time,
    where the tool has one."""
    if info.call_cost_us is not None and rounds.source == "iterations" and rounds.latencies:
        shift = info.call_cost_us - (info.cold_weights_us or 0.0)
        forward = summarize([max(latency - shift, 0.0) for latency in rounds.latencies])
        if stats.median is not None:
            forward.median = max(stats.median - shift, 0.0)
        return forward
    return profile.forward_stats if profile else None
