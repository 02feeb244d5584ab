"""The stand-in ``snpe-dlc-quantize``'s quantizer: the encodings a DLC carries applied to its
ONNX model as fake quantization, so a "quantized" stand-in DLC computes what an 8-bit (or
16-bit) graph would, and the accuracy of a DSP run on the virtual phone moves as a real one does.

Not Qualcomm code: SNPE's published per-tensor asymmetric scheme, written from its formula. A
weight named in ``param_encodings`` is replaced by its quantized-then-dequantized value; each
tensor named in ``activation_encodings`` is passed through

    y = (clip(round(x / scale) - offset, 0, 2^b - 1) + offset) x scale

(ONNX Div, Round, Sub, Clip, Add, Mul: any bitwidth, opset 11 and later), which equals SNPE's
``clamp(round((x - min) / scale), 0, 2^b - 1)`` stored, dequantized as ``(q + offset) x scale``
since ``min = offset x scale``. Biases stay float (SNPE's ``--bias_bitwidth 32``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MIN_OPSET = 11  # Round and Clip with tensor bounds


def fake_quantize(onnx_bytes: bytes, overrides: Mapping[str, Any]) -> tuple[bytes, dict[str, int]]:
    """``(model bytes, counts)``: the model with the overrides' encodings applied; ``counts``
    says how many activations and weights were quantized (names the model lacks are skipped)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: the stand-in quantizer needs opset {MIN_OPSET} or later")
    graph = model.graph
    params = overrides.get("param_encodings") or {}
    weights = 0
    for index, tensor in enumerate(graph.initializer):
        enc = _first(params.get(tensor.name))
        if enc is None:
            continue
        scale, offset = _scale_offset(enc)
        value = numpy_helper.to_array(tensor).astype(np.float64)
        stored = np.clip(np.round(value / scale) - offset, 0, _levels(enc))
        fake = ((stored + offset) * scale).astype(numpy_helper.to_array(tensor).dtype)
        graph.initializer[index].CopyFrom(numpy_helper.from_array(fake, tensor.name))
        weights += 1

    initializers = {t.name for t in graph.initializer}
    graph_inputs = {v.name for v in graph.input} - initializers
    produced = {out for node in graph.node for out in node.output}
    activations = 0
    new_nodes = []
    for name, encs in (overrides.get("activation_encodings") or {}).items():
        enc = _first(encs)
        if (
            enc is None
            or name in initializers
            or (name not in produced and name not in graph_inputs)
        ):
            continue
        tag = f"{name}__standin_q"
        if name in graph_inputs:  # keep the input's name: its readers take the quantized copy
            source, target = name, f"{tag}_out"
            for node in graph.node:
                node.input[:] = [target if i == name else i for i in node.input]
        else:  # the producer writes a float copy; the quantized value keeps the name
            source, target = f"{tag}_float", name
            for node in graph.node:
                node.output[:] = [source if o == name else o for o in node.output]
        scale, offset = _scale_offset(enc)
        constants = {
            "scale": np.array(scale, np.float32),
            "offset": np.array(float(offset), np.float32),
            "low": np.array(0.0, np.float32),
            "high": np.array(float(_levels(enc)), np.float32),
        }
        for key, value in constants.items():
            graph.initializer.append(numpy_helper.from_array(value, f"{tag}_{key}"))
        steps = [
            ("Div", [source, f"{tag}_scale"]),
            ("Round", None),
            ("Sub", [None, f"{tag}_offset"]),
            ("Clip", [None, f"{tag}_low", f"{tag}_high"]),
            ("Add", [None, f"{tag}_offset"]),
            ("Mul", [None, f"{tag}_scale"]),
        ]
        previous = source
        for position, (op, inputs) in enumerate(steps):
            out = target if position == len(steps) - 1 else f"{tag}_{position}"
            wired = [previous] if inputs is None else [previous if i is None else i for i in inputs]
            new_nodes.append((name, helper.make_node(op, wired, [out], name=f"{tag}_{op}")))
            previous = out
        activations += 1
    _insert_after_producers(graph, new_nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString(), {"activations": activations, "weights": weights}


def _insert_after_producers(graph: Any, new_nodes: list[tuple[str, Any]]) -> None:
    """Keep the graph topologically sorted: each chain right after the node that feeds it."""
    chains: dict[str, list[Any]] = {}
    for name, node in new_nodes:
        chains.setdefault(name, []).append(node)
    ordered = []
    for name in list(chains):
        if not any(f"{name}__standin_q_float" in n.output for n in graph.node):
            ordered.extend(chains.pop(name))  # a graph input's chain goes first
    for node in graph.node:
        ordered.append(node)
        for out in node.output:
            if out.endswith("__standin_q_float"):
                ordered.extend(chains.pop(out[: -len("__standin_q_float")], []))
    del graph.node[:]
    graph.node.extend(ordered)


def _first(encs: Any) -> dict[str, Any] | None:
    if isinstance(encs, list) and encs and isinstance(encs[0], dict):
        return encs[0]
    return None


def _scale_offset(enc: Mapping[str, Any]) -> tuple[float, int]:
    """The encoding's scale and offset; from its min and max when it gives only those (SNPE
    accepts either): the range widened to hold 0, ``scale = (max - min) / (2^b - 1)``."""
    if enc.get("scale") and enc.get("offset") is not None:
        return float(enc["scale"]), int(enc["offset"])
    try:
        low, high = min(float(enc["min"]), 0.0), max(float(enc["max"]), 0.0)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"an encoding needs scale and offset, or min and max: {enc}") from error
    scale = max(high - low, 1e-8) / _levels(enc)
    return scale, round(low / scale)


def _levels(enc: Mapping[str, Any]) -> int:
    return (1 << int(enc.get("bitwidth", 8))) - 1
