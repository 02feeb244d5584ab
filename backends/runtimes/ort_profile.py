"""The one reader of ONNX Runtime's profiler trace: per-node kernel times, run by run.

ONNX Runtime writes a Chrome-trace JSON list when profiling is on (``SessionOptions.
enable_profiling`` in process, ``onnxruntime_perf_test -p`` on a phone). Each inference is a
``model_run`` event of category ``Session``; the executor's own pass inside it is
``SequentialExecutor::Execute``; every node that ran is a ``Node`` event named
``<node>_kernel_time`` with its op type in ``args.op_name``. Times are microseconds.

:func:`read_ort_profile` keeps what the callers build on (the host's per-layer profile, the
virtual phone's TFLite-style operator tables and SNPE diag logs): the kept model runs and every
kernel event tagged with the run that contains it. Pure: it reads a file, nothing else.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from backends.core.records import LayerTime

MODEL_RUN = "model_run"
EXECUTOR = "SequentialExecutor::Execute"
KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class KernelTime:
    """One node's kernel execution: ``run`` is the index of the kept model run whose window
    holds its start, None when it lies outside every kept run (session setup, skipped runs)."""

    node: str
    op_type: str  # "" when the trace does not name it
    ts_us: float  # from the start of the trace
    dur_us: float
    run: int | None


@dataclass
class OrtProfile:
    """What one trace recorded, in microseconds.

    ``runs`` are the kept model runs as ``(start, end)``, in time order; ``kernels`` every
    kernel event in trace order; ``executor_us`` the executor's time of each pass that lies in
    a kept run ("Forward Propagate"), in time order.
    """

    path: str
    runs: list[tuple[float, float]] = field(default_factory=list)
    kernels: list[KernelTime] = field(default_factory=list)
    executor_us: list[float] = field(default_factory=list)

    def in_runs(self) -> list[KernelTime]:
        """The kernel events inside the kept runs, in trace order."""
        return [kernel for kernel in self.kernels if kernel.run is not None]

    def offset_us(self, kernel: KernelTime) -> float:
        """When ``kernel`` started, from the start of its run."""
        assert kernel.run is not None
        return kernel.ts_us - self.runs[kernel.run][0]

    def layer_times(self) -> list[LayerTime]:
        """Each node's mean kernel time over its calls in the kept runs, in order of first
        appearance in the trace (op type as last named)."""
        times: dict[str, list[float]] = defaultdict(list)
        op_types: dict[str, str] = {}
        for kernel in self.in_runs():
            times[kernel.node].append(kernel.dur_us)
            op_types[kernel.node] = kernel.op_type
        return [
            LayerTime(name=node, op_type=op_types[node], mean_us=float(np.mean(values)))
            for node, values in times.items()
        ]

    def layers_us(self) -> list[float]:
        """Per kept run, the sum of its kernel times ("Layers Time"); empty when the trace
        holds no kernel event at all (or no run)."""
        if not self.runs or not self.kernels:
            return []
        totals = [0.0] * len(self.runs)
        for kernel in self.in_runs():
            assert kernel.run is not None
            totals[kernel.run] += kernel.dur_us
        return totals


def read_ort_profile(trace_path: str, skip_runs: int = 0) -> OrtProfile:
    """Read a trace, leaving out its first ``skip_runs`` model runs (a warm-up the tool ran
    with the profiler on); a kernel counts for the first kept run whose window holds it."""
    with open(trace_path, encoding="utf-8") as handle:
        events = json.load(handle)
    runs = sorted(
        (float(e["ts"]), float(e["ts"] + e["dur"]))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == MODEL_RUN
    )[skip_runs:]

    def run_of(ts: float) -> int | None:
        for index, (start, end) in enumerate(runs):
            if start <= ts <= end:
                return index
        return None

    kernels = [
        KernelTime(
            node=e["name"][: -len(KERNEL_SUFFIX)],
            op_type=e.get("args", {}).get("op_name", ""),
            ts_us=float(e["ts"]),
            dur_us=float(e["dur"]),
            run=run_of(float(e["ts"])),
        )
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith(KERNEL_SUFFIX)
    ]
    executes = sorted(
        (float(e["ts"]), float(e["dur"]))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == EXECUTOR
    )
    return OrtProfile(
        path=trace_path,
        runs=runs,
        kernels=kernels,
        executor_us=[dur for ts, dur in executes if run_of(ts) is not None],
    )
