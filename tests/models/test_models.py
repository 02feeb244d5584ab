"""Model intake: validation errors, input shapes, parameter and MAC counts, sample assets."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.core.records import Model, ModelInput
from backends.models.intake import (
    ModelError,
    collect_models,
    load_model,
    parse_input_shape_arg,
    parse_shape,
    random_inputs,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
MODELS_DIR = ASSETS / "models"


# ---------------------------------------------------------------------------------------------
# Helpers: tiny models built in the test
# ---------------------------------------------------------------------------------------------


def weight(name: str, *shape: int) -> onnx.TensorProto:
    rng = np.random.default_rng(len(name))
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)],
        ir_version=9,
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def floats(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def tiny_cnn(path: Path) -> Path:
    """Conv -> depthwise Conv -> pool -> Gemm -> MatMul, with a Constant-node weight."""
    matmul_w = numpy_helper.from_array(np.ones((16, 4), np.float32), "w4")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node(
            "Conv",
            ["c1", "w2", "b2"],
            ["c2"],
            kernel_shape=[3, 3],
            pads=[1] * 4,
            strides=[2, 2],
            group=8,
        ),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g"], transB=1),
        helper.make_node("Constant", [], ["w4"], value=matmul_w),
        helper.make_node("MatMul", ["g", "w4"], ["y"]),
    ]
    inits = [
        weight("w1", 8, 3, 3, 3),
        weight("b1", 8),
        weight("w2", 8, 1, 3, 3),
        weight("b2", 8),
        weight("w3", 16, 8),
        weight("b3", 16),
    ]
    return save(path, nodes, [floats("x", [1, 3, 8, 8])], [floats("y", [1, 4])], inits)


# Hand-computed: out elements x (C_in / group) x kernel, M x N x K, out elements x K.
TINY_CONV_MACS = (1 * 8 * 8 * 8) * 3 * 9  # 13824
TINY_DEPTHWISE_MACS = (1 * 8 * 4 * 4) * 1 * 9  # 1152
TINY_GEMM_MACS = 1 * 16 * 8  # 128
TINY_MATMUL_MACS = 4 * 16  # 64
TINY_PARAMS = 216 + 8 + 72 + 8 + 128 + 16 + 64  # 512, the Constant's 64 included


def dynamic_mlp(path: Path) -> Path:
    w = weight("w", 16, 4)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    return save(path, nodes, [floats("x", ["batch", 16])], [floats("y", ["batch", 4])], [w])


def reason_of(fn, *args, **kwargs) -> ModelError:
    with pytest.raises(ModelError) as info:
        fn(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------------------------------------
# load_model: a good model
# ---------------------------------------------------------------------------------------------


def test_good_model_is_described(tmp_path: Path) -> None:
    path = tiny_cnn(tmp_path / "tiny.onnx")
    model = load_model(path)
    data = path.read_bytes()
    assert model.name == "tiny"
    assert Path(model.path) == path.resolve()
    assert model.sha256 == hashlib.sha256(data).hexdigest()
    assert model.size_bytes == len(data)
    assert model.inputs == [ModelInput("x", [1, 3, 8, 8], "float32")]
    assert model.opset == 17
    assert model.parameters == TINY_PARAMS
    assert model.macs == TINY_CONV_MACS + TINY_DEPTHWISE_MACS + TINY_GEMM_MACS + TINY_MATMUL_MACS


def test_model_round_trips_through_json_dict(tmp_path: Path) -> None:
    model = load_model(tiny_cnn(tmp_path / "tiny.onnx"))
    assert Model.from_dict(model.to_dict()) == model
    assert model.module_uid == "tiny[[1,3,8,8]]"


def _single_op(path: Path, node: onnx.NodeProto, x_shape: list[int], inits, y_shape) -> Path:
    return save(path, [node], [floats("x", x_shape)], [floats("y", y_shape)], inits)


@pytest.mark.parametrize(
    ("node", "x_shape", "inits", "y_shape", "macs"),
    [
        pytest.param(  # grouped (not depthwise): 96 out elements x (4/2) x 9
            helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], group=2),
            [1, 4, 6, 6], [weight("w", 6, 2, 3, 3)], [1, 6, 4, 4], 96 * 2 * 9, id="grouped-conv",
        ),
        pytest.param(  # each of 100 input elements meets (M/group) x kernel = 2 x 9 weights
            helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[3, 3]),
            [1, 4, 5, 5], [weight("w", 4, 2, 3, 3)], [1, 2, 7, 7], 100 * 2 * 9, id="conv-transpose",
        ),
        pytest.param(  # A is [K=8, M=2] transposed, B is [K=8, N=5]
            helper.make_node("Gemm", ["x", "w"], ["y"], transA=1),
            [8, 2], [weight("w", 8, 5)], [2, 5], 2 * 5 * 8, id="gemm-transA",
        ),
        pytest.param(  # B stored [N=5, K=8]
            helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
            [3, 8], [weight("w", 5, 8)], [3, 5], 3 * 5 * 8, id="gemm-transB",
        ),
        pytest.param(  # batched: 2*3*4*6 outputs, K = 5
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            [2, 3, 4, 5], [weight("w", 5, 6)], [2, 3, 4, 6], 2 * 3 * 4 * 6 * 5, id="batched-matmul",
        ),
        pytest.param(
            helper.make_node("Relu", ["x"], ["y"]), [2, 3], [], [2, 3], 0, id="no-macs-op",
        ),
    ],
)  # fmt: skip
def test_macs_per_op(tmp_path: Path, node, x_shape, inits, y_shape, macs: int) -> None:
    model = load_model(_single_op(tmp_path / "op.onnx", node, x_shape, inits, y_shape))
    assert model.macs == macs


def test_unknown_shapes_contribute_zero_macs(tmp_path: Path) -> None:
    # A custom-domain op has no shape inference, so the MatMul after it has no known shapes.
    nodes = [
        helper.make_node("Mystery", ["x"], ["t"], domain="com.acme"),
        helper.make_node("MatMul", ["t", "w"], ["y"]),
    ]
    path = save(
        tmp_path / "custom.onnx", nodes, [floats("x", [1, 16])], [floats("y", [1, 4])],
        [weight("w", 16, 4)],
    )  # fmt: skip
    model = load_model(path)
    assert model.macs == 0
    assert model.parameters == 64


# ---------------------------------------------------------------------------------------------
# load_model: files that are not usable models
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = reason_of(load_model, tmp_path / "gone.onnx")
    assert err.path == str(tmp_path / "gone.onnx")
    assert "no such file" in err.reason


def test_text_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "not-a-model.txt"
    path.write_text("hello world, I am definitely not a neural network\n")
    err = reason_of(load_model, path)
    assert err.path == str(path)
    assert str(err) == f"{path}: {err.reason}"
    assert "not an ONNX model" in err.reason


def test_bytes_that_decode_as_empty_protobuf_are_not_onnx(tmp_path: Path) -> None:
    # A lone varint field with an unknown number decodes "successfully" into an empty ModelProto.
    path = tmp_path / "odd.onnx"
    path.write_bytes(b"\x78\x01")
    onnx.ModelProto().ParseFromString(path.read_bytes())  # the premise: this does not raise
    assert "not an ONNX model" in reason_of(load_model, path).reason


def test_truncated_model(tmp_path: Path) -> None:
    data = (MODELS_DIR / "mnv2_cifar32.onnx").read_bytes()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    err = reason_of(load_model, path)
    assert err.path == str(path)
    assert "truncated or corrupt" in err.reason


def test_checker_failure(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [floats("x", [1])], [floats("y", [1])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path / "badop.onnx"
    onnx.save(model, path)
    err = reason_of(load_model, path)
    assert err.reason.startswith("invalid ONNX model:")
    assert "NoSuchOp" in err.reason


def test_shape_inference_failure(tmp_path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = save(
        tmp_path / "mismatch.onnx", nodes, [floats("x", [1, 16])], [floats("y", [1, 4])],
        [weight("w", 15, 4)],
    )  # fmt: skip
    assert "shape inference failed" in reason_of(load_model, path).reason


# ---------------------------------------------------------------------------------------------
# Input shapes: dynamic dimensions and overrides
# ---------------------------------------------------------------------------------------------


def test_dynamic_batch_without_override_names_the_flag(tmp_path: Path) -> None:
    path = dynamic_mlp(tmp_path / "dyn.onnx")
    err = reason_of(load_model, path)
    assert err.reason == (
        "input 'x' [batch,16] has dynamic dimension 0 (batch); give the sizes to measure with "
        "--input-shape x=<batch>x16 (each <...> replaced by a size), or in an --input-shapes file"
    )


def test_dynamic_batch_with_override(tmp_path: Path) -> None:
    model = load_model(dynamic_mlp(tmp_path / "dyn.onnx"), {"x": [3, 16]})
    assert model.inputs == [ModelInput("x", [3, 16], "float32")]
    assert model.macs == 3 * 4 * 16


def test_override_replaces_stale_traced_shapes(tmp_path: Path) -> None:
    # Exporters often leave the traced batch (1) in value_info and outputs of a dynamic model.
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stale",
        [floats("x", ["batch", 16])],
        [floats("y", [1, 4])],
        [weight("w", 16, 4)],
        value_info=[floats("r", [1, 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, tmp_path / "stale.onnx")
    loaded = load_model(tmp_path / "stale.onnx", {"x": [5, 16]})
    assert loaded.macs == 5 * 4 * 16


def test_override_must_agree_with_static_dims(tmp_path: Path) -> None:
    path = dynamic_mlp(tmp_path / "dyn.onnx")
    assert "dimension 1 to 15 instead of 16" in reason_of(load_model, path, {"x": [3, 15]}).reason
    assert "rank" in reason_of(load_model, path, {"x": [3]}).reason


def test_override_of_static_input(tmp_path: Path) -> None:
    path = tiny_cnn(tmp_path / "tiny.onnx")
    assert load_model(path, {"x": [1, 3, 8, 8]}).inputs[0].shape == [1, 3, 8, 8]
    assert "instead of 8" in reason_of(load_model, path, {"x": [1, 3, 8, 9]}).reason


def test_override_for_unknown_input_lists_the_inputs(tmp_path: Path) -> None:
    path = dynamic_mlp(tmp_path / "dyn.onnx")
    err = reason_of(load_model, path, {"x": [1, 16], "images": [1, 3, 32, 32]})
    assert "'images'" in err.reason
    assert err.reason.endswith("its inputs: x")


# ---------------------------------------------------------------------------------------------
# collect_models
# ---------------------------------------------------------------------------------------------


def test_empty_folder_is_one_error(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("no models here")
    [err] = collect_models([folder])
    assert isinstance(err, ModelError)
    assert err.path == str(folder)
    assert "no .onnx files" in err.reason


def test_folder_with_good_and_bad_models(tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    (folder / "sub").mkdir(parents=True)
    tiny_cnn(folder / "sub" / "b_tiny.onnx")
    (folder / "a_broken.onnx").write_text("not a model")
    (folder / "notes.txt").write_text("ignored: not .onnx")
    results = collect_models([folder])
    assert len(results) == 2
    broken, tiny = results  # sorted by path: a_broken.onnx < sub/b_tiny.onnx
    assert isinstance(broken, ModelError)
    assert broken.path == str(folder / "a_broken.onnx")
    assert isinstance(tiny, Model)
    assert tiny.name == "b_tiny"


def test_collect_keeps_input_order_and_drops_duplicates(tmp_path: Path) -> None:
    first = tiny_cnn(tmp_path / "first.onnx")
    second = dynamic_mlp(tmp_path / "second.onnx")
    text = tmp_path / "not-a-model.txt"
    text.write_text("plain text")
    (tmp_path / "sub").mkdir()
    results = collect_models(
        [second, text, first, tmp_path / "missing", tmp_path / "sub" / ".." / "first.onnx"],
        input_shapes={"x": [2, 16]},
    )
    assert [type(r) for r in results] == [Model, ModelError, ModelError, ModelError]
    assert results[0].inputs[0].shape == [2, 16]
    assert results[1].path == str(text)
    # The override names 'x' but first.onnx's x is static [1,3,8,8]: reported, not raised.
    assert results[2].path == str(first)
    assert results[3].path == str(tmp_path / "missing")
    assert "no such file or folder" in results[3].reason


def test_collect_reports_first_file_once(tmp_path: Path) -> None:
    path = tiny_cnn(tmp_path / "m.onnx")
    results = collect_models([tmp_path, path, str(path)])
    assert [r.name for r in results] == ["m"]


# ---------------------------------------------------------------------------------------------
# random_inputs
# ---------------------------------------------------------------------------------------------


def test_random_inputs_shapes_dtypes_and_determinism() -> None:
    model = Model(
        path="m.onnx",
        name="m",
        sha256="0" * 64,
        inputs=[
            ModelInput("image", [2, 3, 20, 20], "float32"),
            ModelInput("ids", [1, 500], "int64"),
            ModelInput("mask", [1, 500], "bool"),
            ModelInput("half", [4], "float16"),
        ],
    )
    feeds = random_inputs(model, seed=7)
    assert list(feeds) == ["image", "ids", "mask", "half"]
    assert {k: (v.shape, v.dtype.name) for k, v in feeds.items()} == {
        "image": ((2, 3, 20, 20), "float32"),
        "ids": ((1, 500), "int64"),
        "mask": ((1, 500), "bool"),
        "half": ((4,), "float16"),
    }
    assert abs(float(feeds["image"].mean())) < 0.1
    assert 0.9 < float(feeds["image"].std()) < 1.1
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() <= 9
    assert len(np.unique(feeds["ids"])) == 10
    assert 0 < feeds["mask"].sum() < 500

    again = random_inputs(model, seed=7)
    other = random_inputs(model, seed=8)
    for name in feeds:
        np.testing.assert_array_equal(feeds[name], again[name])
    assert not np.array_equal(feeds["image"], other["image"])


# ---------------------------------------------------------------------------------------------
# Shape arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("1x3x224x224", [1, 3, 224, 224]),
        ("1,3,224,224", [1, 3, 224, 224]),
        (" 2 X 16 ", [2, 16]),
        ("[1,3,32,32]", [1, 3, 32, 32]),
        ("7", [7]),
    ],
)
def test_parse_shape(text: str, shape: list[int]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "1x", "x3", "1x-3", "1x0x4", "1.5x2", "axb", "1x3 224"])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="1x3x224x224"):
        parse_shape(text)


def test_parse_input_shape_arg() -> None:
    assert parse_input_shape_arg("input=1x3x224x224") == ("input", [1, 3, 224, 224])
    assert parse_input_shape_arg("input:0=1,3") == ("input:0", [1, 3])
    for bad in ["1x3x224x224", "=1x3", "input=", "input=1xx3"]:
        with pytest.raises(ValueError):
            parse_input_shape_arg(bad)


def test_model_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(ModelError("a.onnx", "broken")))
    assert (err.path, err.reason, str(err)) == ("a.onnx", "broken", "a.onnx: broken")


# ---------------------------------------------------------------------------------------------
# Sample assets
# ---------------------------------------------------------------------------------------------

SAMPLES = {
    "mnv2_cifar32": ("input", [1, 3, 32, 32], 10),
    "mnv2_cifar32_wide": ("input", [1, 3, 32, 32], 10),
    "mnv2_224": ("input", [1, 3, 224, 224], 1000),
    "mlp": ("x", [1, 256], 10),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_model_loads_and_runs(name: str) -> None:
    input_name, shape, classes = SAMPLES[name]
    path = MODELS_DIR / f"{name}.onnx"
    model = load_model(path)
    assert model.inputs == [ModelInput(input_name, shape, "float32")]
    assert model.opset == 17
    assert onnx.load(path).ir_version == 9
    assert model.size_bytes < 5_000_000
    assert model.parameters > 100_000 and model.macs > 100_000

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, random_inputs(model))
    assert logits.shape == (1, classes)
    assert np.all(np.isfinite(logits))


def test_sample_mlp_counts() -> None:
    model = load_model(MODELS_DIR / "mlp.onnx")
    assert model.macs == 256 * 512 + 512 * 256 + 256 * 10
    assert model.parameters == (256 + 1) * 512 + (512 + 1) * 256 + (256 + 1) * 10


def test_sample_mnv2_224_is_reduced_width() -> None:
    model = load_model(MODELS_DIR / "mnv2_224.onnx")
    assert 1_000_000 <= model.parameters <= 1_200_000
    depthwise = [
        n
        for n in onnx.load(MODELS_DIR / "mnv2_224.onnx").graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    assert len(depthwise) == 17  # one per inverted residual block


def test_generator_reproduces_committed_assets(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_models", ASSETS / "make_models.py")
    make_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_models)
    written = make_models.build(tmp_path, run=False)
    assert sorted(p.name for p in written) == sorted(f"{n}.onnx" for n in SAMPLES)
    for path in written:
        committed = MODELS_DIR / path.name
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed} differs from what assets/make_models.py generates; regenerate it"
        )
