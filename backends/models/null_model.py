"""A model that computes nothing but takes the same inputs and gives the same outputs.

Timing it through the same runtime and harness gives the *fixed per-call cost* of a model:
the Python call, binding the inputs, allocating and copying the outputs. Subtracted from a
model's latency it leaves the runtime's forward time, which adds up across the modules of a
network (a module table summed over a model counts that cost once per module, the model pays
it once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

NULL_OPSET = 13


def null_model_bytes(
    feeds: Mapping[str, np.ndarray], outputs: Sequence[tuple[str, np.ndarray]]
) -> bytes:
    """An ONNX model with ``feeds``' inputs (names, shapes, dtypes) whose outputs are constant
    tensors shaped like ``outputs`` (the model's own outputs for those feeds)."""
    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
        )
        for name, value in feeds.items()
    ]
    nodes, graph_outputs = [], []
    for name, value in outputs:
        array = np.zeros_like(np.asarray(value))
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array)))
        graph_outputs.append(
            helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)
            )
        )
    graph = helper.make_graph(nodes, "devlab_null", inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", NULL_OPSET)])
    model.ir_version = 8  # readable by every ONNX Runtime devlab supports
    onnx.checker.check_model(model)
    return model.SerializeToString()
