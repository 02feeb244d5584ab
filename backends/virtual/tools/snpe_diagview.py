"""**Stand-in** for the SNPE SDK's host tool ``snpe-diagview`` (not Qualcomm software).

``snpe-diagview --input_log SNPEDiag_0.log`` reads a *stand-in* diag log (written by the
stand-in ``snpe-net-run``; real binary SNPE logs are refused) and prints the SNPE 2.x text
report (the layout of SNPE 2.37): the header, ``SNPE Create Statistics:``, ``SNPE Execute
Statistics (Averaged):`` (averages over every inference in the log), ``Per-Subnet Execution
Times:`` and, for logs made with ``--profiling_level detailed``, ``Per-Layer Execution Times:``.
Times are whole microseconds like the real report; zero accelerator times have no unit.
``--output FILE`` also writes every inference as CSV, in the layout real 2.x diagview writes.

On the CPU and GPU runtimes layer rows are ``index: name : N us : RUNTIME``. On DSP they follow
the real HTP report: synthetic ``Input``/``Output`` rows, ``name:OpId_N (cycles)`` names and
values in **cycles**, here the measured time at a nominal 1000 MHz clock
(:data:`DSP_CYCLES_PER_US`); the RPC/accelerator lines then carry the forward time and the sum of
the layer times (stand-in values: nothing ran on a DSP).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.virtual.tools.snpe_standin import (
    StandinArgumentParser,
    read_log,
    standin_main,
)

TOOL = "snpe-diagview"
DSP_CYCLES_PER_US = 1000
HEADER_RULE = "-" * 60
SECTION_RULE = "-" * 40
TABLE_RULE = "-" * 30


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _time(value: float) -> str:
    """Whole microseconds; a zero prints without a unit, as SNPE 2.37 does."""
    rounded = round(value)
    return f"{rounded} us" if rounded else "0 "


def render(record: dict[str, Any]) -> str:
    """The text report of one stand-in diag log."""
    runtime = str(record.get("runtime", "CPU"))
    shown_runtime = "GPU" if runtime.startswith("GPU") else runtime
    dsp = runtime == "DSP"
    created = float(record.get("created", time.time()))
    init = record.get("init", {})
    inferences = record.get("inferences", [])
    total = _mean([float(i["total"]) for i in inferences])
    forward = _mean([float(i["forward"]) for i in inferences])
    layers = [
        (str(layer["name"]), _mean([float(t) for t in layer["times"]]))
        for layer in (record.get("layers") or [])
    ]
    layer_sum = sum(value for _, value in layers)

    lines = [
        f"Log File Created: {time.ctime(created)}",
        "Time Scale: 1e-06",
        f"Epoch Timestamp: {int(created * 1e6)} "
        f"Steady Clock Timestamp: {int(record.get('steady_ns', 0)) // 1000}",
        f"Software library version: {record.get('version', 'unknown')}",
        HEADER_RULE,
        "",
        "SNPE Create Statistics:",
        SECTION_RULE,
        f"  Load: {round(init.get('load', 0))} us",
        f"  Deserialize: {round(init.get('deserialize', 0))} us",
        f"  Create: {round(init.get('create', 0))} us",
        "",
        f"  Init: {round(init.get('init', 0))} us",
        f"  De-Init: {round(init.get('deinit', 0))} us",
        "",
        f"  Create Network(s): {round(init.get('create_networks', 0))} us",
        f"  RPC Init Time: {_time(0)}",
        f"  Snpe Accelerator Init Time: {_time(0)}",
        f"  Accelerator Init Time: {_time(0)}",
        "",
        "SNPE Execute Statistics (Averaged):",
        SECTION_RULE,
        f"  Total Inference Time: {round(total)} us",
        f"  Forward Propagate Time: {round(forward)} us",
        f"  RPC Execute Time: {_time(forward if dsp else 0)}",
        f"  Snpe Accelerator Time: {_time(forward if dsp else 0)}",
        "  Num times yield occurred: 0",
        f"  Accelerator Time: {_time(layer_sum if dsp else 0)}",
        "",
        "  Per-Subnet Execution Times: ",
        "  " + TABLE_RULE,
    ]
    if dsp:
        lines.append(f"    Subnet 0 (DSP) : {round(forward * DSP_CYCLES_PER_US)} cycles")
    else:
        lines.append(f"    Subnet 0 ({shown_runtime}) : {round(forward)} us")
    if layers:
        lines += ["", "  Per-Layer Execution Times: ", "  " + TABLE_RULE]
        if dsp:
            rows = [("Input OpId_2", 0.0)]
            rows += [(f"{name}:OpId_{10 + 2 * i}", value) for i, (name, value) in enumerate(layers)]
            rows.append(("Output OpId_3", 0.0))
            for index, (name, value) in enumerate(rows):
                cycles = round(value * DSP_CYCLES_PER_US)
                lines.append(f"    {index}: {name} (cycles) : {cycles} cycles : DSP")
        else:
            for index, (name, value) in enumerate(layers):
                lines.append(f"    {index}: {name} : {round(value)} us : {shown_runtime}")
    return "\n".join(lines) + "\n"


def render_csv(record: dict[str, Any]) -> str:
    """The ``--output`` CSV of one stand-in diag log, in the SNPE 2.x layout: a fifth column
    headed ``Runtime`` holding the unit on statistic rows (``NONE`` for what was not measured)
    and the runtime on layer rows, ``AVG_*`` rows stamped -1, then every inference's rows
    (whole microseconds) followed by a blank line. DSP layer rows are left out (the real ones
    are in cycles)."""
    runtime = str(record.get("runtime", "CPU"))
    shown_runtime = "GPU" if runtime.startswith("GPU") else runtime
    init = record.get("init", {})
    inferences = record.get("inferences", [])
    layers = record.get("layers") or []
    stamp = int(record.get("steady_ns", 0)) // 1000
    rows = ["Msg Timestamp, Message, Layer Id, Time, Runtime"]
    for name, key in (
        ("LOAD", "load"),
        ("DESERIALIZE", "deserialize"),
        ("CREATE", "create"),
        ("INIT", "init"),
        ("DE-INIT", "deinit"),
        ("CREATE NETWORK(S)", "create_networks"),
    ):
        rows.append(f"{stamp},{name},-1,{round(init.get(key, 0))},us")
    for name in ("RPC INIT TIME", "SNPE ACCELERATOR INIT TIME", "ACCELERATOR INIT TIME"):
        rows.append(f"{stamp},{name},-1,0,NONE")
    total = _mean([float(i["total"]) for i in inferences])
    forward = _mean([float(i["forward"]) for i in inferences])
    rows.append(f"-1,AVG_TOTAL_INFERENCE_TIME,-1,{round(total)},us")
    rows.append(f"-1,AVG_FORWARD_PROPAGATE_TIME,-1,{round(forward)},us")
    for number, inference in enumerate(inferences):
        at = stamp + number
        rows.append(f"{at},TOTAL_INFERENCE_TIME,-1,{round(float(inference['total']))},us")
        rows.append(f"{at},FORWARD_PROPAGATE,-1,{round(float(inference['forward']))},us")
        if runtime != "DSP":
            for index, layer in enumerate(layers):
                times = layer["times"]
                if number < len(times):
                    rows.append(
                        f"{at},FORWARD_PROPAGATE_LAYER,{index},{round(float(times[number]))},"
                        f"{shown_runtime}"
                    )
        rows.append("")
    return "\n".join(rows) + "\n"


def run(argv: Sequence[str], out=sys.stdout) -> int:
    parser = StandinArgumentParser(
        prog=TOOL,
        description="devlab STAND-IN for snpe-diagview: reads stand-in SNPEDiag logs only.",
    )
    parser.add_argument("--input_log", required=True)
    parser.add_argument("--output", help="also write every inference as CSV to this file")
    args = parser.parse_args(list(argv))
    record = read_log(args.input_log)
    if args.output:
        Path(args.output).write_text(render_csv(record), encoding="utf-8")
    out.write(render(record))
    out.flush()
    return 0


def main(argv: Sequence[str] | None = None, calls_log: str | None = None) -> int:
    return standin_main(TOOL, run, argv, calls_log, error_prefix="ERROR: ")


if __name__ == "__main__":
    sys.exit(main())
