"""**Stand-in** for the SNPE SDK's host converter ``snpe-onnx-to-dlc`` (not Qualcomm software).

It does not convert anything: the ONNX model is copied into a stand-in "DLC" container (a zip,
see ``snpe_standin``) together with the options given, so the stand-in ``snpe-net-run`` can run
it with ONNX Runtime. What it does check, like the real tool:

* ``--input_network`` must be a readable ONNX model;
* ``--quantization_overrides`` (an MQBench/SNPE clip-range JSON) must have the encodings shape
  (``activation_encodings`` / ``param_encodings``, numbers, ``min <= max``); tensors it names
  that the model does not have are reported with a ``WARNING`` line and ignored.

Usage::

    snpe-onnx-to-dlc --input_network model.onnx [--output_path model.dlc]
                     [--quantization_overrides clip_ranges.json] [--input_dim NAME DIMS]...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from backends.virtual.tools.snpe_standin import (
    STANDIN_VERSION,
    StandinArgumentParser,
    StandinError,
    standin_main,
    write_container,
)

TOOL = "snpe-onnx-to-dlc"


def _parser() -> argparse.ArgumentParser:
    parser = StandinArgumentParser(
        prog=TOOL,
        description="devlab STAND-IN for snpe-onnx-to-dlc: wraps the ONNX model in a stand-in "
        "container (not a real DLC).",
    )
    parser.add_argument("-i", "--input_network", required=True)
    parser.add_argument("-o", "--output_path")
    parser.add_argument("--quantization_overrides")
    parser.add_argument("-d", "--input_dim", nargs=2, action="append", default=[])
    parser.add_argument("--out_node", "--out_tensor_name", action="append", default=[])
    parser.add_argument("--input_layout", nargs=2, action="append", default=[])
    parser.add_argument("--keep_quant_nodes", action="store_true")
    parser.add_argument("--model_version")
    parser.add_argument("--copyright_file")
    parser.add_argument("--debug", nargs="?", const=0, type=int)
    return parser


def _model_tensors(onnx_bytes: bytes) -> tuple[set[str], set[str]]:
    """(activation tensor names, parameter names) of the ONNX graph."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    params = {tensor.name for tensor in graph.initializer}
    activations = {value.name for value in graph.input} - params
    for node in graph.node:
        activations.update(name for name in node.output if name)
    return activations, params


def run(argv: Sequence[str], out=sys.stdout) -> int:
    args = _parser().parse_args(list(argv))
    source = Path(args.input_network)
    try:
        onnx_bytes = source.read_bytes()
    except OSError as error:
        raise StandinError(f"cannot read {source}: {error.strerror or error}") from error
    try:
        activations, params = _model_tensors(onnx_bytes)
    except Exception as error:
        raise StandinError(f"{source} is not a readable ONNX model: {error}") from error

    overrides = None
    if args.quantization_overrides:
        from backends.runtimes.snpe import ClipRangesError, load_clip_ranges

        try:
            overrides = load_clip_ranges(args.quantization_overrides)
        except (OSError, ClipRangesError) as error:
            raise StandinError(f"--quantization_overrides: {error}") from error
        for section, known in (("activation_encodings", activations), ("param_encodings", params)):
            for tensor in overrides[section]:
                if tensor not in known:
                    print(
                        f"WARNING - {section}: tensor {tensor!r} is not in the model; ignored",
                        file=out,
                    )

    output = Path(args.output_path) if args.output_path else source.with_suffix(".dlc")
    meta = {
        "source": str(source),
        "converter": {
            "tool": TOOL,
            "version": STANDIN_VERSION,
            "input_dim": args.input_dim,
            "out_node": args.out_node,
            "input_layout": args.input_layout,
            "keep_quant_nodes": args.keep_quant_nodes,
            "model_version": args.model_version,
        },
        "quantization_overrides": overrides,
        "quantization_overrides_file": args.quantization_overrides,
        "quantization": None,
    }
    write_container(output, onnx_bytes, meta)
    print(f"INFO - devlab stand-in {TOOL} {STANDIN_VERSION}: NOT a real conversion", file=out)
    print(f"INFO - wrote stand-in container {output} (the ONNX model, unchanged)", file=out)
    print("INFO - INFO_CONVERSION_SUCCESS: Conversion completed successfully", file=out)
    return 0


def main(argv: Sequence[str] | None = None, calls_log: str | None = None) -> int:
    return standin_main(TOOL, run, argv, calls_log, error_prefix="ERROR - ")


if __name__ == "__main__":
    sys.exit(main())
