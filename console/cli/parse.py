"""``devlab parse TOOL FILE [--json]``: what devlab reads from a benchmark tool's log, so a user
with a new tool version can check it (and attach it to a bug report)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from backends.runtimes.common import ToolOutputError, ToolRun, decode_log
from backends.runtimes.parsers import PARSERS, parse_log, run_to_dict
from console.charts import format_us
from console.cli.exit_codes import ExitCode, UsageError

STATS = (
    "count",
    "avg_us",
    "median_us",
    "min_us",
    "max_us",
    "std_us",
    "p90_us",
    "p95_us",
    "p99_us",
    "init_us",
    "first_inference_us",
    "warmup_avg_us",
)


# What to run on a binary file a user may take for the tool's output.
BINARY_HINTS = {
    "snpe-diagview": "decode the diag log first: snpe-diagview --input_log FILE > report.txt",
    "snpe-diagview-csv": "decode the diag log first: snpe-diagview --input_log FILE --output "
    "diag.csv",
    "trtexec": "--exportTimes/--exportProfile files are JSON; give trtexec's console output",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab parse",
        description="Print what devlab's parser reads from a benchmark tool's log "
        "(times in microseconds). Exit 1 when the log is a failure or cannot be read.",
    )
    parser.add_argument("tool", choices=sorted(PARSERS), help="the tool that wrote the log")
    parser.add_argument("file", help="the captured output (stdout and stderr, or the CSV)")
    parser.add_argument("--json", action="store_true", help="everything as one JSON document")
    return parser


def run_parse_tool(args: Sequence[str], err: Console) -> int:
    parsed = build_parser().parse_args(args)
    path = Path(parsed.file)
    try:
        text = decode_log(path.read_bytes())
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if "\x00" in text:
        hint = BINARY_HINTS.get(parsed.tool, "give the tool's printed output, saved as text")
        err.print(
            f"devlab parse: {path} is a binary file, not a tool's text output: {hint}",
            markup=False,
            highlight=False,
        )
        return ExitCode.JOBS_FAILED
    try:
        runs = parse_log(parsed.tool, text)
    except ToolOutputError as error:
        err.print(f"devlab parse: {path}: {error}", markup=False, highlight=False)
        return ExitCode.JOBS_FAILED
    if parsed.json:
        document = {"tool": parsed.tool, "file": str(path)}
        document["runs"] = {name: run_to_dict(run) for name, run in runs.items()}
        print(json.dumps(document, indent=2, default=str))
        return ExitCode.OK
    out = Console()
    for name, run in runs.items():
        show_run(out, name, run)
    return ExitCode.OK


def show_run(out: Console, name: str, run: ToolRun) -> None:
    """The headline, statistics, nnabla-nas keys, layers, warnings and other figures of a run."""
    title = f"{run.tool} {run.tool_version}".strip() + (f" ({name})" if name else "")
    out.print(f"[bold]{title}[/]", highlight=False)
    stats = Table("statistic", "value", box=None)
    for field in STATS:
        value = getattr(run, field)
        if value is not None:
            stats.add_row(field, str(value) if field == "count" else format_us(value))
    out.print(stats)
    keys = run.latency_keys()
    if keys:
        table = Table("nnabla-nas key", "min", "avg", "max", box=None)
        for key, (low, mean, high) in keys.items():
            table.add_row(key, format_us(low), format_us(mean), format_us(high))
        out.print(table)
    if run.layers:
        layers = Table("layer", "op", "mean", box=None)
        for layer in run.layers:
            layers.add_row(layer.name, layer.op_type, format_us(layer.mean_us))
        out.print(layers)
    for warning in run.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for key, value in run.extra.items():
        out.print(f"{key}: {json.dumps(value, default=str)[:200]}", markup=False, highlight=False)
