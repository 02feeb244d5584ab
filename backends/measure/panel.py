"""Two drift references instead of one: a model is normalised by the reference it moves with.

The small canary (180 kB of weights, in a core's L2) tracks what slows arithmetic: a busy
sibling, a lower clock. It does not slow down when a neighbour takes the shared last-level
cache or memory bandwidth, and a model that streams megabytes of weights every run does. On
this kind of host (2 vCPUs of a shared Xeon) the sample search-space models (1-10 MB of
weights, 1-2 ms) slowed 7-10% between two passes while the small canary stayed flat, and in
another run the canary slowed 1.5x while the models slowed 1.4x. Measured over the same
seconds, the large reference (``canary_large.onnx``, 4.4 MB of weights) followed those models
to within about 2%, the small canary to within about 4%; the smallest model (an MLP of 16 us)
followed neither and the small canary least badly.

So each round pairs the model with both references and the model is divided by a geometric
blend of the two, weighted by where the model's latency falls between theirs (log scale,
clamped): a model as fast as the small canary or faster uses it alone, one as slow as the large
reference or slower uses that alone. Latency, not file size, sets the weight because every
runtime reports it (a DLC or a compiled blob has no comparable size) and it grows with both
weights and activations.

The blend is expressed as one *effective canary* per round on the small canary's scale, so
``canary.normalise_rounds`` and the rest of the pipeline stay as they are:

    effective_i = S x (small_i / S) ** (1 - w) x (large_i / L) ** w

with S and L the two references' long-run medians on this device.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def large_weight(model_us: float, small_us: float, large_us: float) -> float:
    """How much of the large reference a model moves with: 0 at or below the small canary's
    latency, 1 at or above the large one's, log-linear between. Without a usable spread
    between the two references (the large one not clearly slower), the small canary alone."""
    values = (model_us, small_us, large_us)
    if not all(math.isfinite(v) and v > 0 for v in values) or large_us <= small_us * 1.2:
        return 0.0
    share = math.log(model_us / small_us) / math.log(large_us / small_us)
    return min(1.0, max(0.0, share))


def effective_canaries(
    small: Sequence[float],
    large: Sequence[float],
    weight: float,
    small_scale: float,
    large_scale: float,
) -> list[float]:
    """Per round, the blended reference on the small canary's scale (see the module doc)."""
    if len(small) != len(large):
        raise ValueError(f"{len(small)} small-canary rounds but {len(large)} large-reference ones")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the large reference's weight must be in [0, 1], not {weight}")
    for name, value in (("small scale", small_scale), ("large scale", large_scale)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of microseconds, not {value}")
    return [
        small_scale * (s / small_scale) ** (1.0 - weight) * (g / large_scale) ** weight
        for s, g in zip(small, large, strict=True)
    ]


def blended_canaries(
    round_medians: Sequence[float],
    small: Sequence[float | None],
    large: Sequence[float | None],
    small_history: Sequence[float] = (),
    large_history: Sequence[float] = (),
) -> tuple[list[float | None], float | None]:
    """The rounds' effective canaries and the large reference's weight; the small canaries
    unchanged (and weight None) unless every round has both references. The scales are the
    histories' medians (the device's long-run pace), else this job's own."""
    if not (small and len(small) == len(large) == len(round_medians)):
        return list(small), None
    if any(v is None for v in small) or any(v is None for v in large):
        return list(small), None
    small_values = [float(v) for v in small if v is not None]
    large_values = [float(v) for v in large if v is not None]
    weight = large_weight(
        statistics.median(round_medians),
        statistics.median(small_values),
        statistics.median(large_values),
    )
    small_scale = statistics.median(small_history or small_values)
    large_scale = statistics.median(large_history or large_values)
    blended = effective_canaries(small_values, large_values, weight, small_scale, large_scale)
    return list(blended), weight
