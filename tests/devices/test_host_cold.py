"""The cold-weights cost of a module (backends/devices/host_cold.py) on real ONNX Runtime."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.core.records import JobSettings
from backends.devices.host import HostSession
from backends.devices.host_cold import (
    BLOCKS,
    MAX_COPIES,
    MIN_BLOCK_CALLS,
    _alternating_medians,
    cold_weights_us,
    copies_for,
    per_core_cache_bytes,
)
from backends.measure.assemble import forward_stats
from backends.measure.rounds import Rounds
from backends.models.intake import load_model, random_inputs
from backends.space.modules import META_UID


def matmul_model(path: Path, side: int, uid: str | None = None) -> Path:
    """x[1,side] @ W[side,side] -> y: ``side * side * 4`` bytes of weights."""
    weights = numpy_helper.from_array(
        np.random.default_rng(0).random((side, side), dtype=np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    if uid:
        helper.set_model_props(model, {META_UID: uid})
    onnx.save(model, path)
    return path


def write_cache_tree(root: Path, caches: list[tuple[int, str, str]]) -> Path:
    for i, (level, kind, size) in enumerate(caches):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
    return root


def test_per_core_cache_is_the_level_below_the_last(tmp_path: Path) -> None:
    root = write_cache_tree(
        tmp_path / "cache",
        [
            (1, "Data", "48K"),
            (1, "Instruction", "32K"),
            (2, "Unified", "2048K"),
            (3, "Unified", "300M"),
        ],
    )
    assert per_core_cache_bytes(root) == 2048 * 1024
    two_levels = write_cache_tree(tmp_path / "two", [(1, "Data", "32K"), (2, "Unified", "1M")])
    assert per_core_cache_bytes(two_levels) == 32 * 1024  # L2 is the last level: L1 is private
    assert per_core_cache_bytes(tmp_path / "absent") is None


def test_per_core_cache_skips_unreadable_entries(tmp_path: Path) -> None:
    root = write_cache_tree(
        tmp_path / "cache", [(1, "Data", "garbage"), (2, "Unified", "512K"), (3, "Unified", "8M")]
    )
    assert per_core_cache_bytes(root) == 512 * 1024


def test_copies_make_twice_the_cache() -> None:
    cache = 2 * 1024 * 1024
    assert copies_for(2 * cache, cache) == 1  # evicts its own weights on every call
    assert copies_for(10 * cache, cache) == 1
    assert copies_for(cache, cache) == 2
    assert copies_for(300_000, cache) == math.ceil(2 * cache / 300_000)
    assert copies_for(1_000, cache) == MAX_COPIES
    assert copies_for(0, cache) == MAX_COPIES


def test_cold_weights_measured_through_rotated_sessions(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "mm.onnx", 256)  # 256 KiB of weights
    feeds = {"x": np.ones((1, 256), dtype=np.float32)}
    weight_bytes = 256 * 256 * 4
    value = cold_weights_us(str(path), feeds, 1, weight_bytes, cache_bytes=weight_bytes)
    assert value is not None and math.isfinite(value) and value >= 0.0
    # weights at twice the cache: the hot loop is the cold one, nothing to add, nothing run
    assert cold_weights_us(str(path), feeds, 1, weight_bytes, cache_bytes=weight_bytes // 2) == 0.0


def test_cold_weights_of_an_unloadable_source_is_none(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    feeds = {"x": np.ones((1, 4), dtype=np.float32)}
    assert cold_weights_us(str(broken), feeds, 1, 100, cache_bytes=1024) is None


def test_only_modules_get_the_cold_term(tmp_path: Path) -> None:
    module = load_model(matmul_model(tmp_path / "module.onnx", 128, uid="MatMul[out=128][[1,128]]"))
    whole = load_model(matmul_model(tmp_path / "whole.onnx", 128))
    assert module.uid == "MatMul[out=128][[1,128]]" and whole.uid is None

    module_session = HostSession(module, threads=1)
    whole_session = HostSession(whole, threads=1)
    cold = module_session.info.cold_weights_us
    assert cold is not None and cold >= 0.0
    assert whole_session.info.cold_weights_us is None

    # Forward Propagate: every timed run less the call cost plus the cold term
    timed = module_session.run(50, None, lambda done, so_far: None)
    latencies = timed.latencies_us
    rounds = Rounds()
    rounds.add(timed)
    stats = rounds.stats(JobSettings().round_stat)
    forward = forward_stats(rounds, stats, module_session.info, None)
    call = module_session.info.call_cost_us
    assert forward is not None and call is not None
    assert forward.median == pytest.approx(max(stats.median - call + cold, 0.0))
    assert forward.max == pytest.approx(max(max(latencies) - call + cold, 0.0))
    assert random_inputs(module).keys() == {"x"}


def test_a_slow_models_blocks_stop_at_the_cap() -> None:
    """A 50 ms call: each block ends after its few minimum calls, not after 40 of them."""
    calls: list[int] = []

    def slow(copy: int) -> Callable[[object, object], None]:  # session.run taking 50 ms
        def run(_outputs: object, _feeds: object) -> None:
            calls.append(copy)
            time.sleep(0.05)

        return run

    alone_us, rotated_us = _alternating_medians([slow(0), slow(1), slow(2)], {})
    assert len(calls) == BLOCKS * MIN_BLOCK_CALLS  # 3 calls of 50 ms pass the 0.1 s cap
    assert set(calls) == {0, 1, 2}  # the rotation went through every copy
    assert alone_us >= 50_000 and rotated_us >= 50_000
