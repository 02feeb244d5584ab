"""ModuleUID: the canonical text that names a module in a latency table.

``Op[attr=value,...][[input shape],...]`` with attributes sorted by name and no spaces, so two
modules that compute the same thing on the same shapes get the same key however they were
built (attribute order, int vs numpy int, tuple vs list), and different ones never do.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any


def module_uid(
    op: str, attributes: Mapping[str, Any], input_shapes: Sequence[Sequence[int]]
) -> str:
    """``Conv[group=192,kernel_shape=[5,5],pads=[2,2,2,2],strides=[1,1]][[1,192,16,16]]``."""
    _check_word(op, "op name")
    parts = []
    for name in sorted(attributes):
        _check_word(name, "attribute name")
        parts.append(f"{name}={format_value(attributes[name])}")
    shapes = ",".join(_shape(shape) for shape in input_shapes)
    return f"{op}[{','.join(parts)}][{shapes}]"


def format_value(value: Any) -> str:
    """One attribute value: ints plain, floats short and stable, lists bracketed, text as-is."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return _float(float(value))
    if isinstance(value, str):
        _check_word(value, "attribute value")
        return value
    if isinstance(value, bytes):
        return format_value(value.decode("utf-8"))
    if isinstance(value, Sequence):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot put a {type(value).__name__} into a ModuleUID: {value!r}")


def _float(value: float) -> str:
    """7 significant digits (what a float32 attribute carries), always marked as a float."""
    text = f"{value:.7g}"
    if text.lstrip("-").isdigit():
        text += ".0"
    return text


def _shape(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def _check_word(text: str, what: str) -> None:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"a ModuleUID {what} must be non-empty and without spaces: {text!r}")
