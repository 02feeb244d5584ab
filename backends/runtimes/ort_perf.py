"""ONNX Runtime ``onnxruntime_perf_test``: command line and output parser.

Units differ per line (spec section 4.2): session creation, total cost and run time are in
seconds, the first-inference and average lines in milliseconds, and the ``-s`` statistics block
(``Min/Max/P50…P999 Latency``) in seconds again. Most lines carry their unit word, which the
parser converts; everything ends up in microseconds.

Layouts: ORT <= 1.0 (``Total time cost:58.8`` without a unit, ``Total iterations:``,
``Average time cost: … ms``, ``Min Latency is 0.0559777sec``); 1.1-1.22 (``Session creation time
cost``, ``Average inference time cost:``, with or without a space after the colon); 1.23+
(``Average inference time cost total:``). Vendor forks may print a ``using XExecutionProvider``
line and ``Total CPU usage`` instead of ``Avg CPU usage``.

No silent drops: a known line whose number or unit cannot be read, a ``<label> Latency`` line
with an unknown label, or an unknown ``key: number`` line that names a latency, time cost,
request or iteration count gives a warning quoting the line; an average line that cannot be
read is a :class:`ToolOutputError` naming it.

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
    clean_log,
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

# "Key: value unit" with or without a space after the colon (old builds: "cost:0.73 s"), and
# the ORT <= 1.0 statistics lines "Min Latency is 0.0559777sec" (unit glued to the number).
_KEY_VALUE = re.compile(r"^\s*(?P<key>[A-Za-z][^:]*?)\s*:\s*(?P<rest>.*?)\s*$")
_IS_LATENCY = re.compile(r"^\s*(?P<key>[A-Za-z]\w*\s+Latency)\s+is\s+(?P<rest>.*?)\s*$")
_VALUE = re.compile(rf"^(?P<value>{NUMBER})\s*(?P<unit>\S+)?$")
_THREADS = re.compile(r"^Setting intra_op_num_threads to (\d+)")
_PROVIDER = re.compile(r"^using (\w+ExecutionProvider)\b")
_ERROR = re.compile(r"\[E:onnxruntime|\berror\b|exception|\bfailed\b", re.IGNORECASE)
_WARNING = re.compile(r"\[W:onnxruntime")
# A key that names a measurement: an unknown one is flagged, never dropped quietly.
_STATISH = re.compile(r"latency|time cost|run time|inferences?\b|requests|iterations", re.I)
_PERCENTILE_LABEL = re.compile(r"^p(\d+)$")

# Headline: "Average inference time cost:" (ORT 1.1-1.22), "... cost total:" (1.23+), and
# "Average time cost:" (ORT <= 1.0). Default unit ms.
_AVERAGE_KEYS = ("average inference time cost", "average time cost")
# key -> (ToolRun attribute or extra key, default unit when the line has none)
_TIMES = {
    "session creation time cost": ("init_us", "s"),
    "first inference time cost": ("first_inference_us", "ms"),
    "total inference time cost": ("total_cost_us", "s"),
    "total time cost": ("total_cost_us", "s"),  # ORT <= 1.0, printed without a unit
    "total inference run time": ("run_time_us", "s"),
    "total run time": ("run_time_us", "s"),  # ORT <= 1.0
}
# key -> (extra key, the units the tool prints after it; None = no unit word)
_NUMBERS: dict[str, tuple[str, tuple[str | None, ...]]] = {
    "total inference requests": ("count", (None,)),
    "total iterations": ("count", (None,)),  # ORT <= 1.0
    "runs": ("stats_runs", (None,)),
    "number of inferences per second": ("throughput_ips", (None,)),
    "avg cpu usage": ("avg_cpu_usage_pct", (None, "%")),
    "total cpu usage": ("total_cpu_usage_pct", (None, "%")),
    "peak working set size": ("peak_working_set_bytes", (None, "bytes")),
}
# The -s statistics block (seconds): "<label> Latency: v s"; Pnn labels are read generically.
_PERCENTILE_FIELDS = {"min": "min_us", "max": "max_us", "p50": "median_us"}


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
    non-zero or the output has no average-latency line, and naming the line when the average
    line is there but cannot be read. No silent drops: a known line whose number or unit cannot
    be read, a statistics line with an unknown label, or an unknown line that names a latency or
    time cost gives a warning quoting the line.
    """
    text = clean_log(text)
    lines = text.splitlines()
    errors = error_lines(lines, _ERROR)
    if exit_code not in (None, 0):
        raise ToolOutputError(TOOL, errors or tail(lines), exit_code)

    run = ToolRun(tool=TOOL)
    averages: dict[str, float] = {}
    unread_average: list[str] = []
    unread: list[tuple[str, str]] = []  # (why, line)
    for line in lines:
        stripped = line.strip()
        if match := _THREADS.match(stripped):
            run.extra["intra_op_threads"] = int(match.group(1))
            continue
        if match := _PROVIDER.match(stripped):
            run.extra["execution_provider"] = match.group(1)
            continue
        if _WARNING.search(line):
            run.warnings.append(stripped)
            continue
        match = _IS_LATENCY.match(line) or _KEY_VALUE.match(line)
        if not match:
            continue
        key = " ".join(match.group("key").lower().split())
        value_match = _VALUE.match(match.group("rest"))
        if key.startswith(_AVERAGE_KEYS):
            prefix = next(name for name in _AVERAGE_KEYS if key.startswith(name))
            # "...cost:" (<=1.22) or "...cost total:"; other variants are kept apart.
            variant = key.removeprefix(prefix).strip() or "total"
            us = _time_us(value_match, "ms")
            if us is None:
                unread_average.append(stripped)
            else:
                averages[variant] = us
        elif key.endswith(" latency"):
            why = _read_percentile(run, key.removesuffix(" latency"), value_match)
            if why:
                unread.append((why, stripped))
        elif key in _TIMES:
            name, default_unit = _TIMES[key]
            us = _time_us(value_match, default_unit)
            if us is None:
                unread.append(("number or time unit not read", stripped))
            elif hasattr(run, name):
                setattr(run, name, us)
            else:
                run.extra[name] = us
        elif key in _NUMBERS:
            name, units = _NUMBERS[key]
            if value_match is None or value_match.group("unit") not in units:
                unread.append(("number or unit not read", stripped))
            elif name == "count":
                run.count = int(float(value_match.group("value")))
            else:
                number = float(value_match.group("value"))
                run.extra[name] = int(number) if name.endswith(("_bytes", "_runs")) else number
        elif _STATISH.search(key):
            unread.append(("unknown measurement name", stripped))

    if "total" in averages:
        run.avg_us = averages.pop("total")
    if averages:
        run.extra["other_averages_us"] = averages
    if run.avg_us is None:
        if unread_average:
            raise ToolOutputError(
                TOOL,
                unread_average,
                exit_code,
                reason="the 'Average inference time cost' line could not be read",
            )
        raise ToolOutputError(
            TOOL, errors or tail(lines), exit_code, reason="no 'Average inference time cost' line"
        )
    run.warnings.extend(f"line not read ({why}): {line}" for why, line in unread)
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


def _time_us(value_match: re.Match[str] | None, default_unit: str) -> float | None:
    """The value of a time line in microseconds; None when its number or unit is not known."""
    if value_match is None:
        return None
    try:
        return to_us(float(value_match.group("value")), value_match.group("unit") or default_unit)
    except ValueError:
        return None


def _read_percentile(run: ToolRun, label: str, value_match: re.Match[str] | None) -> str | None:
    """Store one ``<label> Latency`` line of the ``-s`` block; the reason when it is not read."""
    percentile = _PERCENTILE_LABEL.match(label)
    if label in _PERCENTILE_FIELDS:
        name = _PERCENTILE_FIELDS[label]
    elif percentile:
        name = f"p{percentile.group(1)}_us"
    else:
        return "unknown statistics label"
    us = _time_us(value_match, "s")
    if us is None:
        return "number or time unit not read"
    if hasattr(run, name):
        setattr(run, name, us)
    else:
        run.extra[name] = us
    return None
