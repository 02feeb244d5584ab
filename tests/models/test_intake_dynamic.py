"""Model intake of dynamic dimensions as real exporters write them: ``dim_value: -1`` or ``0``
(older exporters), a ``dim_param`` name, or a dimension with neither. Every one is dynamic, is
filled by ``--input-shape`` or an ``--input-shapes`` file, and the model then runs in ONNX
Runtime; without a shape the error names each dynamic dimension and shows the flag to write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.core.records import Model, ModelInput
from backends.models.input_shapes import InputShapes, InputShapesError, read_input_shapes
from backends.models.intake import (
    ModelError,
    collect_models,
    load_model,
    ort_model_source,
    parse_input_shape_arg,
    random_inputs,
)

Dims = Sequence[
    int | str | None
]  # an int is stored as dim_value (even -1 and 0), a str as dim_param

OLD_EXPORTER = [-1, 3, -1, -1]
ZERO_DIMS = [0, 3, 0, 0]
NAMED = ["batch", 3, "height", "width"]
UNNAMED = [None, 3, None, None]
KINDS = {"minus-one": OLD_EXPORTER, "zero": ZERO_DIMS, "named": NAMED, "unnamed": UNNAMED}

OUT_CHANNELS = 8


def conv_macs(n: int, h: int, w: int) -> int:
    """MACs of the test model: a 3x3 convolution, 3 -> 8 channels, same padding."""
    return n * OUT_CHANNELS * h * w * 3 * 9


# ---------------------------------------------------------------------------------------------
# Models, built the way their exporters write them
# ---------------------------------------------------------------------------------------------


def conv_model(path: Path, dims: Dims, input_name: str = "x") -> Path:
    """Conv (3 -> 8, 3x3, pad 1) + Relu on an NCHW input declared as ``dims``; the output
    repeats the input's placeholders, as exporters do."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((OUT_CHANNELS, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", [input_name, "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    out = [dims[0], OUT_CHANNELS, dims[2], dims[3]]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        [numpy_helper.from_array(weight, "w")],
    )
    return save(path, graph)


def two_input_model(path: Path) -> Path:
    """``image`` [-1,3,0,0] (conv, then mean over H and W) plus ``features`` [batch,?]:
    one model, both older exporters' placeholders and a named and an unnamed dimension."""
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((OUT_CHANNELS, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("ReduceMean", ["c"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("Add", ["pooled", "features"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [-1, 3, 0, 0]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", None]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_CHANNELS])],
        [numpy_helper.from_array(weight, "w")],
    )
    return save(path, graph)


def save(path: Path, graph: onnx.GraphProto) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def stored_dims(path: Path, index: int = 0) -> list[tuple[str | None, int | str | None]]:
    """What the file really holds for an input: (which field, its value) per dimension."""
    dims = onnx.load(str(path)).graph.input[index].type.tensor_type.shape.dim
    return [
        (kind, getattr(d, kind) if kind else None) for d in dims for kind in [d.WhichOneof("value")]
    ]


def run_in_ort(model: Model) -> list[np.ndarray]:
    """Feed the model's resolved shapes to ONNX Runtime as the host device loads it."""
    source = ort_model_source(model.path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, random_inputs(model))


def reason_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ModelError) as info:
        fn(*args, **kwargs)
    return info.value.reason


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The models store what the exporters write
# ---------------------------------------------------------------------------------------------


def test_the_built_models_store_minus_one_zero_names_and_nothing(tmp_path: Path) -> None:
    assert stored_dims(conv_model(tmp_path / "a.onnx", OLD_EXPORTER))[0] == ("dim_value", -1)
    assert stored_dims(conv_model(tmp_path / "b.onnx", ZERO_DIMS))[0] == ("dim_value", 0)
    assert stored_dims(conv_model(tmp_path / "c.onnx", NAMED))[0] == ("dim_param", "batch")
    assert stored_dims(conv_model(tmp_path / "d.onnx", UNNAMED))[0] == (None, None)


# ---------------------------------------------------------------------------------------------
# --input-shape fills every kind of dynamic dimension
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", KINDS.values(), ids=KINDS.keys())
def test_input_shape_fills_every_kind_of_dynamic_dim_and_runs(tmp_path: Path, dims: Dims) -> None:
    path = conv_model(tmp_path / "m.onnx", dims)

    model = load_model(path, {"x": [1, 3, 48, 192]})

    assert model.inputs == [ModelInput("x", [1, 3, 48, 192], "float32")]
    assert model.macs == conv_macs(1, 48, 192)
    (out,) = run_in_ort(model)
    assert out.shape == (1, OUT_CHANNELS, 48, 192)


@pytest.mark.parametrize("dims", KINDS.values(), ids=KINDS.keys())
def test_static_dims_are_still_confirmed(tmp_path: Path, dims: Dims) -> None:
    path = conv_model(tmp_path / "m.onnx", dims)

    reason = reason_of(load_model, path, {"x": [1, 4, 48, 192]})

    assert "input 'x'" in reason
    assert "--input-shape x=1x4x48x192" in reason
    assert "sets dimension 1 to 4 instead of 3" in reason


def test_a_given_shape_must_have_the_declared_rank(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx", OLD_EXPORTER)
    reason = reason_of(load_model, path, {"x": [1, 3, 48]})
    assert "input 'x' has rank 4 [?,3,?,?]" in reason
    assert "has rank 3" in reason


# ---------------------------------------------------------------------------------------------
# Without a shape: the dynamic dimensions by name and position, and an example to fill in
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dims", "listed", "example"),
    [
        (
            OLD_EXPORTER,
            "input 'x' [?,3,?,?] has dynamic dimensions 0 (unnamed, stored as -1), "
            "2 (unnamed, stored as -1), 3 (unnamed, stored as -1)",
            "--input-shape x=?x3x?x?",
        ),
        (
            ZERO_DIMS,
            "input 'x' [?,3,?,?] has dynamic dimensions 0 (unnamed, stored as 0), "
            "2 (unnamed, stored as 0), 3 (unnamed, stored as 0)",
            "--input-shape x=?x3x?x?",
        ),
        (
            NAMED,
            "input 'x' [batch,3,height,width] has dynamic dimensions 0 (batch), 2 (height), "
            "3 (width)",
            "--input-shape x=<batch>x3x<height>x<width>",
        ),
        (
            UNNAMED,
            "input 'x' [?,3,?,?] has dynamic dimensions 0 (unnamed), 2 (unnamed), 3 (unnamed)",
            "--input-shape x=?x3x?x?",
        ),
    ],
    ids=KINDS.keys(),
)
def test_missing_shape_lists_dynamic_dims_and_an_example(
    tmp_path: Path, dims: Dims, listed: str, example: str
) -> None:
    path = conv_model(tmp_path / "ocr.onnx", dims)

    with pytest.raises(ModelError) as info:
        load_model(path)

    message = str(info.value)
    assert message.startswith(f"{path}: ")  # names the file
    assert listed in message
    assert example in message
    assert "--input-shapes" in message  # the other fix
    # The example is something to fill in, never a shape that would run as it stands.
    flag_value = example.removeprefix("--input-shape ")
    with pytest.raises(ValueError):
        parse_input_shape_arg(flag_value)
    assert "1x3x1x1" not in message


def test_onnx_runtime_gets_zero_dims_made_dynamic(tmp_path: Path) -> None:
    """ONNX Runtime takes a stored 0 as a fixed size 0 and refuses a real feed; the host device
    hands it the model with those dims made unknown instead. Other files load by path."""
    zero = load_model(conv_model(tmp_path / "zero.onnx", ZERO_DIMS), {"x": [1, 3, 8, 8]})
    feeds = random_inputs(zero)
    as_written = ort.InferenceSession(zero.path, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Expected: 0"):
        as_written.run(None, feeds)

    source = ort_model_source(zero.path)
    assert isinstance(source, bytes)
    (out,) = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert out.shape == (1, OUT_CHANNELS, 8, 8)
    for dims in (OLD_EXPORTER, NAMED, [1, 3, 8, 8]):
        other = conv_model(tmp_path / "other.onnx", dims)
        assert ort_model_source(other) == str(other)


# ---------------------------------------------------------------------------------------------
# A model with several inputs
# ---------------------------------------------------------------------------------------------


def test_several_inputs_each_listed_until_given(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "two.onnx")

    both = reason_of(load_model, path)
    assert (
        "input 'image' [?,3,?,?] has dynamic dimensions 0 (unnamed, stored as -1), "
        "2 (unnamed, stored as 0), 3 (unnamed, stored as 0); "
        "input 'features' [batch,?] has dynamic dimensions 0 (batch), 1 (unnamed)"
    ) in both
    assert "--input-shape image=?x3x?x? --input-shape features=<batch>x?" in both

    one_left = reason_of(load_model, path, {"image": [2, 3, 20, 30]})
    assert "input 'features'" in one_left
    assert "input 'image'" not in one_left
    assert "--input-shape features=<batch>x?" in one_left

    model = load_model(path, {"image": [2, 3, 20, 30], "features": [2, OUT_CHANNELS]})
    assert model.inputs == [
        ModelInput("image", [2, 3, 20, 30], "float32"),
        ModelInput("features", [2, OUT_CHANNELS], "float32"),
    ]
    (out,) = run_in_ort(model)
    assert out.shape == (2, OUT_CHANNELS)


# ---------------------------------------------------------------------------------------------
# --input-shapes: a file for a folder of models
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """A folder as an exporter leaves it: -1, 0 and named dims, two inputs, a static model."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    conv_model(folder / "old.onnx", OLD_EXPORTER)
    conv_model(folder / "zero.onnx", ZERO_DIMS)
    conv_model(folder / "named.onnx", NAMED)
    two_input_model(folder / "two.onnx")
    conv_model(folder / "static.onnx", [1, 3, 8, 8])
    return folder


def shapes_of(results: list[Model | ModelError]) -> dict[str, dict[str, list[int]]]:
    assert all(isinstance(r, Model) for r in results), [str(r) for r in results]
    return {r.name: {i.name: i.shape for i in r.inputs} for r in results if isinstance(r, Model)}


def test_shapes_file_per_model_and_star(tmp_path: Path, zoo: Path) -> None:
    file = write_json(
        tmp_path / "shapes.json",
        {
            "*": {"x": [1, 3, 48, 192]},
            "zero": {"x": [2, 3, 16, 16]},  # by stem
            "two.onnx": {"image": [1, 3, 8, 8], "features": [1, OUT_CHANNELS]},  # by file name
        },
    )

    results = collect_models([zoo], read_input_shapes(file))

    assert shapes_of(results) == {
        "named": {"x": [1, 3, 48, 192]},
        "old": {"x": [1, 3, 48, 192]},
        "static": {"x": [1, 3, 8, 8]},  # "*" gives x, but static.onnx fixes it: untouched...
        "two": {"image": [1, 3, 8, 8], "features": [1, OUT_CHANNELS]},
        "zero": {"x": [2, 3, 16, 16]},  # its own entry wins over "*"
    }
    for model in results:
        assert isinstance(model, Model)
        run_in_ort(model)


def test_star_must_agree_with_the_static_dims_it_fills_around(tmp_path: Path, zoo: Path) -> None:
    # A "*" shape that disagrees with a model's static dims fails that model, naming where the
    # shape came from; a fully static input is not filled by "*", so static.onnx is untouched.
    file = write_json(
        tmp_path / "shapes.json",
        {"*": {"x": [1, 4, 32, 32]}, "two": {"image": [1, 3, 8, 8], "features": [1, 8]}},
    )

    results = {Path(r.path).stem: r for r in collect_models([zoo], read_input_shapes(file))}

    old = results["old"]
    assert isinstance(old, ModelError)
    assert "input 'x' has shape [?,3,?,?]" in old.reason
    assert f'x=1x4x32x32 from --input-shapes {file} "*"' in old.reason
    assert "sets dimension 1 to 4 instead of 3" in old.reason
    assert isinstance(results["static"], Model)
    assert results["static"].inputs[0].shape == [1, 3, 8, 8]
    assert isinstance(results["two"], Model)


def test_command_line_overrides_the_file(tmp_path: Path, zoo: Path) -> None:
    file = write_json(
        tmp_path / "shapes.json",
        {"*": {"x": [1, 3, 48, 192]}, "zero": {"x": [2, 3, 16, 16]}},
    )
    shapes = read_input_shapes(file).with_command_line({"x": [1, 3, 24, 24]})
    models = [zoo / "old.onnx", zoo / "zero.onnx"]

    assert shapes_of(collect_models(models, shapes)) == {
        "old": {"x": [1, 3, 24, 24]},
        "zero": {"x": [1, 3, 24, 24]},
    }


def test_applied_shapes_are_per_model(tmp_path: Path, zoo: Path) -> None:
    """What a job records as its shapes (part of its identity) is its own model's."""
    file = write_json(
        tmp_path / "shapes.json",
        {"*": {"x": [1, 3, 48, 192]}, "zero": {"x": [2, 3, 16, 16]}},
    )
    shapes = read_input_shapes(file)

    old, zero = collect_models([zoo / "old.onnx", zoo / "zero.onnx"], shapes)

    assert isinstance(old, Model) and isinstance(zero, Model)
    assert shapes.applied_to(old) == {"x": [1, 3, 48, 192]}
    assert shapes.applied_to(zero) == {"x": [2, 3, 16, 16]}


def test_file_naming_a_missing_model_is_an_error(tmp_path: Path, zoo: Path) -> None:
    file = write_json(tmp_path / "shapes.json", {"resnet": {"x": [1, 3, 224, 224]}})

    with pytest.raises(InputShapesError) as info:
        collect_models([zoo], read_input_shapes(file))

    message = str(info.value)
    assert message.startswith(f"{file}: ")
    assert 'names model "resnet"' in message
    assert "old.onnx" in message  # the models it could have named


def test_file_naming_a_missing_input_of_a_model_fails_that_model(tmp_path: Path, zoo: Path) -> None:
    file = write_json(tmp_path / "shapes.json", {"old": {"images": [1, 3, 8, 8]}})

    (result,) = collect_models([zoo / "old.onnx"], read_input_shapes(file))

    assert isinstance(result, ModelError)
    assert f"--input-shapes {file} \"old\" names 'images'" in result.reason
    assert result.reason.endswith("its inputs: x")


def test_star_naming_an_input_no_model_has_is_an_error(tmp_path: Path, zoo: Path) -> None:
    file = write_json(tmp_path / "shapes.json", {"*": {"x": [1, 3, 8, 8], "imgs": [1, 3]}})

    with pytest.raises(InputShapesError) as info:
        collect_models([zoo], read_input_shapes(file))

    assert '"*" names input "imgs", but no model has such an input' in str(info.value)
    assert "features, image, x" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object of models"),
        ("{}", "expected a JSON object of models"),
        ('{"m": [1, 3, 8, 8]}', '"m" must map input names to shapes'),
        ('{"m": {}}', '"m" must map input names to shapes'),
        ('{"m": {"x": [1, 0, 8]}}', '"m" input "x": [1, 0, 8] is not a shape'),
        ('{"m": {"x": [1, 2.5]}}', '"m" input "x": [1, 2.5] is not a shape'),
        ('{"m": {"x": "1x3x8x8"}}', '"m" input "x": "1x3x8x8" is not a shape'),
        ('{"m": {"x": [true, 3]}}', '"m" input "x": [true, 3] is not a shape'),
        ('{"m": {"x": []}}', '"m" input "x": [] is not a shape'),
        ('{"m": {"x": [1]}, "m.onnx": {"x": [2]}}', '"m" and "m.onnx" name the same model'),
    ],
)
def test_bad_shapes_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    file = tmp_path / "shapes.json"
    file.write_text(text, encoding="utf-8")

    with pytest.raises(InputShapesError) as info:
        read_input_shapes(file)

    assert str(info.value).startswith(f"{file}: ")
    assert expected in str(info.value)


def test_missing_shapes_file(tmp_path: Path) -> None:
    with pytest.raises(InputShapesError, match="no such file"):
        read_input_shapes(tmp_path / "nope.json")


def test_plain_dict_still_means_the_command_line() -> None:
    shapes = InputShapes().with_command_line({"x": [1, 2]})
    assert [layer.source for layer in shapes.layers(Path("m.onnx"))] == ["--input-shape"]
