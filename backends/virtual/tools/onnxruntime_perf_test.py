"""Stand-in for ONNX Runtime's ``onnxruntime_perf_test`` on the virtual phone.

Runs the model with the ONNX Runtime Python package on the host and prints the lines of a
recent build (ORT 1.2x), in the real units::

    onnxruntime_perf_test [options...] model_path [result_file]

Options (getopt style, like the real tool):
    -m times|duration   fixed count (-r) or fixed time (-t); default duration
    -r N                repetitions in times mode (default 1000)
    -t S                seconds in duration mode (default 600)
    -e cpu              execution provider; only cpu exists on the virtual phone
    -x N / -y N         intra-op / inter-op threads (0 = ORT default)
    -c N                concurrent requests (default 1)
    -I                  random inputs (without it: test_data_set_0/input_*.pb next to the
                        model, else random inputs as well)
    -p FILE             ORT JSON profile; ORT names it FILE_<timestamp>.json
    -s                  statistics block (always printed by this stand-in, as by some builds)
    -Z                  no intra-op thread spinning between runs
    -o N                graph optimisation level (0, 1, 2, 99)
    -S SEED             seed for the random inputs
    -i "k|v ..."        provider options (accepted, ignored on cpu)
    -v, -h              verbose, help

``result_file`` gets one line per request appended: ``model,seconds,peak_bytes,cpu%,index``.
Unknown options print the usage and exit 1; a model ORT cannot load exits 1 with the error.

The virtual phone's build stands for one made with ``--cmake_extra_defines
onnxruntime_DEBUG_NODE_INPUTS_OUTPUTS=1``: with ``ORT_DEBUG_NODE_IO_DUMP_OUTPUT_DATA=1``,
``ORT_DEBUG_NODE_IO_DUMP_DATA_DESTINATION=files`` and ``ORT_DEBUG_NODE_IO_OUTPUT_DIR=DIR`` it
writes tensors as ``DIR/<name, non-alphanumerics as _>.tensorproto`` (serialized TensorProto).
Like the real build it refuses to dump every node to files without a name or op-type filter
or ``ORT_DEBUG_NODE_IO_DUMPING_DATA_TO_FILES_FOR_ALL_NODES_IS_OK=1``. Unlike it, only the node
outputs that are graph outputs are written (the Python package cannot see the others).
"""

from __future__ import annotations

import getopt
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from backends.virtual.tools._common import (
    Heater,
    ToolError,
    create_session,
    dataset_feeds,
    device_path,
    exit_now,
    fmt_g,
    peak_rss_bytes,
    random_feeds,
    session_options,
)

USAGE = """\
usage: onnxruntime_perf_test [options...] model_path [result_file]
(devlab virtual phone stand-in: runs the model with ONNX Runtime on the host CPU)
options:
  -m times|duration  run a fixed number of requests (-r) or for a fixed time (-t)
  -r N               requests in 'times' mode (default 1000)
  -t S               seconds in 'duration' mode (default 600)
  -e cpu             execution provider (only cpu on the virtual phone)
  -x N               intra-op threads (0: let ONNX Runtime choose)
  -y N               inter-op threads (0: let ONNX Runtime choose)
  -c N               concurrent requests (default 1)
  -I                 random inputs (dynamic dimensions are 1)
  -p FILE            write an ONNX Runtime JSON profile named FILE_<timestamp>.json
  -s                 print the latency statistics (always printed here)
  -S SEED            seed for the random inputs
  -o N               graph optimisation level: 0, 1, 2 or 99
  -Z                 no intra-op thread spinning between runs
  -i "k|v ..."       provider options (ignored on cpu)
  -v                 verbose
  -h                 this help
"""

OPTSTRING = "m:e:r:t:p:x:y:c:o:S:i:IMAsvZPh"
SUPPORTED_PROVIDERS = ("cpu",)
KNOWN_PROVIDERS = (
    "cpu",
    "cuda",
    "dnnl",
    "openvino",
    "tensorrt",
    "qnn",
    "snpe",
    "nnapi",
    "coreml",
    "rocm",
    "migraphx",
    "xnnpack",
    "vitisai",
    "dml",
    "acl",
    "armnn",
    "webgpu",
)


@dataclass
class Config:
    mode: str = "duration"
    repeats: int = 1000
    seconds: float = 600.0
    provider: str = "cpu"
    intra_threads: int | None = None
    inter_threads: int = 0
    concurrency: int = 1
    generate_inputs: bool = False
    profile_file: str | None = None
    spinning: bool = True
    optimization: int | None = None
    seed: int = 0
    verbose: bool = False
    model_path: str = ""
    result_file: str | None = None


class UsageError(Exception):
    pass


def _int(option: str, text: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"option {option} needs an integer, got {text!r}") from None
    if value < minimum:
        raise UsageError(f"option {option} must be >= {minimum}")
    return value


def parse_args(argv: Sequence[str]) -> Config:
    try:
        options, rest = getopt.getopt(list(argv), OPTSTRING)
    except getopt.GetoptError as error:
        raise UsageError(str(error)) from None
    config = Config()
    for option, value in options:
        if option == "-h":
            raise UsageError("")
        if option == "-m":
            if value not in ("times", "duration"):
                raise UsageError(f"unknown test mode {value!r}")
            config.mode = value
        elif option == "-r":
            config.repeats = _int(option, value, 1)
        elif option == "-t":
            config.seconds = _int(option, value, 1)
        elif option == "-e":
            config.provider = value.lower()
        elif option == "-x":
            config.intra_threads = _int(option, value)
        elif option == "-y":
            config.inter_threads = _int(option, value)
        elif option == "-c":
            config.concurrency = _int(option, value, 1)
        elif option == "-I":
            config.generate_inputs = True
        elif option == "-p":
            config.profile_file = value
        elif option == "-Z":
            config.spinning = False
        elif option == "-o":
            config.optimization = _int(option, value)
        elif option == "-S":
            config.seed = _int(option, value, -1)
        elif option == "-v":
            config.verbose = True
        # -i (provider options), -s (statistics), -M, -A, -P: accepted, nothing to change
    if len(rest) not in (1, 2):
        raise UsageError("")
    config.model_path = rest[0]
    config.result_file = rest[1] if len(rest) == 2 else None
    return config


def _percentile_index(count: int, fraction: float) -> int:
    return min(count - 1, int(count * fraction))


def run(config: Config, out=sys.stdout) -> int:
    if config.provider not in SUPPORTED_PROVIDERS:
        if config.provider in KNOWN_PROVIDERS:
            print(f"{config.provider} is not supported in this build. ", file=sys.stderr)
        else:
            print(f"The execution provider '{config.provider}' is not supported.", file=sys.stderr)
        return 1
    if config.intra_threads is not None:
        print(f"Setting intra_op_num_threads to {config.intra_threads}", file=out)
    if not config.spinning:
        print("Disabling intra-op thread spinning between runs", file=out)

    options = session_options(
        config.intra_threads or 0,
        config.inter_threads,
        profile_prefix=config.profile_file,
        optimization=config.optimization,
        spinning=config.spinning,
    )
    if not os.path.isfile(config.model_path):
        shown = device_path(config.model_path)
        print(f"failed to load model {shown}: No such file or directory", file=sys.stderr)
        return 1
    cpu_start = os.times()
    wall_start = time.perf_counter()
    try:
        session = create_session(config.model_path, options)
    except ToolError as error:
        print(f"Failed to create session: {error}", file=sys.stderr)
        return 1
    creation = time.perf_counter() - wall_start
    print(f"Session creation time cost: {fmt_g(creation)} s", file=out)

    feeds = None if config.generate_inputs else dataset_feeds(config.model_path, session)
    if feeds is None:
        feeds = random_feeds(session, max(config.seed, 0))

    with Heater():
        started = time.perf_counter()
        try:
            session.run(None, feeds)
        except Exception as error:
            print(f"Run failed: {error}", file=sys.stderr)
            return 1
        first_ms = (time.perf_counter() - started) * 1000
        print(f"First inference time cost: {int(first_ms)} ms", file=out)
        latencies, run_time = _timed_runs(session, feeds, config)
        try:
            dump_graph_outputs(session, feeds)
        except ToolError as error:
            print(f"Node output dump failed: {error}", file=sys.stderr)
            return 1

    cpu_end = os.times()
    wall = time.perf_counter() - wall_start
    cpu_seconds = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    cpu_usage = int(100 * cpu_seconds / max(wall, 1e-9) / (os.cpu_count() or 1))
    peak = peak_rss_bytes()
    if config.profile_file:
        profile_path = session.end_profiling()
        if config.verbose:
            print(f"Profiling file: {profile_path}", file=out)

    count = len(latencies)
    total = sum(latencies)
    print(f"Total inference time cost: {fmt_g(total)} s", file=out)
    print(f"Total inference requests: {count}", file=out)
    print(f"Average inference time cost total: {total / max(count, 1) * 1000:f} ms", file=out)
    print(f"Total inference run time: {fmt_g(run_time)} s", file=out)
    print(f"Number of inferences per second: {fmt_g(count / max(run_time, 1e-9))}", file=out)
    print(f"Avg CPU usage: {cpu_usage} %", file=out)
    print(f"Peak working set size: {peak} bytes", file=out)
    print(f"Avg CPU usage:{cpu_usage}", file=out)
    print(f"Peak working set size:{peak}", file=out)
    print(f"Runs:{count}", file=out)
    if latencies:
        ordered = sorted(latencies)
        print(f"Min Latency: {fmt_g(ordered[0])} s", file=out)
        print(f"Max Latency: {fmt_g(ordered[-1])} s", file=out)
        for label, fraction in (
            ("P50", 0.5),
            ("P90", 0.9),
            ("P95", 0.95),
            ("P99", 0.99),
            ("P999", 0.999),
        ):
            value = ordered[_percentile_index(count, fraction)]
            print(f"{label} Latency: {fmt_g(value)} s", file=out)
    out.flush()

    if config.result_file:
        shown = device_path(config.model_path)
        try:
            with open(config.result_file, "a", encoding="utf-8") as handle:
                for index, latency in enumerate(latencies):
                    handle.write(
                        f"{config.model_path},{fmt_g(latency)},{peak},{cpu_usage},{index}\n"
                    )
        except OSError:
            print("failed to open result file", file=out)
    return 0


DUMP_ENV = "ORT_DEBUG_NODE_IO_"


def _dump_flag(name: str) -> bool:
    return os.environ.get(DUMP_ENV + name, "0") not in ("", "0")


def dump_graph_outputs(session, feeds) -> None:
    """Write the graph outputs as TensorProto files when the node I/O dump asks for them."""
    if not _dump_flag("DUMP_OUTPUT_DATA"):
        return
    if os.environ.get(DUMP_ENV + "DUMP_DATA_DESTINATION", "stdout") != "files":
        return  # stdout dumps are not emulated
    name_filter = os.environ.get(DUMP_ENV + "NAME_FILTER", "")
    op_filter = os.environ.get(DUMP_ENV + "OP_TYPE_FILTER", "")
    if not (name_filter or op_filter or _dump_flag("DUMPING_DATA_TO_FILES_FOR_ALL_NODES_IS_OK")):
        raise ToolError(
            "dumping data to files for all nodes needs a node filter or "
            "ORT_DEBUG_NODE_IO_DUMPING_DATA_TO_FILES_FOR_ALL_NODES_IS_OK=1"
        )
    from onnx import numpy_helper

    folder = os.environ.get(DUMP_ENV + "OUTPUT_DIR", "") or "."
    names = [output.name for output in session.get_outputs()]
    for name, value in zip(names, session.run(None, feeds), strict=True):
        safe = "".join(c if c.isalnum() else "_" for c in name)
        tensor = numpy_helper.from_array(value, name)
        try:
            with open(os.path.join(folder, f"{safe}.tensorproto"), "wb") as handle:
                handle.write(tensor.SerializeToString())
        except OSError as error:
            raise ToolError(f"cannot write {safe}.tensorproto: {error.strerror}") from error


def _timed_runs(session, feeds, config: Config) -> tuple[list[float], float]:
    """Per-request latencies (s) and the wall time of the whole loop (s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    issued = 0
    errors: list[BaseException] = []
    begin = time.perf_counter()
    deadline = begin + config.seconds

    def take_ticket() -> bool:
        nonlocal issued
        with lock:
            if errors:
                return False
            if config.mode == "times":
                if issued >= config.repeats:
                    return False
            elif time.perf_counter() >= deadline:
                return False
            issued += 1
            return True

    def worker() -> None:
        while take_ticket():
            start = time.perf_counter()
            try:
                session.run(None, feeds)
            except BaseException as error:
                with lock:
                    errors.append(error)
                return
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    if config.concurrency == 1:
        worker()
    else:
        threads = [threading.Thread(target=worker) for _ in range(config.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise ToolError(f"Run failed: {errors[0]}")
    return latencies, time.perf_counter() - begin


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = parse_args(args)
    except UsageError as error:
        if str(error):
            print(f"onnxruntime_perf_test: {error}", file=sys.stderr)
        print(USAGE, file=sys.stderr, end="")
        return 1
    try:
        return run(config)
    except ToolError as error:
        print(str(error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    exit_now(main())
