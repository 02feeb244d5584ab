"""ONNX Runtime in this process: the one set of SessionOptions every in-process run uses.

The host device, the output-parity reference, the agent's onnxruntime runner and the perf
scripts' bare baseline loop all build their sessions with :func:`session_options`, so a
difference between them is never a difference of options.
"""

from __future__ import annotations

import onnxruntime as ort


def session_options(threads: int | None, profile_prefix: str | None = None) -> ort.SessionOptions:
    """Options shared by devlab's host runs and the bare baseline loop of the perf script."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    # Sessions stay alive across interleaved rounds: spinning idle threads of the waiting
    # sessions would steal the CPU from the one that runs (2 threads then lose to 1).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    options.log_severity_level = 3
    return options
