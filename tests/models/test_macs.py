"""MAC counting (backends.models.macs) straight on graphs, without the intake around it."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from backends.models.macs import count_macs


def test_count_macs_of_a_graph_with_known_and_unknown_shapes() -> None:
    weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("MatMul", ["r", "m"], ["y"]),
            helper.make_node("MatMul", ["y", "n"], ["z"], domain="com.acme"),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, [4, 5]),
            helper.make_tensor_value_info("n", TensorProto.FLOAT, [5, 2]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        initializer=[weight],
        value_info=[
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 8, 4, 4]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 8, 4, "w"]),
        ],
    )
    # Conv: 8*4*4 outputs x 3*3*3 weights each; the MatMul's input has an unknown dimension
    # (counts 0) and the last node is of another domain (not counted)
    assert count_macs(graph) == 8 * 4 * 4 * 27
