"""``devlab --run`` on a folder of models with dynamic dimensions as exporters write them (-1, 0,
a name): ``--input-shape`` and ``--input-shapes FILE`` make the run complete; without them
each model fails with its dynamic dimensions listed. Real subprocesses, real ONNX Runtime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from support.helpers import read_results_csv, run_devlab

# tiny and exact: 5 runs in one round, no extra rounds, no canary
FAST = (
    "--runs", "5", "--warmup", "1", "--rounds", "1", "--min-round-seconds", "0",
    "--precision", "0", "--no-canary",
)  # fmt: skip


def conv_model(path: Path, dims: Sequence[int | str | None]) -> Path:
    """Conv (3 -> 4, 3x3, pad 1) + Relu on an NCHW input ``x`` declared as ``dims``: an int is
    stored as dim_value (-1 and 0 too, as older exporters write), a str as dim_param."""
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4, dims[2], dims[3]])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """A folder of models whose input ``x`` has -1, 0 and named dynamic dimensions."""
    folder = tmp_path / "exported"
    folder.mkdir()
    conv_model(folder / "old.onnx", [-1, 3, -1, -1])
    conv_model(folder / "zero.onnx", [0, 3, 0, 0])
    conv_model(folder / "named.onnx", ["batch", 3, "height", "width"])
    return folder


def rows_by_model(out: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    for row in read_results_csv(out):
        rows.setdefault(row["model"], []).append(row)
    return rows


def shape_of(row: dict[str, str]) -> list[int]:
    """The input shape a job recorded in its settings (results.csv holds it as JSON)."""
    return json.loads(row["settings.input_shapes.x"])


def assert_done(row: dict[str, str]) -> None:
    assert row["status"] == "done", row
    assert int(row["count"]) == 5
    assert float(row["median_us"]) > 0


def test_input_shape_runs_every_kind_of_dynamic_dim(tmp_path: Path, exported: Path) -> None:
    out = tmp_path / "out"

    run = run_devlab(
        "--run", exported, "--device", "host:cpu", "--out", out, *FAST,
        "--input-shape", "x=1x3x16x16", home=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.describe()
    rows = rows_by_model(out)
    assert sorted(rows) == ["named", "old", "zero"]
    for name, (row,) in rows.items():
        assert_done(row)
        assert row["module_uid"] == f"{name}[[1,3,16,16]]"
        assert name in run.stdout  # the summary table has its row


def test_shapes_file_then_command_line_override(tmp_path: Path, exported: Path) -> None:
    shapes = tmp_path / "shapes.json"
    shapes.write_text(
        json.dumps({"*": {"x": [1, 3, 16, 16]}, "zero.onnx": {"x": [1, 3, 8, 24]}}),
        encoding="utf-8",
    )
    out = tmp_path / "out"

    first = run_devlab(
        "--run", exported, "--out", out, *FAST, "--input-shapes", shapes, home=tmp_path
    )

    assert first.returncode == 0, first.describe()
    rows = rows_by_model(out)
    assert sorted(rows) == ["named", "old", "zero"]
    for (row,) in rows.values():
        assert_done(row)
    assert rows["zero"][0]["module_uid"] == "zero[[1,3,8,24]]"  # its own entry wins over "*"
    assert shape_of(rows["zero"][0]) == [1, 3, 8, 24]
    assert rows["old"][0]["module_uid"] == "old[[1,3,16,16]]"
    assert shape_of(rows["named"][0]) == [1, 3, 16, 16]

    # The command line wins over the file; new shapes are new jobs, measured, not "kept".
    second = run_devlab(
        "--run", exported, "--out", out, *FAST, "--input-shapes", shapes,
        "--input-shape", "x=1x3x8x8", home=tmp_path,
    )  # fmt: skip

    assert second.returncode == 0, second.describe()
    assert "already measured" not in second.err_text
    for rows_of_model in rows_by_model(out).values():
        assert len(rows_of_model) == 2, rows_of_model
        assert [1, 3, 8, 8] in [shape_of(row) for row in rows_of_model]
        assert all(row["status"] == "done" for row in rows_of_model)


def test_without_shapes_each_model_names_its_dynamic_dims(tmp_path: Path, exported: Path) -> None:
    conv_model(exported / "static.onnx", [1, 3, 8, 8])
    out = tmp_path / "out"

    run = run_devlab("--run", exported, "--out", out, *FAST, home=tmp_path)

    assert run.returncode == 1, run.describe()  # JOBS_FAILED: the static model was measured
    listed = {
        "old": "input 'x' [?,3,?,?] has dynamic dimensions 0 (unnamed, stored as -1), "
        "2 (unnamed, stored as -1), 3 (unnamed, stored as -1)",
        "zero": "input 'x' [?,3,?,?] has dynamic dimensions 0 (unnamed, stored as 0), "
        "2 (unnamed, stored as 0), 3 (unnamed, stored as 0)",
        "named": "input 'x' [batch,3,height,width] has dynamic dimensions 0 (batch), "
        "2 (height), 3 (width)",
    }
    example = {
        "old": "--input-shape x=?x3x?x?",
        "zero": "--input-shape x=?x3x?x?",
        "named": "--input-shape x=<batch>x3x<height>x<width>",
    }
    rows = rows_by_model(out)
    assert_done(rows["static"][0])
    for name in ("old", "zero", "named"):
        (row,) = rows[f"{name}.onnx"]  # an item that failed intake is named by its file
        assert row["status"] == "failed"
        assert listed[name] in row["error"] and example[name] in row["error"]
        assert "--input-shapes" in row["error"]
        assert f"{name}.onnx" in run.err_text  # stderr names each file and its fix
        assert listed[name] in run.err_text and example[name] in run.err_text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"resnet": {"x": [1, 3, 8, 8]}}, ['names model "resnet"', "old.onnx"]),
        ({"*": {"images": [1, 3, 8, 8]}}, ['"*" names input "images"', "their inputs: x"]),
        ("{not json", ["argument --input-shapes", "not JSON"]),
        ({"old": {"x": [1, 3, 0, 8]}}, ['"old" input "x": [1, 3, 0, 8] is not a shape']),
    ],
    ids=["unknown-model", "unknown-star-input", "not-json", "zero-size"],
)
def test_bad_shapes_file_is_a_usage_error(
    tmp_path: Path, exported: Path, content: object, expected: list[str]
) -> None:
    shapes = tmp_path / "shapes.json"
    text = content if isinstance(content, str) else json.dumps(content)
    shapes.write_text(text, encoding="utf-8")

    run = run_devlab(
        "--run", exported, "--out", tmp_path / "out", *FAST, "--input-shapes", shapes,
        home=tmp_path,
    )  # fmt: skip

    assert run.returncode == 2, run.describe()  # USAGE: nothing was measured
    assert str(shapes) in run.err_text
    for part in expected:
        assert part in run.err_text, run.describe()
    assert not (tmp_path / "out" / "results.csv").exists()
