"""SNPE quantization encodings in the layout MQBench writes and ``snpe-onnx-to-dlc
--quantization_overrides`` reads::

    {"activation_encodings": {tensor: [{"bitwidth", "min", "max", "scale", "offset"}]},
     "param_encodings":      {weight: [...]}}

Per-tensor asymmetric: the range is widened to hold 0, ``scale = (max - min) / (2^b - 1)``,
``offset = round(min / scale)``, and min/max are then snapped to ``offset x scale`` and
``min + (2^b - 1) x scale`` (as AIMET and SNPE store them), so 0 is exactly representable and
the five numbers agree. A value x is stored as ``clamp(round((x - min) / scale), 0, 2^b - 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.quantize.ranges import Range

BITS = (8, 16)
PARAM_BITS = 8  # weights stay 8-bit; --bits sets the activations (SNPE's --act_bitwidth)
EMPTY_RANGE = 1e-8  # an all-zero tensor still needs a non-zero scale


def encoding(low: float, high: float, bits: int = 8) -> dict[str, Any]:
    """One tensor's encoding for the observed range [low, high]."""
    if bits not in BITS:
        raise ValueError(f"bitwidth must be one of {BITS}, got {bits}")
    levels = (1 << bits) - 1
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low < EMPTY_RANGE:
        high = low + EMPTY_RANGE
    scale = (high - low) / levels
    offset = round(low / scale)
    low = offset * scale
    return {
        "bitwidth": bits,
        "min": low,
        "max": low + levels * scale,
        "scale": scale,
        "offset": int(offset),
    }


def quantize(values: np.ndarray, enc: Mapping[str, Any]) -> np.ndarray:
    """The integers ``values`` are stored as under ``enc``."""
    levels = (1 << int(enc["bitwidth"])) - 1
    steps = np.round((np.asarray(values, np.float64) - enc["min"]) / enc["scale"])
    return np.clip(steps, 0, levels).astype(np.int64)


def dequantize(codes: np.ndarray, enc: Mapping[str, Any]) -> np.ndarray:
    return (np.asarray(codes, np.float64) + enc["offset"]) * enc["scale"]


def snpe_encodings(
    activations: Mapping[str, Range], params: Mapping[str, Range], bits: int = 8
) -> dict[str, Any]:
    """The overrides file's content for these activation and weight ranges."""
    return {
        "activation_encodings": {
            name: [encoding(low, high, bits)] for name, (low, high) in activations.items()
        },
        "param_encodings": {
            name: [encoding(low, high, PARAM_BITS)] for name, (low, high) in params.items()
        },
    }
