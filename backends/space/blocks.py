"""ONNX graphs for the pieces of a space: stem, inverted residual, skip, head.

Every op is first described as an ``OpRecord`` (op type, attributes, input shapes), then
emitted as an ONNX node with random weights. The same records give the op-level ModuleUIDs
and rebuild any single op as its own model, so the op table, the block table and the sampled
architectures can never disagree about what a module is. BatchNorm is taken as folded into the
conv biases and ReLU6 is ``Clip(0, 6)``, as in ``assets/make_models.py``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from backends.space.spec import BlockChoice, conv_out
from backends.space.uid import module_uid

OPSET = 17  # the opset and IR version of assets/make_models.py: current onnxruntime loads them
IR_VERSION = 9
PRODUCER = "devlab-space"

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: Shape


@dataclass(frozen=True)
class OpInput:
    """One input of an op: a data tensor, a weight or bias, or a scalar constant (Clip bounds)."""

    role: str  # "data", "weight", "bias" or "scalar"
    name: str  # the schema's input name for scalars ("min", "max"), else informative only
    shape: Shape
    value: float | None = None


@dataclass(frozen=True)
class OpRecord:
    """One ONNX op in context. Its UID lists the ONNX attributes plus the scalar constants as
    attributes, then the shapes of the data and weight inputs in input order."""

    op: str
    attributes: tuple[tuple[str, Any], ...]
    inputs: tuple[OpInput, ...]
    output_shape: Shape

    @property
    def uid(self) -> str:
        attrs = dict(self.attributes)
        attrs.update({i.name: i.value for i in self.inputs if i.role == "scalar"})
        shapes = [i.shape for i in self.inputs if i.role != "scalar"]
        return module_uid(self.op, attrs, shapes)

    @property
    def data_shapes(self) -> list[Shape]:
        return [i.shape for i in self.inputs if i.role == "data"]


def seed_for(text: str) -> int:
    """A stable seed from text, so regenerated files are byte-identical (same sha256)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


class GraphBuilder:
    """Collects ops; with ``seed=None`` it only tracks shapes and records (no weights made)."""

    def __init__(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.records: list[OpRecord] = []
        self._count = 0

    # --- ops ---------------------------------------------------------------------------------

    def conv(self, x: Tensor, c_out: int, kernel: int, stride: int = 1, group: int = 1) -> Tensor:
        """Conv with bias (BatchNorm folded), padded by kernel // 2."""
        _, c_in, h, w = x.shape
        pad = kernel // 2
        record = OpRecord(
            "Conv",
            (
                ("group", group),
                ("kernel_shape", (kernel, kernel)),
                ("pads", (pad, pad, pad, pad)),
                ("strides", (stride, stride)),
            ),
            (
                OpInput("data", "X", x.shape),
                OpInput("weight", "W", (c_out, c_in // group, kernel, kernel)),
                OpInput("bias", "B", (c_out,)),
            ),
            (1, c_out, conv_out(h, kernel, stride), conv_out(w, kernel, stride)),
        )
        return self.apply(record, [x])

    def relu6(self, x: Tensor) -> Tensor:
        record = OpRecord(
            "Clip",
            (),
            (
                OpInput("data", "input", x.shape),
                OpInput("scalar", "min", (), 0.0),
                OpInput("scalar", "max", (), 6.0),
            ),
            x.shape,
        )
        return self.apply(record, [x])

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        record = OpRecord(
            "Add", (), (OpInput("data", "A", a.shape), OpInput("data", "B", b.shape)), a.shape
        )
        return self.apply(record, [a, b])

    def global_average_pool(self, x: Tensor) -> Tensor:
        out = (*x.shape[:2], *(1 for _ in x.shape[2:]))
        record = OpRecord("GlobalAveragePool", (), (OpInput("data", "X", x.shape),), out)
        return self.apply(record, [x])

    def flatten(self, x: Tensor) -> Tensor:
        out = (x.shape[0], math.prod(x.shape[1:]))
        record = OpRecord("Flatten", (("axis", 1),), (OpInput("data", "input", x.shape),), out)
        return self.apply(record, [x])

    def gemm(self, x: Tensor, c_out: int) -> Tensor:
        """Fully connected, laid out like torch.nn.Linear (weight [out, in], transB=1)."""
        record = OpRecord(
            "Gemm",
            (("transB", 1),),
            (
                OpInput("data", "A", x.shape),
                OpInput("weight", "B", (c_out, x.shape[1])),
                OpInput("bias", "C", (c_out,)),
            ),
            (x.shape[0], c_out),
        )
        return self.apply(record, [x])

    def identity(self, x: Tensor) -> Tensor:
        record = OpRecord("Identity", (), (OpInput("data", "input", x.shape),), x.shape)
        return self.apply(record, [x])

    # --- emitting ----------------------------------------------------------------------------

    def apply(self, record: OpRecord, data: Sequence[Tensor] | None = None) -> Tensor:
        """Record the op and (with weights on) emit its node; ``data`` feeds the data inputs."""
        self._count += 1
        index = self._count
        out = Tensor(f"t{index}", record.output_shape)
        self.records.append(record)
        if self.rng is None:
            return out
        feeds = list(data or [])
        names: list[str] = []
        for position, item in enumerate(record.inputs):
            if item.role == "data":
                names.append(feeds.pop(0).name)
                continue
            name = f"n{index}.{item.name}.{position}"
            self.initializers.append(numpy_helper.from_array(self._values(item), name))
            names.append(name)
        node = helper.make_node(
            record.op, names, [out.name], name=f"n{index}_{record.op}", **dict(record.attributes)
        )
        self.nodes.append(node)
        return out

    def _values(self, item: OpInput) -> np.ndarray:
        assert self.rng is not None
        if item.role == "scalar":
            return np.array(item.value, np.float32)
        if item.role == "bias":
            return (self.rng.standard_normal(item.shape) * 0.01).astype(np.float32)
        fan_in = math.prod(item.shape[1:])
        std = math.sqrt(2.0 / fan_in)
        return (self.rng.standard_normal(item.shape) * std).astype(np.float32)

    def model(
        self,
        name: str,
        inputs: Sequence[Tensor],
        output: Tensor,
        metadata: Mapping[str, str],
        output_name: str = "output",
    ) -> onnx.ModelProto:
        """The finished model: named inputs, one output, devlab metadata, opset 17."""
        if self.rng is None:
            raise RuntimeError("a shape-only GraphBuilder (seed=None) cannot make a model")
        nodes = list(self.nodes)
        renamed = _rename(nodes, output.name, output_name)
        graph = helper.make_graph(
            renamed,
            name,
            [
                helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape))
                for t in inputs
            ],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(output.shape))],
            self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name=PRODUCER,
            producer_version="1",
        )
        model.doc_string = f"{name}: random weights, generated by devlab space"
        helper.set_model_props(model, dict(metadata))
        return model


def _rename(nodes: list[onnx.NodeProto], old: str, new: str) -> list[onnx.NodeProto]:
    """Give the graph's output tensor its public name (it is produced by the last node)."""
    for node in nodes:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    return nodes


# --- the blocks of a MobileNetV2 space -------------------------------------------------------


def emit_stem(b: GraphBuilder, x: Tensor, out_channels: int, kernel: int, stride: int) -> Tensor:
    """Conv kxk/stride + ReLU6."""
    return b.relu6(b.conv(x, out_channels, kernel, stride))


def emit_block(
    b: GraphBuilder, x: Tensor, out_channels: int, stride: int, choice: BlockChoice
) -> Tensor:
    """Inverted residual: [1x1 expand + ReLU6] -> depthwise kxk + ReLU6 -> 1x1 project, plus
    the residual Add when the shape is kept. Skip emits nothing and returns ``x``."""
    if choice.skip:
        return x
    c_in = x.shape[1]
    hidden = c_in * choice.expand
    h = x
    if choice.expand != 1:
        h = b.relu6(b.conv(h, hidden, 1))
    h = b.relu6(b.conv(h, hidden, choice.kernel, stride, group=hidden))
    h = b.conv(h, out_channels, 1)
    if stride == 1 and c_in == out_channels:
        h = b.add(x, h)
    return h


def emit_head(b: GraphBuilder, x: Tensor, out_channels: int, classes: int) -> Tensor:
    """1x1 conv + ReLU6, global average pool, flatten, fully connected."""
    h = b.relu6(b.conv(x, out_channels, 1))
    return b.gemm(b.flatten(b.global_average_pool(h)), classes)
