"""What one call costs when the model's weights are out of the core's own cache, as in a network.

A module timed alone runs its loop with its weights hot in the core's private (L2) cache.
Inside a network whose weights exceed that cache, every module reads its weights from the
shared cache or memory instead. On the CIFAR-10 MobileNetV2 space on a 2 MiB-L2 host, the
blocks with ~1 MB of weights cost 10-25 us more inside a network than alone (timed as
prefixes of the network), which left the sum of the isolated modules' forward times 10 %
short of the whole models.

So besides the hot loop the host times the model through K copies of its session in turn
(K chosen so that the copies' weights are twice the per-core cache: each copy's weights have
left that cache when its turn comes back). The copies share one activation arena, so the
activations and the runtime's state stay warm as they do in a network; only the weights go
cold. The median of that rotation less the median of one copy alone, timed in alternating
blocks so that the host's drift hits both, is ``cold_weights_us``; the Forward Propagate row
adds it. A model whose weights alone are twice the cache evicts them itself on every call:
its hot loop is already cold and nothing is added.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from backends.runtimes.ort_session import session_options

DEFAULT_CACHE_BYTES = 2 * 1024 * 1024  # a typical per-core L2 where the OS does not say
MAX_COPIES = 16
BLOCKS = 6  # alternating blocks of the rotation and of one copy alone
BLOCK_CALLS = 40  # calls per block, and at least BLOCK_SECONDS of them ...
BLOCK_SECONDS = 0.01
BLOCK_CAP_SECONDS = 0.1  # ... but a slow model's block ends here, after MIN_BLOCK_CALLS
MIN_BLOCK_CALLS = 3
SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")

_shared_arena: list[bool] = []  # registered once per process (ONNX Runtime refuses twice)


def per_core_cache_bytes(root: Path = SYSFS_CACHE) -> int | None:
    """The size of the largest cache of CPU 0 below the last level (Linux sysfs), or None."""
    sizes: dict[int, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text().strip())
            kind = (index / "type").read_text().strip()
            size = _bytes((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified"):
            sizes[level] = max(size, sizes.get(level, 0))
    if len(sizes) < 2:  # one level only: no private cache can be told from the shared one
        return sizes.get(2)
    return sizes[sorted(sizes)[-2]]


def _bytes(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def copies_for(weight_bytes: int, cache_bytes: int) -> int:
    """How many session copies to rotate so that their weights are twice ``cache_bytes``;
    1 (no rotation) when the model's own weights already are."""
    if weight_bytes >= 2 * cache_bytes:
        return 1
    return max(2, min(MAX_COPIES, math.ceil(2 * cache_bytes / max(weight_bytes, 1))))


def _shared_arena_options(threads: int | None) -> ort.SessionOptions | None:
    """Options whose sessions allocate from one process-wide arena, or None where this ONNX
    Runtime cannot register one."""
    if not _shared_arena:
        try:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(info, None)
        except Exception:  # an older ORT without the API: no measurement
            return None
        _shared_arena.append(True)
    options = session_options(threads)
    options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def cold_weights_us(
    source: str | bytes,
    feeds: Mapping[str, Any],
    threads: int | None,
    weight_bytes: int,
    cache_bytes: int | None = None,
) -> float | None:
    """The extra median time of a call whose weights are out of the per-core cache (>= 0);
    0.0 when the weights alone overflow it, None where it cannot be measured."""
    copies = copies_for(weight_bytes, cache_bytes or per_core_cache_bytes() or DEFAULT_CACHE_BYTES)
    if copies == 1:
        return 0.0
    options = _shared_arena_options(threads)
    if options is None:
        return None
    try:
        sessions = [
            ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            for _ in range(copies)
        ]
        for session in sessions:
            session.run(None, dict(feeds))
    except Exception:  # the main session loaded; only this extra is lost
        return None
    runs = [session.run for session in sessions]
    alone, rotated = _alternating_medians(runs, dict(feeds))
    return max(rotated - alone, 0.0)


def _alternating_medians(
    runs: list[Callable[..., Any]], feeds: dict[str, Any]
) -> tuple[float, float]:
    """Medians (us) of ``runs[0]`` alone and of ``runs`` in turn, in alternating blocks."""
    clock = time.perf_counter_ns
    alone: list[int] = []
    rotated: list[int] = []
    for block in range(BLOCKS):
        samples = alone if block % 2 == 0 else rotated
        began = clock()
        deadline, cap = began + int(BLOCK_SECONDS * 1e9), began + int(BLOCK_CAP_SECONDS * 1e9)
        calls = 0
        while True:
            run = runs[0] if samples is alone else runs[calls % len(runs)]
            start = clock()
            run(None, feeds)
            end = clock()
            samples.append(end - start)
            calls += 1
            if calls >= MIN_BLOCK_CALLS and (
                (calls >= BLOCK_CALLS and end >= deadline) or end >= cap
            ):
                break
    return statistics.median(alone) / 1e3, statistics.median(rotated) / 1e3
