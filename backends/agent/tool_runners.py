"""Runners that drive a benchmark tool as a subprocess: ``xdputil benchmark``, a Vitis AI
``test_performance_<task>`` program, and an operator-configured ``command``.

These tools print a summary, not per-iteration times, so their results carry
``stats_source: "tool summary"`` and empty ``latencies_us``.
"""

from __future__ import annotations

import json
import math
import shlex
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.agent.process import run_tool
from backends.agent.runners import (
    ITERATIONS,
    TOOL_SUMMARY,
    ProgressCallback,
    ProgressUpdate,
    RoundResult,
    Runner,
    RunnerError,
    RunnerResult,
    iteration_summary,
)
from backends.agent.settings import JobSettingsIn
from backends.runtimes import vitis
from backends.runtimes.common import ToolOutputError, ToolRun, tail

PLACEHOLDERS = ("{model}", "{threads}", "{runs}", "{warmup}")
XDPUTIL_TIMEOUT_S = 600.0
TOOL_MARGIN_S = 600.0
COMMAND_TIMEOUT_S = 3 * 3600.0
DEFAULT_TP_SECONDS = 30  # test_performance's own default


class XdputilRunner(Runner):
    """``xdputil benchmark <model> -i -1 <threads>``: whole-graph DPU throughput, 60 s."""

    name = "xdputil"

    def __init__(self, xdputil: str, timeout_s: float = XDPUTIL_TIMEOUT_S) -> None:
        self.xdputil = xdputil
        self.timeout_s = timeout_s

    def version(self) -> str:
        return "unknown"

    def argv(self, model_path: Path, settings: JobSettingsIn) -> list[str]:
        return [self.xdputil, "benchmark", str(model_path), "-i", "-1", str(settings.threads)]

    def run(
        self,
        model_path: Path,
        settings: JobSettingsIn,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> RunnerResult:
        progress(ProgressUpdate("running", 0, 100))
        output = run_tool(
            self.argv(model_path, settings), cancel, _percent_reporter(progress), self.timeout_s
        )
        try:
            parsed = vitis.parse_xdputil(output.text, output.exit_code)
        except ToolOutputError as error:
            raise RunnerError(str(error)) from None
        notes = ["xdputil runs for a fixed 60 s: warmup, rounds and seconds do not apply"]
        return tool_summary_result(parsed, self.version(), notes)


class TestPerformanceRunner(Runner):
    """A Vitis AI Library ``test_performance_<task>`` program: end-to-end and DPU means."""

    __test__ = False  # not a pytest test class despite the name
    name = "vitis-test-performance"

    def __init__(self, program: str, image_list: str) -> None:
        self.program = program
        self.image_list = image_list

    def version(self) -> str:
        return "unknown"

    def argv(self, model_path: Path, settings: JobSettingsIn) -> list[str]:
        return [
            self.program,
            str(model_path),
            self.image_list,
            "-t",
            str(settings.threads),
            "-s",
            str(_whole_seconds(settings.seconds)),
        ]

    def run(
        self,
        model_path: Path,
        settings: JobSettingsIn,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> RunnerResult:
        seconds = _whole_seconds(settings.seconds)
        progress(ProgressUpdate("running", 0, seconds))

        def on_lines(lines: list[str]) -> None:
            done = None
            for line in lines:
                if (step := vitis.performance_progress(line)) is not None:
                    done = step
            if done is None:
                progress(ProgressUpdate("running", 0, seconds, lines=lines))
            else:
                progress(ProgressUpdate("running", done[0], done[1], lines=lines))

        timeout = seconds + TOOL_MARGIN_S
        output = run_tool(self.argv(model_path, settings), cancel, on_lines, timeout)
        try:
            parsed = vitis.parse_test_performance(output.text, output.exit_code)
        except ToolOutputError as error:
            raise RunnerError(str(error)) from None
        notes = [f"time-based run of {seconds} s: warmup and rounds do not apply"]
        return tool_summary_result(parsed, self.version(), notes)


class CommandRunner(Runner):
    """An operator's own command line, split once at start; placeholders filled per job."""

    name = "command"

    def __init__(self, template: str, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.template = template
        self.argv_template = split_template(template)
        self.timeout_s = timeout_s

    def version(self) -> str:
        return "unknown"

    def argv(self, model_path: Path, settings: JobSettingsIn) -> list[str]:
        values = {
            "{model}": str(model_path),
            "{threads}": str(settings.threads),
            "{runs}": str(settings.runs),
            "{warmup}": str(settings.warmup),
        }
        argv = []
        for item in self.argv_template:
            for placeholder, value in values.items():
                item = item.replace(placeholder, value)
            argv.append(item)
        return argv

    def run(
        self,
        model_path: Path,
        settings: JobSettingsIn,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> RunnerResult:
        argv = self.argv(model_path, settings)
        progress(ProgressUpdate("running", 0, None))
        output = run_tool(argv, cancel, _percent_reporter(progress, total=None), self.timeout_s)
        if output.exit_code != 0:
            raise RunnerError(
                f"{Path(argv[0]).name} failed (exit code {output.exit_code}): "
                + " | ".join(tail(output.lines, 8))
            )
        return parse_command_output(output.text, settings, Path(argv[0]).name)


def split_template(template: str) -> list[str]:
    """The argument list of a ``--command`` template; ValueError when it cannot be used."""
    try:
        argv = shlex.split(template)
    except ValueError as error:
        raise ValueError(f"cannot split the command template: {error}") from None
    if not argv:
        raise ValueError("the command template is empty")
    if not any("{model}" in item for item in argv):
        raise ValueError("the command template must contain {model} (the uploaded model's path)")
    if any(p in argv[0] for p in PLACEHOLDERS):
        raise ValueError("the command template must start with a program, not a placeholder")
    return argv


def parse_command_output(text: str, settings: JobSettingsIn, tool: str) -> RunnerResult:
    """A JSON line with ``latencies_us`` or ``mean_us``, else xdputil's or test_performance's
    report; RunnerError quoting the last lines when none is there."""
    found = _json_report(text)
    try:
        if found is not None:
            return _json_result(found, settings, tool)
        if vitis.has_xdputil_report(text):
            return tool_summary_result(vitis.parse_xdputil(text), "unknown", [], tool=tool)
        if vitis.has_test_performance_report(text):
            parsed = vitis.parse_test_performance(text)
            return tool_summary_result(parsed, "unknown", [], tool=tool)
    except ToolOutputError as error:
        raise RunnerError(str(error)) from None
    last = " | ".join(tail(text.splitlines(), 8)) or "(no output)"
    raise RunnerError(
        f"{tool} printed no result: expected a JSON line with latencies_us or mean_us, "
        f"xdputil's 'FPS= ... number_of_frames=' line or test_performance's 'FPS=' lines; "
        f"last lines: {last}"
    )


def tool_summary_result(
    parsed: ToolRun, version: str, notes: list[str], tool: str | None = None
) -> RunnerResult:
    """A RunnerResult from a parsed tool summary (one round, no per-iteration latencies).

    Without a latency (xdputil with several threads, test_performance without E2E_MEAN) the
    summary's mean is the inverse throughput 1e6/FPS, and ``extras.mean_is`` says so.
    """
    fps = parsed.extra.get("fps")
    mean, mean_is = parsed.avg_us, "latency"
    if mean is None and fps:
        mean, mean_is = 1e6 / fps, "inverse throughput"
    summary = _tool_stats(parsed.count, mean)
    extras: dict[str, Any] = {
        "fps": fps,
        "e2e_mean_us": parsed.avg_us if parsed.tool == vitis.TEST_PERFORMANCE else None,
        "dpu_mean_us": (parsed.forward_us or {}).get("mean"),
        "threads": parsed.extra.get("threads"),
        "mean_is": mean_is,
    }
    for key in ("seconds", "frames_per_thread", "cpu_side_us"):
        if key in parsed.extra:
            extras[key] = parsed.extra[key]
    return RunnerResult(
        stats_source=TOOL_SUMMARY,
        rounds=[RoundResult([], summary)],
        tool=tool or parsed.tool,
        tool_version=version,
        extras=extras,
        notes=[*notes, *parsed.warnings],
    )


def _tool_stats(count: int | None, mean: float | None) -> dict[str, Any]:
    keys = ("min", "median", "p90", "p99", "max", "std", "cv")
    return {"count": count, "mean": mean, **dict.fromkeys(keys)}


def _json_report(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if not stripped.startswith("{"):
            continue
        try:
            data = json.loads(stripped)
        except ValueError:
            continue
        if isinstance(data, dict) and ("latencies_us" in data or "mean_us" in data):
            return data
    return None


def _json_result(data: dict[str, Any], settings: JobSettingsIn, tool: str) -> RunnerResult:
    extras = {"fps": None, "e2e_mean_us": None, "dpu_mean_us": None, "threads": settings.threads}
    if "latencies_us" in data:
        latencies = _numbers(data["latencies_us"], "latencies_us")
        if not latencies:
            raise RunnerError(f"{tool} printed an empty latencies_us list")
        sizes = settings.rounds if sum(settings.rounds) == len(latencies) else [len(latencies)]
        rounds, start = [], 0
        for size in sizes:
            part = latencies[start : start + size]
            rounds.append(RoundResult(part, iteration_summary(part)))
            start += size
        return RunnerResult(ITERATIONS, rounds, tool, "unknown", extras=extras)
    mean = _numbers([data["mean_us"]], "mean_us")[0]
    count = data.get("count")
    summary = _tool_stats(count if isinstance(count, int) and count > 0 else None, mean)
    return RunnerResult(TOOL_SUMMARY, [RoundResult([], summary)], tool, "unknown", extras=extras)


def _numbers(values: Any, name: str) -> list[float]:
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in values
    ):
        raise RunnerError(f"the command's {name} must be non-negative numbers")
    return [float(v) for v in values]


def _percent_reporter(progress: ProgressCallback, total: int | None = 100):
    """Line batches → progress updates, with xdputil's ``NN% ...`` lines as done/100."""
    state = {"done": 0}

    def on_lines(lines: Sequence[str]) -> None:
        for line in lines:
            if (percent := vitis.xdputil_progress(line)) is not None:
                state["done"] = percent
        shown_total = 100 if state["done"] else total
        progress(ProgressUpdate("running", state["done"], shown_total, lines=list(lines)))

    return on_lines


def _whole_seconds(seconds: float | None) -> int:
    """test_performance's ``-s`` takes whole seconds."""
    return DEFAULT_TP_SECONDS if seconds is None else max(1, math.ceil(seconds))
