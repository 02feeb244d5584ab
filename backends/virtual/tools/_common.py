"""Shared pieces of the stand-in tools: sessions, random inputs, memory, and the heater that
warms the virtual phone's thermal files while a benchmark runs."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

SANDBOX_ENV = "DEVLAB_VIRTUAL_SANDBOX"
SHELL_ROOT_ENV = "DEVLAB_VIRTUAL_SHELL_ROOT"
# the virtual phone's clock against the host's: "offset_ns drift_ppb ref_ns" (integers), its
# `date` and power_beacon report host time + offset + drift x (host time - ref)
CLOCK_ENV = "DEVLAB_VIRTUAL_CLOCK"
# the share of a full load the stand-ins draw in their warm-up runs (a profile's
# tool_warmup_load; unset: 1.0, as in the timed loop)
WARMUP_LOAD_ENV = "DEVLAB_VIRTUAL_WARMUP_LOAD"

_ORT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def device_path(path: str) -> str:
    """``path`` as the phone would show it: the emulator rewrote device paths in the command
    line to sandbox paths, so the tools map them back when they print them."""
    for prefix in (os.environ.get(SHELL_ROOT_ENV), os.environ.get(SANDBOX_ENV)):
        if not prefix:
            continue
        prefix = prefix.rstrip("/")
        if path == prefix:
            return "/"
        if path.startswith(prefix + "/"):
            return path[len(prefix) :]
    return path


def device_text(text: str) -> str:
    """``text`` (an error message, say) with sandbox paths shown as device paths."""
    for prefix in (os.environ.get(SHELL_ROOT_ENV), os.environ.get(SANDBOX_ENV)):
        if prefix:
            text = text.replace(prefix.rstrip("/") + "/", "/")
    return text


class ToolError(Exception):
    """A failure the tool reports in its own words before exiting non-zero."""


def session_options(
    threads: int,
    inter_threads: int = 0,
    profile_prefix: str | None = None,
    optimization: int | None = None,
    spinning: bool = True,
) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
    if inter_threads > 0:
        options.inter_op_num_threads = inter_threads
    if optimization is not None:
        levels = {
            0: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            2: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        }
        options.graph_optimization_level = levels.get(
            optimization, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def create_session(model_path: str, options: Any) -> Any:
    """An ORT CPU session; ``ToolError`` with ORT's message when the model does not load."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ToolError(device_text(str(error).strip()) or type(error).__name__) from error


def random_feeds(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every model input; dynamic dimensions become 1."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in session.get_inputs():
        shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in spec.shape]
        dtype = _ORT_TYPES.get(spec.type)
        if dtype is None:
            raise ToolError(f"input {spec.name!r} has an unsupported type {spec.type}")
        if dtype is np.bool_:
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def dataset_feeds(model_path: str, session: Any) -> dict[str, np.ndarray] | None:
    """Inputs from ``test_data_set_0/input_*.pb`` next to the model, if there is such a set."""
    folder = Path(model_path).parent / "test_data_set_0"
    files = sorted(folder.glob("input_*.pb"))
    if not files:
        return None
    import onnx
    from onnx import numpy_helper

    names = [spec.name for spec in session.get_inputs()]
    feeds: dict[str, np.ndarray] = {}
    for index, path in enumerate(files):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(path.read_bytes())
        name = tensor.name or (names[index] if index < len(names) else f"input_{index}")
        feeds[name] = numpy_helper.to_array(tensor)
    return feeds


def rss_bytes() -> int:
    """Current resident set size."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float:
    if not sorted_values:
        return 0.0
    rank = math.ceil(percent / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def fmt_g(value: float) -> str:
    """C++ iostream default formatting (6 significant digits, exponent for large values)."""
    return f"{value:g}"


def exit_now(code: int) -> NoReturn:
    """Flush and exit at once, as a native tool does: Python's teardown of ONNX Runtime takes
    some 20 ms, which the phone's clock stamp after the tool (power sync by beacon) would
    count as the tool's timed loop still running."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def warmup_load() -> float:
    """The load level of the warm-up runs on this virtual phone (0..1; 1.0 when not set)."""
    try:
        return min(1.0, max(0.0, float(os.environ[WARMUP_LOAD_ENV])))
    except (KeyError, ValueError):
        return 1.0


LOAD_DIR = "sys/devlab/load.d"


class Heater:
    """While a benchmark runs, warm the virtual phone's thermal zones and battery a little.

    Writes ``/sys/class/thermal/thermal_zoneN/temp`` (millidegrees) and
    ``/sys/class/power_supply/battery/temp`` (tenths) under the sandbox named by
    ``DEVLAB_VIRTUAL_SANDBOX``; does nothing outside a virtual phone. The phone cools them back.
    """

    CPU_RATE = 1500  # millidegrees per second for CPU-like zones
    OTHER_RATE = 400
    BATTERY_RATE = 2  # tenths of a degree per second
    CPU_CAP, OTHER_CAP, BATTERY_CAP = 85_000, 60_000, 450

    def __init__(self, interval: float = 0.25, level: float = 1.0) -> None:
        root = os.environ.get(SANDBOX_ENV)
        self.root = Path(root) if root else None
        self.interval = interval
        self.level = level  # the share of a full load a virtual Monsoon draws for this tool
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heater:
        if self.root is not None and self.root.is_dir():
            self._mark_load(True)
            self._thread = threading.Thread(target=self._run, name="heater", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._mark_load(False)

    def set_level(self, level: float) -> None:
        """Draw ``level`` of a full load from now on (a warm-up phase unlike the timed loop)."""
        self.level = level
        if self._thread is not None:
            self._mark_load(True)

    def _mark_load(self, running: bool) -> None:
        """One file per running tool under /sys/devlab/load.d, holding its load level: a
        virtual Monsoon powering this phone draws more while any is there (see
        backends.virtual.registry). Replaced whole, so a reader never sees it half written."""
        assert self.root is not None
        marker = self.root / LOAD_DIR / str(os.getpid())
        with contextlib.suppress(OSError):
            if running:
                marker.parent.mkdir(parents=True, exist_ok=True)
                temp = marker.parent.parent / f".load.{os.getpid()}.tmp"
                temp.write_text(f"{self.level:g}\n")
                os.replace(temp, marker)
            else:
                marker.unlink(missing_ok=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            self.step(now - last)
            last = now

    def _files(self) -> Iterator[tuple[Path, float, int]]:
        assert self.root is not None
        for zone in sorted((self.root / "sys/class/thermal").glob("thermal_zone*")):
            with contextlib.suppress(OSError):
                kind = (zone / "type").read_text().strip().lower()
                if "cpu" in kind or "soc" in kind:
                    yield zone / "temp", self.CPU_RATE, self.CPU_CAP
                else:
                    yield zone / "temp", self.OTHER_RATE, self.OTHER_CAP
        yield (
            self.root / "sys/class/power_supply/battery/temp",
            self.BATTERY_RATE,
            self.BATTERY_CAP,
        )

    def step(self, seconds: float) -> None:
        for path, rate, cap in self._files():
            with contextlib.suppress(OSError, ValueError):
                value = int(path.read_text().strip())
                warmer = min(cap, value + max(1, round(rate * seconds)))
                if warmer > value:
                    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                    temp.write_text(f"{warmer}\n")
                    os.replace(temp, path)
