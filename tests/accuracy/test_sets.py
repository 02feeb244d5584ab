"""Evaluation sets in each layout, scored on real ONNX Runtime outputs: a labelled folder of
per-sample files (.npy, .raw, images with a recipe), the stacked digits set, an ONNX test-data
folder against its expected outputs, and a non-classifier against host ONNX Runtime.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.accuracy.evaluate import evaluate, host_outputs
from backends.accuracy.sets import TEST_DATA, SetError, open_set
from backends.models.intake import load_model
from backends.quantize.tool import quantize_model
from support.helpers import REPO_ROOT, save_model

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
TEST_SET = ASSETS / "digits-test"
SUBSET = 40  # samples copied into the per-file sets


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    pixels = np.load(TEST_SET / "inputs.npy")[:SUBSET]
    labels = np.loadtxt(TEST_SET / "labels.csv", skiprows=1, dtype=np.int64)[:SUBSET]
    return pixels, labels


def write_labels(folder: Path, files: list[str], labels: np.ndarray) -> None:
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "label"])
        writer.writerows(zip(files, labels.tolist(), strict=True))


def stacked_top1() -> float:
    """top-1 of digits.onnx on the first SUBSET samples of the shipped (stacked) set."""
    model = load_model(DIGITS)
    run = host_outputs(str(DIGITS))
    samples = list(open_set(TEST_SET).samples(model))[:SUBSET]
    return float(np.mean([np.argmax(run(s.feeds)[0]) == s.label for s in samples]))


@pytest.mark.parametrize("kind", ["npy", "raw", "png"])
def test_per_file_sets_score_like_the_stacked_set(tmp_path: Path, kind: str) -> None:
    """The same 40 digits as .npy files, float32 .raw files, or 8-bit PNGs read through a
    recipe (grey, resized from 16x16, scaled back to 0..1) give the stacked set's top-1."""
    pixels, labels = digits_pixels()
    folder = tmp_path / kind
    folder.mkdir()
    files = []
    recipe: dict = {"mean": 0.0, "std": 16.0}
    for index, image in enumerate(pixels):
        name = f"{index:03d}.{kind}"
        if kind == "npy":
            np.save(folder / name, image)
        elif kind == "raw":
            (image.astype(np.float32) / 16.0).tofile(folder / name)
            recipe = {"raw_dtype": "float32"}
        else:
            from PIL import Image

            big = np.kron(image.astype(np.uint16) * 255 // 16, np.ones((2, 2), np.uint16))
            Image.fromarray(big.astype(np.uint8), mode="L").save(folder / name)
            recipe = {"color": "L", "resize": [8, 8], "mean": 0.0, "std": 255.0}
        files.append(name)
    write_labels(folder, files, labels)
    (folder / "set.json").write_text(json.dumps({"name": f"d-{kind}", "preprocess": recipe}))

    eval_set = open_set(folder)
    assert (eval_set.name, eval_set.size) == (f"d-{kind}", SUBSET)
    report = evaluate(host_outputs(str(DIGITS)), load_model(DIGITS), eval_set)
    assert report is not None and report.classes == 10 and report.reference == "labels"
    tolerance = 0.05 if kind == "png" else 1e-9  # 8-bit pixels then bilinear: a digit may flip
    assert report.top1 == pytest.approx(stacked_top1(), abs=tolerance)
    assert report.top5 is not None and report.top5 >= report.top1


def write_test_data(folder: Path, model_path: Path, count: int) -> None:
    """ONNX test data: test_data_set_N/input_0.pb from digits-test, output_0.pb from host
    ONNX Runtime fp32 (how the ONNX model zoo's folders are made)."""
    model = load_model(model_path)
    run = host_outputs(str(model_path))
    for index, sample in enumerate(list(open_set(TEST_SET).samples(model))[:count]):
        case = folder / f"test_data_set_{index}"
        case.mkdir(parents=True)
        ((name, value),) = sample.feeds.items()
        (case / "input_0.pb").write_bytes(numpy_helper.from_array(value, name).SerializeToString())
        (case / "output_0.pb").write_bytes(
            numpy_helper.from_array(run(sample.feeds)[0], "logits").SerializeToString()
        )


def test_onnx_test_data_scores_output_error_against_expected_outputs(tmp_path: Path) -> None:
    """The fp32 model reproduces its own expected outputs exactly; its int8 QDQ copy differs
    by a small, non-zero error (the quantization error, measured, not assumed)."""
    folder = tmp_path / "digits-pb"
    write_test_data(folder, DIGITS, 12)
    eval_set = open_set(folder)
    assert (eval_set.kind, eval_set.size) == (TEST_DATA, 12)

    fp32 = evaluate(host_outputs(str(DIGITS)), load_model(DIGITS), eval_set)
    assert fp32 is not None and fp32.reference == "expected outputs"
    assert fp32.output_mae == 0.0 and fp32.output_max_error == 0.0
    assert fp32.top1 is None  # no labels in test data

    qdq = quantize_model(DIGITS, ASSETS / "digits-calib", "ort-qdq", tmp_path / "Q").path
    int8 = evaluate(host_outputs(str(qdq)), load_model(qdq), eval_set)
    assert int8 is not None and int8.output_mae is not None and int8.output_max_error is not None
    logits_scale = max(
        float(np.abs(numpy_helper.to_array(_tensor(p))).max()) for p in folder.glob("*/output_0.pb")
    )
    assert 0 < int8.output_mae <= int8.output_max_error < 0.2 * logits_scale


def _tensor(path: Path) -> TensorProto:
    tensor = TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return tensor


def test_a_non_classifier_is_scored_against_host_onnxruntime(tmp_path: Path) -> None:
    """An image-to-image model on a labelled set: no top-k (the output is not class scores);
    the error is against host ONNX Runtime, exactly 0 for the same runtime."""
    model_path = save_model(
        tmp_path / "double.onnx",
        [helper.make_node("Add", ["image", "image"], ["twice"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("twice", TensorProto.FLOAT, [1, 1, 8, 8])],
    )
    model = load_model(model_path)
    exact = evaluate(host_outputs(str(model_path)), model, open_set(TEST_SET))
    assert exact is not None and exact.top1 is None and exact.reference == "host onnxruntime"
    assert exact.output_mae == 0.0

    def off_by_a_bit(feeds: dict) -> list:  # a device that computes 2x + 0.01
        return [feeds["image"] * 2 + 0.01]

    shifted = evaluate(off_by_a_bit, model, open_set(TEST_SET))
    assert shifted is not None
    assert shifted.output_mae == pytest.approx(0.01, rel=1e-3)
    assert shifted.output_max_error == pytest.approx(0.01, rel=1e-3)


def test_a_session_without_outputs_gives_no_report() -> None:
    model = load_model(DIGITS)
    assert evaluate(lambda feeds: None, model, open_set(TEST_SET)) is None


def test_bad_labels_are_named_with_their_line(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    np.save(folder / "inputs.npy", np.zeros((2, 8, 8), np.uint8))
    (folder / "labels.csv").write_text("label\n3\nseven\n")
    with pytest.raises(SetError, match=r"labels.csv, line 3: label 'seven' is not a class"):
        open_set(folder)
    (folder / "labels.csv").write_text("label\n3\n")
    with pytest.raises(SetError, match=r"2 samples, but .*labels.csv has 1 labels"):
        open_set(folder)
    (folder / "labels.csv").write_text("label\n3\n12\n")
    with pytest.raises(SetError, match=r"sample 1: label 12 is out of range .* 10 classes"):
        evaluate(host_outputs(str(DIGITS)), load_model(DIGITS), open_set(folder))


def test_missing_sample_files_and_a_file_instead_of_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "listed"
    folder.mkdir()
    (folder / "labels.csv").write_text("input,label\na.npy,1\nb.npy,2\n")
    np.save(folder / "a.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(SetError, match=r"1 input file\(s\) not found, first .*b\.npy"):
        open_set(folder)
    with pytest.raises(SetError, match="a folder, not a file"):
        open_set(folder / "labels.csv")
    (folder / "set.json").write_text('{"preprocess": {"layout": "CHWN"}}')
    with pytest.raises(SetError, match="layout must be NCHW or NHWC"):
        open_set(folder)
