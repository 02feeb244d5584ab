"""Per-tensor value ranges: activations from host ONNX Runtime on calibration feeds, weights
from the initializers.

Every float tensor a node reads or writes (graph inputs and outputs included) is made a graph
output of a copy of the model, run with graph optimisations off so the tensors keep the names
the converter (``snpe-onnx-to-dlc``) sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

Range = tuple[float, float]
WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}  # op -> weight input


def activation_names(model: onnx.ModelProto) -> list[str]:
    """Float activation tensors in graph order: node inputs and outputs that are not
    initializers (what MQBench writes activation encodings for, and the graph outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    params = {tensor.name for tensor in graph.initializer}
    types = {
        value.name: value.type.tensor_type.elem_type
        for value in [*graph.input, *graph.value_info, *graph.output]
    }
    names: dict[str, None] = {}
    for node in graph.node:
        for name in [*node.input, *node.output]:
            if name and name not in params and types.get(name) == TensorProto.FLOAT:
                names[name] = None
    return list(names)


def activation_ranges(
    model_path: str | Path, feeds: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, Range]:
    """(min, max) of every float activation over all calibration feeds."""
    model = onnx.load(str(model_path))
    names = activation_names(model)
    outputs = {value.name for value in model.graph.output}
    model.graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        for name in names
        if name not in outputs
    )
    inputs = {value.name for value in model.graph.input}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    fetch = [name for name in names if name not in inputs]
    ranges: dict[str, Range] = {}
    for feed in feeds:
        values = dict(zip(fetch, session.run(fetch, dict(feed)), strict=True))
        values.update({name: np.asarray(feed[name]) for name in names if name in inputs})
        for name, value in values.items():
            low, high = float(np.min(value)), float(np.max(value))
            if name in ranges:
                low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
            ranges[name] = (low, high)
    if not ranges:
        raise ValueError(f"{model_path}: the calibration set has no samples")
    return {name: ranges[name] for name in names if name in ranges}


def weight_ranges(model_path: str | Path) -> dict[str, Range]:
    """(min, max) of each float weight a Conv, ConvTranspose, Gemm or MatMul reads."""
    graph = onnx.load(str(model_path)).graph
    params = {tensor.name: tensor for tensor in graph.initializer}
    ranges: dict[str, Range] = {}
    for node in graph.node:
        index = WEIGHT_OPS.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in params:
            continue
        tensor = params[node.input[index]]
        if tensor.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        ranges[tensor.name] = (float(values.min()), float(values.max()))
    return ranges
