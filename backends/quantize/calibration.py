"""A calibration set's inputs as a model takes them, for range statistics and ORT's reader.

Calibration sets are evaluation sets (``backends.accuracy.sets``): same folders, same
preprocessing recipe, so calibration sees exactly what evaluation and the device see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from backends.accuracy.sets import open_set
from backends.core.records import Model


def calibration_feeds(model: Model, set_path: str | Path) -> list[dict[str, np.ndarray]]:
    """Every sample's feeds; SetError when the set is missing or does not fit the model."""
    return [sample.feeds for sample in open_set(set_path).samples(model)]


class FeedsReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over feeds already read."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._next = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._feeds)
