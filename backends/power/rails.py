"""Energy per inference from a board's own power rails (a Jetson's tegrastats, sampled by its
agent), measured like a Monsoon capture: an idle baseline right before the timed window, then
the timed window itself, net of the baseline, divided by the iterations.

The agent sends (``extras["power"]`` of its job, see ``backends.agent.tegrastats_sampler``)::

    {"source": "tegrastats", "rail": "VDD_IN", "interval_ms": 100,
     "t": [epoch s…], "mw": [board mW…], "rails": {"VDD_IN": [mW…], …},
     "baseline_window": [start, end], "timed_windows": [[start, end], …], "iterations": N}

all on the board's clock. The samples go into a trace file like a Monsoon's (``t_s, amps,
volts, watts``; amps and volts unknown, so NaN), and the windows are measured with
:func:`backends.power.trace.window_stats`, each sample standing for one interval. Several timed
windows (one per trtexec round) add up; the gaps between them are not counted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from backends.core.events import PowerSamples
from backends.power.capture import EnergyReading
from backends.power.trace import TraceWriter, window_stats


class RailDataError(ValueError):
    """The rail samples a device sent cannot be measured; the message says what is wrong."""


def rail_energy(power: Any, trace: Path) -> EnergyReading:
    """The job's ``Result.power`` from a device's rail samples (the trace is written to
    ``trace``). Unusable samples give a reading with a warning, never an exception: the
    latencies of the job stand."""
    partial: dict[str, Any] = {"source": _source(power), "trace_path": str(trace)}
    try:
        t, mw, baseline, windows, iterations, interval_s = _checked(power)
    except RailDataError as error:
        return EnergyReading(partial, f"energy not measured: {error}")
    trace.parent.mkdir(parents=True, exist_ok=True)
    nan = np.full(len(t), np.nan)
    with TraceWriter(trace) as writer:
        writer.write_arrays(np.asarray(t), nan, nan, np.asarray(mw) / 1000.0)
    baseline_w, _, baseline_samples = window_stats(trace, *baseline, interval_s=interval_s)
    energy_j, duration, samples, covered = 0.0, 0.0, 0, 0.0
    for start, end in windows:
        mean_w, energy, count = window_stats(trace, start, end, interval_s=interval_s)
        energy_j += energy
        duration += end - start
        samples += count
        if math.isfinite(mean_w) and mean_w > 0:
            covered += energy / mean_w
    if not math.isfinite(baseline_w) or covered <= 0:
        which = "baseline" if not math.isfinite(baseline_w) else "timed"
        return EnergyReading(
            {**partial, "samples": samples},
            f"energy not measured: the {which} window holds no rail sample ({trace})",
        )
    net_j = energy_j - baseline_w * duration
    reading = {
        "source": partial["source"],
        "rail": str(power.get("rail") or "board"),
        "mean_w": energy_j / covered,
        "baseline_w": baseline_w,
        "energy_j": energy_j,
        "net_energy_j": net_j,
        "energy_per_inference_mj": net_j / iterations * 1000.0,
        "window_s": duration,
        "baseline_window": list(baseline),
        "timed_window": [windows[0][0], windows[-1][1]],
        "timed_windows": [list(w) for w in windows],
        "samples": samples,
        "baseline_samples": baseline_samples,
        "interval_ms": interval_s * 1000.0,
        "dropped": 0,
        "trace_path": str(trace),
        "rails_mean_w": _rails_mean_w(power, t, windows, interval_s),
    }
    warning = None
    if duration < 2 * interval_s:
        warning = (
            f"the timed window ({duration * 1000:.0f} ms) is shorter than two rail samples "
            f"({interval_s * 1000:.0f} ms apart): the energy per inference is coarse; "
            "run more iterations or sample faster"
        )
    return EnergyReading(reading, warning)


def rail_monitor_id(device_id: str) -> str:
    """The Power view's name of a board's own rail: ``tegrastats:<device id>``."""
    return f"tegrastats:{device_id}"


def rail_batch(device_id: str, power: Any) -> PowerSamples | None:
    """The board rail's samples of one job as a ``PowerSamples`` batch for the Power view (the
    agent sends them with the job's result, so the view shows each job's trace when it ends),
    or None when they are unusable (``rail_energy`` says why)."""
    try:
        t, mw, _, _, _, interval_s = _checked(power)
    except RailDataError:
        return None
    return PowerSamples(
        monitor_id=rail_monitor_id(device_id),
        t0=float(t[0]),
        interval_s=interval_s,
        watts=tuple(float(value) / 1000.0 for value in mw),
    )


def _source(power: Any) -> str:
    return str(power.get("source") or "device rails") if isinstance(power, dict) else "unknown"


def _checked(power: Any) -> tuple:
    if not isinstance(power, dict):
        raise RailDataError(f"the device's power report is not an object: {power!r:.80}")
    t, mw = power.get("t"), power.get("mw")
    if not isinstance(t, list) or not isinstance(mw, list) or len(t) != len(mw):
        raise RailDataError("the device's power report needs t and mw lists of equal length")
    if not t:
        raise RailDataError("the device sent no rail sample")
    if not all(_finite(x) for x in t) or not all(_finite(x) and x >= 0 for x in mw):
        raise RailDataError("the device's rail samples hold a value that is not a number")
    if any(b < a for a, b in zip(t, t[1:], strict=False)):
        raise RailDataError("the device's rail samples are not in time order")
    baseline = _window(power.get("baseline_window"), "baseline_window")
    raw = power.get("timed_windows")
    if not isinstance(raw, list) or not raw:
        raise RailDataError("the device's power report has no timed_windows")
    windows = [_window(w, "timed_windows") for w in raw]
    iterations = power.get("iterations")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise RailDataError(f"the device's power report has no iteration count: {iterations!r}")
    interval = power.get("interval_ms")
    if not _finite(interval) or interval <= 0:
        raise RailDataError(f"the device's power report has no sample interval: {interval!r}")
    return t, mw, baseline, windows, iterations, float(interval) / 1000.0


def _window(value: Any, name: str) -> tuple[float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_finite(x) for x in value)
        or value[1] < value[0]
    ):
        raise RailDataError(f"{name} must be [start, end] with start <= end, got {value!r:.80}")
    return float(value[0]), float(value[1])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rails_mean_w(power: dict, t: list, windows: list, interval_s: float) -> dict[str, float]:
    """Each rail's mean over the samples whose interval overlaps a timed window (W)."""
    stamps = np.asarray(t, dtype=np.float64)
    inside = np.zeros(len(stamps), dtype=bool)
    for start, end in windows:
        inside |= (stamps + interval_s > start) & (stamps < end)
    means = {}
    for name, values in (power.get("rails") or {}).items():
        if isinstance(values, list) and len(values) == len(t) and inside.any():
            selected = np.asarray(values, dtype=np.float64)[inside]
            means[str(name)] = float(selected.mean()) / 1000.0
    return means
