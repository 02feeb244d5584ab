"""Finding a sync beacon in a power trace: normalised cross-correlation, then sub-sample timing.

The search runs in two passes. A coarse pass correlates the pattern with the trace averaged
into bins of a tenth of a chip (cheap, and averaging lifts the pattern out of per-sample noise);
a fine pass correlates at the full sample rate around the coarse peak and places the peak
between samples with a V fit (the correlation peak of on/off chips is a symmetric cusp, which
a parabola would bias). A few dropped packets in the window are bridged by interpolation
(the stream keeps their place); more than a tenth of the pattern missing is "not found".

Normalised correlation is 1.0 for a perfect copy of the pattern at any scale and baseline. A
match counts only when its peak reaches ``min_ncc`` and no other alignment more than one chip
away comes within ``max_sidelobe`` of it: on a rail whose own activity (radio, background
work) is as large as the beacon, either test fails and the match says why, so the caller falls
back instead of trusting a wrong alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.power.beacon import BeaconPattern

MIN_NCC = 0.6
MAX_SIDELOBE = 0.8  # the best alignment a chip or more away, as a fraction of the peak
GAP_FACTOR = 1.5  # spacings above this many sample periods are missing samples
MAX_MISSING = 0.1  # missing time in a search window, as a fraction of the pattern, bridged


@dataclass(frozen=True)
class BeaconMatch:
    """Where (monitor clock) one beacon began, or why it was not found."""

    device_start: float  # the device's stamp of the pattern start (device clock)
    monitor_start: float | None  # the trace time of the pattern start; None when not found
    ncc: float  # peak normalised correlation of the binned trace (1.0 = a perfect copy)
    sidelobe: float  # the best correlation one chip or more away from the peak
    reason: str = ""  # why it was not found; empty when found

    @property
    def found(self) -> bool:
        return self.monitor_start is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "device_start": self.device_start,
            "monitor_start": self.monitor_start,
            "ncc": round(self.ncc, 4),
            "sidelobe": round(self.sidelobe, 4),
            "reason": self.reason,
        }


def sliding_ncc(x: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised correlation of ``template`` with every full-overlap window of ``x``
    (length ``len(x) - len(template) + 1``); 0 where the window is flat."""
    m = template.size
    if x.size < m:
        return np.empty(0)
    h = template - template.mean()
    h_norm = float(np.sqrt(np.dot(h, h)))
    if h_norm == 0:
        raise ValueError("a flat template cannot be correlated")
    x = x - x.mean()
    size = 1 << int(np.ceil(np.log2(x.size + m)))
    numerator = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(h, size)), size)
    numerator = numerator[: x.size - m + 1]
    sums = np.concatenate(([0.0], np.cumsum(x)))
    squares = np.concatenate(([0.0], np.cumsum(x * x)))
    window_sum = sums[m:] - sums[:-m]
    spread = squares[m:] - squares[:-m] - window_sum * window_sum / m
    spread = np.sqrt(np.maximum(spread, 0.0))
    floor = 1e-9 * max(float(spread.max(initial=0.0)), 1e-12)
    return np.where(spread > floor, numerator / (h_norm * np.maximum(spread, floor)), 0.0)


def _v_fit(y_minus: float, y0: float, y_plus: float) -> float:
    """The offset (-0.5..0.5 samples) of the apex of a symmetric V through three points."""
    low = min(y_minus, y_plus)
    if y0 <= low:
        return 0.0
    return float(np.clip((y_plus - y_minus) / (2.0 * (y0 - low)), -0.5, 0.5))


def _sidelobe(ncc: np.ndarray, peak: int, guard: int) -> float:
    away = np.concatenate((ncc[: max(0, peak - guard)], ncc[peak + guard + 1 :]))
    return float(away.max()) if away.size else 0.0


def find_beacon(
    t: np.ndarray,
    watts: np.ndarray,
    pattern: BeaconPattern,
    device_start: float,
    window: tuple[float, float] | None = None,
    *,
    min_ncc: float = MIN_NCC,
    max_sidelobe: float = MAX_SIDELOBE,
) -> BeaconMatch:
    """Find the beacon the device stamped ``device_start`` in the trace (``t`` in seconds,
    evenly spaced apart from gaps, ``watts``). ``window`` bounds where the pattern may begin
    (monitor clock; e.g. the host's timestamps around the command that ran it, plus a margin);
    None searches the whole trace."""
    t = np.asarray(t, dtype=np.float64)
    watts = np.asarray(watts, dtype=np.float64)
    lo, hi = (-np.inf, np.inf) if window is None else window
    chosen = (t >= lo) & (t < hi + pattern.duration_s)
    t, watts = t[chosen], watts[chosen]

    def missing(reason: str, ncc: float = 0.0, sidelobe: float = 0.0) -> BeaconMatch:
        return BeaconMatch(device_start, None, ncc, sidelobe, reason)

    if t.size < 3:
        return missing(f"the trace has no samples where beacon {device_start:.3f} should be")
    spacing = np.diff(t)
    period = float(np.median(spacing))
    gaps = spacing > GAP_FACTOR * period
    if gaps.any():
        lost_s = float((spacing[gaps] - period).sum())
        if lost_s > MAX_MISSING * pattern.duration_s:
            return missing(
                f"{lost_s * 1e3:.0f} ms of samples missing inside the beacon's search window "
                f"(more than {MAX_MISSING:.0%} of the pattern)"
            )
        # a few dropped packets: bridge them on an even grid (their place is known)
        even = t[0] + np.arange(int(round((t[-1] - t[0]) / period)) + 1) * period
        t, watts = even, np.interp(even, t, watts)
    fine_template = pattern.template(period)
    if t.size < fine_template.size + 2:
        return missing("the trace ends before the beacon could have ended")

    # coarse pass: bins of about a tenth of a chip
    step = max(1, round(pattern.chip_s / 10.0 / period))
    usable = (t.size // step) * step
    binned = watts[:usable].reshape(-1, step).mean(axis=1)
    coarse = sliding_ncc(binned, pattern.template(step * period))
    if coarse.size == 0:
        return missing("the search window is shorter than the beacon")
    coarse_peak = int(np.argmax(coarse))
    guard = int(np.ceil(pattern.chip_s / (step * period)))
    ncc = float(coarse[coarse_peak])
    sidelobe = _sidelobe(coarse, coarse_peak, guard)
    if ncc < min_ncc:
        return missing(
            f"no beacon: peak correlation {ncc:.2f} is below {min_ncc:.2f} "
            "(the rail is too noisy or the beacon did not run)",
            ncc,
            sidelobe,
        )
    if sidelobe > max_sidelobe * ncc:
        return missing(
            f"ambiguous beacon: another alignment correlates {sidelobe:.2f} against the "
            f"peak's {ncc:.2f} (the rail's own activity looks like the pattern)",
            ncc,
            sidelobe,
        )
    # fine pass: full rate, around the coarse peak
    first = max(0, coarse_peak * step - 2 * step)
    last = min(t.size - fine_template.size, coarse_peak * step + 2 * step)
    fine = sliding_ncc(watts[first : last + fine_template.size], fine_template)
    peak = int(np.argmax(fine))
    frac = 0.0
    if 0 < peak < fine.size - 1:
        frac = _v_fit(float(fine[peak - 1]), float(fine[peak]), float(fine[peak + 1]))
    return BeaconMatch(device_start, float(t[first + peak] + frac * period), ncc, sidelobe)


__all__ = ["MAX_SIDELOBE", "MIN_NCC", "BeaconMatch", "find_beacon", "sliding_ncc"]
