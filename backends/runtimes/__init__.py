"""Benchmark tools: argv builders and parsers of their real outputs (pure: no device here).

One module per tool: :mod:`.tflite` (``benchmark_model``), :mod:`.snpe` (``snpe-net-run``,
``snpe-diagview``, ``snpe_bench.py``, converters), :mod:`.ort_perf`
(``onnxruntime_perf_test``), :mod:`.openvino` (``benchmark_app``), :mod:`.mvnc` (NCS
profiles), :mod:`.vitis` (``xdputil``, ``test_performance``). :mod:`.ort_profile` reads
ONNX Runtime's JSON profile traces and :mod:`.ort_session` builds in-process session options.
Every parser returns :class:`~.common.ToolRun` (microseconds) or raises
:class:`~.common.ToolOutputError` quoting the tool's error lines.
"""

from backends.runtimes.common import (
    FORWARD_PROPAGATE,
    LAYERS_TIME,
    TOTAL_INFERENCE_TIME,
    ToolOutputError,
    ToolRun,
)

__all__ = [
    "FORWARD_PROPAGATE",
    "LAYERS_TIME",
    "TOTAL_INFERENCE_TIME",
    "ToolOutputError",
    "ToolRun",
]
