"""**Stand-in** for the SNPE SDK's device tool ``snpe-net-run`` (not Qualcomm software).

Installed by ``backends.virtual.snpe_sdk`` as ``bin/aarch64-android/snpe-net-run`` of a
stand-in SDK, pushed to the virtual phone and run there through the phone's shell (so the
paths on its command line were rewritten into the phone's sandbox, while the paths inside the
input list still say ``/data/...`` and are mapped here).

What it does, for each line of ``--input_list`` (one inference per line, as the real tool):
reads the float32 raw file(s), runs the model of the stand-in container with ONNX Runtime on
the host CPU (one intra-op thread), writes ``Result_<n>/<output>.raw``. It then writes a
stand-in diag log ``<output_dir>/SNPEDiag_<n>.log`` (JSON behind a magic line, *not* the real
binary format) with the init times, every inference's Total Inference Time (input copy + run +
output copy) and Forward Propagate Time (the ONNX Runtime run), and with
``--profiling_level detailed`` every node's time per inference from ONNX Runtime's profiler.
Decode it with the stand-in ``snpe-diagview``.

Runtimes: CPU (default, or ``--use_cpu``), ``--use_gpu`` (``--gpu_mode float16`` for
GPU_FP16), ``--use_dsp``: all run on the host CPU; the runtime is only recorded. A DLC the stand-in
``snpe-dlc-quantize`` gave encodings to computes in fake-quantized arithmetic, else in float.
``--use_dsp`` refuses a container that the (stand-in) ``snpe-dlc-quantize`` did not process,
as the real DSP runtime needs a quantized DLC. ``--use_aip`` is refused. With
``--profiling_level off`` no diag log is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.runtimes.ort_profile import read_ort_profile
from backends.runtimes.snpe import PERF_PROFILES, PROFILING_LEVELS
from backends.virtual.tools.snpe_standin import (
    STANDIN_VERSION,
    StandinArgumentParser,
    StandinError,
    element_count,
    host_path,
    open_container,
    parse_input_list,
    write_log,
)

TOOL = "snpe-net-run"
LAYER_LEVELS = ("detailed", "linting", "qhas")
RULE = "-" * 79


def _parser() -> argparse.ArgumentParser:
    parser = StandinArgumentParser(
        prog=TOOL,
        description="devlab STAND-IN for snpe-net-run: runs a stand-in DLC with ONNX Runtime.",
    )
    parser.add_argument("--container", required=True)
    parser.add_argument("--input_list", required=True)
    parser.add_argument("--output_dir", default="output")
    parser.add_argument("--perf_profile", default="high_performance", choices=PERF_PROFILES)
    parser.add_argument("--profiling_level", default="basic", choices=PROFILING_LEVELS)
    parser.add_argument("--use_cpu", action="store_true")
    parser.add_argument("--use_gpu", action="store_true")
    parser.add_argument("--gpu_mode", choices=("default", "float16", "float32_16_hybrid"))
    parser.add_argument("--use_dsp", action="store_true")
    parser.add_argument("--use_aip", action="store_true")
    parser.add_argument("--enable_cpu_fallback", action="store_true")
    parser.add_argument("--runtime_order")
    parser.add_argument("--userbuffer_float", action="store_true")
    parser.add_argument("--userbuffer_tf8", action="store_true")
    parser.add_argument("--userbuffer_tfN", type=int)
    parser.add_argument("--userbuffer_auto", action="store_true")
    parser.add_argument("--set_output_tensors")
    parser.add_argument("--debug", action="store_true")
    return parser


def _runtime(args: argparse.Namespace) -> str:
    chosen = [flag for flag in ("use_gpu", "use_dsp", "use_aip") if getattr(args, flag)]
    if len(chosen) > 1:
        raise StandinError("choose one runtime: " + ", ".join(f"--{flag}" for flag in chosen))
    if args.use_aip:
        raise StandinError("the AIP runtime is not available on this device")
    if args.use_dsp:
        return "DSP"
    if args.use_gpu:
        return "GPU_FP16" if args.gpu_mode == "float16" else "GPU"
    return "CPU"


def _us(seconds: float) -> float:
    return seconds * 1e6


def _load_inputs(
    runs: list[dict[str, str]], specs: dict[str, tuple[list[int], Any]]
) -> dict[str, Any]:
    """Every raw file the input list names (each read once), checked against the inputs."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for feed in runs:
        for name, path in feed.items():
            if path in arrays:
                continue
            shape, _ = specs[name]
            try:
                data = np.fromfile(host_path(path), dtype=np.float32)
            except OSError as error:
                raise StandinError(f"Failed to load input file {path}: {error.strerror}") from error
            if data.size != element_count(shape):
                raise StandinError(
                    f"input file {path}: {data.size * 4} bytes, expected "
                    f"{element_count(shape) * 4} (float32 {shape} for input {name!r})"
                )
            arrays[path] = data
    return arrays


def _layer_times(trace_path: str, count: int) -> list[dict[str, Any]]:
    """Per node, its time in each inference (us), from an ONNX Runtime profiler trace."""
    layers: dict[str, dict[str, Any]] = {}
    for kernel in sorted(read_ort_profile(trace_path).in_runs(), key=lambda k: k.ts_us):
        assert kernel.run is not None
        if kernel.run >= count:
            continue
        layer = layers.setdefault(
            kernel.node,
            {"name": kernel.node, "op_type": kernel.op_type, "times": [0.0] * count},
        )
        layer["times"][kernel.run] += kernel.dur_us
    return list(layers.values())


def run(argv: Sequence[str], out=sys.stdout) -> int:
    args = _parser().parse_args(list(argv))
    runtime = _runtime(args)
    level = args.profiling_level
    import numpy as np

    from backends.virtual.tools._common import (
        _ORT_TYPES as ORT_TYPES,
    )
    from backends.virtual.tools._common import (
        Heater,
        ToolError,
        create_session,
        session_options,
    )

    begin = time.perf_counter()
    container = host_path(args.container)
    try:
        data = Path(container).read_bytes()
    except OSError as error:
        raise StandinError(f"cannot open container {args.container}: {error.strerror}") from error
    loaded = time.perf_counter()
    onnx_bytes, meta = open_container(data, args.container)
    if runtime == "DSP" and not meta.get("quantization"):
        raise StandinError(
            f"{args.container}: the DSP runtime needs a quantized DLC; run snpe-dlc-quantize"
        )
    deserialized = time.perf_counter()

    profile_dir = tempfile.mkdtemp(prefix="snpe-standin-") if level in LAYER_LEVELS else None
    try:
        options = session_options(
            1, profile_prefix=os.path.join(profile_dir, "ort") if profile_dir else None
        )
        try:
            session = create_session(onnx_bytes, options)
        except ToolError as error:
            raise StandinError(f"Failed to create the network: {error}") from error
        created = time.perf_counter()

        specs: dict[str, tuple[list[int], Any]] = {}
        for spec in session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
            specs[spec.name] = (shape, ORT_TYPES.get(spec.type, np.float32))
        try:
            text = Path(host_path(args.input_list)).read_text(encoding="utf-8")
        except OSError as error:
            raise StandinError(
                f"cannot read input list {args.input_list}: {error.strerror}"
            ) from error
        runs = parse_input_list(text, list(specs))
        if not runs:
            raise StandinError(f"input list {args.input_list} lists no inputs")
        arrays = _load_inputs(runs, specs)
        output_dir = Path(host_path(args.output_dir))
        output_dir.mkdir(parents=True, exist_ok=True)
        initialised = time.perf_counter()

        print(RULE, file=out)
        print("Model String: N/A", file=out)
        print(f"SNPE v{STANDIN_VERSION} (devlab stand-in: ONNX Runtime on the host CPU)", file=out)
        print(RULE, file=out)
        names = [o.name for o in session.get_outputs()]
        inferences = []
        with Heater():
            for number, feed in enumerate(runs):
                print("Processing DNN input(s):", file=out)
                for path in feed.values():
                    print(path, file=out)
                start = time.perf_counter()
                feeds = {
                    name: arrays[path].reshape(specs[name][0]).astype(specs[name][1], copy=True)
                    for name, path in feed.items()
                }
                forward_start = time.perf_counter()
                try:
                    results = session.run(None, feeds)
                except Exception as error:
                    raise StandinError(
                        f"execute failed on input line {number + 1}: {error}"
                    ) from error
                forward_end = time.perf_counter()
                copies = [np.array(result, copy=True) for result in results]
                end = time.perf_counter()
                inferences.append(
                    {"total": _us(end - start), "forward": _us(forward_end - forward_start)}
                )
                folder = output_dir / f"Result_{number}"
                folder.mkdir(exist_ok=True)
                for name, value in zip(names, copies, strict=True):
                    safe = name.replace("/", "_").replace(":", "_") or "output"
                    np.asarray(value, dtype=np.float32).tofile(folder / f"{safe}.raw")
        layers = None
        if profile_dir:
            layers = _layer_times(session.end_profiling(), len(runs))
        deinit_start = time.perf_counter()
        del session
        deinit = time.perf_counter() - deinit_start
    finally:
        if profile_dir:
            shutil.rmtree(profile_dir, ignore_errors=True)

    if level != "off":
        record = {
            "version": STANDIN_VERSION,
            "note": "devlab stand-in diag log, not the real SNPE format",
            "created": time.time(),
            "steady_ns": time.monotonic_ns(),
            "runtime": runtime,
            "perf_profile": args.perf_profile,
            "profiling_level": level,
            "quantized": bool(meta.get("quantization")),
            "init": {
                "load": _us(loaded - begin),
                "deserialize": _us(deserialized - loaded),
                "create": _us(created - deserialized),
                "create_networks": _us(created - deserialized),
                "init": _us(initialised - begin),
                "deinit": _us(deinit),
            },
            "inferences": inferences,
            "layers": layers,
        }
        log = write_log(output_dir, record)
        if args.debug:
            print(f"diag log: {log}", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except StandinError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    status = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # no interpreter teardown (ONNX Runtime's takes ~20 ms): the closing clock stamp of a power
    # job synced by beacon follows the tool's own De-Init as promptly as after the native tool
    os._exit(status)
