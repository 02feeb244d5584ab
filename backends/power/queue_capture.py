"""One trace over a device's queue of beacon-synced power jobs (``--power-capture queue``), and
the clock fitted over every beacon that queue has run so far.

Inside one job (a few seconds) two beacons with a millisecond of timing error each cannot
resolve a drift of 150 ppm; over a queue's minutes they can. The worker opens a
``QueueCapture`` on the device's channel when the first such job starts (one more trace writer
beside the jobs' own), keeps it over the jobs that follow and closes it when none is left
queued. Every job still has its own capture and energy; after it is stored, ``add`` finds every
beacon of the queue again in the queue's trace, fits the clock over all of them and measures
that job by that fit (its ``Result.power["queue"]``). When the queue is over, ``measure_all``
measures every job again by the fit over all the queue's beacons (``queue_final``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backends.power.beacon import BeaconPattern
from backends.power.capture import PowerChannel
from backends.power.sync_capture import SYNC_MODES
from backends.power.sync_energy import BeaconStamp, JobStamps, Span, sync_queue
from backends.power.trace import COLUMNS, TraceWriter, iter_trace

# rows read around a beacon's command (its search adds 0.1 s and a pattern after the command)
BEACON_READ_S = (1.0, 1.5)
JOB_READ_S = 1.0  # rows read around a job's own host times


@dataclass(frozen=True)
class QueueMember:
    """What the queue's fit needs of one job: the beacons it ran (device start, host window),
    its device-clock windows (None when its own capture fell back to the host's windows) and
    whether its own energy was resolved (the queue's is refused with it)."""

    job_id: str
    beacons: tuple[BeaconStamp, ...]
    stamps: JobStamps | None
    host_span: tuple[float, float] | None
    resolved: bool = True
    reason: str = ""


def member_from_power(job_id: str, power: Mapping[str, Any]) -> QueueMember:
    """A job of the queue from its ``Result.power`` (the keys a beacon job writes)."""
    beacons = tuple(  # a beacon without its host window cannot be told from the others
        BeaconStamp(float(b["device_start"]), (float(b["host_window"][0]), b["host_window"][1]))
        for b in power.get("beacons", ())
        if b.get("host_window")
    )
    hosts = [t for b in beacons if b.host_window for t in b.host_window]
    for key in ("host_baseline_window", "host_timed_window"):
        hosts.extend(power.get(key) or ())
    span = (min(hosts), max(hosts)) if hosts else None
    if "device_windows" not in power or "device_baseline_window" not in power:
        why = power.get("power_sync_reason") or "its power figures hold no device-clock windows"
        return QueueMember(job_id, beacons, None, span, reason=f"not placed by beacon ({why})")
    rounds = tuple(Span(*window) for window in power["device_windows"])
    stamps = JobStamps(
        job_id=job_id,
        device_baseline=Span(*power["device_baseline_window"]),
        device_rounds=rounds,
        host_baseline=Span(*power["host_baseline_window"]),
        host_timed=Span(*power["host_timed_window"], sum(r.iterations for r in rounds)),
    )
    resolved = power.get("energy_per_inference_mj") is not None
    return QueueMember(job_id, beacons, stamps, span, resolved)


def read_spans(
    path: Path, spans: Sequence[tuple[float, float]], max_rows: int | None = None
) -> pd.DataFrame:
    """The trace's rows inside any of ``spans``, read chunk by chunk: a queue's trace may hold
    hours, its fit needs seconds of it."""
    parts = []
    if max_rows != 0:
        for chunk in iter_trace(path, max_rows=max_rows):
            t = chunk["t_s"].to_numpy(dtype=np.float64)
            keep = np.zeros(t.size, dtype=bool)
            for start, end in spans:
                keep |= (t >= start) & (t <= end)
            if keep.any():
                parts.append(chunk[keep])
    if not parts:
        return pd.DataFrame({name: np.empty(0) for name in COLUMNS})
    return pd.concat(parts, ignore_index=True)


class QueueCapture:
    """A trace writer on one channel over a queue of jobs, and the jobs it has seen."""

    def __init__(
        self, channel: PowerChannel, path: Path, pattern: BeaconPattern | None = None
    ) -> None:
        self.channel = channel
        self.path = path
        self.pattern = pattern or BeaconPattern.default()
        self.members: list[QueueMember] = []
        self.closed = False
        self._writer = TraceWriter(path)
        channel.add_writer(self._writer)

    def add(self, job_id: str, power: Mapping[str, Any]) -> dict[str, Any]:
        """Add a finished job; its figures by the clock fitted over every beacon so far."""
        member = member_from_power(job_id, power)
        self.members.append(member)
        return self.measure(member)

    def measure(self, member: QueueMember) -> dict[str, Any]:
        """``member`` measured over this trace by the fit over all the queue's beacons."""
        return self._measure([member])[member.job_id]

    def measure_all(self) -> dict[str, dict[str, Any]]:
        """Every job of the queue measured by the fit over all its beacons, in one pass over
        the trace: what the queue's earlier jobs get once the queue is over (their ``queue``
        figures used only the beacons up to their own)."""
        return self._measure(self.members)

    def _measure(self, members: Sequence[QueueMember]) -> dict[str, dict[str, Any]]:
        rows = self.channel.flush(self._writer) if not self.closed else None
        beacons = [stamp for m in self.members for stamp in m.beacons]
        common: dict[str, Any] = {"trace_path": str(self.path), "jobs": len(self.members)}
        figures: dict[str, dict[str, Any]] = {}
        placed = []
        for member in members:
            if member.stamps is None or member.host_span is None:
                figures[member.job_id] = {
                    **common,
                    "power_sync": "windows",
                    "power_sync_reason": member.reason,
                }
            else:
                placed.append(member)
        if not placed:
            return figures
        spans = list(_read_spans(beacons, [m.host_span for m in placed if m.host_span]))
        frame = read_spans(self.path, spans, rows)
        stamps = [m.stamps for m in placed if m.stamps is not None]
        sync = sync_queue(frame, stamps, beacons, self.pattern)
        for member, row in zip(placed, sync.jobs, strict=True):
            figures[member.job_id] = {**common, **_figures(row.power, row.sync, row.sync_reason)}
            if not member.resolved:  # inside the rail's noise in the job's own capture
                figures[member.job_id]["energy_per_inference_mj"] = None
        return figures

    def close(self) -> None:
        """No more samples into the queue's trace; what it holds is written out."""
        if self.closed:
            return
        self.closed = True
        self.channel.remove_writer(self._writer)
        self._writer.close()


_MEASURED_KEYS = (
    "energy_per_inference_mj",
    "round_energy_per_inference_mj",
    "baseline_w",
    "mean_w",
    "net_energy_j",
    "window_s",
    "baseline_window",
    "timed_window",
)


def _figures(power: Mapping[str, Any], sync: str, reason: str) -> dict[str, Any]:
    """One job's row of the queue's fit as its ``Result.power["queue"]`` keys."""
    power = dict(power)
    fit = power.pop("clock_fit", None)
    figures: dict[str, Any] = {"power_sync": SYNC_MODES[sync], "power_sync_reason": reason}
    if fit is not None:
        figures.update(
            clock_offset_s=fit["offset_s"],
            clock_drift_ppm=fit["drift_ppm"] if fit["drift_solved"] else None,
            clock_fit=fit,
            beacons_run=power.get("beacons_run"),
            beacons_found=power.get("beacons_found"),
            beacons_used=power.get("beacons_used"),
        )
    figures.update({key: power[key] for key in _MEASURED_KEYS if key in power})
    return figures


def _read_spans(
    beacons: Iterable[BeaconStamp], host_spans: Iterable[tuple[float, float]]
) -> Iterable[tuple[float, float]]:
    before, after = BEACON_READ_S
    for stamp in beacons:
        if stamp.host_window is not None:
            yield stamp.host_window[0] - before, stamp.host_window[1] + after
    for start, end in host_spans:
        yield start - JOB_READ_S, end + JOB_READ_S


__all__ = ["QueueCapture", "QueueMember", "member_from_power", "read_spans"]
