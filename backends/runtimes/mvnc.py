"""Intel NCSDK ``mvNCProfile`` output parser (NCS 1, NCSDK 1.x / 2.x).

Both layouts of the "Detailed Per Layer Profile" table are read (``shared/specs/
bench-tools.md`` section 5.2): rows are ``<index> <name> <MFLOPs> <MB/s> <ms>``, the footer
``Total inference time <ms>`` is the sum of the layer times on the device (no USB transfer):
the nnabla-nas "Layers Time". ``Time to Execute : <ms>`` lines (one per run, USB transfer
included) give "Total inference Time" when present. Rows elided by the author (``...``) make
the layer list incomplete; a warning says so and the printed total is kept.
"""

from __future__ import annotations

import re

from backends.core.records import LayerTime
from backends.runtimes.common import NUMBER, ToolOutputError, ToolRun, summary, tail

TOOL = "mvNCProfile"

_ROW = re.compile(rf"^\s*(\d+)\s+(\S.*?)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s*$")
_TOTAL = re.compile(rf"^\s*Total inference time\s+({NUMBER})\s*$")
_EXECUTE = re.compile(rf"^\s*Time to Execute\s*:\s*({NUMBER})\s*ms")
_ELIDED = re.compile(r"^\s*\.{3,}\s*$")
_ERRORISH = re.compile(r"\berror\b|\bfailed\b|\[Error", re.IGNORECASE)


def parse_mvnc_profile(text: str) -> ToolRun:
    """One ``mvNCProfile`` console output; ToolOutputError without a per-layer table."""
    run = ToolRun(tool=TOOL)
    lines = text.splitlines()
    in_table = False
    executes: list[float] = []
    mflops: dict[str, float] = {}
    bandwidth: dict[str, float] = {}
    elided = False
    for line in lines:
        if match := _EXECUTE.match(line):
            executes.append(float(match.group(1)) * 1e3)
        elif line.strip() == "Detailed Per Layer Profile":
            in_table = True
        elif not in_table:
            continue
        elif match := _TOTAL.match(line):
            run.layers_total_us = float(match.group(1)) * 1e3
            in_table = False
        elif _ELIDED.match(line):
            elided = True
        elif match := _ROW.match(line):
            _, name, flops, mbps, ms = match.groups()
            run.layers.append(LayerTime(name=name, op_type="", mean_us=float(ms) * 1e3))
            mflops[name] = float(flops)
            bandwidth[name] = float(mbps)
    if not run.layers and run.layers_total_us is None:
        errors = [line.strip() for line in lines if _ERRORISH.search(line)]
        raise ToolOutputError(TOOL, errors or tail(lines), reason="no per-layer profile")
    if run.layers_total_us is None:
        run.layers_total_us = sum(layer.mean_us for layer in run.layers)
        run.warnings.append("no 'Total inference time' line; the total is the sum of the rows")
    if elided:
        run.warnings.append("rows were elided ('...') in this copy: the layer list is incomplete")
    run.extra["layers_complete"] = not elided
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
