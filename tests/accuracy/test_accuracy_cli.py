"""Accuracy next to latency, end to end through the real ``devlab`` command: quantize the
shipped digits classifier on its calibration set, run the float and the int8 model with
``--accuracy`` on host:cpu, and read the scores from the tables a user reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backends.accuracy.evaluate import host_outputs
from backends.accuracy.sets import open_set
from backends.models.intake import load_model
from support.helpers import MODELS_DIR, REPO_ROOT, read_results_csv, run_devlab

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
TEST_SET = ASSETS / "digits-test"
CALIB_SET = ASSETS / "digits-calib"
QUICK = ["--runs", "20", "--rounds", "2", "--precision", "0", "--no-canary"]
MAX_INT8_DROP = 0.02  # two points of top-1


def numpy_top1() -> float:
    """The held-out top-1 of digits.onnx computed without devlab's scorer or ORT: the MLP's
    weights applied with numpy to the set's pixels / 16."""
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(DIGITS).graph.initializer}
    pixels = np.load(TEST_SET / "inputs.npy").reshape(-1, 64).astype(np.float64) / 16.0
    labels = np.loadtxt(TEST_SET / "labels.csv", skiprows=1, dtype=np.int64)
    hidden = np.maximum(pixels @ weights["fc1.weight"].T + weights["fc1.bias"], 0.0)
    logits = hidden @ weights["fc2.weight"].T + weights["fc2.bias"]
    return float((logits.argmax(axis=1) == labels).mean())


def test_quantize_then_run_both_models_with_accuracy(tmp_path: Path) -> None:
    q_dir, r_dir = tmp_path / "Q", tmp_path / "R"
    quantized = run_devlab(
        "quantize",
        DIGITS,
        "--calibration",
        CALIB_SET,
        "--scheme",
        "ort-qdq",
        "--out",
        q_dir,
        home=tmp_path,
    )
    assert quantized.returncode == 0, quantized.describe()
    written = sorted(q_dir.iterdir())
    assert [p.suffix for p in written] == [".onnx"], written  # Q holds one .onnx
    qdq = written[0]
    ops = {node.op_type for node in __import__("onnx").load(qdq).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    run = run_devlab(
        "--run", DIGITS, qdq, "--accuracy", TEST_SET, "--out", r_dir, *QUICK, home=tmp_path
    )
    assert run.returncode == 0, run.describe()
    rows = {row["model"]: row for row in read_results_csv(r_dir)}
    assert set(rows) == {"digits", qdq.stem}
    for row in rows.values():
        assert row["status"] == "done" and float(row["median_us"]) > 0  # latency and accuracy
        assert row["accuracy_set"] == "digits-test"
        assert row["accuracy_set_size"] == "360"
        assert row["output_mae"] == ""  # a labelled classifier set scores top-k only
    fp32 = float(rows["digits"]["accuracy_top1"])
    int8 = float(rows[qdq.stem]["accuracy_top1"])
    print(f"digits-test top-1: fp32 {fp32:.4f}, int8 QDQ {int8:.4f}")
    assert fp32 == pytest.approx(numpy_top1(), abs=1e-9)
    assert fp32 > 0.9  # a trained classifier, not chance (0.1)
    assert abs(fp32 - int8) <= MAX_INT8_DROP
    assert float(rows["digits"]["accuracy_top5"]) >= fp32

    records = {r["model"]: r for r in json.loads((r_dir / "results.json").read_text())}
    assert records["digits"]["accuracy_top1"] == pytest.approx(fp32)
    assert records[qdq.stem]["accuracy_set_size"] == 360


def test_the_test_set_is_held_out_and_the_calibration_set_is_not_it() -> None:
    """digits-test shares no sample with digits-calib (nor could it with the training part:
    both are drawn from one seeded permutation; the script asserts that too)."""
    test, calib = open_set(TEST_SET), open_set(CALIB_SET)
    assert (test.size, calib.size) == (360, 100)
    test_images = {bytes(row) for row in np.load(TEST_SET / "inputs.npy").reshape(360, -1)}
    calib_images = [bytes(row) for row in np.load(CALIB_SET / "inputs.npy").reshape(100, -1)]
    # the digits data holds a few identical images; the split is by index, so allow those
    assert sum(image in test_images for image in calib_images) <= 2
    assert sorted(set(test.labels)) == list(range(10))
    sizes = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert sizes < 100_000  # the shipped assets stay small


def test_a_missing_set_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-set"
    run = run_devlab("--run", DIGITS, "--accuracy", missing, "--out", tmp_path / "R", home=tmp_path)
    assert run.returncode == 2, run.describe()
    assert str(missing) in run.err_text
    assert "no such evaluation set" in run.err_text and "labels.csv" in run.err_text
    assert "docs/accuracy.md" in run.err_text


def test_a_set_without_labels_is_a_usage_error_saying_what_it_needs(tmp_path: Path) -> None:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    np.save(folder / "inputs.npy", np.zeros((3, 8, 8), np.uint8))
    run = run_devlab("--run", DIGITS, "--accuracy", folder, "--out", tmp_path / "R", home=tmp_path)
    assert run.returncode == 2, run.describe()
    assert str(folder / "labels.csv") in run.err_text
    assert "'label' column" in run.err_text and "test_data_set_N" in run.err_text


def test_a_model_that_does_not_fit_the_set_fails_before_measuring(tmp_path: Path) -> None:
    """mnv2_cifar32 takes 1x3x32x32; digits-test holds 8x8 images: that job fails with the
    file and the fix, the digits job next to it is measured and scored."""
    cifar = MODELS_DIR / "mnv2_cifar32.onnx"
    out = tmp_path / "R"
    run = run_devlab(
        "--run", cifar, DIGITS, "--accuracy", TEST_SET, "--out", out, *QUICK, home=tmp_path
    )
    assert run.returncode == 1, run.describe()
    rows = {row["model"]: row for row in read_results_csv(out)}
    assert rows["digits"]["status"] == "done" and rows["digits"]["accuracy_top1"]
    failed = rows["mnv2_cifar32"]
    assert failed["status"] == "failed"
    error = failed["error"]
    assert str(TEST_SET / "inputs.npy") in error
    assert "64 values" in error and "[1, 3, 32, 32]" in error
    assert "evaluate this model on a set made for its input" in error


def test_quantize_with_a_calibration_set_that_does_not_fit_names_it(tmp_path: Path) -> None:
    cifar = MODELS_DIR / "mnv2_cifar32.onnx"
    run = run_devlab(
        "quantize",
        cifar,
        "--calibration",
        CALIB_SET,
        "--scheme",
        "snpe",
        "--out",
        tmp_path / "Q",
        home=tmp_path,
    )
    assert run.returncode == 2, run.describe()
    assert str(CALIB_SET / "inputs.npy") in run.err_text and str(cifar) in run.err_text
    assert not (tmp_path / "Q").exists() or not any((tmp_path / "Q").iterdir())


def test_host_scores_match_a_plain_onnxruntime_loop() -> None:
    """The scorer's top-1 over host ORT outputs equals counting arg-max hits by hand."""
    model = load_model(DIGITS)
    run = host_outputs(str(DIGITS))
    hits = [int(np.argmax(run(s.feeds)[0]) == s.label) for s in open_set(TEST_SET).samples(model)]
    assert sum(hits) / len(hits) == pytest.approx(numpy_top1(), abs=1e-9)
