"""An ONNX Runtime static-quantized QDQ model: ``quantize_static`` over the calibration set.

Per-tensor MinMax calibration, QuantizeLinear/DequantizeLinear pairs around each quantized
op, so any ONNX Runtime (host, a phone's ``onnxruntime_perf_test``, an agent's runner) runs the
result as a normal model. 8-bit: uint8 activations, int8 weights; 16-bit: uint16 activations,
int16 weights (Q/DQ from the com.microsoft domain below opset 21).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from backends.quantize.calibration import FeedsReader

TYPES = {8: (QuantType.QUInt8, QuantType.QInt8), 16: (QuantType.QUInt16, QuantType.QInt16)}


def quantize_qdq(
    model_path: str | Path, out_path: str | Path, feeds: list[dict[str, np.ndarray]], bits: int = 8
) -> Path:
    """Write the QDQ model for ``model_path`` calibrated on ``feeds`` to ``out_path`` (after
    ONNX Runtime's recommended pre-processing: shape inference and graph optimisation)."""
    activation_type, weight_type = TYPES[bits]
    with tempfile.TemporaryDirectory(prefix="devlab-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # ONNX shape inference only: the symbolic pass would need sympy, a new dependency
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        _quantize(prepared, Path(out_path), feeds, activation_type, weight_type, bits)
    return Path(out_path)


def _quantize(
    source: Path,
    target: Path,
    feeds: list[dict[str, np.ndarray]],
    activation_type: QuantType,
    weight_type: QuantType,
    bits: int,
) -> None:
    quantize_static(
        str(source),
        str(target),
        FeedsReader(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=False,
        activation_type=activation_type,
        weight_type=weight_type,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"UseQDQContribOps": bits == 16},
    )
