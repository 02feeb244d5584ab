"""Phone runtimes' benchmark tools: argv builders and parsers of their real outputs.

One module per tool: :mod:`.tflite` (``benchmark_model``), :mod:`.snpe` (``snpe-net-run``,
``snpe-diagview``, ``snpe_bench.py``, converters), :mod:`.ort_perf`
(``onnxruntime_perf_test``). Every parser returns :class:`~.common.ToolRun` (microseconds) or
raises :class:`~.common.ToolOutputError` quoting the tool's error lines.
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
