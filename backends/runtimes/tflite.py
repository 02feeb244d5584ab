"""TensorFlow Lite ``benchmark_model``: command line and output parser.

The parser reads every output generation seen in real captures: the old summary
("Average inference timings in us: Warmup: …, Init: …, no stats: …"), the TF 2.2+ one
("Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …"),
the newest builds that prefix every line with ``INFO:``/``VERBOSE:``/``ERROR:`` and add
``p5``/``median``/``p95``, logcat captures of the benchmark APK, and the op-profiling tables
(tab- or space-separated, with or without the ``[start]`` column, ``:N`` node-index suffixes).

nnabla-nas keys: "Total Inference Time" is the timed ``count=`` line (``min``/``avg``/``max``,
per-iteration extremes); "Layers Time" is the sum over the op-profiling Run Order rows of each
node's time per inference (TFLite has no input layer to exclude; a delegate partition counts as
one row). There is no "Forward Propagate" in TFLite output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from backends.core.records import LayerTime
from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    check_args,
    check_int,
    clean_log,
    key_values,
    summary,
    tail,
    to_float,
)

TOOL = "benchmark_model"

# logcat "threadtime" (01-02 03:04:05.678  123  456 I tflite  : …) and "brief" (I/tflite( 123): …)
_LOGCAT_PREFIX = re.compile(
    r"^(?:\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEFA]\s+[^:]*?\s*:\s?"
    r"|[VDIWEFA]/[^(:]+\(\s*\d+\):\s?)"
)
_LEVEL_PREFIX = re.compile(r"^(INFO|VERBOSE|WARNING|ERROR|DEBUG): ?")
# "INFO: Tensorflow Version : 2.15.0" (builds that print it, e.g. Synaptics SyNAP's)
_VERSION = re.compile(r"^\s*(?:TensorFlow|TensorFlow Lite|TFLite|LiteRT) Version\s*:\s*(\S+)", re.I)
_PARAM = re.compile(r"^([^\[\]:=]+?)\s*:\s*\[(.*)\]\s*$")
_SESSION = re.compile(rf"^Initialized session in ({NUMBER})\s*ms\.?$")
# "Running benchmark for at least 50 iterations…" (TF 1.13+), "…for 50 iterations" (TF 1.12).
_RUNNING = re.compile(r"^Running benchmark for (?:at least )?(\d+) iterations")
_SUMMARY = re.compile(r"^(?:Average )?[Ii]nference timings in us:\s*(.*)$")
_MEMORY = re.compile(r"^(Peak memory footprint|Memory footprint delta[^(]*?)\s*\(MB\):\s*(.*)$")
_PERIODIC_PEAK = re.compile(rf"^Overall peak memory footprint \(MB\)[^:]*:\s*({NUMBER})")
_MODEL_SIZE = re.compile(rf"^The input model file size \(MB\):\s*({NUMBER})")
_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node, "
    r"yielding (\d+) partition"
)
# What the log says about a delegate taking the graph (see _delegate_warnings).
_DECLINED = re.compile(
    r"(?:(\w+) delegate is explicitly applied, )?the model graph will not be executed by the "
    r"delegate",
    re.IGNORECASE,
)
_APPLIED = re.compile(
    r"Explicitly applied (\w+) delegate, and the model graph will be (completely|partially) "
    r"executed by the delegate",
    re.IGNORECASE,
)
_GPU_KERNELS = re.compile(r"Created (\d+) GPU delegate kernels")
_FAILED = re.compile(r"Benchmarking failed|^Failed to ", re.IGNORECASE)
_ERRORISH = re.compile(r"\berror\b|\bfailed\b|^Failed", re.IGNORECASE)
_TABLE_TITLE = re.compile(r"^=+\s*(.*?)\s*=+$")
_NAME_CELL = re.compile(r"^\[(.*)\](?::(\d+))?$")

_SUMMARY_KEYS = {
    "init": "init",
    "first inference": "first",
    "warmup": "warmup",
    "warmup (avg)": "warmup",
    "no stats": "inference",
    "inference": "inference",
    "inference (avg)": "inference",
}


def build_command(
    binary: str,
    model: str,
    *,
    num_runs: int,
    warmup_runs: int,
    num_threads: int,
    use_gpu: bool = False,
    use_nnapi: bool = False,
    use_xnnpack: bool | None = None,
    op_profiling: bool = False,
    nnapi_accelerator: str | None = None,
    min_secs: float | None = None,
    max_secs: float | None = None,
    report_peak_memory: bool = False,
    cpu_mask: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of one ``benchmark_model`` run (quote it with ``shlex.join`` for adb shell).

    ``num_threads=-1`` lets the runtime choose (newer builds). ``use_xnnpack=None`` leaves the
    build's default; ``cpu_mask`` (hex, e.g. ``"f0"``) prefixes ``taskset <mask>`` to pin the
    run to those cores. ``extra`` items are appended verbatim, one argv item each.
    """
    check_int("num_runs", num_runs, 1)
    check_int("warmup_runs", warmup_runs, 0)
    check_int("num_threads", num_threads, -1)
    if use_gpu and use_nnapi:
        raise ValueError("use_gpu and use_nnapi are exclusive: benchmark one delegate at a time")
    if nnapi_accelerator is not None and not use_nnapi:
        raise ValueError("nnapi_accelerator needs use_nnapi=True")
    argv: list[str] = []
    if cpu_mask is not None:
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]+", cpu_mask):
            raise ValueError(f"cpu_mask must be a hex CPU mask such as 'f0', got {cpu_mask!r}")
        argv += ["taskset", cpu_mask]
    argv += [
        binary,
        f"--graph={model}",
        f"--num_runs={num_runs}",
        f"--warmup_runs={warmup_runs}",
        f"--num_threads={num_threads}",
    ]
    for name, value in (("min_secs", min_secs), ("max_secs", max_secs)):
        if value is not None:
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
            argv.append(f"--{name}={value:g}")
    if use_gpu:
        argv.append("--use_gpu=true")
    if use_nnapi:
        argv.append("--use_nnapi=true")
        if nnapi_accelerator:
            argv.append(f"--nnapi_accelerator_name={nnapi_accelerator}")
    if use_xnnpack is not None:
        argv.append(f"--use_xnnpack={'true' if use_xnnpack else 'false'}")
    if op_profiling:
        argv.append("--enable_op_profiling=true")
    if report_peak_memory:
        argv.append("--report_peak_memory_footprint=true")
    return argv + check_args("extra", extra)


def parse(text: str, exit_code: int | None = None) -> ToolRun:
    """The :class:`ToolRun` of a capture holding one ``benchmark_model`` run.

    Raises :class:`ToolOutputError` (quoting the tool's error lines) when the run failed
    ("Benchmarking failed.", "Failed to apply … delegate", a non-zero ``exit_code``) or printed
    no measurement at all; ValueError when the capture holds several runs (use
    :func:`parse_blocks`).
    """
    text = clean_log(text)
    blocks = _split_blocks(_clean_lines(text))
    if len(blocks) > 1:
        raise ValueError(
            f"the capture holds {len(blocks)} benchmark_model runs; use parse_blocks()"
        )
    return _parse_block(blocks[0] if blocks else [], exit_code)


def parse_blocks(text: str, exit_code: int | None = None) -> list[ToolRun]:
    """One :class:`ToolRun` per run in a capture of several (each starts with ``STARTING!``)."""
    text = clean_log(text)
    return [_parse_block(block, exit_code) for block in _split_blocks(_clean_lines(text))]


def parse_capture(text: str) -> ToolRun | dict[str, ToolRun]:
    """A capture as a user saves it: one run, or several (a script that runs the tool on the
    CPU and then on the GPU into one log) keyed ``run 1``, ``run 2``, … in order."""
    text = clean_log(text)
    blocks = _split_blocks(_clean_lines(text))
    if len(blocks) <= 1:
        return _parse_block(blocks[0] if blocks else [], None)
    return {f"run {number}": _parse_block(block, None) for number, block in enumerate(blocks, 1)}


def _clean_lines(text: str) -> list[tuple[str, str]]:
    """``(level, line)`` pairs with the logcat and ``INFO:``-style prefixes removed."""
    lines = []
    for raw in text.splitlines():
        line = _LOGCAT_PREFIX.sub("", raw, count=1)
        level = ""
        match = _LEVEL_PREFIX.match(line)
        if match:
            level = match.group(1)
            line = line[match.end() :]
        lines.append((level, line.rstrip()))
    return lines


def _split_blocks(lines: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    blocks: list[list[tuple[str, str]]] = [[]]
    started = False
    for level, line in lines:
        if line.strip() == "STARTING!":
            if started:
                blocks.append([])
            started = True
        blocks[-1].append((level, line))
    return [block for block in blocks if any(line.strip() for _, line in block)]


def _parse_block(block: list[tuple[str, str]], exit_code: int | None) -> ToolRun:
    lines = [line for _, line in block]
    quoted = [f"{level}: {line}" if level else line for level, line in block]
    failure = [q for q, (level, line) in zip(quoted, block, strict=True) if _is_error(level, line)]
    failed = any(_FAILED.search(line.strip()) for line in lines if not line.startswith("\t"))
    if failed or exit_code not in (None, 0):
        raise ToolOutputError(TOOL, failure or tail(quoted), exit_code)

    run = ToolRun(tool=TOOL)
    for line in lines:
        if found := _VERSION.match(line):
            run.tool_version = found.group(1)
            break
    params: dict[str, str] = {}
    count_lines: list[tuple[int, dict[str, float]]] = []  # (phase, key/values)
    phase = 0
    summary_values: dict[str, float] = {}
    session_ms: float | None = None
    profiler = _ProfileTables()
    delegate_log = _DelegateLog()

    for line in lines:
        stripped = line.strip()
        if profiler.feed(line):
            continue
        if stripped.startswith("count="):
            count_lines.append((phase, key_values(stripped)))
        elif _RUNNING.match(stripped):
            phase += 1
        elif match := _SUMMARY.match(stripped):
            summary_values = _summary_fields(match.group(1))
        elif match := _SESSION.match(stripped):
            session_ms = float(match.group(1))
        elif match := _MEMORY.match(stripped):
            key = "peak_memory_mb" if stripped.startswith("Peak") else "memory_delta_mb"
            run.extra[key] = key_values(match.group(2))
        elif match := _PERIODIC_PEAK.match(stripped):
            run.extra["peak_memory_periodic_mb"] = float(match.group(1))
        elif match := _MODEL_SIZE.match(stripped):
            run.extra["model_size_mb"] = float(match.group(1))
        elif match := _REPLACING.search(stripped):
            run.extra["delegation"] = {
                "delegate": match.group(3),
                "replaced_nodes": int(match.group(1)),
                "total_nodes": int(match.group(2)),
                "partitions": int(match.group(4)),
            }
            delegate_log.replacing.append((run.extra["delegation"], stripped))
        elif match := _DECLINED.search(stripped):
            delegate_log.declined.append((match.group(1) or "", stripped))
        elif match := _APPLIED.search(stripped):
            delegate_log.applied.append((match.group(1), stripped))
        elif match := _GPU_KERNELS.search(stripped):
            delegate_log.gpu_kernels.append((int(match.group(1)), stripped))
        elif (match := _PARAM.match(stripped)) and not line.startswith("\t"):
            params[match.group(1).strip()] = match.group(2)

    warmup, timed = _pick_count_lines(count_lines)
    if timed:
        run.count = int(timed["count"])
        run.avg_us = timed.get("avg", timed.get("curr") if run.count == 1 else None)
        run.min_us = timed.get("min")
        run.max_us = timed.get("max")
        run.std_us = timed.get("std")
        run.median_us = timed.get("median")
        run.p95_us = timed.get("p95")
        if "p5" in timed:
            run.extra["p5_us"] = timed["p5"]
        if "first" in timed:
            run.extra["timed_first_us"] = timed["first"]
    elif "inference" in summary_values:
        run.avg_us = summary_values["inference"]
    if warmup:
        run.extra["warmup_count"] = int(warmup["count"])
    run.warmup_avg_us = summary_values.get("warmup", (warmup or {}).get("avg"))
    # "First inference" is the first warm-up iteration; old builds only print it as first=,
    # and a single warm-up run as "count=1 curr=N" (its only iteration is the first).
    run.first_inference_us = summary_values.get("first", _first_warmup(warmup))
    run.init_us = summary_values.get("init", session_ms * 1e3 if session_ms is not None else None)
    if run.avg_us is not None:
        run.total_inference = summary(
            count=run.count,
            min=run.min_us,
            mean=run.avg_us,
            max=run.max_us,
            std=run.std_us,
            median=run.median_us,
        )

    if params:
        run.extra["params"] = params
    profiler.apply(run)
    if run.avg_us is None and not run.layers:
        raise ToolOutputError(
            TOOL, failure or tail(quoted), exit_code, reason="no timing statistics in the output"
        )
    if run.avg_us is None:
        run.warnings.append("no timed statistics line (partial capture?): only op profiling")
    run.warnings.extend(delegate_log.warnings(run))
    if failure:
        # The run produced its timing summary, so ERROR-level lines (research builds print
        # debug output at that level) did not stop it: one summarising warning, the lines
        # themselves in extra["error_lines"]. A run without timings raised above.
        run.extra["error_lines"] = failure
        run.warnings.append(
            f"{len(failure)} error-level line(s) in the log of a run that completed; "
            f"first: {failure[0]}"
        )
    return run


class _DelegateLog:
    """What the log says about delegates; decides whether the numbers are CPU numbers.

    A delegate *took* the graph when a non-XNNPACK delegate replaced at least one node
    ("Replacing N out of M node(s)", N > 0), was "explicitly applied … completely/partially
    executed", or created GPU delegate kernels (N > 0). It *declined* when the log says "the
    model graph will not be executed by the delegate", "Replacing 0 out of M", or "Created 0 GPU
    delegate kernels". The CPU-numbers warning is raised only when some delegate declined and
    none took the graph (e.g. an NNAPI line about unsupported ops does not matter when the GPU
    delegate replaced every node). XNNPACK is the CPU path and counts neither way.
    """

    def __init__(self) -> None:
        self.replacing: list[tuple[dict[str, Any], str]] = []
        self.declined: list[tuple[str, str]] = []
        self.applied: list[tuple[str, str]] = []
        self.gpu_kernels: list[tuple[int, str]] = []

    def warnings(self, run: ToolRun) -> list[str]:
        # "Replacing N out of N … (TfLiteGpuDelegateV2)" followed by "Created 0 GPU delegate
        # kernels" is a GPU delegate that failed to build its kernels: it did not take the graph.
        gpu_failed = bool(self.gpu_kernels) and all(count == 0 for count, _ in self.gpu_kernels)
        accelerator = [
            (info, line)
            for info, line in self.replacing
            if not _is_xnnpack(info["delegate"])
            and not (gpu_failed and "gpu" in info["delegate"].lower())
        ]
        if len(self.replacing) > 1:
            run.extra["delegations"] = [info for info, _ in self.replacing]
        took = (
            any(info["replaced_nodes"] > 0 for info, _ in accelerator)
            or any(not _is_xnnpack(name) for name, _ in self.applied)
            or any(count > 0 for count, _ in self.gpu_kernels)
        )
        declined = [line for name, line in self.declined if not _is_xnnpack(name)]
        declined += [line for info, line in accelerator if info["replaced_nodes"] == 0]
        declined += [line for count, line in self.gpu_kernels if count == 0]
        if declined and not took:
            return [f"delegate declined the graph, numbers are CPU numbers: {declined[0]}"]
        if declined:
            run.extra["delegate_notes"] = declined
        return []


def _is_xnnpack(name: str) -> bool:
    return "xnnpack" in name.lower()


def _is_error(level: str, line: str) -> bool:
    if line.startswith("\t"):  # table rows can contain any name
        return False
    return level == "ERROR" or bool(_ERRORISH.search(line.strip()))


def _summary_fields(text: str) -> dict[str, float]:
    """``Warmup: 1, Init: 2, no stats: 3`` → by key name (the order changed between versions)."""
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        name = _SUMMARY_KEYS.get(key.strip().lower())
        if sep and name and re.fullmatch(NUMBER, value.strip()):
            values[name] = float(value)
    return values


def _first_warmup(warmup: dict[str, float] | None) -> float | None:
    """The first warm-up iteration: ``first=``, or ``curr=`` when there was only one."""
    if not warmup:
        return None
    if "first" in warmup:
        return warmup["first"]
    return warmup.get("curr") if warmup.get("count") == 1 else None


def _pick_count_lines(
    count_lines: list[tuple[int, dict[str, float]]],
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(warm-up, timed) ``count=`` lines: by the "Running benchmark…" line before each."""
    if not count_lines:
        return None, None
    if any(phase for phase, _ in count_lines):
        warmup = next((kv for phase, kv in count_lines if phase == 1), None)
        timed = next((kv for phase, kv in count_lines if phase >= 2), None)
        return warmup, timed
    if len(count_lines) == 1:
        return None, count_lines[0][1]
    return count_lines[0][1], count_lines[1][1]


class _ProfileTables:
    """State machine for the ``--enable_op_profiling`` block.

    Sections: "Profiling Info for Benchmark Initialization" (init) and the regular runs
    (headed "Operator-wise Profiling Info …", or unheaded in old versions). Tables are titled
    ``==== Run Order ====`` etc.; columns are mapped by header text, never by position.
    """

    def __init__(self) -> None:
        self.section = "run"
        self.table: str | None = None
        self.columns: list[str] | None = None
        self.tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self.nodes_executed: dict[str, int] = {}

    def feed(self, line: str) -> bool:
        """True when ``line`` belonged to the profiling block."""
        stripped = line.strip()
        if stripped.startswith("Profiling Info for Benchmark Initialization"):
            self._reset("init")
            return True
        if stripped.startswith("Operator-wise Profiling Info"):
            self._reset("run")
            return True
        if match := _TABLE_TITLE.match(stripped):
            self.table, self.columns = match.group(1), None
            return True
        if stripped.startswith("Timings (microseconds):"):
            self.timings[self.section] = key_values(stripped.partition(":")[2])
            self.table = None
            return True
        if stripped.startswith("Number of nodes executed:"):
            self.nodes_executed[self.section] = int(stripped.rpartition(":")[2])
            return True
        if self.table is None:
            return False
        if not stripped:
            if self.columns is not None:
                self.table, self.columns = None, None
            return True
        if self.columns is None:
            if "[node type]" in stripped.lower():
                self.columns = [c.strip() for c in re.findall(r"\[([^\]]*)\]", stripped)]
                return True
            return False
        row = _split_row(line, self.columns)
        if row is not None:
            if "avg ms" in row and "node type" in row:
                if self.table == "Summary by node type":
                    # This table's [avg ms] is already the per-run total of the node type
                    # (sum over its calls / runs): never multiply by [times called].
                    row["time_us"] = row["avg ms"] * 1e3
                elif "times called" in row:
                    row["time_us"] = _per_inference_us(row)
            self.tables.setdefault((self.section, self.table), []).append(row)
        return True

    def _reset(self, section: str) -> None:
        self.section, self.table, self.columns = section, None, None

    def apply(self, run: ToolRun) -> None:
        run_order = self.tables.get(("run", "Run Order"), [])
        if run_order and all(row.get("times called") == 0 for row in run_order):
            # TF 2.1-era tables print 0 in [times called] on every row: the column counts
            # nothing there and [avg ms] is the time per run (their sum is the run's time)
            for row in run_order:
                row["time_us"] = row["avg ms"] * 1e3
        for row in run_order:
            run.layers.append(LayerTime(row["name"], row["node type"], row["time_us"]))
        if run.layers:
            run.layers_total_us = sum(layer.mean_us for layer in run.layers)
            run.extra["op_profile"] = run_order
        by_type = self.tables.get(("run", "Summary by node type"), [])
        if by_type:
            run.extra["node_type_summary"] = by_type
        init_rows = self.tables.get(("init", "Run Order"), [])
        if init_rows:
            run.extra["init_profile"] = init_rows
        if "run" in self.timings:
            run.extra["profiled_timings_us"] = self.timings["run"]
        if "init" in self.timings:
            run.extra["init_profiled_timings_us"] = self.timings["init"]
        if "run" in self.nodes_executed:
            run.extra["nodes_executed"] = self.nodes_executed["run"]


def _per_inference_us(row: dict[str, Any]) -> float:
    """A node's time per run in a Run Order / Top table: ``[avg ms]`` is per call,
    ``[times called]`` is calls per run (e.g. init ``AllocateTensors``: avg 158.023 ms × 2
    calls = 316.046 ms, the node-type summary's figure). Not for "Summary by node type", whose
    ``[avg ms]`` is already that per-run total."""
    calls = row.get("times called")
    if calls is None:  # old tables without the column: one call per run
        calls = 1
    # [times called] 0: the row was not run in the timed runs (LiteRT lists the init-time
    # AllocateTensors in its regular Run Order with 0 calls); it adds nothing per run.
    return row["avg ms"] * 1e3 * max(calls, 0)


_NUMERIC_COLUMNS = {"start", "first", "avg ms", "%", "cdf%", "mem KB", "avg %", "cdf %"}
_INT_COLUMNS = {"times called", "count"}


def _split_row(line: str, columns: list[str]) -> dict[str, Any] | None:
    """One table row as ``{column: value}``; None if it does not fit the header."""
    cells = [cell.strip() for cell in line.split("\t")]
    if cells and cells[0] == "":
        cells = cells[1:]
    if len(cells) != len(columns):
        # Tabs turned into spaces (copies in blogs): the last column (the name) may hold spaces.
        cells = line.split(None, len(columns) - 1)
        if len(cells) != len(columns):
            return None
    row: dict[str, Any] = {}
    for column, cell in zip(columns, cells, strict=True):
        key = column.lower() if column.lower() in ("node type", "name") else column
        try:
            if column in _NUMERIC_COLUMNS:
                row[key] = to_float(cell)
                continue
            if column in _INT_COLUMNS:
                row[key] = int(to_float(cell))
                continue
        except ValueError:
            return None
        if key == "name":
            match = _NAME_CELL.match(cell)
            if match:
                row["name"] = match.group(1)
                if match.group(2) is not None:
                    row["node_index"] = int(match.group(2))
                continue
        row[key] = cell
    if "name" not in row and "node type" in row:
        row["name"] = row["node type"]
    return row
