"""Latency statistics, computed one way for every device and runtime."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backends.core.records import Stats


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


def merge_summaries(parts: Sequence[Stats]) -> Stats:
    """Combine the statistics a tool printed for each round into one summary.

    Count, min, max and mean are exact; std is pooled (within and between rounds). The
    median is the median of the round medians and p90/p99 the count-weighted mean of the
    rounds' values: exact for one round, an approximation for several (documented).
    """
    if not parts:
        raise ValueError("no round statistics to combine")
    if len(parts) == 1:
        return parts[0]
    counts = np.asarray([p.count for p in parts], dtype=np.float64)
    total = float(counts.sum())
    means = np.asarray([p.mean for p in parts])
    mean = float((counts * means).sum() / total)

    def weighted(values: list[float | None]) -> float | None:
        if any(v is None for v in values):
            return None
        return float((counts * np.asarray(values, dtype=np.float64)).sum() / total)

    std = None
    if all(p.std is not None for p in parts):
        within = sum(c * p.std**2 for c, p in zip(counts, parts, strict=True))
        between = float((counts * (means - mean) ** 2).sum())
        std = float(np.sqrt((within + between) / total))
    medians = [p.median for p in parts]
    return Stats(
        count=int(total),
        min=min(p.min for p in parts),
        mean=mean,
        median=None if None in medians else float(np.median(medians)),
        p90=weighted([p.p90 for p in parts]),
        p99=weighted([p.p99 for p in parts]),
        max=max(p.max for p in parts),
        std=std,
        cv=std / mean if std is not None and mean > 0 else None,
    )


def live_median_p90(latencies_us: Sequence[float]) -> tuple[float | None, float | None]:
    """The running median and p90 shown while a job is still measuring."""
    if len(latencies_us) == 0:
        return None, None
    p50, p90 = np.percentile(np.asarray(latencies_us, dtype=np.float64), [50, 90])
    return float(p50), float(p90)
