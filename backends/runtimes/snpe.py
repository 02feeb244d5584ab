"""Qualcomm SNPE: ``snpe-net-run``/``snpe-diagview``/converter command lines and output parsers.

Parsers:

* :func:`parse_diagview` — the text report of ``snpe-diagview`` in both layouts (SNPE 1.x–2.9
  "Average SNPE Statistics"/"Layer Times", and 2.x "SNPE Execute Statistics (Averaged)"/
  "Per-Subnet Execution Times" or "Per-Graph Execution Times"/"Per-Layer Execution Times",
  HTP linting rows included); a line inside a recognised block that cannot be read is a
  warning quoting it, never dropped silently.
* :func:`parse_bench_csv` — the ``benchmark_stats_<Name>.csv`` of ``snpe_bench.py``, one
  :class:`ToolRun` per runtime column group.
* :func:`parse_throughput` — ``snpe-throughput-net-run`` (throughput only).

nnabla-nas keys, with snpe_bench's semantics (min/max are over per-run averages, never
per-inference extremes; one diagview log is one run, so there ``min == avg == max``):

* "Total Inference Time" — diagview ``Total Inference Time`` (bench row of the same name).
* "Forward Propagate" — diagview ``Forward Propagate Time`` (bench row ``Forward Propagate``).
* "Layers Time" — derived, as nnabla-nas does: the sum of the per-layer times except the input
  layer (bench: rows ``Type:data``; diagview 2.x: the synthetic ``Input`` row; diagview 1.x rows
  carry no names, so index 0 — the DLC's input ``data`` layer in SNPE 1.x — is taken as the
  input layer unless ``input_layer_indices`` says otherwise). For bench CSVs the min/max of
  Layers Time are the sums of the per-layer minima/maxima.

DSP/HTP per-layer (and per-subnet/graph) times printed in ``cycles`` cannot be converted to
time without the clock (and ops overlap): they are kept in ``extra["layer_cycles"]`` (subnets:
``unit == "cycles"``, ``us`` None), are not put in ``layers`` and do not count towards Layers
Time, which is then not computed at all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.core.records import LayerTime
from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    check_args,
    check_choice,
    clean_log,
    env_prefix,
    error_lines,
    summary,
    tail,
    to_us,
)

DIAGVIEW = "snpe-diagview"
BENCH = "snpe_bench"
THROUGHPUT = "snpe-throughput-net-run"

RUNTIMES = ("CPU", "GPU", "GPU_FP16", "DSP")
_RUNTIME_FLAGS = {
    "CPU": [],  # CPU is snpe-net-run's default runtime
    "GPU": ["--use_gpu"],
    "GPU_FP16": ["--use_gpu", "--gpu_mode", "float16"],
    "DSP": ["--use_dsp"],
}
PERF_PROFILES = (
    "balanced",
    "default",
    "high_performance",
    "sustained_high_performance",
    "burst",
    "power_saver",
    "low_power_saver",
    "high_power_saver",
    "low_balanced",
    "extreme_power_saver",
    "system_settings",
)
PROFILING_LEVELS = ("off", "basic", "moderate", "detailed", "linting", "qhas")
BUFFER_MODES = {
    "float": ["--userbuffer_float"],
    "tf8": ["--userbuffer_tf8"],
    "tf16": ["--userbuffer_tfN", "16"],
    "auto": ["--userbuffer_auto"],
}


# --------------------------------------------------------------------------- commands


def build_net_run_command(
    binary: str,
    dlc: str,
    input_list: str,
    *,
    runtime: str,
    perf_profile: str = "high_performance",
    output_dir: str,
    profiling_level: str = "detailed",
    buffer_mode: str | None = None,
    cpu_fallback: bool = False,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of one ``snpe-net-run`` on the device.

    ``runtime`` is one of :data:`RUNTIMES` (GPU_FP16 = ``--use_gpu --gpu_mode float16``, as
    snpe_bench does); ``buffer_mode`` one of :data:`BUFFER_MODES` (None: ITensors).
    ``env`` (e.g. ``LD_LIBRARY_PATH``, ``ADSP_LIBRARY_PATH``) becomes an ``env K=V …`` prefix
    so the whole command stays one argv list. The timing log lands in
    ``<output_dir>/SNPEDiag_0.log`` (binary; decode with ``snpe-diagview``).
    """
    check_choice("runtime", runtime, RUNTIMES)
    check_choice("perf_profile", perf_profile, PERF_PROFILES)
    check_choice("profiling_level", profiling_level, PROFILING_LEVELS)
    argv = env_prefix(env) + [
        binary,
        "--container",
        dlc,
        "--input_list",
        input_list,
        "--output_dir",
        output_dir,
        "--perf_profile",
        perf_profile,
        "--profiling_level",
        profiling_level,
    ]
    argv += _RUNTIME_FLAGS[runtime]
    if buffer_mode is not None:
        argv += BUFFER_MODES[check_choice("buffer_mode", buffer_mode, BUFFER_MODES)]
    if cpu_fallback:
        argv.append("--enable_cpu_fallback")
    return argv + check_args("extra", extra)


def build_diagview_command(binary: str, input_log: str, *, output: str | None = None) -> list[str]:
    """``snpe-diagview --input_log <log>``; ``output`` adds ``--output <file>``, the CSV of every
    message (the real 1.17 and 2.5 tools' ``--help``: "Output CSV file with all diagnostic
    data")."""
    argv = [binary, "--input_log", input_log]
    if output is not None:
        argv += ["--output", output]
    return argv


def build_onnx_to_dlc_command(
    sdk_bin: str | os.PathLike[str] | None,
    onnx: str | os.PathLike[str],
    dlc: str | os.PathLike[str],
    quantization_overrides: str | os.PathLike[str] | None = None,
    *,
    check_overrides: bool = True,
) -> list[str]:
    """``snpe-onnx-to-dlc`` (host) from the SDK's ``bin/<arch>`` dir (None: found on PATH).

    ``quantization_overrides`` is an MQBench/SNPE clip-range JSON; it is validated with
    :func:`load_clip_ranges` first unless ``check_overrides`` is False.
    """
    argv = [_sdk_tool(sdk_bin, "snpe-onnx-to-dlc"), "--input_network", str(onnx)]
    argv += ["--output_path", str(dlc)]
    if quantization_overrides is not None:
        if check_overrides:
            load_clip_ranges(quantization_overrides)
        argv += ["--quantization_overrides", str(quantization_overrides)]
    return argv


def build_quantize_command(
    sdk_bin: str | os.PathLike[str] | None,
    dlc: str | os.PathLike[str],
    input_list: str | os.PathLike[str],
    out_dlc: str | os.PathLike[str],
    override_params: bool = True,
    *,
    bias_bitwidth: int | None = 32,
    act_bitwidth: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``snpe-dlc-quantize`` (host). ``override_params`` keeps the encodings given to the
    converter with ``--quantization_overrides`` (MQBench deployment: ``--override_params
    --bias_bitwidth 32``). ``input_list`` lists calibration raw files (required by the tool
    even when the parameters are overridden)."""
    argv = [_sdk_tool(sdk_bin, "snpe-dlc-quantize"), "--input_dlc", str(dlc)]
    argv += ["--input_list", str(input_list), "--output_dlc", str(out_dlc)]
    if override_params:
        argv.append("--override_params")
    if bias_bitwidth is not None:
        check_choice("bias_bitwidth", str(bias_bitwidth), ("8", "32"))
        argv += ["--bias_bitwidth", str(bias_bitwidth)]
    if act_bitwidth is not None:
        check_choice("act_bitwidth", str(act_bitwidth), ("8", "16"))
        argv += ["--act_bitwidth", str(act_bitwidth)]
    return argv + check_args("extra", extra)


def _sdk_tool(sdk_bin: str | os.PathLike[str] | None, name: str) -> str:
    return name if sdk_bin in (None, "") else str(Path(sdk_bin) / name)


class ClipRangesError(ValueError):
    """A quantization-overrides JSON does not have the SNPE encodings shape."""


def load_clip_ranges(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an MQBench/SNPE clip-range JSON (``--quantization_overrides``).

    Expected shape: ``{"activation_encodings": {tensor: [encoding, …]}, "param_encodings":
    {tensor: [encoding, …]}}`` where each encoding is an object; ``min``/``max`` when present
    are numbers with ``min <= max`` and ``bitwidth`` an integer. Raises
    :class:`ClipRangesError` naming the file and the offending entry otherwise.
    """
    where = os.fspath(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ClipRangesError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ClipRangesError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for section in ("activation_encodings", "param_encodings"):
        if section not in data:
            raise ClipRangesError(
                f"{where}: missing {section!r}; expected "
                '{"activation_encodings": {...}, "param_encodings": {...}}'
            )
        encodings = data[section]
        if not isinstance(encodings, dict):
            raise ClipRangesError(f"{where}: {section!r} must be an object of tensor → encodings")
        for tensor, entries in encodings.items():
            _check_encodings(where, section, tensor, entries)
    return data


def _check_encodings(where: str, section: str, tensor: str, entries: Any) -> None:
    label = f"{where}: {section}[{tensor!r}]"
    if not isinstance(entries, list) or not entries:
        raise ClipRangesError(f"{label} must be a non-empty list of encodings")
    for entry in entries:
        if not isinstance(entry, dict):
            raise ClipRangesError(f"{label}: each encoding must be an object, got {entry!r}")
        for key in ("min", "max"):
            value = entry.get(key)
            if key in entry and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ClipRangesError(f"{label}: {key!r} must be a number, got {value!r}")
        if "min" in entry and "max" in entry and entry["min"] > entry["max"]:
            raise ClipRangesError(f"{label}: min {entry['min']} > max {entry['max']}")
        bitwidth = entry.get("bitwidth")
        if "bitwidth" in entry and (isinstance(bitwidth, bool) or not isinstance(bitwidth, int)):
            raise ClipRangesError(f"{label}: 'bitwidth' must be an integer, got {bitwidth!r}")


# --------------------------------------------------------------------------- snpe-diagview

_VALUE = re.compile(rf"^\s*(?P<key>[A-Za-z][^:]*?)\s*:\s*(?P<value>{NUMBER})\s*(?P<unit>\S*)\s*$")
_VERSION = re.compile(r"^\s*Software library version:\s*(\S+)")
_CREATED = re.compile(r"^\s*Log File Created:\s*(.+?)\s*$")
# One subnet/graph time, in every layout seen (case-insensitive, any runtime name):
#   1.x-2.x "Per-Subnet Execution Times":  "Subnet 0 (DSP) : 13545 cycles", "Subnet 0 (CPU) : 61 us"
#   2.x "Per-Graph Execution Times":       "HTP Subnet 0: 4327266 cycles", "CPU Subnet 0: 61 us"
#   and the "Graph N" spellings of both.
_SUBNET = re.compile(
    rf"^\s*(?:(?P<prefix>[A-Za-z][\w-]*)\s+)?(?P<kind>subnet|graph)\s+(?P<index>\d+)\s*"
    rf"(?:\((?P<runtime>[^)]*)\))?\s*:\s*(?P<value>{NUMBER})\s*(?P<unit>\S*)\s*$",
    re.IGNORECASE,
)
_LAYER_INDEX = re.compile(r"^\s*(\d+):\s*(.*)$")
_OP_ID = re.compile(r"^(?P<name>.*?)[: ]OpId_(?P<op_id>\d+)$")
# HTP linting sub-lines under a layer row (``--profiling_level linting``).
_LINT_VALUE = re.compile(
    rf"^\s*(?P<key>wait \(scheduler\) time|overlap time|overlap \(wait\) time)\s*:\s*"
    rf"(?P<value>{NUMBER})\s*(?P<unit>\S*)\s*$",
    re.IGNORECASE,
)
_LINT_KEYS = {
    "wait (scheduler) time": "wait",
    "overlap time": "overlap",
    "overlap (wait) time": "overlap_wait",
}
_RESOURCES = re.compile(r"^\s*Resources\s*:\s*(?P<names>.*?)\s*$", re.IGNORECASE)
_DIAG_ERROR = re.compile(r"\berror\b|\bfailed\b|could not|cannot|unable to", re.IGNORECASE)
_ELISION = re.compile(r"^\s*\.{2,}\s*$")

# Statistic names (matched case-insensitively) → keys of extra["init"] / extra["execute"].
_INIT_KEYS = {
    "load": "load",
    "deserialize": "deserialize",
    "create": "create",
    "init": "init",
    "de-init": "deinit",
    "create network(s)": "create_networks",
    "rpc init time": "rpc_init",
    "snpe accelerator init time": "snpe_accelerator_init",
    "accelerator init time": "accelerator_init",
}
_EXEC_KEYS = {
    "total inference time": "total_inference",
    "forward propagate time": "forward_propagate",
    "rpc execute time": "rpc_execute",
    "snpe accelerator time": "snpe_accelerator",
    "accelerator time": "accelerator",
    "misc accelerator time": "misc_accelerator",
}
# SNPE 2.21 prints "occured", 2.37 "occurred".
_COUNT_KEYS = {
    "num times yield occurred": "yield_count",
    "num times yield occured": "yield_count",
    "create network": "create_network",
}
_CYCLES = ("cycles", "cycle")


def squashed_name(name: str) -> str:
    """A statistic's name with case, spaces and punctuation gone: how a name that was damaged
    in a paste (``Forward Propagate ..Time``) is still recognised."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_SQUASHED_KEYS = {squashed_name(name): name for name in (*_INIT_KEYS, *_EXEC_KEYS, *_COUNT_KEYS)}
# An unknown statistic naming one of these is likely a latency the parser should know about.
LATENCY_WORDS = ("inference", "forward", "execute", "latency")
# The set-up statistics by squashed name -> their key in ``extra["init"]`` (the CSV reader's too).
INIT_KEYS_BY_SQUASHED_NAME = {squashed_name(name): key for name, key in _INIT_KEYS.items()}


def _measure(value: float, unit: str) -> tuple[str, float]:
    """``("us", µs)`` or ``("cycles", n)`` for one printed diagview figure.

    Time units are converted to µs; ``cycles`` stay cycles (no clock is known, and HTP ops
    overlap); zero values print ``NONE`` or no unit (taken as 0 µs). ValueError otherwise.
    """
    if unit.lower() in _CYCLES:
        return "cycles", value
    if unit in ("", "NONE"):
        if value != 0:
            raise ValueError(f"value {value:g} without a unit")
        return "us", 0.0
    return "us", to_us(value, unit)


def _block_of(stripped: str) -> str | None:
    """The kind of block a header line opens (``layers``, ``subnets``, ``stats``), or None."""
    if not stripped.endswith(":") or _VALUE.match(stripped):
        return None
    low = stripped.lower()
    if "layer" in low:
        return "layers"
    if "subnet" in low or "graph" in low:
        return "subnets"
    if "statistics" in low:
        return "stats"
    return None


def parse_diagview(
    text: str,
    exit_code: int | None = None,
    *,
    input_layer_indices: Collection[int] | None = None,
) -> ToolRun:
    """The :class:`ToolRun` of one ``snpe-diagview`` text report (averages over all
    inferences in the log).

    ``avg_us`` is ``Total Inference Time``; ``min_us``/``max_us`` stay None (diagview prints
    only averages). ``extra`` holds ``init`` and ``execute`` (every known statistic, µs),
    ``not_recorded`` (statistics printed as ``0 NONE`` or a bare ``0``: the runtime or the
    profiling level did not measure them, so they get no value, never 0 µs; at ``basic``
    profiling SNPE 2.21 prints ``Forward Propagate Time: 0 NONE``, and Forward Propagate is then
    not reported), ``stat_cycles`` (statistics printed in cycles), ``other_stats``
    (statistics of names not known here, value and unit as printed; a latency-like one is
    flagged, a known name damaged by a paste is read with a warning), ``subnets`` (every
    subnet/graph time: ``index``, ``runtime``, ``value`` and ``unit`` as printed, ``us`` —
    None for ``cycles``, which are never converted —, ``block`` = the header it was under),
    ``layer_rows`` (all rows with their unit and runtime; HTP linting rows also carry
    ``linting``: wait/overlap cycles, overlapping ops, resources) and ``layer_cycles`` (rows in
    cycles).

    Blocks are recognised by their headers in every layout seen: 1.x–2.9 "Dnn Runtime
    Load/Deserialize/Create/De-Init Statistics", "Average SNPE Statistics", "Layer Times";
    2.x "SNPE Create Statistics", "SNPE Execute Statistics (Averaged)", "Per-Subnet Execution
    Times", "Per-Graph Execution Times", "Per-Layer Execution Times". A line inside a
    recognised block that cannot be read is never dropped silently: it becomes a warning that
    quotes it (and an unreadable ``Total Inference Time`` line is an error).

    ``input_layer_indices`` overrides which layers are the input layer(s) excluded from
    Layers Time (default: named ``Input`` rows in the 2.x layout, index 0 in the unnamed 1.x
    layout). Author elisions (``..`` lines) are skipped; missing layer indices leave Layers
    Time uncomputed, with a warning.
    """
    text = clean_log(text)
    lines = text.splitlines()
    errors = error_lines(lines, _DIAG_ERROR)
    if exit_code not in (None, 0):
        raise ToolOutputError(DIAGVIEW, errors or tail(lines), exit_code)

    run = ToolRun(tool=DIAGVIEW)
    init: dict[str, float] = {}
    execute: dict[str, float] = {}
    stat_cycles: dict[str, float] = {}
    other_stats: dict[str, dict[str, Any]] = {}
    subnets: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    unreadable: list[str] = []
    not_recorded: list[str] = []
    block, title = "", ""
    overlap_list: list[str] | None = None  # where indented op names after "Overlap …" go

    def cannot_read(stripped: str, why: str = "") -> None:
        unreadable.append(stripped)
        where = f" in block {title!r}" if title else ""
        run.warnings.append(
            f"{DIAGVIEW}: cannot read line {stripped!r}{where}" + (f" ({why})" if why else "")
        )

    for line in lines:
        stripped = line.strip()
        if not stripped or _ELISION.match(line) or set(stripped) == {"-"}:
            continue
        if match := _VERSION.match(line):
            run.tool_version = match.group(1)
            continue
        if match := _CREATED.match(line):
            run.extra["log_created"] = match.group(1)
            continue
        if block == "layers" and rows and _linting_line(rows[-1], stripped):
            overlap_list = _overlap_target(rows[-1], stripped)
            continue
        if (kind := _block_of(stripped)) is not None:
            block, title, overlap_list = kind, stripped.rstrip(":").strip(), None
            continue
        if block == "subnets":
            if match := _SUBNET.match(line):
                subnets.append(_subnet(match, title, cannot_read, stripped))
            else:
                cannot_read(stripped, "not a subnet/graph time")
            continue
        if block == "layers":
            if row := _layer_row(line):
                overlap_list = None
                try:
                    _measure(row["value"], row["unit"])
                except ValueError as exc:
                    row["unreadable"] = True
                    cannot_read(stripped, str(exc))
                rows.append(row)
            elif overlap_list is not None:
                overlap_list.append(stripped)
            else:
                cannot_read(stripped, "not a layer row")
            continue
        match = _VALUE.match(line)
        if match is None:
            if block == "stats":
                cannot_read(stripped, "not a 'name: value unit' statistic")
            continue
        key, value, unit = match["key"], float(match["value"]), match["unit"]
        low = key.lower()
        if low not in _COUNT_KEYS and low not in _INIT_KEYS and low not in _EXEC_KEYS:
            if (known := _SQUASHED_KEYS.get(squashed_name(key))) is not None:
                run.warnings.append(
                    f"{DIAGVIEW}: read line {stripped!r} as {known!r} (the name is spelled "
                    "differently from the tool's)"
                )
                low = known
            elif block == "stats" and any(word in low for word in LATENCY_WORDS):
                run.warnings.append(
                    f"{DIAGVIEW}: unknown statistic {stripped!r} kept in other_stats, not read "
                    "as a latency (a new tool version? run `devlab parse` and report it)"
                )
        if low in _COUNT_KEYS:
            run.extra[_COUNT_KEYS[low]] = int(value)
            continue
        target_key = _INIT_KEYS.get(low) or _EXEC_KEYS.get(low)
        if target_key is None:
            if block == "stats":
                other_stats[key] = {"value": value, "unit": unit}
            continue
        if value == 0 and unit in ("", "NONE"):
            # "Forward Propagate Time: 0 NONE" (2.21 at --profiling_level basic), "RPC Init
            # Time: 0" (2.37 on CPU): nothing was recorded, which is not a time of 0 us.
            not_recorded.append(target_key)
            continue
        try:
            kind_of, amount = _measure(value, unit)
        except ValueError as exc:
            cannot_read(stripped, str(exc))
            continue
        if kind_of == "cycles":
            stat_cycles[target_key] = amount
        else:
            (init if low in _INIT_KEYS else execute)[target_key] = amount

    total = execute.get("total_inference")
    forward = execute.get("forward_propagate")
    if total is None:
        bad = [line for line in unreadable if line.lower().startswith("total inference time")]
        if bad:
            raise ToolOutputError(
                DIAGVIEW, errors, exit_code, reason=f"cannot read the headline line {bad[0]!r}"
            )
        if forward is None:
            raise ToolOutputError(
                DIAGVIEW, errors or tail(lines), exit_code, reason="no 'Total Inference Time' line"
            )
    run.extra["init"] = init
    run.extra["execute"] = execute
    if not_recorded:
        run.extra["not_recorded"] = not_recorded
    if stat_cycles:
        run.extra["stat_cycles"] = stat_cycles
    if other_stats:
        run.extra["other_stats"] = other_stats
    if subnets:
        run.extra["subnets"] = subnets
    run.init_us = init.get("init")
    run.avg_us = total
    if total is not None:
        run.total_inference = summary(min=total, mean=total, max=total, runs=1)
    if forward is not None:
        run.forward_us = summary(min=forward, mean=forward, max=forward, runs=1)
    if rows:
        apply_layer_rows(run, rows, input_layer_indices)
    return run


def _subnet(
    match: re.Match[str], title: str, cannot_read: Callable[[str, str], None], stripped: str
) -> dict[str, Any]:
    value, unit = float(match["value"]), match["unit"]
    entry: dict[str, Any] = {
        "index": int(match["index"]),
        "runtime": (match["runtime"] or match["prefix"] or "").strip(),
        "value": value,
        "unit": unit or "us",
        "us": None,
        "block": title,
    }
    try:
        kind, amount = _measure(value, unit)
    except ValueError as exc:
        cannot_read(stripped, str(exc))
        return entry
    if kind == "us":
        entry["us"] = amount
    else:
        entry["unit"] = "cycles"
    return entry


def _linting_line(row: dict[str, Any], stripped: str) -> bool:
    """Attach an HTP linting sub-line (wait/overlap cycles, resources) to its layer row."""
    if match := _LINT_VALUE.match(stripped):
        linting = row.setdefault("linting", {})
        name = _LINT_KEYS[re.sub(r"\s+", " ", match["key"].lower())]
        unit = match["unit"]
        suffix = "cycles" if unit.lower() in _CYCLES or not unit else unit
        linting[f"{name}_{suffix}"] = float(match["value"])
        return True
    if match := _RESOURCES.match(stripped):
        names = [name.strip() for name in match["names"].split(",") if name.strip()]
        row.setdefault("linting", {})["resources"] = names
        return True
    return False


def _overlap_target(row: dict[str, Any], stripped: str) -> list[str] | None:
    """The list the op names printed under an ``Overlap …`` line go to (None otherwise)."""
    match = _LINT_VALUE.match(stripped)
    if match is None:
        return None
    name = _LINT_KEYS[re.sub(r"\s+", " ", match["key"].lower())]
    if name == "wait":
        return None
    return row["linting"].setdefault(f"{name}_ops", [])


def _layer_row(line: str) -> dict[str, Any] | None:
    """``0: 1419 us : CPU`` (1.x), ``0: 1419 us`` (no runtime) or
    ``3: name:OpId_29 (cycles) : 0 cycles : DSP`` (2.x)."""
    match = _LAYER_INDEX.match(line)
    if not match:
        return None
    parts = [part.strip() for part in match.group(2).rsplit(":", 2)]
    name: str | None = None
    runtime = ""
    if len(parts) == 3:
        name, measure, runtime = parts
    elif len(parts) == 2:
        measure, runtime = parts
    else:
        (measure,) = parts
    value_match = re.fullmatch(rf"({NUMBER})\s*(\S*)", measure)
    if not value_match:
        return None
    index = int(match.group(1))
    row: dict[str, Any] = {
        "index": index,
        "name": f"layer_{index:03d}",
        "value": float(value_match.group(1)),
        "unit": value_match.group(2) or "us",
        "runtime": runtime,
    }
    if name:  # 2.25 prints "0:  : 84 us : CPU", an empty name: the unnamed layout
        name = re.sub(r"\s*\(cycles\)$", "", name)
        if op := _OP_ID.match(name):
            row["op_id"] = int(op["op_id"])
            name = op["name"]
        row["name"] = name
        row["named"] = True
    return row


def apply_layer_rows(
    run: ToolRun, rows: list[dict[str, Any]], input_layer_indices: Collection[int] | None
) -> None:
    run.extra["layer_rows"] = rows
    if input_layer_indices is None:
        if any(row.get("named") for row in rows):
            input_layer_indices = [row["index"] for row in rows if row["name"] == "Input"]
        else:
            input_layer_indices = [0]
    inputs = set(input_layer_indices)
    run.extra["input_layer_indices"] = sorted(inputs)
    timed, cycles = [], []
    for row in rows:
        if row.get("unreadable"):
            continue
        kind, amount = _measure(row["value"], row["unit"])
        if kind == "cycles":
            cycles.append(row)
        else:
            row["mean_us"] = amount
            timed.append(row)
    run.layers = [LayerTime(row["name"], row.get("op_type", ""), row["mean_us"]) for row in timed]
    if cycles:
        run.extra["layer_cycles"] = cycles
        run.warnings.append(
            f"{len(cycles)} layer times are in cycles (DSP/HTP): not convertible to time, "
            "Layers Time not computed"
        )
        return
    if len(timed) < len(rows):
        run.warnings.append(
            f"{len(rows) - len(timed)} layer rows unreadable (see above); Layers Time not computed"
        )
        return
    indices = sorted(row["index"] for row in rows)
    missing = (indices[-1] - indices[0] + 1) - len(set(indices)) if indices else 0
    if indices and (indices[0] != 0 or missing):
        run.warnings.append(
            f"layer list incomplete: {missing + indices[0]} of layers 0..{indices[-1]} missing "
            "(elided or not logged); Layers Time not computed"
        )
        return
    total = sum(row["mean_us"] for row in timed if row["index"] not in inputs)
    run.layers_total_us = total
    run.layers_total_range_us = (total, total)


def aggregate_runs(runs: Sequence[ToolRun]) -> ToolRun:
    """Combine the diagview reports of several runs of one model the way snpe_bench does.

    Each statistic becomes the average/min/max **across the runs' averages**; per-layer times
    are averaged by layer; Layers Time min/max are the sums of the per-layer minima/maxima.
    """
    if not runs:
        raise ValueError("no runs to aggregate")
    out = ToolRun(tool=runs[0].tool, tool_version=runs[0].tool_version)
    out.extra["runs"] = len(runs)

    def across(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return summary(min=min(values), mean=statistics.fmean(values), max=max(values))

    for attr in ("total_inference", "forward_us"):
        stats = across([s["mean"] for r in runs if (s := getattr(r, attr)) is not None])
        if stats:
            stats["runs"] = sum(1 for r in runs if getattr(r, attr) is not None)
        setattr(out, attr, stats)
    if out.total_inference:
        out.avg_us = out.total_inference["mean"]
    inits = [r.init_us for r in runs if r.init_us is not None]
    out.init_us = statistics.fmean(inits) if inits else None

    by_name: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for r in runs:
        for layer in r.layers:
            by_name.setdefault(layer.name, []).append(layer.mean_us)
            op_types[layer.name] = layer.op_type
    out.layers = [LayerTime(n, op_types[n], statistics.fmean(v)) for n, v in by_name.items()]
    if all(r.layers_total_us is not None for r in runs):
        inputs = set().union(*(_input_names(r) for r in runs))
        counted = {n: v for n, v in by_name.items() if n not in inputs}
        out.layers_total_us = sum(statistics.fmean(v) for v in counted.values())
        out.layers_total_range_us = (
            sum(min(v) for v in counted.values()),
            sum(max(v) for v in counted.values()),
        )
    for r in runs:
        out.warnings.extend(w for w in r.warnings if w not in out.warnings)
    return out


def _input_names(run: ToolRun) -> set[str]:
    indices = set(run.extra.get("input_layer_indices", []))
    return {row["name"] for row in run.extra.get("layer_rows", []) if row["index"] in indices}


parse = parse_diagview


# --------------------------------------------------------------------------- snpe_bench CSV

_GROUP = re.compile(r"^(?P<runtime>.+)_timing\((?P<runs>\d+) runs?\)$")
_LAYER_LABEL = re.compile(r"^layer_(?P<index>\d+)\s*(?:\((?P<desc>.*)\))?$")
_LAYER_DESC = re.compile(r"^Name:(?P<name>.*?)\s+Type:(?P<type>.*)$")


def parse_bench_csv(text: str) -> dict[str, ToolRun]:
    """``snpe_bench.py``'s results CSV → ``{runtime label: ToolRun}`` (e.g. ``"GPU"``,
    ``"DSP_ub_tf8"``), in the file's column order.

    Values are snpe_bench's avg/max/min over its ``Runs`` repetitions of per-run averages
    (so ``min_us``/``max_us`` are min/max of run averages). Layer rows give ``layers``
    (``layer_NNN (Name:… Type:…)``, avg); the layer unit is as printed in the header (us) —
    on HTP targets the values may really be cycles (check diagview). ``extra`` holds
    ``runs``, ``rows`` (every non-layer row: avg/max/min/runtime), ``layer_rows``,
    ``config_rows`` / ``device_info_rows`` (every ``[key, value]`` row of the "Configuration
    used:" / "Device Info:" blocks, in file order, repeated keys included) and ``config`` /
    ``device_info`` (the same as a dict, see :func:`config_dict`: a key printed once maps to
    its string, a repeated key to the list of its values).
    """
    text = clean_log(text)
    table = list(csv.reader(io.StringIO(text)))
    version = ""
    config: list[tuple[str, str]] = []
    device: list[tuple[str, str]] = []
    block = None
    header_at = None
    for i, cells in enumerate(table):
        first = cells[0].strip() if cells else ""
        if first == "SNPE SDK version:" and len(cells) > 1:
            version = cells[1].strip()
        elif first == "Configuration used:":
            block = config
        elif first == "Device Info:":
            block = device
        elif any(_GROUP.match(cell.strip()) for cell in cells):
            header_at = i
            break
        elif block is not None and first and len(cells) >= 2:
            block.append((first, ",".join(cells[1:])))
    if header_at is None or header_at + 1 >= len(table):
        raise ToolOutputError(BENCH, tail([",".join(c) for c in table]), reason="no timing table")

    groups = [
        (col, m["runtime"], int(m["runs"]))
        for col, cell in enumerate(table[header_at])
        if (m := _GROUP.match(cell.strip()))
    ]
    label_col = groups[0][0] - 1
    columns = [cell.strip() for cell in table[header_at + 1]]
    results: dict[str, ToolRun] = {}
    for position, (col, runtime, runs) in enumerate(groups):
        end = groups[position + 1][0] if position + 1 < len(groups) else len(columns)
        names = {columns[c]: c for c in range(col, end)}
        try:
            at = {key: names[f"{key} (us)"] for key in ("avg", "max", "min")}
        except KeyError as exc:
            raise ToolOutputError(
                BENCH, [",".join(table[header_at + 1])], reason=f"{runtime}: no column {exc}"
            ) from exc
        at["runtime"] = names.get("runtime")
        run = ToolRun(tool=BENCH, tool_version=version)
        run.extra.update(
            {
                "runtime": runtime,
                "runs": runs,
                "config": config_dict(config),
                "config_rows": [list(pair) for pair in config],
                "device_info": config_dict(device),
                "device_info_rows": [list(pair) for pair in device],
            }
        )
        rows: dict[str, dict[str, Any]] = {}
        layer_rows: list[dict[str, Any]] = []
        for cells in table[header_at + 2 :]:
            if len(cells) <= label_col or not cells[label_col].strip():
                continue
            label = cells[label_col].strip()
            values = _bench_values(cells, at)
            if values is None:
                continue
            if layer := _LAYER_LABEL.match(label):
                desc = _LAYER_DESC.match(layer["desc"] or "")
                values.update(
                    index=int(layer["index"]),
                    name=desc["name"] if desc else f"layer_{layer['index']}",
                    type=desc["type"].strip() if desc else "",
                )
                layer_rows.append(values)
            else:
                rows[label] = values
        _fill_bench_run(run, rows, layer_rows)
        results[runtime] = run
    return results


def config_dict(pairs: Sequence[Sequence[str]]) -> dict[str, str | list[str]]:
    """``(key, value)`` rows → ``{key: value}``, in order; a key that the block repeats (e.g.
    one ``Model:Data`` row per input) maps to the list of all its values, in file order."""
    out: dict[str, str | list[str]] = {}
    for key, value in pairs:
        if key not in out:
            out[key] = value
            continue
        previous = out[key]
        out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
    return out


def _bench_values(cells: list[str], at: dict[str, int | None]) -> dict[str, Any] | None:
    values: dict[str, Any] = {}
    for key in ("avg", "max", "min"):
        col = at[key]
        if col is None or col >= len(cells):
            return None
        try:
            values[key] = float(cells[col])
        except ValueError:
            return None
    runtime_col = at["runtime"]
    if runtime_col is not None and runtime_col < len(cells):
        values["runtime"] = cells[runtime_col].strip()
    return values


def _fill_bench_run(
    run: ToolRun, rows: dict[str, dict[str, Any]], layer_rows: list[dict[str, Any]]
) -> None:
    run.extra["rows"] = rows
    total = rows.get("Total Inference Time")
    forward = rows.get("Forward Propagate")
    if total:
        run.avg_us, run.min_us, run.max_us = total["avg"], total["min"], total["max"]
        run.total_inference = summary(
            min=total["min"], mean=total["avg"], max=total["max"], runs=run.extra["runs"]
        )
    if forward:
        run.forward_us = summary(
            min=forward["min"], mean=forward["avg"], max=forward["max"], runs=run.extra["runs"]
        )
    if "Init" in rows:
        run.init_us = rows["Init"]["avg"]
    if not layer_rows:
        return
    run.extra["layer_rows"] = layer_rows
    run.layers = [LayerTime(row["name"], row["type"], row["avg"]) for row in layer_rows]
    counted = [row for row in layer_rows if row["type"].lower() not in ("data", "input")]
    run.layers_total_us = sum(row["avg"] for row in counted)
    run.layers_total_range_us = (
        sum(row["min"] for row in counted),
        sum(row["max"] for row in counted),
    )


# --------------------------------------------------------------------------- throughput

_THREAD = re.compile(
    rf"^\[Thread (?P<thread>\d+) - (?P<label>[^\]]+)\]\s*(?P<ips>{NUMBER}) infs/sec"
)
_TOTAL_THROUGHPUT = re.compile(rf"^Total throughput:\s*({NUMBER})\s*infs/sec")
_FIELD = re.compile(rf"(?P<key>[A-Za-z][A-Za-z ]*?)\s*:\s*(?P<value>{NUMBER})\s*(?P<unit>[a-z]*)")


def parse_throughput(text: str, exit_code: int | None = None) -> ToolRun:
    """``snpe-throughput-net-run`` output: ``extra["throughput_ips"]`` (total) and
    ``extra["threads"]`` (per thread: label, infs/sec, images, build/elapsed/real/teardown us).

    ``count`` is the number of images processed; ``init_us`` the (first thread's) build time.
    No latency is derived (with several threads 1/throughput is not a latency).
    """
    text = clean_log(text)
    lines = text.splitlines()
    errors = error_lines(lines, _DIAG_ERROR)
    if exit_code not in (None, 0):
        raise ToolOutputError(THROUGHPUT, errors or tail(lines), exit_code)
    run = ToolRun(tool=THROUGHPUT)
    threads = []
    for line in lines:
        stripped = line.strip()
        if match := _THREAD.match(stripped):
            thread: dict[str, Any] = {
                "thread": int(match["thread"]),
                "label": match["label"].strip(),
                "ips": float(match["ips"]),
            }
            for part in stripped[match.end() :].split(" - "):
                field_match = _FIELD.search(part)
                if not field_match:
                    continue
                key = field_match["key"].strip().lower().replace(" ", "_")
                value = float(field_match["value"])
                unit = field_match["unit"]
                if unit:
                    thread[f"{key}_us"] = to_us(value, unit)
                else:
                    thread[key] = int(value) if value.is_integer() else value
            threads.append(thread)
        elif match := _TOTAL_THROUGHPUT.match(stripped):
            run.extra["throughput_ips"] = float(match.group(1))
    if not threads and "throughput_ips" not in run.extra:
        raise ToolOutputError(THROUGHPUT, errors or tail(lines), reason="no throughput line")
    run.extra["threads"] = threads
    images = [t["number_of_images_processed"] for t in threads if "number_of_images_processed" in t]
    run.count = sum(images) if images else None
    if threads and "build_time_us" in threads[0]:
        run.init_us = threads[0]["build_time_us"]
    return run
