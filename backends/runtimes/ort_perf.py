"""ONNX Runtime ``onnxruntime_perf_test``: command line and output parser.

Units differ per line (spec section 4.2): session creation, total cost and run time are in
seconds, the first-inference and average lines in milliseconds, and the ``-s`` statistics block
(``Min/Max/P50…P999 Latency``) in seconds again. Every line carries its unit word, which the
parser converts; everything ends up in microseconds.

nnabla-nas keys: "Total Inference Time" = the average line (mean) with ``Min``/``Max Latency``
from the statistics block (per-iteration extremes; ``None`` when the block is absent). The tool
reports neither "Forward Propagate" nor per-layer times (those need the ``-p`` JSON profile).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    check_args,
    check_choice,
    check_int,
    error_lines,
    summary,
    tail,
    to_us,
)

TOOL = "onnxruntime_perf_test"

EXECUTION_PROVIDERS = (
    "cpu",
    "nnapi",
    "xnnpack",
    "qnn",
    "snpe",
    "acl",
    "armnn",
    "coreml",
    "cuda",
    "tensorrt",
    "openvino",
    "dnnl",
    "dml",
)

# "Key: value unit" with or without a space after the colon (old builds: "cost:0.73 s").
_LINE = re.compile(rf"^\s*(?P<key>[A-Za-z][^:]*?)\s*:\s*(?P<value>{NUMBER})\s*(?P<unit>\S+)?\s*$")
_THREADS = re.compile(r"^Setting intra_op_num_threads to (\d+)")
_ERROR = re.compile(r"\[E:onnxruntime|\berror\b|exception|\bfailed\b", re.IGNORECASE)
_WARNING = re.compile(r"\[W:onnxruntime")

# key → (ToolRun attribute or extra key, default unit when the line has none)
_PERCENTILES = {
    "min latency": "min_us",
    "max latency": "max_us",
    "p50 latency": "median_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
}
_TIMES = {
    "session creation time cost": ("init_us", "s"),
    "first inference time cost": ("first_inference_us", "ms"),
    "total inference time cost": ("total_cost_us", "s"),
    "total inference run time": ("run_time_us", "s"),
    "p999 latency": ("p999_us", "s"),
}


def build_command(
    binary: str,
    model: str,
    *,
    runs: int,
    threads: int,
    execution_provider: str = "cpu",
    inter_op_threads: int | None = None,
    provider_options: Mapping[str, str] | None = None,
    random_inputs: bool = True,
    print_stats: bool = True,
    disable_spinning: bool = False,
    optimization_level: int | None = None,
    concurrent: int | None = None,
    profile_file: str | None = None,
    result_file: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of one ``onnxruntime_perf_test`` run in fixed-count mode (``-m times -r N``).

    ``threads`` is ``-x`` (0 = ORT's default), ``inter_op_threads`` ``-y``;
    ``provider_options`` become one ``-i "k|v k|v"`` item; ``random_inputs`` (``-I``) avoids
    pushing ``test_data_set_*`` folders; ``print_stats`` (``-s``) prints the percentile block;
    ``disable_spinning`` is ``-Z``; ``profile_file`` ``-p`` (per-op JSON profile). The model
    and the optional ``result_file`` come last, as positional arguments.
    """
    check_int("runs", runs, 1)
    check_int("threads", threads, 0)
    check_choice("execution provider", execution_provider, EXECUTION_PROVIDERS)
    argv = [binary, "-m", "times", "-r", str(runs), "-e", execution_provider, "-x", str(threads)]
    if inter_op_threads is not None:
        argv += ["-y", str(check_int("inter_op_threads", inter_op_threads, 0))]
    if provider_options:
        pairs = []
        for key, value in provider_options.items():
            for part in (key, str(value)):
                if not part or any(c.isspace() for c in part) or "|" in part:
                    raise ValueError(
                        f"provider option {key!r}={value!r}: keys and values must be non-empty "
                        "and contain no spaces or '|' (onnxruntime_perf_test splits on them)"
                    )
            pairs.append(f"{key}|{value}")
        argv += ["-i", " ".join(pairs)]
    if concurrent is not None:
        argv += ["-c", str(check_int("concurrent", concurrent, 1))]
    if optimization_level is not None:
        argv += ["-o", str(check_int("optimization_level", optimization_level, 0))]
    if random_inputs:
        argv.append("-I")
    if print_stats:
        argv.append("-s")
    if disable_spinning:
        argv.append("-Z")
    if profile_file is not None:
        argv += ["-p", profile_file]
    argv += check_args("extra", extra)
    argv.append(model)
    if result_file is not None:
        argv.append(result_file)
    return argv


def parse(text: str, exit_code: int | None = None) -> ToolRun:
    """The :class:`ToolRun` of one ``onnxruntime_perf_test`` output.

    Raises :class:`ToolOutputError` quoting the tool's error lines when ``exit_code`` is
    non-zero or the output has no average-latency line.
    """
    lines = text.splitlines()
    errors = error_lines(lines, _ERROR)
    if exit_code not in (None, 0):
        raise ToolOutputError(TOOL, errors or tail(lines), exit_code)

    run = ToolRun(tool=TOOL)
    averages: dict[str, float] = {}
    for line in lines:
        if match := _THREADS.match(line.strip()):
            run.extra["intra_op_threads"] = int(match.group(1))
            continue
        if _WARNING.search(line):
            run.warnings.append(line.strip())
            continue
        match = _LINE.match(line)
        if not match:
            continue
        key = match.group("key").strip().lower()
        value = float(match.group("value"))
        unit = match.group("unit")
        if key in _PERCENTILES:
            setattr(run, _PERCENTILES[key], to_us(value, unit or "s"))
        elif key in _TIMES:
            name, default_unit = _TIMES[key]
            converted = to_us(value, unit or default_unit)
            if hasattr(run, name):
                setattr(run, name, converted)
            else:
                run.extra[name] = converted
        elif key.startswith("average inference time cost"):
            # "…cost:" (≤1.22) or "…cost total:"; newer code may add other variants.
            variant = key.removeprefix("average inference time cost").strip() or "total"
            averages[variant] = to_us(value, unit or "ms")
        elif key == "total inference requests":
            run.count = int(value)
        elif key == "runs":
            run.extra["stats_runs"] = int(value)
        elif key == "number of inferences per second":
            run.extra["throughput_ips"] = value
        elif key in ("avg cpu usage", "total cpu usage"):
            run.extra[key.replace(" ", "_") + "_pct"] = value
        elif key == "peak working set size":
            run.extra["peak_working_set_bytes"] = int(value)

    if "total" in averages:
        run.avg_us = averages.pop("total")
    if averages:
        run.extra["other_averages_us"] = averages
    if run.avg_us is None:
        raise ToolOutputError(
            TOOL, errors or tail(lines), exit_code, reason="no 'Average inference time cost' line"
        )
    if errors:
        run.warnings.extend(f"tool reported: {line}" for line in errors)
    run.total_inference = summary(
        count=run.count,
        min=run.min_us,
        mean=run.avg_us,
        max=run.max_us,
        median=run.median_us,
        p90=run.p90_us,
        p99=run.p99_us,
    )
    return run
