"""**Stand-in** for the SNPE SDK's host quantizer ``snpe-dlc-quantize`` (not Qualcomm software).

The stand-in DLC container is copied and the quantization options are recorded in its
``meta.json`` (``quantization``), which the stand-in ``snpe-net-run`` requires for ``--use_dsp``,
like the real DSP runtime requires a quantized DLC. With ``--override_params`` and encodings the
converter carried (``--quantization_overrides``), they are applied to the model as fake
quantization (``snpe_fake_quant``), so the DLC then computes what the quantized graph would;
without encodings the model stays float (the real tool would calibrate; this one does not). What
it checks, like the real tool:

* ``--input_dlc`` is a (stand-in) DLC;
* ``--input_list`` lists at least one calibration input, every file exists and holds exactly
  one float32 tensor of each model input's size (``name:=path`` items for several inputs);
* ``--bias_bitwidth`` is 8 or 32, ``--act_bitwidth`` / ``--weights_bitwidth`` 8 or 16;
* ``--override_params`` without encodings given to the converter
  (``--quantization_overrides``) prints a ``WARNING``.

Usage::

    snpe-dlc-quantize --input_dlc model.dlc --input_list list.txt [--output_dlc out.dlc]
                      [--override_params] [--bias_bitwidth 8|32] [--act_bitwidth 8|16]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from backends.virtual.tools.snpe_fake_quant import fake_quantize
from backends.virtual.tools.snpe_standin import (
    STANDIN_VERSION,
    StandinArgumentParser,
    StandinError,
    element_count,
    onnx_inputs,
    parse_input_list,
    read_container,
    standin_main,
    write_container,
)

TOOL = "snpe-dlc-quantize"


def _parser() -> argparse.ArgumentParser:
    parser = StandinArgumentParser(
        prog=TOOL,
        description="devlab STAND-IN for snpe-dlc-quantize: records the options; applies "
        "the DLC's encodings as fake quantization with --override_params.",
    )
    parser.add_argument("--input_dlc", required=True)
    parser.add_argument("--input_list", required=True)
    parser.add_argument("--output_dlc")
    parser.add_argument("--override_params", action="store_true")
    parser.add_argument("--bias_bitwidth", type=int, choices=(8, 32), default=8)
    parser.add_argument("--act_bitwidth", type=int, choices=(8, 16), default=8)
    parser.add_argument("--weights_bitwidth", type=int, choices=(8, 16), default=8)
    parser.add_argument("--use_enhanced_quantizer", action="store_true")
    parser.add_argument("--use_adjusted_weights_quantizer", action="store_true")
    parser.add_argument("--optimizations", action="append", default=[])
    parser.add_argument("--enable_htp", action="store_true")
    parser.add_argument("--htp_socs")
    parser.add_argument("--debug", nargs="?", const=0, type=int)
    return parser


def _check_calibration(list_path: Path, onnx_bytes: bytes) -> int:
    """The number of calibration inputs in ``list_path`` (each checked against the model)."""
    try:
        text = list_path.read_text(encoding="utf-8")
    except OSError as error:
        raise StandinError(f"cannot read input list {list_path}: {error.strerror}") from error
    inputs = dict(onnx_inputs(onnx_bytes))
    runs = parse_input_list(text, list(inputs))
    if not runs:
        raise StandinError(f"input list {list_path} lists no calibration inputs")
    for feed in runs:
        for name, path in feed.items():
            raw = Path(path) if os.path.isabs(path) else Path.cwd() / path
            try:
                size = raw.stat().st_size
            except OSError as error:
                raise StandinError(f"calibration input {path}: {error.strerror}") from error
            expected = element_count(inputs[name]) * 4
            if size != expected:
                raise StandinError(
                    f"calibration input {path}: {size} bytes, expected {expected} "
                    f"(float32 {inputs[name]} for input {name!r})"
                )
    return len(runs)


def run(argv: Sequence[str], out=sys.stdout) -> int:
    args = _parser().parse_args(list(argv))
    source = Path(args.input_dlc)
    onnx_bytes, meta = read_container(source)
    count = _check_calibration(Path(args.input_list), onnx_bytes)
    overrides = meta.get("quantization_overrides")
    if args.override_params and not overrides:
        print(
            "WARNING - --override_params: the DLC carries no encodings "
            "(convert with --quantization_overrides); calibrating instead",
            file=out,
        )
    applied = None
    if args.override_params and overrides:
        try:
            onnx_bytes, applied = fake_quantize(onnx_bytes, overrides)
        except ValueError as error:
            raise StandinError(f"{args.input_dlc}: cannot apply the encodings: {error}") from error
    meta["quantization"] = {
        "tool": TOOL,
        "version": STANDIN_VERSION,
        "note": (
            "encodings applied as fake quantization"
            if applied
            else "recorded only: the stand-in runs the model in float"
        ),
        "applied": applied,
        "calibration_inputs": count,
        "input_list": str(args.input_list),
        "override_params": args.override_params,
        "bias_bitwidth": args.bias_bitwidth,
        "act_bitwidth": args.act_bitwidth,
        "weights_bitwidth": args.weights_bitwidth,
        "use_enhanced_quantizer": args.use_enhanced_quantizer,
        "use_adjusted_weights_quantizer": args.use_adjusted_weights_quantizer,
        "optimizations": args.optimizations,
        "enable_htp": args.enable_htp,
        "htp_socs": args.htp_socs,
    }
    output = (
        Path(args.output_dlc)
        if args.output_dlc
        else source.with_name(source.stem + "_quantized.dlc")
    )
    write_container(output, onnx_bytes, meta)
    done = (
        f"encodings applied to {applied['activations']} activation(s) and "
        f"{applied['weights']} weight(s) (fake quantization)"
        if applied
        else "options recorded, NOT quantized"
    )
    print(f"[INFO] devlab stand-in {TOOL} {STANDIN_VERSION}: {done}", file=out)
    print(f"[INFO] {count} calibration input(s) checked", file=out)
    print(f"[INFO] Saving quantized model to: {output}", file=out)
    print("[INFO] DebugLog shutting down.", file=out)
    return 0


def main(argv: Sequence[str] | None = None, calls_log: str | None = None) -> int:
    return standin_main(TOOL, run, argv, calls_log, error_prefix="[ERROR] ")


if __name__ == "__main__":
    sys.exit(main())
