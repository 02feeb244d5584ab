"""SNPE encodings from host calibration follow SNPE's 8-bit asymmetric formula, cover the ranges
measured on real ONNX Runtime activations, and go through the stand-in SNPE SDK's converter and
quantizer the way ``--quantization-overrides`` hands them over.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.accuracy.sets import open_set
from backends.models.intake import load_model
from backends.quantize.encodings import dequantize, encoding, quantize
from backends.quantize.ranges import activation_ranges
from backends.quantize.tool import quantize_model
from backends.runtimes.snpe import (
    build_onnx_to_dlc_command,
    build_quantize_command,
    load_clip_ranges,
)
from backends.virtual.snpe_sdk import HOST_ARCH, make_standin_sdk
from backends.virtual.tools.snpe_standin import read_container
from support.helpers import REPO_ROOT, save_model

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
CALIB = ASSETS / "digits-calib"


def assert_follows_the_formula(enc: dict, bits: int = 8) -> None:
    """scale = (max - min) / (2^b - 1), offset = round(min / scale), 0 inside and exact."""
    levels = (1 << bits) - 1
    assert enc["bitwidth"] == bits
    assert enc["min"] <= 0.0 <= enc["max"]
    assert enc["scale"] == pytest.approx((enc["max"] - enc["min"]) / levels, rel=1e-12)
    assert enc["offset"] == round(enc["min"] / enc["scale"])
    zero = quantize(np.array([0.0]), enc)
    assert 0 <= zero[0] <= levels and dequantize(zero, enc)[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("low", "high"),
    [(0.25, 3.0), (-4.0, -0.5), (-1.5, 2.5), (0.0, 0.0), (-0.003, 1000.0)],
    ids=["all-positive", "all-negative", "mixed", "all-zero", "lopsided"],
)
def test_one_encoding(low: float, high: float) -> None:
    enc = encoding(low, high)
    assert_follows_the_formula(enc)
    if low >= 0:
        assert enc["min"] == 0.0 and enc["offset"] == 0  # widened down to 0
    if high <= 0 and low < 0:
        assert enc["max"] == pytest.approx(0.0, abs=1e-9) and enc["offset"] == -255
    span = np.linspace(min(low, 0.0), max(high, 0.0), 1001)
    codes = quantize(span, enc)
    assert codes.min() >= 0 and codes.max() <= 255
    # q = clamp(round(255 (x - min) / (max - min)), 0, 255), and back within half a step
    by_hand = np.clip(np.round(255 * (span - enc["min"]) / (enc["max"] - enc["min"])), 0, 255)
    assert np.array_equal(codes, by_hand)
    assert np.abs(dequantize(codes, enc) - span).max() <= enc["scale"] * (0.5 + 1e-9) + 1e-12
    outside = quantize(np.array([enc["min"] - 10 * enc["scale"], enc["max"] + 1.0]), enc)
    assert outside.tolist() == [0, 255]


def test_sixteen_bit_encodings_use_65535_levels() -> None:
    enc = encoding(-1.0, 3.0, bits=16)
    assert_follows_the_formula(enc, bits=16)
    assert quantize(np.array([enc["max"]]), enc)[0] == 65535


def sign_model(path: Path) -> Path:
    """image -> Relu -> "positive" (all >= 0) and -> Neg -> "negative" (all <= 0), with the
    image scaled by a weight so the ranges are not just the pixels'."""
    scale = numpy_helper.from_array(np.array(3.0, np.float32), "gain")
    nodes = [
        helper.make_node("Mul", ["image", "gain"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["positive"]),
        helper.make_node("Neg", ["positive"], ["negative"]),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, 8, 8])
        for name in ("positive", "negative")
    ]
    return save_model(path, nodes, [image], outputs, [scale])


def test_calibrated_ranges_of_an_all_positive_and_an_all_negative_tensor(tmp_path: Path) -> None:
    model_path = sign_model(tmp_path / "signs.onnx")
    out = quantize_model(model_path, CALIB, "snpe", tmp_path / "Q")
    encodings = json.loads(out.path.read_text())["activation_encodings"]
    assert set(encodings) == {"image", "scaled", "positive", "negative"}

    pixels = np.stack([s.feeds["image"] for s in open_set(CALIB).samples(load_model(model_path))])
    top = float(pixels.max()) * 3.0  # what ONNX Runtime computed, from the inputs by hand
    positive, negative = encodings["positive"][0], encodings["negative"][0]
    assert_follows_the_formula(positive)
    assert_follows_the_formula(negative)
    assert positive["offset"] == 0 and positive["min"] == 0.0
    assert positive["max"] == pytest.approx(top, rel=1e-6)
    assert negative["offset"] == -255 and negative["max"] == pytest.approx(0.0, abs=1e-6)
    assert negative["min"] == pytest.approx(-top, rel=1e-6)


def test_digits_encodings_cover_what_the_layers_compute(tmp_path: Path) -> None:
    """Every activation of digits.onnx gets an encoding; fc1's range is the range of
    W1 x + b1 over the calibration images, computed here with numpy from the weights."""
    out = quantize_model(DIGITS, CALIB, "snpe", tmp_path / "Q")
    data = load_clip_ranges(out.path)  # the shape SNPE (and devlab's check) expects
    acts, params = data["activation_encodings"], data["param_encodings"]
    assert list(acts) == ["image", "flat", "fc1", "relu1", "logits"]
    assert set(params) == {"fc1.weight", "fc2.weight"}
    for enc in [*acts.values(), *params.values()]:
        assert_follows_the_formula(enc[0])

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(DIGITS).graph.initializer}
    model = load_model(DIGITS)
    flat = np.stack([s.feeds["image"].reshape(-1) for s in open_set(CALIB).samples(model)])
    fc1 = flat @ weights["fc1.weight"].T + weights["fc1.bias"]
    ranges = activation_ranges(DIGITS, [s.feeds for s in open_set(CALIB).samples(model)])
    assert ranges["fc1"] == pytest.approx((fc1.min(), fc1.max()), rel=1e-5)
    fc1_enc = acts["fc1"][0]
    assert fc1_enc["min"] <= fc1.min() + fc1_enc["scale"] / 2
    assert fc1_enc["max"] >= fc1.max() - fc1_enc["scale"] / 2
    w1 = params["fc1.weight"][0]
    assert w1["min"] <= weights["fc1.weight"].min() + w1["scale"] / 2


def test_the_standin_snpe_sdk_consumes_the_encodings(tmp_path: Path) -> None:
    """The stand-in snpe-onnx-to-dlc reads the file through --quantization_overrides (devlab's
    own command builder), knows every tensor it names (no 'not in the model' warning) and
    carries the encodings into the DLC; snpe-dlc-quantize --override_params then finds them."""
    overrides = quantize_model(DIGITS, CALIB, "snpe", tmp_path / "Q").path
    sdk_bin = make_standin_sdk(tmp_path / "sdk") / "bin" / HOST_ARCH
    dlc = tmp_path / "digits.dlc"
    convert = subprocess.run(
        build_onnx_to_dlc_command(sdk_bin, DIGITS, dlc, overrides),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert convert.returncode == 0, convert.stderr
    assert "WARNING" not in convert.stdout, convert.stdout
    _, meta = read_container(dlc)
    assert meta["quantization_overrides"] == json.loads(overrides.read_text())

    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    lines = []
    for index, sample in enumerate(list(open_set(CALIB).samples(load_model(DIGITS)))[:5]):
        raw = raw_dir / f"{index}.raw"
        sample.feeds["image"].astype(np.float32).tofile(raw)
        lines.append(str(raw))
    input_list = tmp_path / "calib.txt"
    input_list.write_text("\n".join(lines) + "\n")
    quantized = tmp_path / "digits.q.dlc"
    run = subprocess.run(
        build_quantize_command(sdk_bin, dlc, input_list, quantized),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "WARNING" not in run.stdout, run.stdout  # the DLC carries the encodings
    _, quantized_meta = read_container(quantized)
    assert quantized_meta["quantization"]["override_params"] is True
    assert quantized_meta["quantization_overrides"]["activation_encodings"]["fc1"]
