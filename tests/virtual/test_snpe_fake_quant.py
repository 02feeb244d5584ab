"""The stand-in snpe-dlc-quantize applies the encodings ``devlab quantize --scheme snpe`` computes:
the DLC it writes holds a model whose numbers are what SNPE's 8-bit formula gives, computed here
by hand with numpy from the weights, and whose digits accuracy stays within two points.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from backends.accuracy.sets import open_set
from backends.models.intake import load_model
from backends.quantize.tool import quantize_model
from backends.runtimes.snpe import build_onnx_to_dlc_command, build_quantize_command
from backends.virtual.snpe_sdk import HOST_ARCH, make_standin_sdk
from backends.virtual.tools.snpe_fake_quant import fake_quantize
from backends.virtual.tools.snpe_standin import read_container
from support.helpers import REPO_ROOT

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"


def snpe_fake(x: np.ndarray, enc: dict) -> np.ndarray:
    """SNPE's stored code, dequantized: clamp(round((x - min) / scale), 0, 255) x scale + min,
    with min = offset x scale. The step x / scale is taken in float32, as the model computes it:
    the digits pixels (k / 16) over scale 1/255 land exactly on half steps (k = 8: 127.5), where
    float32 and float64 round to different neighbours."""
    steps = np.round((x.astype(np.float32) / np.float32(enc["scale"])).astype(np.float64))
    codes = np.clip(steps - enc["offset"], 0, (1 << enc["bitwidth"]) - 1)
    return codes * enc["scale"] + enc["min"]


def by_hand(pixels: np.ndarray, encodings: dict) -> np.ndarray:
    """digits.onnx (Flatten, Gemm, Relu, Gemm) with every encoded tensor fake-quantized."""
    acts, params = encodings["activation_encodings"], encodings["param_encodings"]
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(DIGITS).graph.initializer}
    w1 = snpe_fake(weights["fc1.weight"].astype(np.float64), params["fc1.weight"][0])
    w2 = snpe_fake(weights["fc2.weight"].astype(np.float64), params["fc2.weight"][0])
    x = snpe_fake(pixels.reshape(len(pixels), -1), acts["image"][0])
    x = snpe_fake(x, acts["flat"][0])
    h = snpe_fake(x @ w1.T + weights["fc1.bias"], acts["fc1"][0])
    h = snpe_fake(np.maximum(h, 0.0), acts["relu1"][0])
    return snpe_fake(h @ w2.T + weights["fc2.bias"], acts["logits"][0])


@pytest.fixture(scope="module")
def encodings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("Q")
    return quantize_model(DIGITS, ASSETS / "digits-calib", "snpe", out).path


def run_model(model_bytes: bytes, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": p[None]})[0] for p in pixels])


def test_the_fake_quantized_model_computes_snpes_formula(encodings_file: Path) -> None:
    encodings = json.loads(encodings_file.read_text())
    quantized, counts = fake_quantize(DIGITS.read_bytes(), encodings)
    assert counts == {"activations": 5, "weights": 2}
    test = open_set(ASSETS / "digits-test")
    samples = list(test.samples(load_model(DIGITS)))
    pixels = np.stack([s.feeds["image"][0] for s in samples])
    got = run_model(quantized, pixels)
    expected = by_hand(pixels.astype(np.float64), encodings)
    step = encodings["activation_encodings"]["logits"][0]["scale"]
    # float32 in ORT vs float64 here: a value on a rounding edge may land one step over
    off = np.abs(got - expected.reshape(got.shape))
    assert off.max() <= step * 1.01
    assert (off > step * 0.01).mean() < 0.01
    assert set(np.unique(np.round((got - got.min()) / step, 3) % 1)) <= {0.0, 1.0}  # on the grid

    float_logits = run_model(DIGITS.read_bytes(), pixels)
    assert np.abs(float_logits - got).max() > step / 4  # it really is quantized
    labels = np.array([s.label for s in samples])
    top1_float = (float_logits.reshape(len(labels), -1).argmax(1) == labels).mean()
    top1_int8 = (got.reshape(len(labels), -1).argmax(1) == labels).mean()
    print(f"digits-test top-1: fp32 {top1_float:.4f}, SNPE-formula int8 {top1_int8:.4f}")
    assert abs(top1_float - top1_int8) <= 0.02


def test_the_standin_quantizer_writes_the_quantized_model_into_the_dlc(
    encodings_file: Path, tmp_path: Path
) -> None:
    """Through devlab's own command builders, as an SNPE DSP job runs them."""
    sdk_bin = make_standin_sdk(tmp_path / "sdk") / "bin" / HOST_ARCH
    dlc = tmp_path / "digits.dlc"
    convert = build_onnx_to_dlc_command(sdk_bin, DIGITS, dlc, encodings_file)
    subprocess.run(convert, check=True, capture_output=True, timeout=60)
    raw = tmp_path / "0.raw"
    np.zeros((1, 1, 8, 8), np.float32).tofile(raw)
    (tmp_path / "list.txt").write_text(f"{raw}\n")
    quantized = tmp_path / "digits.q.dlc"
    done = subprocess.run(
        build_quantize_command(sdk_bin, dlc, tmp_path / "list.txt", quantized),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "applied to 5 activation(s) and 2 weight(s)" in done.stdout
    model_bytes, meta = read_container(quantized)
    assert meta["quantization"]["applied"] == {"activations": 5, "weights": 2}
    ops = [node.op_type for node in onnx.load_from_string(model_bytes).graph.node]
    assert ops.count("Round") == 5
    expected, _ = fake_quantize(DIGITS.read_bytes(), json.loads(encodings_file.read_text()))
    calib = open_set(ASSETS / "digits-calib").samples(load_model(DIGITS))
    pixels = np.stack([s.feeds["image"][0] for s in calib])
    assert np.array_equal(run_model(model_bytes, pixels), run_model(expected, pixels))


def test_a_model_older_than_opset_11_is_refused_by_name() -> None:
    model = onnx.load(DIGITS)
    model.opset_import[0].version = 9
    with pytest.raises(ValueError, match="opset 9"):
        fake_quantize(model.SerializeToString(), {"activation_encodings": {}})


def test_an_encoding_with_only_min_and_max_gets_snpes_scale_and_offset() -> None:
    """MQBench files may give weights as min/max only: the scale and offset follow the formula."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(DIGITS).graph.initializer}
    low, high = float(weights["fc1.weight"].min()), float(weights["fc1.weight"].max())
    given = {"param_encodings": {"fc1.weight": [{"bitwidth": 8, "min": low, "max": high}]}}
    quantized, counts = fake_quantize(DIGITS.read_bytes(), given)
    assert counts == {"activations": 0, "weights": 1}
    got = {
        t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(quantized).graph.initializer
    }
    full = dict(given["param_encodings"]["fc1.weight"][0])
    full["scale"] = (max(high, 0) - min(low, 0)) / 255
    full["offset"] = round(min(low, 0) / full["scale"])
    full["min"] = full["offset"] * full["scale"]
    assert np.allclose(got["fc1.weight"], snpe_fake(weights["fc1.weight"], full), atol=1e-7)
    assert len(np.unique(got["fc1.weight"])) <= 256
    with pytest.raises(ValueError, match="scale and offset, or min and max"):
        fake_quantize(DIGITS.read_bytes(), {"param_encodings": {"fc1.weight": [{"bitwidth": 8}]}})
