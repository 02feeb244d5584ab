"""Every tool-output parser by the name a user types (``devlab parse TOOL FILE``), and what a
parse gave as plain data: the way to check a new tool version's log against devlab."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from backends.runtimes import mvnc, openvino, ort_perf, snpe, snpe_diag_csv, tflite, trtexec, vitis
from backends.runtimes.common import ToolRun

# One parser per tool; snpe-bench gives one run per runtime column of the CSV, tflite and
# openvino one per run in the capture.
PARSERS: dict[str, Callable[[str], ToolRun | dict[str, ToolRun]]] = {
    "tflite": tflite.parse_capture,
    "ort": ort_perf.parse,
    "openvino": openvino.parse_capture,
    "snpe-diagview": snpe.parse_diagview,
    "snpe-diagview-csv": snpe_diag_csv.parse_diagview_csv,
    "snpe-bench": snpe.parse_bench_csv,
    "xdputil": vitis.parse_xdputil,
    "test-performance": vitis.parse_test_performance,
    "mvnc": mvnc.parse_mvnc_profile,
    "trtexec": trtexec.parse_trtexec,
    "snpe-throughput": snpe.parse_throughput,
}


def parse_log(tool: str, text: str) -> dict[str, ToolRun]:
    """What ``tool``'s parser read from ``text``, keyed by runtime (``""`` for tools that
    report one run). Raises ToolOutputError when the log is a failure or unreadable, and
    KeyError for an unknown tool."""
    parsed = PARSERS[tool](text)
    return parsed if isinstance(parsed, dict) else {"": parsed}


def run_to_dict(run: ToolRun) -> dict[str, Any]:
    """A ToolRun as JSON-ready data: every statistic in microseconds, the nnabla-nas keys as
    ``(min, avg, max)``, per-layer rows, warnings and the tool's other figures."""
    data = dataclasses.asdict(run)
    data["latency_keys"] = {key: list(value) for key, value in run.latency_keys().items()}
    return data
