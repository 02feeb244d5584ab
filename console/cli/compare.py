"""``devlab compare A B``: per-model deltas between two results tables, noise and conditions.

A thin wrapper: reading, pairing and the verdict rule live in ``backends.results.compare``. Imports
rich, never textual.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from backends.results.compare import (
    DEFAULT_THRESHOLD_PCT,
    FASTER,
    INDISTINGUISHABLE,
    SLOWER,
    CompareError,
    CompareReport,
    compare_tables,
    load_results,
)
from console.charts import format_us
from console.cli.exit_codes import ExitCode, UsageError

VERDICT_STYLE = {FASTER: "green", SLOWER: "red", INDISTINGUISHABLE: "dim"}
SHOWN_CONDITIONS = 3  # names per row in the table; the details follow below it


def build_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab compare",
        description="Compare two results tables model by model: delta = (B - A) / A. "
        "A delta inside the noise (overlapping confidence intervals, or within the threshold "
        "for rows without intervals) is 'indistinguishable'.",
    )
    parser.add_argument("a", metavar="A", help="results.csv / results.json, or a --out folder")
    parser.add_argument("b", metavar="B", help="results.csv / results.json, or a --out folder")
    parser.add_argument(
        "--threshold-pct",
        type=float,
        default=DEFAULT_THRESHOLD_PCT,
        metavar="P",
        help="noise band for rows without confidence intervals or rounds "
        f"(default {DEFAULT_THRESHOLD_PCT:g})",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="compare median_us even when both rows have a drift-normalised median",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    return parser


def run_compare_tool(args: list[str], err: Console) -> int:
    """``compare A B [options]`` (``args[0] == "compare"``); 0 when compared, 2 on usage errors."""
    try:
        parsed = build_compare_parser().parse_args(args[1:])
        if parsed.threshold_pct < 0:
            raise UsageError(f"--threshold-pct must be >= 0, not {parsed.threshold_pct:g}")
        try:
            report = compare_tables(
                load_results(parsed.a), load_results(parsed.b), parsed.threshold_pct, parsed.raw
            )
        except CompareError as error:
            raise UsageError(str(error)) from None
    except UsageError as error:
        err.print(f"devlab compare: error: {error}", markup=False, highlight=False)
        return ExitCode.USAGE
    except SystemExit as exit_:  # argparse's usage errors and --help
        return int(exit_.code or 0)
    if parsed.json:
        print(json.dumps(report.to_dict(), indent=2))
        return ExitCode.OK
    out = Console()
    if not out.is_terminal:  # logs and pipes: do not squeeze names to 80 columns
        out = Console(width=160)
    render(report, out)
    return ExitCode.OK


def render(report: CompareReport, out: Console) -> None:
    """The table, the conditions that differ, the rows only one side has, a summary line."""
    out.print(f"A: {report.a}\nB: {report.b}", markup=False, highlight=False)
    table = Table(title="delta = (B - A) / A", title_justify="left")
    for column in ("model", "device", "runtime", "A", "B", "delta", "noise", "verdict"):
        numeric = column in {"A", "B", "delta", "noise"}
        table.add_column(column, justify="right" if numeric else "left", no_wrap=numeric)
    table.add_column("conditions / flags")
    for row in report.rows:
        style = VERDICT_STYLE.get(row.verdict, "yellow")
        names = row.conditions_differ_names
        shown = ", ".join(names[:SHOWN_CONDITIONS])
        if len(names) > SHOWN_CONDITIONS:
            shown += f" +{len(names) - SHOWN_CONDITIONS} more"
        marks = ([f"differ: {shown}"] if names else []) + row.flags
        table.add_row(
            row.model,
            row.device,
            row.runtime,
            format_us(row.a_us),
            format_us(row.b_us),
            f"{row.delta_pct:+.1f}%" if row.delta_pct is not None else "-",
            _noise(row.a_half_width_pct, row.b_half_width_pct),
            f"[{style}]{row.verdict}[/]",
            "; ".join(marks) or "-",
        )
    out.print(table)
    for row in report.rows:
        if row.conditions_differ:
            out.print(
                f"conditions differ for {row.model} ({row.device}/{row.runtime}): "
                + "; ".join(row.conditions_differ),
                markup=False,
                highlight=False,
            )
    for item in report.only_in_a + report.only_in_b:
        status = f" ({item.status})" if item.status and item.status != "done" else ""
        out.print(
            f"only in {item.side}: {item.model} ({item.device}/{item.runtime}){status}",
            markup=False,
            highlight=False,
        )
    for note in report.notes:
        out.print(f"note: {note}", markup=False, highlight=False)
    counts = report.counts()
    out.print(
        f"{len(report.rows)} compared: {counts[FASTER]} faster, {counts[SLOWER]} slower, "
        f"{counts[INDISTINGUISHABLE]} indistinguishable; {counts['conditions_differ']} with "
        f"conditions that differ; {counts['only_in_a']} only in A, {counts['only_in_b']} only "
        "in B",
        highlight=False,
    )


def _noise(a: float | None, b: float | None) -> str:
    """The two rows' 95% half-widths, A/B."""
    if a is None and b is None:
        return "-"
    return "/".join("?" if v is None else f"±{v:.1f}%" for v in (a, b))


if __name__ == "__main__":
    sys.exit(run_compare_tool(["compare", *sys.argv[1:]], Console(stderr=True, soft_wrap=True)))
