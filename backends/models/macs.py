"""Multiply-accumulates of an ONNX graph: the MAC count a ``Model`` record carries.

Counted for the ops that dominate a CNN or an MLP (Conv, ConvInteger, QLinearConv,
ConvTranspose, Gemm, MatMul and its integer forms) in the main graph, from the shapes that
strict shape inference fixed (``backends.models.intake`` bakes the chosen input shapes in
first). A node whose shapes are unknown counts 0: a lower bound beats a crash.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import List, Optional  # typing's: the alias below runs on Python 3.8 (the agent)

import onnx

#: The standard ONNX operator domains (ops of other domains are not counted).
DEFAULT_DOMAINS = ("", "ai.onnx")

#: A tensor shape as inference left it: None where a dimension is unknown.
Shape = List[Optional[int]]

# Conv-like ops: index of the weight input ([M, C/group, k...]).
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
# MatMul-like ops: index of the A input (its last axis is the reduced one).
_MATMUL_A = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}


def count_macs(graph: onnx.GraphProto) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes in the main graph.

    Nodes whose shapes inference could not pin down count 0: a lower bound beats a crash.
    """
    shapes = dict(_known_shapes(graph))
    return sum(_node_macs(node, shapes) for node in graph.node if node.domain in DEFAULT_DOMAINS)


def _known_shapes(graph: onnx.GraphProto) -> Iterator[tuple[str, Shape]]:
    for tensor in graph.initializer:
        yield tensor.name, [int(d) for d in tensor.dims]
    for vi in (*graph.input, *graph.value_info, *graph.output):
        tensor = vi.type.tensor_type
        if vi.type.WhichOneof("value") == "tensor_type" and tensor.HasField("shape"):
            yield (
                vi.name,
                [
                    int(d.dim_value) if d.WhichOneof("value") == "dim_value" else None
                    for d in tensor.shape.dim
                ],
            )


def _node_macs(node: onnx.NodeProto, shapes: dict[str, Shape]) -> int:
    def shape(index: int, names: Sequence[str]) -> list[int] | None:
        if index >= len(names) or names[index] not in shapes:
            return None
        dims = shapes[names[index]]
        return None if any(d is None for d in dims) else [int(d) for d in dims]

    op = node.op_type
    if op in _CONV_WEIGHT:
        return _conv_macs(shape(0, node.output), shape(_CONV_WEIGHT[op], node.input))
    if op == "ConvTranspose":
        return _conv_macs(shape(0, node.input), shape(1, node.input))
    if op == "Gemm":
        attrs = {a.name: a.i for a in node.attribute}
        return _gemm_macs(shape(0, node.input), shape(1, node.input), attrs)
    if op in _MATMUL_A:
        return _matmul_macs(shape(_MATMUL_A[op], node.input), shape(0, node.output))
    return 0


def _conv_macs(elements_shape: list[int] | None, weight: list[int] | None) -> int:
    """Conv: out elements x (C/group x kernel). ConvTranspose: in elements x (M/group x kernel).

    Both are "each element of one side meets ``prod(W.shape[1:])`` weights".
    """
    if elements_shape is None or weight is None or len(weight) < 2:
        return 0
    return math.prod(elements_shape) * math.prod(weight[1:])


def _gemm_macs(a: list[int] | None, b: list[int] | None, attrs: dict[str, int]) -> int:
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return 0
    m, k = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
    n = b[0] if attrs.get("transB", 0) else b[1]
    return m * n * k


def _matmul_macs(a: list[int] | None, out: list[int] | None) -> int:
    """Every output element is a dot product over A's last axis (batch dims included in out)."""
    if a is None or out is None or not a:
        return 0
    return math.prod(out) * a[-1]
