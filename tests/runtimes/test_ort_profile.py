"""The one ONNX Runtime trace reader (backends.runtimes.ort_profile) on a real profiler trace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from backends.runtimes.ort_profile import KernelTime, OrtProfile, read_ort_profile
from support.records import MODELS_DIR

RUNS = 4


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A trace of ``RUNS`` inferences of the sample MLP, written by ONNX Runtime itself."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path_factory.mktemp("profile") / "mlp")
    session = ort.InferenceSession(
        str(MODELS_DIR / "mlp.onnx"), options, providers=["CPUExecutionProvider"]
    )
    feeds = {
        spec.name: np.ones([d if isinstance(d, int) else 1 for d in spec.shape], np.float32)
        for spec in session.get_inputs()
    }
    for _ in range(RUNS):
        session.run(None, feeds)
    return session.end_profiling()


def events_of(trace: str) -> list[dict]:
    return json.loads(Path(trace).read_text(encoding="utf-8"))


def model_runs(events: list[dict]) -> list[tuple[float, float]]:
    return sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )


def test_every_run_and_kernel_of_a_real_trace(trace: str) -> None:
    events = events_of(trace)
    profile = read_ort_profile(trace)
    assert profile.path == trace
    assert profile.runs == model_runs(events)
    assert len(profile.runs) == RUNS
    kernel_events = [e for e in events if e.get("name", "").endswith("_kernel_time")]
    assert [k.dur_us for k in profile.kernels] == [float(e["dur"]) for e in kernel_events]
    assert all(k.run is not None for k in profile.kernels)  # every node ran inside a run
    nodes = {k.node for k in profile.kernels}
    assert nodes and not any(node.endswith("_kernel_time") for node in nodes)
    assert all(k.op_type for k in profile.kernels)  # ONNX Runtime names each op type
    # every node runs once per inference, each kernel inside its own run's window
    assert len(profile.kernels) == RUNS * len(nodes)
    for kernel in profile.kernels:
        start, end = profile.runs[kernel.run]
        assert start <= kernel.ts_us <= end
        assert profile.offset_us(kernel) == kernel.ts_us - start
    assert len(profile.executor_us) == RUNS


def test_skipped_runs_leave_their_kernels_unattributed(trace: str) -> None:
    every = read_ort_profile(trace)
    skipped = read_ort_profile(trace, skip_runs=1)
    assert skipped.runs == every.runs[1:]
    assert len(skipped.executor_us) == RUNS - 1
    assert skipped.executor_us == every.executor_us[1:]
    first_run = [k for k in every.kernels if k.run == 0]
    assert [k for k in skipped.kernels if k.run is None] == [
        KernelTime(k.node, k.op_type, k.ts_us, k.dur_us, None) for k in first_run
    ]
    assert len(skipped.in_runs()) == (RUNS - 1) * len(first_run)


def test_layer_times_and_layers_time_per_run(trace: str) -> None:
    profile = read_ort_profile(trace, skip_runs=1)
    kept = profile.in_runs()
    layers = profile.layer_times()
    assert [layer.name for layer in layers] == list(dict.fromkeys(k.node for k in kept))
    for layer in layers:
        times = [k.dur_us for k in kept if k.node == layer.name]
        assert len(times) == RUNS - 1
        assert layer.mean_us == pytest.approx(np.mean(times))
        assert layer.op_type == next(k.op_type for k in kept if k.node == layer.name)
    per_run = profile.layers_us()
    assert len(per_run) == RUNS - 1
    for index, total in enumerate(per_run):
        assert total == pytest.approx(sum(k.dur_us for k in kept if k.run == index))


def test_a_trace_without_kernels_has_no_layers_time(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(json.dumps([{"cat": "Session", "name": "model_run", "ts": 0, "dur": 5}]))
    profile = read_ort_profile(str(path))
    assert profile == OrtProfile(path=str(path), runs=[(0.0, 5.0)])
    assert profile.layers_us() == [] and profile.layer_times() == []
