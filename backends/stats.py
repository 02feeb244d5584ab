"""Latency statistics, computed one way for every device and runtime."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backends.records import Stats


def summarize(latencies_us: Sequence[float]) -> Stats:
    """Min, mean, median, p90, p99, max, std (population) and CV of a latency sample."""
    if len(latencies_us) == 0:
        raise ValueError("no latencies to summarise: the benchmark produced no timed runs")
    values = np.asarray(latencies_us, dtype=np.float64)
    mean = float(values.mean())
    std = float(values.std())
    p50, p90, p99 = (float(x) for x in np.percentile(values, [50, 90, 99]))
    return Stats(
        count=int(values.size),
        min=float(values.min()),
        mean=mean,
        median=p50,
        p90=p90,
        p99=p99,
        max=float(values.max()),
        std=std,
        cv=std / mean if mean > 0 else 0.0,
    )


def live_median_p90(latencies_us: Sequence[float]) -> tuple[float | None, float | None]:
    """The running median and p90 shown while a job is still measuring."""
    if len(latencies_us) == 0:
        return None, None
    p50, p90 = np.percentile(np.asarray(latencies_us, dtype=np.float64), [50, 90])
    return float(p50), float(p90)
