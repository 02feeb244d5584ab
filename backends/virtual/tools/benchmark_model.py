"""Stand-in for TensorFlow Lite's ``benchmark_model`` on the virtual phone.

The virtual phone has no TensorFlow Lite interpreter: the ``--graph`` file is read as an ONNX
model and run with ONNX Runtime on the host CPU, with random inputs. What it prints follows the
newest real tool (every line ``INFO:``-prefixed, on stderr like the real tool): the echo of the
flags that differ from their defaults, ``Loaded model``, ``The input model file size (MB)``,
``Initialized session in``, the warm-up and timed ``count= first= curr= min= max= avg= std= p5=
median= p95=`` lines (microseconds), ``Inference timings in us: Init: ..., First inference:
..., Warmup (avg): ..., Inference (avg): ...`` and the memory footprint lines. With
``--enable_op_profiling=true`` the operator tables of the real tool follow (``Run Order``,
``Top by Computation Time``, ``Summary by node type``; times in ms, tab-separated), built from
ONNX Runtime's profiler, with ONNX op types as node types.

On a virtual phone whose profile sets ``tool_warmup_load``, the warm-up runs draw that share
of a full load from a virtual Monsoon and the timed loop a full one (power sync tests tell the
two apart). The tool exits without Python's teardown, as promptly as the native one.

Run counts follow the real tool: at least ``--num_runs`` and at least ``--min_secs``, stopped
after ``--max_secs``; the warm-up likewise with ``--warmup_runs`` / ``--warmup_min_secs``.
``--use_gpu`` / ``--use_nnapi`` / ``--use_hexagon`` are accepted, but the model then still runs
on the CPU and the tool says so with the real "the model graph will not be executed by the
delegate" line. Unknown flags: ``ERROR: Unconsumed cmdline flags`` and exit 1; a model ONNX
Runtime cannot load: ``ERROR: Benchmarking failed.`` and exit 1.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from backends.runtimes.ort_profile import read_ort_profile
from backends.virtual.tools._common import (
    Heater,
    ToolError,
    create_session,
    device_path,
    exit_now,
    fmt_g,
    nearest_rank,
    peak_rss_bytes,
    random_feeds,
    rss_bytes,
    session_options,
    warmup_load,
)


@dataclass(frozen=True)
class Flag:
    kind: type  # int, float, bool or str
    default: Any
    label: str  # how the real tool echoes it


FLAGS: dict[str, Flag] = {
    "graph": Flag(str, "", "Graph"),
    "num_runs": Flag(int, 50, "Min num runs"),
    "min_secs": Flag(float, 1.0, "Min runs duration (seconds)"),
    "max_secs": Flag(float, 150.0, "Max runs duration (seconds)"),
    "run_delay": Flag(float, -1.0, "Inter-run delay (seconds)"),
    "run_frequency": Flag(float, -1.0, "Number of prorated runs per second"),
    "num_threads": Flag(int, -1, "Num threads"),
    "use_caching": Flag(bool, False, "Use caching"),
    "benchmark_name": Flag(str, "", "Benchmark name"),
    "output_prefix": Flag(str, "", "Output prefix"),
    "warmup_runs": Flag(int, 1, "Min warmup runs"),
    "warmup_min_secs": Flag(float, 0.5, "Min warmup runs duration (seconds)"),
    "verbose": Flag(bool, False, "Log parameter values verbosely"),
    "signature_to_run_for": Flag(str, "", "Signature to run"),
    "input_layer": Flag(str, "", "Input layers"),
    "input_layer_shape": Flag(str, "", "Input shapes"),
    "input_layer_value_range": Flag(str, "", "Input value ranges"),
    "input_layer_value_files": Flag(str, "", "Input layer values files"),
    "allow_fp16": Flag(bool, False, "Allow fp16"),
    "require_full_delegation": Flag(bool, False, "Require full delegation"),
    "enable_op_profiling": Flag(bool, False, "Enable op profiling"),
    "max_profiling_buffer_entries": Flag(int, 1024, "Max profiling buffer entries"),
    "profiling_output_csv_file": Flag(str, "", "CSV File to export profiling data to"),
    "print_preinvoke_state": Flag(bool, False, "Print pre-invoke interpreter state"),
    "print_postinvoke_state": Flag(bool, False, "Print post-invoke interpreter state"),
    "report_peak_memory_footprint": Flag(bool, False, "Report the peak memory footprint"),
    "memory_footprint_check_interval_ms": Flag(int, 50, "Memory footprint check interval (ms)"),
    "use_xnnpack": Flag(bool, False, "Use xnnpack"),
    "xnnpack_force_fp16": Flag(bool, False, "xnnpack_force_fp16"),
    "use_gpu": Flag(bool, False, "Use gpu"),
    "gpu_precision_loss_allowed": Flag(bool, True, "Allow lower precision in gpu"),
    "gpu_backend": Flag(str, "", "GPU backend"),
    "use_nnapi": Flag(bool, False, "Use NNAPI"),
    "nnapi_accelerator_name": Flag(str, "", "NNAPI accelerator name"),
    "nnapi_execution_preference": Flag(str, "", "NNAPI execution preference"),
    "nnapi_allow_fp16": Flag(bool, False, "Allow fp16 in NNAPI"),
    "disable_nnapi_cpu": Flag(bool, True, "Disable NNAPI cpu"),
    "use_hexagon": Flag(bool, False, "Use Hexagon"),
    "hexagon_profiling": Flag(bool, False, "Hexagon profiling"),
    "external_delegate_path": Flag(str, "", "External delegate path"),
    "external_delegate_options": Flag(str, "", "External delegate options"),
}

# The order the real tool echoes parameters in (a subset of FLAGS; the rest follow).
ECHO_ORDER = (
    "num_runs",
    "min_secs",
    "max_secs",
    "run_delay",
    "num_threads",
    "benchmark_name",
    "output_prefix",
    "warmup_runs",
    "warmup_min_secs",
    "graph",
    "signature_to_run_for",
)

DELEGATE_NAMES = {"use_gpu": "GPU", "use_nnapi": "NNAPI", "use_hexagon": "Hexagon"}


class FlagError(Exception):
    pass


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError(text)


def parse_flags(argv: Sequence[str]) -> tuple[dict[str, Any], set[str]]:
    """Flag values (defaults filled in) and the names given on the command line."""
    values = {name: flag.default for name, flag in FLAGS.items()}
    given: set[str] = set()
    unconsumed: list[str] = []
    for arg in argv:
        if not arg.startswith("--"):
            unconsumed.append(arg)
            continue
        name, eq, text = arg[2:].partition("=")
        flag = FLAGS.get(name)
        if flag is None:
            unconsumed.append(arg)
            continue
        if not eq and flag.kind is not bool:
            unconsumed.append(arg)
            continue
        try:
            if flag.kind is bool:
                value: Any = _parse_bool(text) if eq else True
            else:
                value = flag.kind(text)
        except ValueError:
            raise FlagError(f"Illegal value for flag {name}: {text!r}") from None
        values[name] = value
        given.add(name)
    if unconsumed:
        raise FlagError(f"Unconsumed cmdline flags: {' '.join(unconsumed)}")
    return values, given


def _echo_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return fmt_g(value)
    return str(value)


@dataclass
class Stat:
    """A TFLite ``Stat`` line over integer microseconds."""

    values: list[int]

    @property
    def avg(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 0.0

    def line(self) -> str:
        count = len(self.values)
        if count == 0:
            return "count=0"
        if count == 1:
            return f"count=1 curr={self.values[0]}"
        mean = self.avg
        squares = sum(v * v for v in self.values) / count
        std = int(math.sqrt(max(0.0, squares - mean * mean)))
        ordered = sorted(self.values)
        return (
            f"count={count} first={self.values[0]} curr={self.values[-1]} min={ordered[0]} "
            f"max={ordered[-1]} avg={fmt_g(mean)} std={std} "
            f"p5={int(nearest_rank(ordered, 5))} median={int(nearest_rank(ordered, 50))} "
            f"p95={int(nearest_rank(ordered, 95))}"
        )


class Logger:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, text: str, level: str = "INFO") -> None:
        self.stream.write(f"{level}: {text}\n" if level else f"{text}\n")
        self.stream.flush()

    def raw(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _run_phase(
    run_once: Callable[[], None],
    min_runs: int,
    min_secs: float,
    max_secs: float,
    delay: float,
) -> list[int]:
    times: list[int] = []
    begin = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - begin
        if len(times) >= min_runs and elapsed >= min_secs:
            break
        if elapsed > max_secs and times:
            break
        start = time.perf_counter()
        run_once()
        times.append(int((time.perf_counter() - start) * 1_000_000))
        if delay > 0:
            time.sleep(delay)
    return times


def benchmark(values: dict[str, Any], given: set[str], log: Logger) -> int:
    verbose = values["verbose"]
    log(f"Log parameter values verbosely: [{int(verbose)}]")
    names = list(ECHO_ORDER) + [n for n in FLAGS if n not in ECHO_ORDER and n != "verbose"]
    for name in names:
        if verbose or name in given or name in ("graph", "signature_to_run_for"):
            value = _echo_value(values[name])
            if FLAGS[name].kind is str:
                value = device_path(value)
            log(f"{FLAGS[name].label}: [{value}]")

    graph = values["graph"]
    shown = device_path(graph)
    if not graph:
        log("Please specify the name of your TF Lite input file with --graph", "ERROR")
        log("Benchmarking failed.", "ERROR")
        return 1
    if not os.path.isfile(graph):
        log(f"Could not open '{shown}'.", "ERROR")
        log(f"Failed to mmap model {shown}", "ERROR")
        log("Benchmarking failed.", "ERROR")
        return 1
    if values["num_threads"] == 0 or values["num_threads"] < -1:
        log(f"Invalid number of threads: {values['num_threads']}", "ERROR")
        log("Benchmarking failed.", "ERROR")
        return 1

    start_rss = rss_bytes()
    log(f"Loaded model {shown}")
    import onnxruntime as ort

    log(f"Initialized ONNX Runtime {ort.__version__} (virtual phone: stands in for TFLite).")
    if values["use_xnnpack"]:
        log("Created TensorFlow Lite XNNPACK delegate for CPU.")
    log(f"The input model file size (MB): {fmt_g(os.path.getsize(graph) / (1024 * 1024))}")

    profile_prefix = None
    if values["enable_op_profiling"]:
        folder = os.environ.get("TMPDIR") or "/tmp"
        profile_prefix = os.path.join(folder, f"benchmark_model_profile_{os.getpid()}")
    threads = max(values["num_threads"], 0)
    init_start = time.perf_counter()
    try:
        session = create_session(graph, session_options(threads, 1, profile_prefix))
        feeds = random_feeds(session)
    except ToolError as error:
        log(f"Failed to load model {shown} with ONNX Runtime: {error}", "ERROR")
        log("Benchmarking failed.", "ERROR")
        return 1
    init_us = (time.perf_counter() - init_start) * 1_000_000
    init_rss = rss_bytes()
    for flag, name in DELEGATE_NAMES.items():
        if values[flag]:
            log(
                f"Though {name} delegate is explicitly applied, the model graph will not be "
                "executed by the delegate."
            )
    log(f"Initialized session in {fmt_g(init_us / 1000)}ms.")

    def run_once() -> None:
        session.run(None, feeds)

    delay = values["run_delay"]
    with Heater(level=warmup_load()) as heater:
        try:
            log(
                f"Running benchmark for at least {values['warmup_runs']} iterations and at least "
                f"{fmt_g(values['warmup_min_secs'])} seconds but terminate if exceeding "
                f"{fmt_g(values['max_secs'])} seconds."
            )
            warmup = Stat(
                _run_phase(
                    run_once,
                    values["warmup_runs"],
                    values["warmup_min_secs"],
                    values["max_secs"],
                    delay,
                )
            )
            log(warmup.line())
            log.raw("\n")
            heater.set_level(1.0)
            log(
                f"Running benchmark for at least {values['num_runs']} iterations and at least "
                f"{fmt_g(values['min_secs'])} seconds but terminate if exceeding "
                f"{fmt_g(values['max_secs'])} seconds."
            )
            timed = Stat(
                _run_phase(
                    run_once, values["num_runs"], values["min_secs"], values["max_secs"], delay
                )
            )
            log(timed.line())
            log.raw("\n")
        except Exception as error:
            log(f"Node execution failed: {error}", "ERROR")
            log("Benchmarking failed.", "ERROR")
            return 1

    first = warmup.values[0] if warmup.values else 0
    log(
        f"Inference timings in us: Init: {int(init_us)}, First inference: {first}, "
        f"Warmup (avg): {fmt_g(warmup.avg)}, Inference (avg): {fmt_g(timed.avg)}"
    )
    log(
        "Note: as the benchmark tool itself affects memory footprint, the following is only "
        "APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
        "information at your discretion."
    )
    mb = 1024 * 1024
    overall = max(peak_rss_bytes(), rss_bytes())
    log(
        "Memory footprint delta from the start of the tool (MB): "
        f"init={fmt_g(max(init_rss - start_rss, 0) / mb)} "
        f"overall={fmt_g(max(overall - start_rss, 0) / mb)}"
    )
    if values["report_peak_memory_footprint"]:
        log(f"Overall peak memory footprint (MB) via periodic monitoring: {fmt_g(overall / mb)}")

    if profile_prefix is not None:
        trace = session.end_profiling()
        try:
            tables, rows = op_profile_tables(trace, len(warmup.values), init_us)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(trace)
        log.raw(tables)
        if values["profiling_output_csv_file"]:
            try:
                _write_csv(values["profiling_output_csv_file"], rows)
            except OSError as error:
                log(f"Failed to write the profiling CSV file: {error.strerror}", "ERROR")
    return 0


# ---------------------------------------------------------------------------------------------
# Operator profiling tables (the layout of TFLite's profile summariser)


@dataclass
class NodeRow:
    index: int
    name: str
    op_type: str
    start_ms: float
    first_ms: float
    avg_ms: float
    calls_per_run: int


def _field(value: str, width: int) -> str:
    return "\t" + value.rjust(width)


def _run_order_header() -> str:
    return (
        _field("[node type]", 24)
        + _field("[start]", 17)
        + _field("[first]", 9)
        + _field("[avg ms]", 9)
        + _field("[%]", 8)
        + _field("[cdf%]", 8)
        + _field("[mem KB]", 10)
        + _field("[times called]", 9)
        + "\t[Name]\n"
    )


def _run_order_rows(rows: list[NodeRow], total_ms: float) -> str:
    lines = []
    cdf = 0.0
    for row in rows:
        share = 100.0 * row.avg_ms / total_ms if total_ms > 0 else 0.0
        cdf += share
        lines.append(
            _field(row.op_type, 24)
            + _field(f"{row.start_ms:.3f}", 17)
            + _field(f"{row.first_ms:.3f}", 9)
            + _field(f"{row.avg_ms:.3f}", 9)
            + _field(f"{share:.3f}%", 8)
            + _field(f"{min(cdf, 100.0):.3f}%", 8)
            + _field(f"{0.0:.3f}", 10)
            + _field(str(row.calls_per_run), 9)
            + f"\t[{row.name}]:{row.index}\n"
        )
    return "".join(lines)


def _summary_table(rows: list[NodeRow], total_ms: float, runs: int) -> str:
    by_type: dict[str, list[NodeRow]] = defaultdict(list)
    for row in rows:
        by_type[row.op_type].append(row)
    ordered = sorted(by_type.items(), key=lambda item: -sum(r.avg_ms for r in item[1]))
    lines = [
        _field("[Node type]", 24)
        + _field("[count]", 9)
        + _field("[avg ms]", 10)
        + _field("[avg %]", 11)
        + _field("[cdf %]", 11)
        + _field("[mem KB]", 10)
        + _field("[times called]", 9)
        + "\n"
    ]
    cdf = 0.0
    for op_type, members in ordered:
        avg = sum(r.avg_ms for r in members)
        share = 100.0 * avg / total_ms if total_ms > 0 else 0.0
        cdf += share
        lines.append(
            _field(op_type, 24)
            + _field(str(len(members)), 9)
            + _field(f"{avg:.3f}", 10)
            + _field(f"{share:.3f}%", 11)
            + _field(f"{min(cdf, 100.0):.3f}%", 11)
            + _field(f"{0.0:.3f}", 10)
            + _field(str(sum(r.calls_per_run for r in members)), 9)
            + "\n"
        )
    return "".join(lines)


def _block(rows: list[NodeRow], runs: int, timings: Stat) -> str:
    total = sum(row.avg_ms for row in rows)
    top = sorted(rows, key=lambda row: -row.avg_ms)[:10]
    return (
        "============================== Run Order ==============================\n"
        + _run_order_header()
        + _run_order_rows(rows, total)
        + "\n"
        + "============================== Top by Computation Time "
        + "==============================\n"
        + _run_order_header()
        + _run_order_rows(top, total)
        + "\n"
        + f"Number of nodes executed: {len(rows)}\n"
        + "============================== Summary by node type "
        + "==============================\n"
        + _summary_table(rows, total, runs)
        + "\n"
        + f"Timings (microseconds): {timings.line()}\n"
        + "Memory (bytes): count=0\n"
        + f"{len(rows)} nodes observed\n"
        + "\n\n\n"
    )


def op_profile_tables(trace_path: str, skip_runs: int, init_us: float) -> tuple[str, list[NodeRow]]:
    """The real tool's profiling output from an ORT trace (the first ``skip_runs`` model runs
    are the warm-up and are left out, as the real tool resets its profiler after warm-up)."""
    profile = read_ort_profile(trace_path, skip_runs)
    runs = profile.runs
    per_node: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    op_types: dict[str, str] = {}
    order: dict[str, float] = {}
    for kernel in profile.in_runs():
        assert kernel.run is not None
        offset = profile.offset_us(kernel)
        per_node[kernel.node].append((kernel.run, offset, kernel.dur_us))
        op_types[kernel.node] = kernel.op_type or "Unknown"
        order.setdefault(kernel.node, offset)
    rows: list[NodeRow] = []
    run_count = max(len(runs), 1)
    for position, node in enumerate(sorted(per_node, key=lambda n: order[n])):
        samples = per_node[node]
        first_run = min(index for index, _, _ in samples)
        first = sum(dur for index, _, dur in samples if index == first_run)
        rows.append(
            NodeRow(
                index=position,
                name=node,
                op_type=op_types[node],
                start_ms=sum(offset for _, offset, _ in samples) / len(samples) / 1000,
                first_ms=first / 1000,
                avg_ms=sum(dur for _, _, dur in samples) / run_count / 1000,
                calls_per_run=max(1, round(len(samples) / run_count)),
            )
        )
    timings = Stat([int(end - start) for start, end in runs])
    init_row = NodeRow(0, "AllocateTensors/0", "AllocateTensors", 0.0, 0.0, 0.0, 1)
    init_row.first_ms = init_row.avg_ms = init_us / 1000
    init_block = (
        "INFO: Profiling Info for Benchmark Initialization:\n"
        + "============================== Run Order ==============================\n"
        + _run_order_header()
        + _init_row_text(init_row)
        + "\n"
        + "============================== Top by Computation Time "
        + "==============================\n"
        + _run_order_header()
        + _init_row_text(init_row)
        + "\n"
        + "Number of nodes executed: 1\n"
        + "============================== Summary by node type "
        + "==============================\n"
        + _summary_table([init_row], init_row.avg_ms, 1)
        + "\n"
        + f"Timings (microseconds): count=1 curr={int(init_us)}\n"
        + "Memory (bytes): count=0\n"
        + "1 nodes observed\n"
        + "\n\n\n"
    )
    text = (
        init_block
        + "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        + _block(rows, run_count, timings)
    )
    return text, rows


def _init_row_text(row: NodeRow) -> str:
    # the initialisation row is named without brackets in the real output
    text = _run_order_rows([row], row.avg_ms)
    return text.replace(f"\t[{row.name}]:{row.index}\n", f"\t{row.name}\n")


def _write_csv(path: str, trace_rows: list[NodeRow]) -> None:
    """A CSV of the Run Order table (``--profiling_output_csv_file``)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("node type,first,avg_ms,%,cdf%,mem KB,times called,name\n")
        total = sum(row.avg_ms for row in trace_rows) or 1.0
        cdf = 0.0
        for row in trace_rows:
            share = 100.0 * row.avg_ms / total
            cdf += share
            handle.write(
                f"{row.op_type},{row.first_ms:.3f},{row.avg_ms:.3f},{share:.3f},{cdf:.3f},"
                f"0.000,{row.calls_per_run},{row.name}\n"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    log = Logger(sys.stderr)
    log("STARTING!")
    try:
        values, given = parse_flags(args)
    except FlagError as error:
        log(str(error), "ERROR")
        return 1
    try:
        return benchmark(values, given, log)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    exit_now(main())
