"""``devlab report RESULTS``: the "fast but wrong" table and the accuracy-vs-latency plot of a
results table; ``--run`` shows the same after a run that scored accuracy.

A thin wrapper: pairing and the flag rule live in ``backends.results.fast_wrong``. Imports rich,
never textual.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from backends.core.extras import MissingExtra
from backends.results.compare import CompareError, load_results
from backends.results.fast_wrong import (
    DEFAULT_MAX_DROP_POINTS,
    FastWrongRow,
    fast_wrong_rows,
    has_accuracy,
    pareto_points,
    write_fast_wrong,
)
from console.charts import format_us
from console.cli.exit_codes import ExitCode, UsageError


def build_report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab report",
        description="The 'fast but wrong' report of a results table: each quantized run beside "
        "its float model on the same device (latency, speed-up, top-1, the drop in points), "
        "flagged past --max-drop; writes fast_wrong.csv/.json and accuracy_pareto.png next to "
        "the table. See docs/accuracy.md.",
    )
    parser.add_argument("results", metavar="RESULTS", help="results.csv / .json or a --out folder")
    parser.add_argument(
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP_POINTS,
        metavar="POINTS",
        help=f"flag a top-1 drop above this many points (default {DEFAULT_MAX_DROP_POINTS:g})",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    parser.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    return parser


def run_report_tool(args: list[str], err: Console) -> int:
    """``report RESULTS [options]`` (``args[0] == "report"``); 0 when written, 2 on bad input,
    1 when a pair is flagged (scripts can gate on it)."""
    parsed = build_report_parser().parse_args(args[1:])
    if parsed.max_drop < 0:
        raise UsageError(f"--max-drop must be >= 0 points, not {parsed.max_drop:g}")
    try:
        table = load_results(parsed.results)
    except CompareError as error:
        raise UsageError(str(error)) from None
    out_dir = table.path.parent
    rows = fast_wrong_rows(table.rows, parsed.max_drop)
    if parsed.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    written = report_files(out_dir, table.rows, rows, err, plot=not parsed.no_plot)
    if not parsed.json:
        out = Console()
        if not out.is_terminal:
            out = Console(width=160)
        if not has_accuracy(table.rows):
            err.print(
                f"{table.path}: no row has accuracy_top1; run with --accuracy SET to score",
                highlight=False,
            )
        out.print(render_table(rows, parsed.max_drop))
    err.print(f"written to {out_dir}: {', '.join(p.name for p in written)}", highlight=False)
    return ExitCode.JOBS_FAILED if any(row.flagged for row in rows) else ExitCode.OK


def report_files(
    out_dir: Path,
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[FastWrongRow],
    err: Console,
    plot: bool = True,
) -> list[Path]:
    """fast_wrong.csv/.json, and the PNG when asked and matplotlib is there (else a note
    naming the extra: the tables stay written)."""
    written = write_fast_wrong(out_dir, rows)
    if plot:
        try:
            from backends.results.pareto_plot import PLOT_FILE, plot_accuracy_vs_latency

            written.append(plot_accuracy_vs_latency(pareto_points(records), out_dir / PLOT_FILE))
        except MissingExtra as error:
            err.print(f"no accuracy plot: {error}", markup=False, highlight=False)
    return written


def after_run(
    out_dir: Path, records: Sequence[Mapping[str, Any]], out: Console | None, err: Console
) -> list[Path]:
    """What ``--run`` adds when some row was scored: the table on ``out`` (None: --json), the
    files in ``out_dir``; nothing otherwise."""
    if not has_accuracy(records):
        return []
    rows = fast_wrong_rows(records)
    if rows and out is not None:
        out.print(render_table(rows, DEFAULT_MAX_DROP_POINTS))
    return report_files(out_dir, records, rows, err)


def render_table(rows: Sequence[FastWrongRow], max_drop: float) -> Table:
    table = Table(
        title=f"fast but wrong: quantized vs float (flag: top-1 drop > {max_drop:g} points)",
        title_justify="left",
    )
    for column in ("model", "device", "scheme", "fp32", "int", "speed-up", "top-1 fp32"):
        table.add_column(column, justify="left" if column in {"model", "device"} else "right")
    table.add_column("top-1 int", justify="right")
    table.add_column("drop", justify="right")
    table.add_column("flag")
    if not rows:
        table.add_row("-", "-", "-", "-", "-", "-", "-", "-", "-", "no quantized twin found")
    for row in rows:
        table.add_row(
            row.model,
            row.device,
            f"{row.scheme} ({row.fp32_runtime} / {row.quant_runtime})",
            format_us(row.fp32_us),
            format_us(row.quant_us),
            f"{row.speedup:.2f}x" if row.speedup else "-",
            _pct(row.fp32_top1),
            _pct(row.quant_top1),
            f"{row.drop_points:+.2f} pt" if row.drop_points is not None else "-",
            "[bold red]FAST BUT WRONG[/]" if row.flagged else (row.note or "ok"),
        )
    return table


def _pct(value: float | None) -> str:
    return f"{value * 100:.2f}%" if value is not None else "-"
