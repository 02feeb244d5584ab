"""Energy per job and per round from one continuous trace, placed by the device's own clock.

One capture runs over a whole queue. The device reports, on its clock, when each beacon began,
each job's idle baseline and each round's timed loop; ``sync_queue`` finds the beacons in the
trace, fits device -> monitor time, and measures every job from its device stamps: baseline
power, energy over its rounds, net energy per inference (and per round), and the slice of the
trace that is the job's. Without a usable fit (no beacon found: too noisy a rail, the beacon
off) every job falls back to the host's windows, as a ``--power`` job is measured today, and its
row says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backends.power.beacon import BeaconPattern
from backends.power.beacon_detect import MAX_SIDELOBE, MIN_NCC, BeaconMatch, find_beacon
from backends.power.clock_fit import MAX_RESIDUAL_S, ClockFit, fit_clock
from backends.power.trace import window_stats

SEARCH_MARGIN_S = 0.1  # around the host's window of a beacon command: host vs monitor clocks


@dataclass(frozen=True)
class Span:
    """[start, end) on one clock and the inferences timed inside (0 for an idle span)."""

    start: float
    end: float
    iterations: int = 0

    def __post_init__(self) -> None:
        if not self.end >= self.start:
            raise ValueError(f"span ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True)
class BeaconStamp:
    """A beacon the device ran: its start on the device clock, and the host's timestamps around
    the command that ran it (where to search; None searches the whole trace)."""

    device_start: float
    host_window: tuple[float, float] | None = None


@dataclass(frozen=True)
class JobStamps:
    """One job's stamps: the device's (idle baseline, each round's timed loop) and the host's
    (today's windows, the fallback)."""

    job_id: str
    device_baseline: Span
    device_rounds: tuple[Span, ...]
    host_baseline: Span
    host_timed: Span

    @property
    def iterations(self) -> int:
        return sum(span.iterations for span in self.device_rounds)


@dataclass(frozen=True)
class JobEnergy:
    """A job's row: ``power`` holds the figures (``Result.power`` keys), ``sync`` how its
    windows were placed (beacon, beacon-offset-only, host-windows) and ``sync_reason`` why not
    by the beacon, when not, or which beacons the fit left out."""

    job_id: str
    sync: str
    power: dict[str, Any]
    sync_reason: str = ""


@dataclass
class QueueSync:
    """Everything one queue's attribution found: the beacons, the fit, a row per job."""

    matches: list[BeaconMatch] = field(default_factory=list)
    fit: ClockFit | None = None
    jobs: list[JobEnergy] = field(default_factory=list)


def _frame_period(frame: pd.DataFrame) -> float:
    t = frame["t_s"].to_numpy(dtype=np.float64)
    return float(np.median(np.diff(t))) if t.size > 1 else 0.0


def _stats(frame: pd.DataFrame, span: Span, period: float) -> tuple[float, float, int]:
    """``window_stats`` over the samples near ``span``, on times relative to the span's
    start: epoch seconds carry 0.24 us steps, which would stretch every 200 us sample by
    up to 0.1 % when its overlap with the window is computed."""
    t = frame["t_s"].to_numpy(dtype=np.float64)
    lo = max(0, int(np.searchsorted(t, span.start)) - 1)
    hi = int(np.searchsorted(t, span.end)) + 1
    near = pd.DataFrame(
        {"t_s": t[lo:hi] - span.start, "watts": frame["watts"].to_numpy(np.float64)[lo:hi]}
    )
    return window_stats(near, 0.0, span.end - span.start, interval_s=period)


def job_energy(
    frame: pd.DataFrame, baseline: Span, rounds: Sequence[Span], period: float
) -> dict[str, Any]:
    """The figures of one job from spans on the trace's clock: baseline power over
    ``baseline``, energy over each round, net energy = energy - baseline x duration."""
    if not rounds:
        raise ValueError("the job has no rounds to measure")
    baseline_w, _, baseline_samples = _stats(frame, baseline, period)
    if baseline_samples == 0 or math.isnan(baseline_w):
        raise ValueError(f"the trace has no samples in the baseline [{baseline.start:.3f}, ...)")
    energy = net = duration = 0.0
    samples = iterations = 0
    per_round = []
    for span in rounds:
        _, round_j, count = _stats(frame, span, period)
        if count == 0:
            raise ValueError(f"the trace has no samples in the round [{span.start:.3f}, ...)")
        round_net = round_j - baseline_w * (span.end - span.start)
        per_round.append(round_net / max(span.iterations, 1) * 1000.0)
        energy += round_j
        net += round_net
        duration += span.end - span.start
        samples += count
        iterations += span.iterations
    return {
        "mean_w": energy / duration if duration > 0 else math.nan,
        "baseline_w": baseline_w,
        "energy_j": energy,
        "net_energy_j": net,
        "energy_per_inference_mj": net / max(iterations, 1) * 1000.0,
        "round_energy_per_inference_mj": per_round,
        "window_s": duration,
        "baseline_window": [baseline.start, baseline.end],
        "timed_window": [rounds[0].start, rounds[-1].end],
        "trace_window": [min(baseline.start, rounds[0].start), rounds[-1].end],
        "samples": samples,
    }


def _on_monitor(fit: ClockFit, span: Span) -> Span:
    return Span(fit.to_monitor(span.start), fit.to_monitor(span.end), span.iterations)


def locate_beacons(
    frame: pd.DataFrame,
    beacons: Sequence[BeaconStamp],
    pattern: BeaconPattern,
    *,
    margin_s: float = SEARCH_MARGIN_S,
    min_ncc: float = MIN_NCC,
    max_sidelobe: float = MAX_SIDELOBE,
) -> list[BeaconMatch]:
    t = frame["t_s"].to_numpy(dtype=np.float64)
    w = frame["watts"].to_numpy(dtype=np.float64)
    matches = []
    for stamp in beacons:
        window = None
        if stamp.host_window is not None:
            window = (stamp.host_window[0] - margin_s, stamp.host_window[1] + margin_s)
        matches.append(
            find_beacon(
                t,
                w,
                pattern,
                stamp.device_start,
                window,
                min_ncc=min_ncc,
                max_sidelobe=max_sidelobe,
            )
        )
    return matches


def beacon_counts(matches: Sequence[BeaconMatch], fit: ClockFit) -> tuple[dict[str, int], str]:
    """How many beacons ran, were found and placed the fit, and a note naming every beacon
    left out (not found, or dropped as off the line of the others); empty when none was."""
    found = [match for match in matches if match.found]
    counts = {"beacons_run": len(matches), "beacons_found": len(found), "beacons_used": fit.beacons}
    notes = []
    missing = [(n, m) for n, m in enumerate(matches, 1) if not m.found]
    if missing:
        named = "; ".join(f"beacon {n}: {match.reason}" for n, match in missing)
        notes.append(f"{len(missing)} of {len(matches)} beacons not found ({named})")
    for stamp in fit.dropped:
        number = next(n for n, m in enumerate(matches, 1) if m.found and m.device_start == stamp)
        notes.append(
            f"beacon {number} dropped: more than {MAX_RESIDUAL_S * 1e3:g} ms off the others' line"
        )
    if notes:
        notes.append(f"the fit uses the other {fit.beacons}")
    return counts, "; ".join(notes)


def _no_fit_reason(matches: Sequence[BeaconMatch]) -> str:
    if not matches:
        return "no beacon was run (beacon off)"
    first = next((m.reason for m in matches if m.reason), "")
    return f"no beacon found in the trace ({len(matches)} searched; first: {first})"


def sync_queue(
    frame: pd.DataFrame,
    jobs: Sequence[JobStamps],
    beacons: Sequence[BeaconStamp],
    pattern: BeaconPattern,
    *,
    margin_s: float = SEARCH_MARGIN_S,
    min_ncc: float = MIN_NCC,
    max_sidelobe: float = MAX_SIDELOBE,
    max_residual_s: float = MAX_RESIDUAL_S,
) -> QueueSync:
    """Attribute energy to every job of a queue captured in one trace (columns t_s, watts).
    A job the fit cannot place, or whose trace slice is unusable, gets its figures from the
    host's windows; a job neither can measure keeps a row with the reason and no energy."""
    missing = {"t_s", "watts"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"the trace has no {', '.join(sorted(missing))} column(s); pass a trace as "
            "read_trace reads it (t_s, amps, volts, watts)"
        )
    period = _frame_period(frame)
    result = QueueSync(
        matches=locate_beacons(
            frame, beacons, pattern, margin_s=margin_s, min_ncc=min_ncc, max_sidelobe=max_sidelobe
        )
    )
    result.fit = fit_clock(result.matches, max_residual_s)
    fit = result.fit
    counts, left_out = beacon_counts(result.matches, fit) if fit is not None else ({}, "")
    for job in jobs:
        reason = _no_fit_reason(result.matches) if fit is None else ""
        if fit is not None:
            try:
                power = job_energy(
                    frame,
                    _on_monitor(fit, job.device_baseline),
                    [_on_monitor(fit, span) for span in job.device_rounds],
                    period,
                )
            except ValueError as error:
                reason = f"beacon-placed windows unusable: {error}"
            else:
                power["clock_fit"] = fit.to_dict()
                power.update(counts)
                if fit.drift_solved:
                    result.jobs.append(JobEnergy(job.job_id, "beacon", power, left_out))
                else:
                    note = "one beacon found: drift not solved, assumed 0 ppm"
                    note = "; ".join(part for part in (note, left_out) if part)
                    result.jobs.append(JobEnergy(job.job_id, "beacon-offset-only", power, note))
                continue
        try:
            power = job_energy(frame, job.host_baseline, [job.host_timed], period)
            del power["round_energy_per_inference_mj"]  # host windows span the whole job
        except ValueError as error:
            power = {"energy_per_inference_mj": None}
            reason = f"{reason}; host windows unusable too: {error}"
        result.jobs.append(JobEnergy(job.job_id, "host-windows", power, reason))
    return result


__all__ = [
    "BeaconStamp",
    "JobEnergy",
    "JobStamps",
    "QueueSync",
    "Span",
    "beacon_counts",
    "job_energy",
    "locate_beacons",
    "sync_queue",
]
