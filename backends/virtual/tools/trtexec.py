"""Stand-in for NVIDIA TensorRT's ``trtexec`` on the virtual Jetson.

There is no GPU here: the ONNX model runs with ONNX Runtime on the host CPU, with random
inputs, and the tool prints what TensorRT 8.6 prints (``&&&& RUNNING`` / ``&&&& PASSED`` /
``&&&& FAILED`` markers, ``[MM/DD/YYYY-HH:MM:SS] [I]`` lines, ``=== Trace details ===``,
``=== Performance summary ===`` with min/max/mean/median/percentile(90/95/99%) in ms).

* ``--onnx=M --saveEngine=E [--fp16|--int8] [--memPoolSize=workspace:N]``: "builds" an engine
  (a file holding a header and the ONNX bytes; ``--loadEngine`` of anything else fails the way
  a plan from another TensorRT does), then times it unless ``--skipInference``.
* ``--loadEngine=E --iterations=N --duration=S --warmUp=MS``: a warm-up of MS milliseconds,
  then at least N queries and at least S seconds (``--duration=0``: exactly N).
* ``--exportTimes=F``: one record per timed query (``startEnqMs endEnqMs startH2dMs endH2dMs
  startComputeMs endComputeMs startD2hMs endD2hMs h2dMs computeMs d2hMs latencyMs endToEndMs``),
  from this machine's clock: H2D is the copy of the inputs, compute ``session.run``, D2H the
  copy of the outputs.
* ``--exportProfile=F`` / ``--dumpProfile``: per-layer times from ONNX Runtime's profiler over
  the same number of queries (``[{"count": N}, {"name", "timeMs", "averageMs", "medianMs",
  "percentage"}, …]``; layers are ONNX nodes, not fused TensorRT layers).

While it runs it marks the virtual Jetson busy (``_common.Heater``), so the stand-in
``tegrastats`` shows VDD_IN rising. Unknown options: ``[E] Unknown option`` and
``&&&& FAILED``, exit 1, as the real tool.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.virtual.tools._common import (
    Heater,
    ToolError,
    create_session,
    nearest_rank,
    random_feeds,
    session_options,
)

VERSION_NUMBER = 8602
VERSION = "8.6.2"
ENGINE_MAGIC = b"devlab stand-in TensorRT engine\n"
VALUE_OPTIONS = (
    "onnx",
    "saveEngine",
    "loadEngine",
    "iterations",
    "duration",
    "warmUp",
    "avgRuns",
    "exportTimes",
    "exportProfile",
    "memPoolSize",
    "workspace",
    "device",
    "shapes",
)
FLAG_OPTIONS = (
    "fp16",
    "int8",
    "skipInference",
    "buildOnly",
    "dumpProfile",
    "separateProfileRun",
    "useSpinWait",
    "noDataTransfers",
    "verbose",
    "help",
)


def log(level: str, text: str = "") -> None:
    stamp = time.strftime("%m/%d/%Y-%H:%M:%S")
    print(f"[{stamp}] [{level}] {text}".rstrip() + ("" if text else " "), flush=True)


def parse(argv: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for arg in argv:
        if not arg.startswith("--"):
            raise ToolError(f"Unknown option: {arg}")
        name, eq, value = arg[2:].partition("=")
        if name in VALUE_OPTIONS and eq:
            options[name] = value
        elif name in FLAG_OPTIONS and not eq:
            options[name] = True
        else:
            raise ToolError(f"Unknown option: {arg}")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    marker = f"TensorRT.trtexec [TensorRT v{VERSION_NUMBER}] # trtexec {' '.join(argv)}"
    print(f"&&&& RUNNING {marker}", flush=True)
    try:
        options = parse(argv)
        if options.get("help"):
            print("=== Model Options ===\n  --onnx=<file>  ONNX model\n(devlab stand-in)")
            return 0
        with Heater():
            run(options)
    except ToolError as error:
        for line in str(error).splitlines():
            log("E", line)
        print(f"&&&& FAILED {marker}", flush=True)
        return 1
    print(f"&&&& PASSED {marker}", flush=True)
    return 0


def run(options: dict[str, Any]) -> None:
    precision = (
        "FP32+INT8" if options.get("int8") else "FP32+FP16" if options.get("fp16") else "FP32"
    )
    log("I", "=== Build Options ===")
    log("I", f"Precision: {precision}")
    log("I", f"TensorRT version: {VERSION}")
    if "onnx" in options:
        model = _read(options["onnx"], "onnx")
        log("I", "Start parsing network model.")
        session = _session(model, "Failed to parse onnx file")
        log("I", "Finished parsing network model.")
        if "saveEngine" in options:
            header = json.dumps({"precision": precision, "bytes": len(model)}).encode() + b"\n"
            Path(options["saveEngine"]).write_bytes(ENGINE_MAGIC + header + model)
            log("I", f"Engine built in {0.0:g} sec.")
            log("I", f"Saved engine to {options['saveEngine']}")
    elif "loadEngine" in options:
        blob = _read(options["loadEngine"], "engine")
        if not blob.startswith(ENGINE_MAGIC):
            raise ToolError(
                "Error[1]: [runtime.cpp::parsePlan::314] Error Code 1: Serialization "
                "(Serialization assertion plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.)\n"
                "Engine deserialization failed\nGot invalid engine!\nInference set up failed"
            )
        model = blob[len(ENGINE_MAGIC) :].split(b"\n", 1)[1]
        started = time.perf_counter()
        session = _session(model, "Engine deserialization failed")
        log("I", f"Engine loaded in {time.perf_counter() - started:g} sec.")
    else:
        raise ToolError(
            "Model missing or format not recognized\n"
            "Failed to create engine from model or file.\nEngine set up failed"
        )
    if options.get("skipInference") or options.get("buildOnly"):
        log("I", "Skipped inference phase since --skipInference is added.")
        return
    iterations = _int(options, "iterations", 10)
    duration = _float(options, "duration", 3.0)
    warmup_ms = _float(options, "warmUp", 200.0)
    feeds = random_feeds(session)
    log("I", "Starting inference")
    warm = _warmup(session, feeds, warmup_ms)
    log("I", f"Warmup completed {warm} queries over {warmup_ms:g} ms")
    records = _timed(session, feeds, iterations, duration)
    wall_s = (records[-1]["endD2hMs"] - records[0]["startEnqMs"]) / 1e3
    log("I", f"Timing trace has {len(records)} queries over {wall_s:g} s")
    _report(records, _int(options, "avgRuns", 10), wall_s)
    if "exportTimes" in options:
        Path(options["exportTimes"]).write_text(json.dumps(records, indent=2))
        log("I", f"Exported timing to {options['exportTimes']}")
    if "exportProfile" in options or options.get("dumpProfile"):
        _profile(model, len(records), options)
    log("I", "Explanations of the performance metrics are printed in the verbose logs.")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ToolError(f"Cannot open {what} file: {path} ({error.strerror})") from None


def _session(model: bytes, failure: str) -> Any:
    try:
        return create_session(model, session_options(1))  # type: ignore[arg-type]
    except ToolError as error:
        raise ToolError(f"[TRT] ModelImporter.cpp:771: ERROR: {error}\n{failure}") from None


def _int(options: dict[str, Any], name: str, default: int) -> int:
    try:
        return int(options.get(name, default))
    except ValueError:
        raise ToolError(f"Invalid value for --{name}: {options[name]}") from None


def _float(options: dict[str, Any], name: str, default: float) -> float:
    try:
        return float(options.get(name, default))
    except ValueError:
        raise ToolError(f"Invalid value for --{name}: {options[name]}") from None


def _warmup(session: Any, feeds: dict, warmup_ms: float) -> int:
    end = time.perf_counter() + warmup_ms / 1000.0
    count = 0
    while time.perf_counter() < end:
        session.run(None, feeds)
        count += 1
    return count


def _timed(session: Any, feeds: dict, iterations: int, duration: float) -> list[dict[str, float]]:
    clock = time.perf_counter
    origin = clock()
    stop_at = origin + duration
    records: list[dict[str, float]] = []
    while len(records) < iterations or clock() < stop_at:
        t0 = clock()
        inputs = {name: np.array(value, copy=True) for name, value in feeds.items()}
        t1 = clock()
        outputs = session.run(None, inputs)
        t2 = clock()
        _ = [np.array(out, copy=True) for out in outputs]
        t3 = clock()
        ms = [(t - origin) * 1e3 for t in (t0, t1, t2, t3)]
        records.append(
            {
                "startEnqMs": ms[0],
                "endEnqMs": ms[2],
                "startH2dMs": ms[0],
                "endH2dMs": ms[1],
                "startComputeMs": ms[1],
                "endComputeMs": ms[2],
                "startD2hMs": ms[2],
                "endD2hMs": ms[3],
                "h2dMs": ms[1] - ms[0],
                "computeMs": ms[2] - ms[1],
                "d2hMs": ms[3] - ms[2],
                "latencyMs": ms[3] - ms[0],
                "endToEndMs": ms[3] - ms[0],
            }
        )
        if len(records) >= iterations and duration <= 0:
            break
    return records


def _stats_line(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    mean = sum(values) / len(values)
    parts = [
        f"min = {ordered[0]:g} ms",
        f"max = {ordered[-1]:g} ms",
        f"mean = {mean:g} ms",
        f"median = {nearest_rank(ordered, 50):g} ms",
    ]
    parts += [f"percentile({p}%) = {nearest_rank(ordered, p):g} ms" for p in (90, 95, 99)]
    return f"{name}: " + ", ".join(parts)


def _report(records: list[dict[str, float]], avg_runs: int, wall_s: float) -> None:
    log("I", "")
    log("I", "=== Trace details ===")
    log("I", f"Trace averages of {avg_runs} runs:")
    for start in range(0, len(records) - avg_runs + 1, max(avg_runs, 1)):
        chunk = records[start : start + avg_runs]
        gpu = sum(r["computeMs"] for r in chunk) / len(chunk)
        host = sum(r["latencyMs"] for r in chunk) / len(chunk)
        enq = sum(r["endEnqMs"] - r["startEnqMs"] for r in chunk) / len(chunk)
        log(
            "I",
            f"Average on {len(chunk)} runs - GPU latency: {gpu:g} ms - Host latency: "
            f"{host:g} ms (enqueue {enq:g} ms)",
        )
    log("I", "")
    log("I", "=== Performance summary ===")
    log("I", f"Throughput: {len(records) / wall_s if wall_s > 0 else 0:g} qps")
    log("I", _stats_line("Latency", [r["latencyMs"] for r in records]))
    log("I", _stats_line("Enqueue Time", [r["endEnqMs"] - r["startEnqMs"] for r in records]))
    log("I", _stats_line("H2D Latency", [r["h2dMs"] for r in records]))
    log("I", _stats_line("GPU Compute Time", [r["computeMs"] for r in records]))
    log("I", _stats_line("D2H Latency", [r["d2hMs"] for r in records]))
    log("I", f"Total Host Walltime: {wall_s:g} s")
    log("I", f"Total GPU Compute Time: {sum(r['computeMs'] for r in records) / 1e3:g} s")


def _profile(model: bytes, runs: int, options: dict[str, Any]) -> None:
    """Per-node times from ONNX Runtime's profiler over ``runs`` queries (one untimed first)."""
    import tempfile

    from backends.runtimes.ort_profile import read_ort_profile

    with tempfile.TemporaryDirectory(prefix="trtexec-profile-") as folder:
        options_ = session_options(1, profile_prefix=os.path.join(folder, "ort"))
        session = create_session(model, options_)  # type: ignore[arg-type]
        feeds = random_feeds(session)
        session.run(None, feeds)
        for _ in range(runs):
            session.run(None, feeds)
        profile = read_ort_profile(session.end_profiling(), skip_runs=1)
    layers = profile.layer_times()
    total = sum(layer.mean_us for layer in layers) or 1.0
    rows = [
        {
            "name": layer.name,
            "timeMs": layer.mean_us * runs / 1e3,
            "averageMs": layer.mean_us / 1e3,
            "medianMs": layer.mean_us / 1e3,
            "percentage": 100.0 * layer.mean_us / total,
        }
        for layer in layers
    ]
    if options.get("dumpProfile"):
        log("I", "")
        log("I", f"=== Profile ({runs} iterations ) ===")
        log("I", "   Time(ms)     Avg.(ms)   Median(ms)   Time(%)   Layer")
        for row in rows:
            log(
                "I",
                f"{row['timeMs']:11.2f} {row['averageMs']:12.4f} {row['medianMs']:12.4f} "
                f"{row['percentage']:9.1f}   {row['name']}",
            )
    if "exportProfile" in options:
        Path(options["exportProfile"]).write_text(json.dumps([{"count": runs}, *rows], indent=2))
        log("I", f"Exported profile to {options['exportProfile']}")


if __name__ == "__main__":
    sys.exit(main())
