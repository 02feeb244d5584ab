"""Intel NCSDK ``mvNCProfile`` output parser (NCS 1, NCSDK 1.x / 2.x).

Both layouts of the "Detailed Per Layer Profile" table are read (``shared/specs/
bench-tools.md`` section 5.2): rows are ``<index> <name> <MFLOPs> <MB/s> <ms>``, the footer
``Total inference time <ms>`` is the sum of the layer times on the device (no USB transfer):
the nnabla-nas "Layers Time". ``Time to Execute : <ms>`` lines (one per run, USB transfer
included) give "Total inference Time" when present. Rows elided by the author (``...``) make
the layer list incomplete; a warning says so and the printed total is kept.

The two table layouts print the numbers in fixed-width fields with a known number of decimals:

* NCSDK 1.x up to 1.10 (header ``Layer  Name  MFLOPs  Bandwidth MB/s  time(ms)``): MFLOPs with
  3 decimals, bandwidth and time with 2;
* the later layout (header ``#  Name  MFLOPs  (MB/s)  (ms)``, NCSDK 1.1x and 2.x): MFLOPs and
  bandwidth with 1 decimal, time with 3, each right-aligned in 8 columns.

A value wider than its field runs into its neighbour (``0.0222998.7`` is 0.0 MFLOPs and
222998.7 MB/s); such rows are split by the decimals of the layout, not dropped.

No silent drops (issue 16): a line inside the table that is neither a row, a header, a rule nor
the footer is a warning naming the line (and the layer list is marked incomplete); a ``Total
inference time`` line whose number cannot be read is an error naming it; a ``Time to Execute``
line that cannot be read is a warning naming it; the tool's own error lines (``E: [ … ]`` from the
USB dispatcher) in an otherwise complete run are kept as warnings.
"""

from __future__ import annotations

import re

from backends.core.records import LayerTime
from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    clean_log,
    summary,
    tail,
    to_us,
)

TOOL = "mvNCProfile"

_ROW = re.compile(rf"^\s*(\d+)\s+(\S.*?)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s*$")
_TOTAL_ANY = re.compile(r"^\s*Total inference time\b", re.IGNORECASE)
_TOTAL = re.compile(rf"^\s*Total inference time\s+({NUMBER})\s*$", re.IGNORECASE)
_EXECUTE_ANY = re.compile(r"^\s*Time to Execute\b", re.IGNORECASE)
_EXECUTE = re.compile(rf"^\s*Time to Execute\s*:\s*({NUMBER})\s*([A-Za-zµ]+)\s*$", re.IGNORECASE)
_ELIDED = re.compile(r"^\s*\.{3,}\s*$")
_RULE = re.compile(r"^\s*(?:=+|-+)\s*$")
_VERSION = re.compile(r"^\s*mvNCProfile\s+v(\d[\w.]*)")
_TOOL_ERROR = re.compile(r"^\s*E:\s*\[")
_ERRORISH = re.compile(r"\berror\b|\bfailed\b|\[Error", re.IGNORECASE)

# Header of each table layout -> decimals printed for (MFLOPs, MB/s, ms).
_OLD_HEADER = re.compile(r"^\s*Layer\s+Name\s+MFLOPs\s+Bandwidth\s+MB/s\s+time\(ms\)\s*$")
_NEW_HEADER = re.compile(r"^\s*#\s+Name\s+MFLOPs\s+\(MB/s\)\s+\(ms\)\s*$")
_NEW_HEADER_TOP = re.compile(r"^\s*Bandwidth\s+time\s*$")
_DECIMALS_OLD = (3, 2, 2)
_DECIMALS_NEW = (1, 1, 3)


def _glued_row(decimals: tuple[int, int, int]) -> re.Pattern[str]:
    """A row whose number fields may touch: each number has the layout's decimals."""
    flops, bandwidth, ms = (rf"(\d+\.\d{{{n}}})" for n in decimals)
    return re.compile(rf"^\s*(\d+)\s+(\S.*?)\s+{flops}\s*{bandwidth}\s*{ms}\s*$")


def parse_mvnc_profile(text: str) -> ToolRun:
    """One ``mvNCProfile`` console output; ToolOutputError without a per-layer table."""
    text = clean_log(text)
    run = ToolRun(tool=TOOL)
    lines = text.splitlines()
    in_table = False
    glued: re.Pattern[str] | None = None
    executes: list[float] = []
    mflops: dict[str, float] = {}
    bandwidth: dict[str, float] = {}
    elided = False
    unreadable_rows: list[str] = []
    for line in lines:
        stripped = line.strip()
        if match := _VERSION.match(line):
            run.tool_version = match.group(1)
        elif _TOOL_ERROR.match(line):
            run.warnings.append(f"{TOOL} printed an error line: {stripped!r}")
        elif _EXECUTE_ANY.match(line):
            if (match := _EXECUTE.match(line)) and (us := _to_us(match)) is not None:
                executes.append(us)
            else:
                run.warnings.append(f"{TOOL}: cannot read line {stripped!r}")
        elif stripped == "Detailed Per Layer Profile":
            in_table = True
        elif not in_table:
            continue
        elif _TOTAL_ANY.match(line):
            if not (match := _TOTAL.match(line)):
                raise ToolOutputError(TOOL, [stripped], reason="cannot read the headline line")
            run.layers_total_us = float(match.group(1)) * 1e3
            in_table = False
        elif _ELIDED.match(line):
            elided = True
        elif not stripped or _RULE.match(line) or _NEW_HEADER_TOP.match(line):
            continue
        elif _OLD_HEADER.match(line):
            glued = _glued_row(_DECIMALS_OLD)
        elif _NEW_HEADER.match(line):
            glued = _glued_row(_DECIMALS_NEW)
        elif (match := _ROW.match(line)) or (glued and (match := glued.match(line))):
            _, name, flops, mbps, ms = match.groups()
            run.layers.append(LayerTime(name=name, op_type="", mean_us=float(ms) * 1e3))
            mflops[name] = float(flops)
            bandwidth[name] = float(mbps)
        else:
            unreadable_rows.append(stripped)
            run.warnings.append(
                f"{TOOL}: cannot read line {stripped!r} in block 'Detailed Per Layer Profile'"
            )
    if not run.layers and run.layers_total_us is None:
        errors = [line.strip() for line in lines if _ERRORISH.search(line)]
        raise ToolOutputError(TOOL, errors or tail(lines), reason="no per-layer profile")
    if run.layers_total_us is None:
        run.layers_total_us = sum(layer.mean_us for layer in run.layers)
        run.warnings.append("no 'Total inference time' line; the total is the sum of the rows")
    if elided:
        run.warnings.append("rows were elided ('...') in this copy: the layer list is incomplete")
    run.extra["layers_complete"] = not elided and not unreadable_rows
    run.extra["mflops"] = mflops
    run.extra["bandwidth_mb_s"] = bandwidth
    if executes:
        run.count = len(executes)
        run.avg_us = sum(executes) / len(executes)
        run.min_us, run.max_us = min(executes), max(executes)
        run.total_inference = summary(
            min=run.min_us, mean=run.avg_us, max=run.max_us, count=run.count
        )
        run.extra["time_to_execute_us"] = executes
    return run


def _to_us(match: re.Match[str]) -> float | None:
    """The ``Time to Execute`` value in microseconds, None for a unit that is not a time."""
    try:
        return to_us(float(match.group(1)), match.group(2))
    except ValueError:
        return None
