"""Tests for backends.measure.parity: a faithful runtime passes, a perturbed model is flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.measure.parity import (
    REDUCED_PRECISION,
    ParityError,
    compare_outputs,
    parity_inputs,
    reference_outputs,
)
from backends.models.intake import load_model, random_inputs

MODELS_DIR = Path(__file__).resolve().parents[2] / "assets" / "models"


def conv_classifier(path: Path, scale_conv1: float = 1.0, noise: float = 0.0) -> Path:
    """conv3x3 -> relu -> conv3x3/2 -> relu -> global pool -> gemm: a [1, 10] classifier.

    The weights come from a fixed seed; ``scale_conv1`` multiplies the first conv's weights
    and ``noise`` adds Gaussian noise of that many weight standard deviations to the second.
    """
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.15
    fc = rng.standard_normal((10, 16)).astype(np.float32) * 0.25
    b1 = np.full(8, 0.01, np.float32)
    b2 = np.full(16, 0.01, np.float32)
    bfc = np.zeros(10, np.float32)
    w1 = (w1 * scale_conv1).astype(np.float32)
    if noise:
        w2 = w2 + np.random.default_rng(1).standard_normal(w2.shape) * noise * w2.std()
        w2 = w2.astype(np.float32)
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "bfc"], ["logits"], transB=1),
    ]
    weights = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "fc": fc, "bfc": bfc}
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def run_ort(path: Path, feeds: dict[str, np.ndarray], optimise: bool, threads: int) -> list:
    """Another float32 runtime configuration: optimisation level and threads of our choice."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimise
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    return conv_classifier(tmp_path / "net.onnx")


# --- models through ONNX Runtime ------------------------------------------------------------


def test_parity_inputs_are_fixed_and_deterministic(classifier: Path) -> None:
    model = load_model(classifier)
    first, second = parity_inputs(model), parity_inputs(model)
    assert list(first) == ["x"] and first["x"].shape == (1, 3, 16, 16)
    assert np.array_equal(first["x"], second["x"])
    assert not np.array_equal(first["x"], random_inputs(model)["x"])  # not the timing feeds


def test_a_faithful_runtime_configuration_passes(classifier: Path) -> None:
    """Same weights, no graph optimisation, two threads: other kernels, same numbers."""
    feeds = parity_inputs(load_model(classifier))
    reference = reference_outputs(classifier, feeds)
    report = compare_outputs(reference, run_ort(classifier, feeds, optimise=False, threads=2))
    assert report.ok, report.reason
    assert report.reason == ""
    assert report.top1_agree is True
    assert report.cosine > 0.99999
    assert report.max_rel_diff < 1e-5
    assert report.outputs == 1


@pytest.mark.parametrize("name", ["mnv2_cifar32", "mlp"])
def test_sample_models_pass_against_another_float32_configuration(name: str) -> None:
    path = MODELS_DIR / f"{name}.onnx"
    feeds = parity_inputs(load_model(path))
    report = compare_outputs(
        reference_outputs(path, feeds), run_ort(path, feeds, optimise=False, threads=2)
    )
    assert report.ok, report.reason


def test_a_conv_weight_scaled_by_five_percent_is_flagged(tmp_path: Path) -> None:
    faithful = conv_classifier(tmp_path / "net.onnx")
    perturbed = conv_classifier(tmp_path / "perturbed.onnx", scale_conv1=1.05)
    feeds = parity_inputs(load_model(faithful))
    report = compare_outputs(
        reference_outputs(faithful, feeds), run_ort(perturbed, feeds, optimise=True, threads=1)
    )
    assert not report.ok
    assert report.reason.startswith("outputs differ: max |diff| ")
    assert "cosine" in report.reason
    assert report.max_rel_diff is not None and 0.02 < report.max_rel_diff < 0.2


def test_weights_with_noise_are_flagged(tmp_path: Path) -> None:
    faithful = conv_classifier(tmp_path / "net.onnx")
    noisy = conv_classifier(tmp_path / "noisy.onnx", noise=0.05)
    feeds = parity_inputs(load_model(faithful))
    report = compare_outputs(reference_outputs(faithful, feeds), reference_outputs(noisy, feeds))
    assert not report.ok
    assert report.max_abs_diff is not None and report.max_abs_diff > 1e-3


def test_the_host_reference_names_the_file_it_cannot_run(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ParityError, match="broken.onnx: host ONNX Runtime cannot run"):
        reference_outputs(broken, {"x": np.zeros((1, 3), np.float32)})


# --- compare_outputs on arrays ---------------------------------------------------------------


def logits(values: list[float]) -> np.ndarray:
    return np.asarray([values], dtype=np.float32)


def test_identical_outputs_are_ok_with_exact_figures() -> None:
    out = [logits([0.1, 2.0, -1.0]), np.ones((1, 4, 2, 2), np.float32)]
    report = compare_outputs(out, [a.copy() for a in out])
    assert report.ok
    assert report.max_abs_diff == 0.0 and report.max_rel_diff == 0.0
    assert report.cosine == pytest.approx(1.0)
    assert report.top1_agree is True
    assert report.row_fields() == {
        "parity_ok": True,
        "parity_max_abs_diff": 0.0,
        "parity_max_rel_diff": 0.0,
        "parity_cosine": report.cosine,
        "parity_top1_agree": True,
        "parity_reason": None,
    }
    assert report.to_dict()["outputs"] == 2


def test_top1_disagreement_is_reported() -> None:
    report = compare_outputs([logits([1.0, 3.0, 2.0])], [logits([1.0, 2.0, 3.0])])
    assert report.top1_agree is False
    assert not report.ok
    assert report.reason.endswith("top-1 differs")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((2, 5), True), ((1, 5, 1, 1), True), ((1, 1), None), ((1, 5, 2, 2), None), ((5,), None)],
)
def test_top1_only_for_classifier_shaped_outputs(shape: tuple[int, ...], expected: bool) -> None:
    out = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert compare_outputs([out], [out.copy()]).top1_agree is expected


def test_top1_covers_every_row_of_a_batch() -> None:
    reference = np.asarray([[0.0, 1.0], [1.0, 0.0]], np.float32)
    candidate = np.asarray([[0.0, 1.0], [0.0, 1.0]], np.float32)
    assert compare_outputs([reference], [candidate]).top1_agree is False


def test_differences_are_judged_against_the_outputs_scale() -> None:
    """Logits around 100: a 1e-4 absolute difference is float32 noise, not a real change."""
    reference = logits([100.0, 50.0, -30.0])
    assert compare_outputs([reference], [reference + np.float32(1e-4)]).ok
    report = compare_outputs([reference], [reference * np.float32(1.01)])
    assert not report.ok
    assert report.max_rel_diff == pytest.approx(0.01, rel=1e-3)
    assert "max |diff| 1 > 0.1" in report.reason


def test_output_count_and_shape_mismatches_are_explained() -> None:
    one = [logits([1.0, 2.0])]
    count = compare_outputs(one, one + one)
    assert not count.ok and count.reason == "output count differs: reference 1, candidate 2"
    assert count.max_abs_diff is None and count.cosine is None
    shape = compare_outputs([np.zeros((1, 10), np.float32)], [np.zeros((1, 12), np.float32)])
    assert not shape.ok
    assert shape.reason == "output 0 shape differs: reference [1, 10], candidate [1, 12]"


def test_size_one_dimensions_may_be_dropped_by_a_runtime() -> None:
    reference = np.arange(10, dtype=np.float32).reshape(1, 10, 1, 1)
    report = compare_outputs([reference], [reference.ravel()])
    assert report.ok and report.top1_agree is True


def test_integer_outputs_must_match_exactly() -> None:
    reference = np.asarray([[3, 999]], np.int64)
    assert compare_outputs([reference], [reference.copy()]).ok
    assert not compare_outputs([reference], [np.asarray([[3, 998]], np.int64)]).ok


def test_non_finite_values_only_on_one_side_are_flagged() -> None:
    reference = logits([1.0, 2.0, 3.0])
    candidate = logits([1.0, float("nan"), 3.0])
    report = compare_outputs([reference], [candidate])
    assert not report.ok
    assert "1 non-finite value(s)" in report.reason
    both = compare_outputs([candidate], [candidate.copy()])
    assert both.ok  # the same NaN on both sides is faithful


def test_reduced_precision_preset_accepts_one_percent_but_not_another_model() -> None:
    rng = np.random.default_rng(5)
    reference = rng.standard_normal((1, 1000)).astype(np.float32) * 4
    fp16 = reference.astype(np.float16).astype(np.float32)
    loose = {"atol": REDUCED_PRECISION.atol, "rtol": REDUCED_PRECISION.rtol}
    loose["min_cosine"] = REDUCED_PRECISION.min_cosine
    assert compare_outputs([reference], [fp16], **loose).ok
    computed_in_bf16 = reference * (1 + rng.standard_normal(reference.shape) * 0.01)
    assert compare_outputs([reference], [computed_in_bf16.astype(np.float32)], **loose).ok
    assert not compare_outputs([reference], [computed_in_bf16.astype(np.float32)]).ok
    other = rng.standard_normal((1, 1000)).astype(np.float32) * 4
    assert not compare_outputs([reference], [other], **loose).ok
