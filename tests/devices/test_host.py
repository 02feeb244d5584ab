"""host:cpu through real ONNX Runtime: discovery, timed rounds, min_seconds, per-layer profiling."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState, Model
from backends.core.store import Store
from backends.devices.base import ort_layer_profile
from backends.devices.host import (
    HOST_DEVICE_ID,
    ORT_RUNTIME,
    HostBackend,
    HostSession,
)
from backends.models.intake import load_model
from backends.runtimes.ort_session import session_options
from support.records import MODELS_DIR

WAIT_S = 60.0


@pytest.fixture
def host_lab(tmp_path: Path) -> Iterator[Lab]:
    store = Store(tmp_path / "out" / "devlab.db")
    lab = Lab(store, backends=[HostBackend()])
    lab.discover()
    lab.start()
    yield lab
    lab.shutdown(interrupt=True, timeout=10)
    store.close()


def tiny_model_path(directory: Path) -> Path:
    """x[1,4] -> Relu (relu1) -> Sigmoid (sig1) -> y[1,4]."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu1"),
            helper.make_node("Sigmoid", ["h"], ["y"], name="sig1"),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    path = directory / "tiny.onnx"
    onnx.save(model, path)
    return path


def test_discover_gives_host_cpu_with_properties() -> None:
    devices = HostBackend().discover()

    assert [device.id for device in devices] == [HOST_DEVICE_ID]
    device = devices[0]
    assert device.kind == "host"
    assert device.runtimes == [ORT_RUNTIME]
    props = device.properties
    assert isinstance(props["cpu_model"], str) and props["cpu_model"]
    assert props["cores"] == os.cpu_count()
    assert props["onnxruntime"] == ort.__version__


def test_lab_measures_mlp_in_rounds(host_lab: Lab) -> None:
    model = load_model(MODELS_DIR / "mlp.onnx")
    job = host_lab.submit(
        model,
        HOST_DEVICE_ID,
        settings=JobSettings(warmup=2, runs=20, rounds=2, precision_pct=0, min_round_s=0),
    )

    assert host_lab.wait_until_idle(timeout=WAIT_S)
    stored = host_lab.store.job(job.id)
    assert stored.state is JobState.DONE, stored.error
    assert stored.runtime == ORT_RUNTIME
    result = host_lab.store.result(job.id)
    assert len(result.latencies_us) == 20
    assert all(latency > 0 for latency in result.latencies_us)
    assert result.round_sizes == [10, 10]
    assert len(result.round_medians_us) == 2
    assert result.round_medians_us[0] == pytest.approx(np.median(result.latencies_us[:10]))
    assert result.round_medians_us[1] == pytest.approx(np.median(result.latencies_us[10:]))
    assert result.load_us > 0
    assert result.first_inference_us > 0
    stats = result.stats
    assert stats.count == 20
    assert stats.min <= stats.median <= stats.max
    assert stats.min == min(result.latencies_us)
    assert stats.max == max(result.latencies_us)
    assert result.tool_version == ort.__version__
    assert result.device_properties["onnxruntime"] == ort.__version__
    assert result.layers == []
    # the forward time: every timed run less the per-call cost of a null model, every job
    assert 0 < result.call_cost_us < stats.median
    forward = result.forward_stats
    assert forward is not None and forward.count == 20
    assert forward.median == pytest.approx(stats.median - result.call_cost_us)
    assert forward.min == pytest.approx(stats.min - result.call_cost_us)


def test_lab_measures_for_min_seconds(host_lab: Lab) -> None:
    model = load_model(MODELS_DIR / "mlp.onnx")
    settings = JobSettings(warmup=1, runs=None, min_seconds=0.3, rounds=1, precision_pct=0)
    job = host_lab.submit(model, HOST_DEVICE_ID, settings=settings)

    assert host_lab.wait_until_idle(timeout=WAIT_S)
    assert host_lab.store.job(job.id).state is JobState.DONE
    result = host_lab.store.result(job.id)
    assert len(result.latencies_us) >= 1
    assert result.round_sizes == [len(result.latencies_us)]
    assert result.stats.count == len(result.latencies_us)


def test_host_session_min_seconds_runs_until_the_deadline() -> None:
    session = HostSession(load_model(MODELS_DIR / "mlp.onnx"), threads=1)
    calls: list[tuple[int, int]] = []
    started = time.perf_counter_ns()

    latencies = session.run(
        None, 0.2, lambda done, so_far: calls.append((done, time.perf_counter_ns()))
    ).latencies_us

    assert len(latencies) >= 1
    assert [done for done, _ in calls] == list(range(1, len(latencies) + 1))
    # the loop only stops once an iteration ended past start + min_seconds
    assert calls[-1][1] - started >= 0.2e9
    session.close()


def test_host_session_runs_exactly_the_iterations_asked() -> None:
    session = HostSession(load_model(MODELS_DIR / "mlp.onnx"), threads=1)
    seen: list[int] = []

    latencies = session.run(7, None, lambda done, so_far: seen.append(len(so_far))).latencies_us

    assert len(latencies) == 7
    assert seen == [1, 2, 3, 4, 5, 6, 7]
    session.close()


def test_rounds_sized_by_time_give_a_tiny_model_many_samples(host_lab: Lab) -> None:
    """With ``min_round_s`` every round runs at least that long and at least its planned
    runs: a ~20 us model gets thousands of samples instead of 5 per round."""
    model = load_model(MODELS_DIR / "mlp.onnx")
    settings = JobSettings(warmup=2, runs=10, rounds=2, precision_pct=0, min_round_s=0.1)
    job = host_lab.submit(model, HOST_DEVICE_ID, settings=settings)

    assert host_lab.wait_until_idle(timeout=WAIT_S)
    result = host_lab.store.result(job.id)
    assert result is not None, host_lab.store.job(job.id).error
    assert len(result.round_sizes) == 2 and min(result.round_sizes) > 100
    start = 0
    for size in result.round_sizes:
        # the round's own runs fill most of its 0.1 s (the rest is the clock and the loop)
        assert sum(result.latencies_us[start : start + size]) > 0.05e6
        start += size
    assert result.stats.count == sum(result.round_sizes)


def test_per_layer_profile_of_mnv2_cifar32(host_lab: Lab, tmp_path: Path) -> None:
    model = load_model(MODELS_DIR / "mnv2_cifar32.onnx")
    settings = JobSettings(
        warmup=1, runs=6, rounds=2, per_layer=True, profile_runs=3, precision_pct=0, min_round_s=0
    )
    job = host_lab.submit(model, HOST_DEVICE_ID, settings=settings)

    assert host_lab.wait_until_idle(timeout=WAIT_S)
    stored = host_lab.store.job(job.id)
    assert stored.state is JobState.DONE, stored.error
    result = host_lab.store.result(job.id)
    assert len(result.latencies_us) == 6, "profiling must not add timed runs"
    assert result.round_sizes == [3, 3]
    op_types = {layer.op_type for layer in result.layers}
    assert "Conv" in op_types
    assert all(layer.mean_us >= 0 for layer in result.layers)
    assert result.layers_stats is not None
    assert result.layers_stats.count == 3
    # Forward Propagate comes from the timed runs less the call cost, not the profiled pass
    assert result.forward_stats is not None
    assert result.forward_stats.count == 6
    assert result.raw_log_path is not None
    raw = Path(result.raw_log_path)
    assert raw.is_file()
    assert raw.is_relative_to(tmp_path)
    assert isinstance(json.loads(raw.read_text()), list)


def test_unloadable_model_fails_the_job_with_the_path(host_lab: Lab, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    model = Model(path=str(garbage), name="garbage", sha256="0" * 64)
    settings = JobSettings(warmup=0, runs=2, precision_pct=0)
    job = host_lab.submit(model, HOST_DEVICE_ID, settings=settings)

    assert host_lab.wait_until_idle(timeout=WAIT_S)
    stored = host_lab.store.job(job.id)
    assert stored.state is JobState.FAILED
    assert str(garbage) in stored.error
    assert "cannot load" in stored.error


def test_ort_layer_profile_of_a_real_trace(tmp_path: Path) -> None:
    options = session_options(threads=1, profile_prefix=str(tmp_path / "tiny_profile"))
    session = ort.InferenceSession(
        str(tiny_model_path(tmp_path)), options, providers=["CPUExecutionProvider"]
    )
    feeds = {"x": np.array([[-1.0, 0.0, 1.0, 2.0]], dtype=np.float32)}
    for _ in range(4):
        session.run(None, feeds)
    trace = session.end_profiling()
    events = json.loads(Path(trace).read_text())
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    assert len(runs) == 4

    def node_times(name: str, kept_runs: list[tuple[int, int]]) -> list[float]:
        return [
            float(e["dur"])
            for e in events
            if e.get("name") == f"{name}_kernel_time"
            and any(start <= e["ts"] <= end for start, end in kept_runs)
        ]

    every = ort_layer_profile(trace)
    assert {(layer.name, layer.op_type) for layer in every.layers} == {
        ("relu1", "Relu"),
        ("sig1", "Sigmoid"),
    }
    assert every.layers_stats.count == 4
    assert every.forward_stats.count == 4
    assert every.raw_log_path == trace

    skipped = ort_layer_profile(trace, skip_runs=1)
    assert skipped.layers_stats.count == 3
    assert skipped.forward_stats.count == 3
    means = {layer.name: layer.mean_us for layer in skipped.layers}
    for name in ("relu1", "sig1"):
        expected = node_times(name, runs[1:])
        assert len(expected) == 3
        assert means[name] == pytest.approx(np.mean(expected))
    per_run = [sum(node_times("relu1", [run]) + node_times("sig1", [run])) for run in runs[1:]]
    assert skipped.layers_stats.mean == pytest.approx(np.mean(per_run))
    assert skipped.layers_stats.max == pytest.approx(max(per_run))
