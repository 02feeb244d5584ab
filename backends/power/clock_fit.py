"""Device clock -> monitor clock from found beacons: an offset and a drift by least squares.

Each found beacon pairs a device stamp with the trace time where its pattern began. A phone's
clock and the monitor's differ by an offset (seconds, any size) and run at slightly different
rates (drift, tens to hundreds of ppm), so ``device = monitor + offset + drift * (monitor -
ref)`` with ``ref`` the first beacon's monitor time. Two beacons solve both; more average the
timing noise down, and a beacon whose residual is far off the line of the others (a false
match) is dropped and named. One beacon gives the offset only: drift is then assumed 0 and the
fit says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backends.power.beacon_detect import BeaconMatch

MAX_RESIDUAL_S = 0.002  # a found beacon further than this off the others' line is dropped


@dataclass(frozen=True)
class ClockFit:
    """``device = monitor + offset_s + drift_ppm * 1e-6 * (monitor - ref_monitor)``."""

    offset_s: float  # device minus monitor at ref_monitor
    drift_ppm: float  # how much faster the device clock runs (parts per million)
    ref_monitor: float
    beacons: int  # beacons the fit used
    residual_ms_max: float
    drift_solved: bool  # False with one beacon: drift assumed 0
    dropped: tuple[float, ...] = ()  # device stamps of found beacons dropped as off the line

    def to_monitor(self, device_t: float) -> float:
        drift = self.drift_ppm * 1e-6
        return self.ref_monitor + (device_t - self.ref_monitor - self.offset_s) / (1.0 + drift)

    def to_device(self, monitor_t: float) -> float:
        drift = self.drift_ppm * 1e-6
        return monitor_t + self.offset_s + drift * (monitor_t - self.ref_monitor)

    def to_dict(self) -> dict[str, object]:
        return {
            "offset_s": self.offset_s,
            "drift_ppm": self.drift_ppm,
            "ref_monitor": self.ref_monitor,
            "beacons": self.beacons,
            "residual_ms_max": self.residual_ms_max,
            "drift_solved": self.drift_solved,
            "dropped": list(self.dropped),
        }


def _solve(m: np.ndarray, d: np.ndarray, ref: float) -> tuple[float, float, np.ndarray]:
    x = m - ref
    y = d - m  # small numbers: the offset plus drift, not epoch seconds
    if m.size == 1 or np.ptp(x) == 0:
        offset = float(y.mean())
        return offset, 0.0, y - offset
    slope, offset = np.polyfit(x, y, 1)
    return float(offset), float(slope), y - (offset + slope * x)


def fit_clock(
    matches: Sequence[BeaconMatch], max_residual_s: float = MAX_RESIDUAL_S
) -> ClockFit | None:
    """The fit over the found beacons (None when none was found). While three or more remain
    and the worst residual exceeds ``max_residual_s``, that beacon is dropped and the line
    refitted."""
    found = [match for match in matches if match.monitor_start is not None]
    if not found:
        return None
    m = np.array([match.monitor_start for match in found], dtype=np.float64)
    d = np.array([match.device_start for match in found], dtype=np.float64)
    ref = float(m.min())
    dropped: list[float] = []
    while True:
        offset, slope, residual = _solve(m, d, ref)
        worst = int(np.argmax(np.abs(residual)))
        if m.size < 3 or abs(residual[worst]) <= max_residual_s:
            break
        dropped.append(float(d[worst]))
        m, d = np.delete(m, worst), np.delete(d, worst)
    return ClockFit(
        offset_s=offset,
        drift_ppm=slope * 1e6,
        ref_monitor=ref,
        beacons=int(m.size),
        residual_ms_max=float(np.abs(residual).max()) * 1e3,
        drift_solved=m.size >= 2 and float(np.ptp(m)) > 0,
        dropped=tuple(dropped),
    )


__all__ = ["MAX_RESIDUAL_S", "ClockFit", "fit_clock"]
