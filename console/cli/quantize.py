"""``devlab quantize MODEL --calibration SET --scheme snpe|ort-qdq``: quantization on the host.

A thin wrapper around ``backends.quantize.tool``; imports rich, never textual.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from backends.quantize.tool import SCHEMES, QuantizeError, quantize_model
from console.cli.exit_codes import ExitCode, UsageError


def build_quantize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab quantize",
        description="Calibrate MODEL on a calibration set with ONNX Runtime on this machine and "
        "write SNPE encodings (snpe: give them to SNPE jobs with --quantization-overrides) or "
        "a static-quantized QDQ model (ort-qdq: run it like any model). See docs/accuracy.md.",
    )
    parser.add_argument("model", metavar="MODEL", help="the float ONNX model")
    parser.add_argument(
        "--calibration",
        required=True,
        metavar="SET",
        help="calibration set: a folder with labels.csv and inputs, or ONNX test data",
    )
    parser.add_argument("--scheme", required=True, choices=SCHEMES, help="what to write")
    parser.add_argument(
        "--bits", type=int, choices=(8, 16), default=8, help="activation bitwidth (default 8)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    return parser


def run_quantize_tool(args: list[str], err: Console) -> int:
    """``quantize MODEL ...`` (``args[0] == "quantize"``); 0 when written, 2 on bad input."""
    parsed = build_quantize_parser().parse_args(args[1:])
    try:
        done = quantize_model(
            parsed.model, parsed.calibration, parsed.scheme, parsed.out, parsed.bits
        )
    except QuantizeError as error:
        raise UsageError(str(error)) from None
    if parsed.json:
        print(
            json.dumps(
                {
                    "path": str(done.path),
                    "scheme": done.scheme,
                    "bits": done.bits,
                    "calibration_samples": done.calibration_samples,
                    "tensors": done.tensors,
                }
            )
        )
    use = (
        f"devlab --run {done.path}"
        if done.scheme == "ort-qdq"
        else f"devlab --run {parsed.model} --device adb:SERIAL --runtime snpe-dsp "
        f"--quantization-overrides {done.path}"
    )
    err.print(
        f"wrote {done.path} ({done.scheme}, {done.bits}-bit, calibrated on "
        f"{done.calibration_samples} samples); use it: {use}",
        highlight=False,
    )
    return ExitCode.OK
