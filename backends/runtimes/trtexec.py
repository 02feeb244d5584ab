"""NVIDIA TensorRT ``trtexec``: the command lines devlab runs and parsers of what it prints.

The summary has changed across TensorRT versions, and all are read:

* 8.x-10.x: ``=== Performance summary ===`` then one line per metric,
  ``Latency: min = 4.27 ms, max = 5.82 ms, mean = 4.29 ms, median = 4.29 ms,
  percentile(90%) = … ms, …`` (``Latency``, ``End-to-End Host Latency``, ``Enqueue Time``,
  ``H2D Latency``, ``GPU Compute Time``, ``D2H Latency``), ``Throughput: N qps``,
  ``Total Host Walltime: S s`` and ``Total GPU Compute Time: S s``.
* 7.x / early 8.0: a header line (``Host Latency``, ``Enqueue Time``, ``GPU Compute``…) followed
  by ``min: X ms (end to end Y ms)``, ``percentile: X ms at 99% (…)``, ``throughput:``,
  ``walltime:`` lines.
* every version: ``Average on 10 runs - GPU latency: X ms - Host latency: Y ms (end to end Z ms,
  enqueue W ms)`` trace lines, kept in ``extra["trace_averages"]``.

``Latency`` (host latency: H2D + compute + D2H) is the headline (``avg_us`` …), ``GPU Compute
Time`` the forward time (``forward_us``). ``&&&& FAILED TensorRT.trtexec``, a non-zero exit or a
run without a summary is a :class:`ToolOutputError` quoting the ``[E]`` lines.

No silent drops: a summary line whose field cannot be read (``max 6.19 ms`` without ``=``) is a
warning naming the line; an unreadable headline mean is a ToolOutputError naming the line.

``--exportTimes`` JSON (one record per timed query, ``latencyMs``, ``computeMs``, ``h2dMs``,
``d2hMs``, ``startEnqMs``…) gives per-iteration samples (:func:`parse_export_times`);
``--exportProfile`` JSON (``[{"count": N}, {"name", "timeMs", "averageMs", "percentage"}, …]``)
gives per-layer times (:func:`parse_export_profile`).

Written for Python 3.8 too (it runs inside the board agent).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from backends.core.records import LayerTime
from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    clean_log,
    error_lines,
    summary,
    tail,
    to_us,
)
from backends.runtimes.trtexec_profile import read_printed_profile, strip_log_prefix

TRTEXEC = "trtexec"
PRECISIONS = ("fp32", "fp16", "int8")

_FAILED = re.compile(r"&&&& FAILED TensorRT\.trtexec")
_NO_E2E = re.compile(r"e2e network timing is not reported", re.IGNORECASE)
# trtexec's own advice after the summary ("[W] * GPU compute time is unstable, ..."), and the
# indented lines that continue it; the builder's "[W] [TRT]" messages are not advice on timing.
_ADVISORY = re.compile(r"^\s*(?:\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\]\s*)?\[W\] (.*)$")
_ERROR = re.compile(r"\[E\]|&&&& FAILED|\bError Code\b|\bERROR:")
_MARKER_VERSION = re.compile(
    r"&&&& (?:RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\]"
)
_VERSION_LINE = re.compile(r"^TensorRT version: (\d+(?:\.\d+)*)\s*$")
_METRICS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_METRIC_LINE = re.compile(r"^(" + "|".join(re.escape(k) for k in _METRICS) + r"): (.*)$")
_FIELD = re.compile(
    rf"^(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = ({NUMBER}) (ms|us|s)$"
)
_THROUGHPUT = re.compile(rf"^Throughput: ({NUMBER}) qps\s*$")
_TOTALS = re.compile(rf"^Total (Host Walltime|GPU Compute Time): ({NUMBER}) s\s*$")
_QUERIES = re.compile(r"^Timing trace has (\d+) queries over")
_AVERAGE_ANY = re.compile(r"^Average on \d+ runs - ")
_AVERAGE = re.compile(
    rf"^Average on (\d+) runs - GPU latency: ({NUMBER}) ms - Host latency: ({NUMBER}) ms"
    rf" \((?:end to end ({NUMBER}) ms, )?enqueue ({NUMBER}) ms\)\s*$"
)
# 7.x layout: a block header alone on its line, then "min: X ms (end to end Y ms)" lines
_OLD_HEADERS = {
    "Host Latency": "latency",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute": "gpu_compute",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_OLD_FIELD_ANY = re.compile(r"^(min|max|mean|median|percentile|throughput|walltime):")
_OLD_FIELD = re.compile(
    rf"^(min|max|mean|median): ({NUMBER}) ms(?: \(end to end ({NUMBER}) ms\))?\s*$"
)
_OLD_PERCENTILE = re.compile(
    rf"^percentile: ({NUMBER}) ms at (\d+(?:\.\d+)?)%"
    rf"(?: \(end to end ({NUMBER}) ms at \d+(?:\.\d+)?%\))?\s*$"
)
_OLD_THROUGHPUT = re.compile(rf"^throughput: ({NUMBER}) qps\s*$")
_OLD_WALLTIME = re.compile(rf"^walltime: ({NUMBER}) s\s*$")


def version_from_number(number: int) -> str:
    """``8001`` -> ``8.0.1``, ``100300`` -> ``10.3.0`` (TensorRT's NV_TENSORRT_VERSION)."""
    if number >= 10000:
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


def trtexec_version(text: str) -> str:
    """The TensorRT version trtexec printed, or ``""``."""
    for raw in text.splitlines():
        found = _MARKER_VERSION.search(raw)
        if found:
            return version_from_number(int(found.group(1)))
        found = _VERSION_LINE.match(strip_log_prefix(raw))
        if found and "." in found.group(1):
            return found.group(1)
    return ""


def parse_trtexec(text: str, exit_code: int | None = None) -> ToolRun:
    """The summary of one trtexec run, in microseconds; ToolOutputError when it failed."""
    text = clean_log(text)
    lines = text.splitlines()
    if _FAILED.search(text) or exit_code not in (None, 0):
        raise ToolOutputError(TRTEXEC, error_lines(lines, _ERROR) or tail(lines, 5), exit_code)
    run = ToolRun(tool=TRTEXEC, tool_version=trtexec_version(text))
    metrics: dict[str, dict[str, float]] = {}
    headline_line = ""
    old_block: str | None = None
    advising = False
    for raw in lines:
        advice = _ADVISORY.match(raw)
        if advice and advice.group(1).startswith("* "):
            run.warnings.append(f"trtexec: {advice.group(1)[2:].strip()}")
            advising = True
            continue
        if advice and advising and advice.group(1).startswith("  "):
            run.warnings[-1] += f" {advice.group(1).strip()}"
            continue
        advising = False
        line = strip_log_prefix(raw)
        if not line:
            continue
        found = _METRIC_LINE.match(line)
        if found:
            key = _METRICS[found.group(1)]
            metrics[key] = _fields(found.group(2), line, run.warnings)
            if key == "latency":
                headline_line = line
            old_block = None
            continue
        if line in _OLD_HEADERS:
            old_block = _OLD_HEADERS[line]
            continue
        if old_block is not None and _OLD_FIELD_ANY.match(line):
            _old_field(line, old_block, metrics, run)
            if old_block == "latency":
                headline_line = headline_line or line
            continue
        old_block = None
        _other_line(line, run)
    latency = metrics.get("latency", {})
    if "mean" not in latency:
        if headline_line:
            reason = f"the latency mean cannot be read from: {headline_line.strip()}"
        elif _NO_E2E.search(text):
            # a passed run: with --dumpProfile alone trtexec profiles instead of timing
            reason = (
                "no end-to-end timing: trtexec does not report it when --dumpProfile runs "
                "without --separateProfileRun (add --separateProfileRun to time and profile)"
            )
            if (printed := read_printed_profile(lines)) is not None and printed.total:
                reason += (
                    f"; its per-layer profile has {len(printed.layers)} layers, "
                    f"{printed.total['avg_ms']} ms per iteration over {printed.iterations}"
                )
        else:
            reason = "no performance summary (=== Performance summary === / Latency:) found"
        raise ToolOutputError(TRTEXEC, tail(lines, 5), exit_code, reason)
    run.avg_us = latency["mean"]
    run.min_us = latency.get("min")
    run.max_us = latency.get("max")
    run.median_us = latency.get("median")
    run.p90_us = latency.get("p90")
    run.p95_us = latency.get("p95")
    run.p99_us = latency.get("p99")
    run.total_inference = summary(**latency)
    if "gpu_compute" in metrics:
        run.forward_us = summary(**metrics["gpu_compute"])
    for key in ("end_to_end", "enqueue", "h2d", "d2h", "gpu_compute"):
        if key in metrics:
            run.extra[f"{key}_us"] = metrics[key]
    _apply_printed_profile(run, lines)
    return run


def _apply_printed_profile(run: ToolRun, lines: list[str]) -> None:
    """The ``--dumpProfile`` table as the run's layers (mean per iteration) and Layers Time
    (its Total row's mean); the table itself in ``extra["printed_profile"]``."""
    printed = read_printed_profile(lines)
    if printed is None:
        return
    run.warnings.extend(printed.warnings)
    run.layers = [
        LayerTime(layer["name"], "", to_us(layer["avg_ms"], "ms"))
        for layer in printed.layers
        if "avg_ms" in layer
    ]
    if printed.total and "avg_ms" in printed.total:
        run.layers_total_us = to_us(printed.total["avg_ms"], "ms")
    run.extra["printed_profile"] = {
        "iterations": printed.iterations,
        "layers": printed.layers,
        "total": printed.total,
    }


def _fields(body: str, line: str, warnings: list[str]) -> dict[str, float]:
    """``min = 4.27 ms, max = …`` as microseconds keyed min/max/mean/median/p<N>."""
    values: dict[str, float] = {}
    for part in body.split(","):
        part = part.strip()
        found = _FIELD.match(part)
        if found is None:
            warnings.append(f"trtexec: unreadable field {part!r} in line: {line.strip()}")
            continue
        value = to_us(float(found.group(3)), found.group(4))
        if found.group(2) is not None:
            values[_percentile_key(found.group(2))] = value
        else:
            values[found.group(1)] = value
    return values


def _percentile_key(text: str) -> str:
    number = float(text)
    return f"p{int(number)}" if number.is_integer() else f"p{text}"


def _old_field(line: str, block: str, metrics: dict[str, dict[str, float]], run: ToolRun) -> None:
    """One line of the 7.x block layout (``min: X ms (end to end Y ms)`` …)."""
    target = metrics.setdefault(block, {})
    found = _OLD_FIELD.match(line)
    if found:
        target[found.group(1)] = to_us(float(found.group(2)), "ms")
        if found.group(3) is not None and block == "latency":
            e2e = metrics.setdefault("end_to_end", {})
            e2e[found.group(1)] = to_us(float(found.group(3)), "ms")
        return
    found = _OLD_PERCENTILE.match(line)
    if found:
        target[_percentile_key(found.group(2))] = to_us(float(found.group(1)), "ms")
        return
    found = _OLD_THROUGHPUT.match(line)
    if found:
        if block == "latency":
            run.extra["throughput_qps"] = float(found.group(1))
        return
    found = _OLD_WALLTIME.match(line)
    if found:
        if block == "latency":
            run.extra["total_host_walltime_s"] = float(found.group(1))
        return
    run.warnings.append(f"trtexec: unreadable summary line: {line.strip()}")


def _other_line(line: str, run: ToolRun) -> None:
    found = _THROUGHPUT.match(line)
    if found:
        run.extra["throughput_qps"] = float(found.group(1))
        return
    if line.startswith("Throughput:"):
        run.warnings.append(f"trtexec: unreadable throughput line: {line}")
        return
    found = _TOTALS.match(line)
    if found:
        key = "total_host_walltime_s" if found.group(1) == "Host Walltime" else "total_gpu_s"
        run.extra[key] = float(found.group(2))
        return
    found = _QUERIES.match(line)
    if found:
        run.count = int(found.group(1))
        return
    if _AVERAGE_ANY.match(line):
        found = _AVERAGE.match(line)
        if found is None:
            run.warnings.append(f"trtexec: unreadable trace average line: {line}")
            return
        entry = {
            "runs": int(found.group(1)),
            "gpu_us": to_us(float(found.group(2)), "ms"),
            "host_us": to_us(float(found.group(3)), "ms"),
            "enqueue_us": to_us(float(found.group(5)), "ms"),
        }
        if found.group(4) is not None:
            entry["end_to_end_us"] = to_us(float(found.group(4)), "ms")
        run.extra.setdefault("trace_averages", []).append(entry)


# -- exported JSON ----------------------------------------------------------------------------


class ExportError(ValueError):
    """An ``--exportTimes`` / ``--exportProfile`` file devlab cannot read; names the file."""


def parse_export_times(text: str, source: str = "times.json") -> dict[str, list[float]]:
    """Per-query times from ``--exportTimes``, in microseconds, in query order:
    ``latency`` (host latency), ``compute`` (GPU compute), ``h2d``, ``d2h``, ``enqueue``
    (``endEnqMs - startEnqMs``) and ``end_to_end`` where the records have them.
    A record without a readable ``latencyMs`` is an ExportError naming its index."""
    data = _json(text, source)
    if not isinstance(data, list) or not data:
        raise ExportError(f"{source}: expected a non-empty JSON list of timing records")
    series: dict[str, list[float]] = {
        "latency": [],
        "compute": [],
        "h2d": [],
        "d2h": [],
        "enqueue": [],
        "end_to_end": [],
    }
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise ExportError(f"{source}: record {index} is not an object")
        latency = _ms(record.get("latencyMs"))
        if latency is None:
            raise ExportError(f"{source}: record {index} has no readable latencyMs: {record}")
        series["latency"].append(latency)
        for key, name in (
            ("computeMs", "compute"),
            ("h2dMs", "h2d"),
            ("d2hMs", "d2h"),
            ("endToEndMs", "end_to_end"),
        ):
            value = _ms(record.get(key))
            if value is not None:
                series[name].append(value)
        start, end = _ms(record.get("startEnqMs")), _ms(record.get("endEnqMs"))
        if start is not None and end is not None:
            series["enqueue"].append(end - start)
    count = len(series["latency"])
    return {key: values for key, values in series.items() if len(values) == count}


def parse_export_profile(text: str, source: str = "profile.json") -> dict[str, Any]:
    """Per-layer times from ``--exportProfile``: ``{"count": runs, "layers": [LayerTime…],
    "percentages": {name: %}}`` with each layer's mean time per run in microseconds."""
    data = _json(text, source)
    if not isinstance(data, list) or not data:
        raise ExportError(f"{source}: expected a non-empty JSON list (count, then layers)")
    head, rows = data[0], data[1:]
    count = head.get("count") if isinstance(head, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ExportError(f'{source}: the first element must be {{"count": <runs>}}, got {head}')
    layers: list[LayerTime] = []
    percentages: dict[str, float] = {}
    for index, row in enumerate(rows, start=1):
        name = row.get("name") if isinstance(row, dict) else None
        average = _ms(row.get("averageMs")) if isinstance(row, dict) else None
        if average is None and isinstance(row, dict):
            total = _ms(row.get("timeMs"))
            average = total / count if total is not None else None
        if not isinstance(name, str) or average is None:
            raise ExportError(f"{source}: element {index} is not a readable layer row: {row}")
        layers.append(LayerTime(name=name, op_type=_op_type(name), mean_us=average))
        percent = row.get("percentage")
        if isinstance(percent, (int, float)) and not isinstance(percent, bool):
            percentages[name] = float(percent)
    return {"count": count, "layers": layers, "percentages": percentages}


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise ExportError(f"{source}: not valid JSON ({error})") from None


def _ms(value: Any) -> float | None:
    """A finite, non-negative number of milliseconds as microseconds (None otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return to_us(float(value), "ms")


def _op_type(name: str) -> str:
    """TensorRT names fused layers after their ONNX nodes (``Conv_0 + Relu_1``); the op type is
    the part before the node index of the first, where there is one."""
    first = name.split(" + ")[0].strip().split("/")[-1]
    found = re.match(r"^([A-Za-z][A-Za-z]*)(?:_\d+)?$", first)
    return found.group(1) if found else "TensorRT"


# -- command lines ----------------------------------------------------------------------------


def build_argv(
    trtexec: str,
    onnx: str,
    engine: str,
    precision: str = "fp16",
    workspace_mib: int | None = None,
) -> list[str]:
    """``trtexec --onnx … --saveEngine …``: build (and time briefly) one engine."""
    argv = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *precision_flags(precision)]
    if workspace_mib is not None:
        argv.append(f"--memPoolSize=workspace:{int(workspace_mib)}")
    return argv


def timed_argv(
    trtexec: str,
    engine: str,
    iterations: int,
    warmup_ms: int,
    times_json: str,
) -> list[str]:
    """``trtexec --loadEngine … --iterations N --duration 0 --exportTimes``: exactly N timed
    queries (``--duration=0`` lets the count, not a time, end the run)."""
    return [
        trtexec,
        f"--loadEngine={engine}",
        f"--iterations={int(iterations)}",
        "--duration=0",
        f"--warmUp={int(warmup_ms)}",
        "--avgRuns=10",
        f"--exportTimes={times_json}",
    ]


def profile_argv(trtexec: str, engine: str, iterations: int, profile_json: str) -> list[str]:
    """A separate profiled pass: per-layer times for ``--exportProfile``."""
    return [
        trtexec,
        f"--loadEngine={engine}",
        f"--iterations={int(iterations)}",
        "--duration=0",
        "--warmUp=0",
        "--dumpProfile",
        f"--exportProfile={profile_json}",
    ]


def precision_flags(precision: str) -> list[str]:
    """trtexec's flags for a precision; ValueError naming the allowed ones."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return [] if precision == "fp32" else [f"--{precision}"]
