"""``devlab quantize``: one model, one calibration set, one scheme -> files the existing job
paths take (SNPE: ``--quantization-overrides FILE``; ORT: the QDQ model as a model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from backends.accuracy.sets import SetError
from backends.models.intake import ModelError, load_model
from backends.quantize.calibration import calibration_feeds
from backends.quantize.encodings import BITS, snpe_encodings
from backends.quantize.ranges import activation_ranges, weight_ranges

SCHEMES = ("snpe", "ort-qdq")


class QuantizeError(Exception):
    """The model, the set or the options cannot be quantized; the message says why."""


@dataclass
class Quantized:
    """What ``quantize_model`` wrote."""

    path: Path
    scheme: str
    bits: int
    calibration_samples: int
    tensors: int  # activation tensors with a range (snpe) / the model's nodes (ort-qdq)


def output_name(model_path: Path, scheme: str, bits: int) -> str:
    """``digits.int8-qdq.onnx`` / ``digits.int8.encodings.json``."""
    if scheme == "ort-qdq":
        return f"{model_path.stem}.int{bits}-qdq.onnx"
    return f"{model_path.stem}.int{bits}.encodings.json"


def quantize_model(
    model_path: str | Path, calibration: str | Path, scheme: str, out_dir: str | Path, bits: int = 8
) -> Quantized:
    """Calibrate ``model_path`` on the ``calibration`` set and write the ``scheme``'s file."""
    if scheme not in SCHEMES:
        raise QuantizeError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    if bits not in BITS:
        raise QuantizeError(f"--bits must be 8 or 16, got {bits}")
    source = Path(model_path)
    try:
        model = load_model(source)
        feeds = calibration_feeds(model, calibration)
    except (ModelError, SetError) as error:
        raise QuantizeError(str(error)) from error
    if not feeds:
        raise QuantizeError(f"{calibration}: the calibration set has no samples")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / output_name(source, scheme, bits)
    if scheme == "ort-qdq":
        from backends.quantize.ort_qdq import quantize_qdq

        try:
            quantize_qdq(source, target, feeds, bits)
        except Exception as error:  # ONNX Runtime's quantizer raises many kinds
            raise QuantizeError(f"{source}: ONNX Runtime could not quantize it: {error}") from error
        import onnx

        nodes = len(onnx.load(str(target), load_external_data=False).graph.node)
        return Quantized(target, scheme, bits, len(feeds), nodes)
    try:
        ranges = activation_ranges(source, feeds)
    except Exception as error:  # ORT raises its own types
        raise QuantizeError(f"{source}: host ONNX Runtime could not run it: {error}") from error
    encodings = snpe_encodings(ranges, weight_ranges(source), bits)
    target.write_text(json.dumps(encodings, indent=2) + "\n", encoding="utf-8")
    return Quantized(target, scheme, bits, len(feeds), len(ranges))
