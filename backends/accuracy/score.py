"""Scoring a model's outputs on a set: top-1/top-5 against labels for a classifier, else the
mean absolute and largest error against reference outputs.

Accumulated sample by sample, so a set of any size is scored without holding its outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TOP_K = 5


@dataclass
class AccuracyReport:
    """What one job's evaluation set gave. ``top1``/``top5`` are fractions (0..1) of samples
    whose label is the arg-max / among the five largest of the first output (``top5`` is None
    for five classes or fewer); ``output_mae``/``output_max_error`` compare every output
    element with ``reference`` (expected outputs, or host ONNX Runtime's)."""

    set_name: str
    set_size: int
    set_path: str
    top1: float | None = None
    top5: float | None = None
    output_mae: float | None = None
    output_max_error: float | None = None
    classes: int | None = None
    reference: str | None = None  # "labels", "expected outputs" or "host onnxruntime"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_scores(outputs: Sequence[Any]) -> np.ndarray | None:
    """The first output as one sample's class scores ([C], [1, C] or [1, C, 1, 1], C >= 2),
    or None when it is not classifier-shaped."""
    if not outputs:
        return None
    first = np.asarray(outputs[0])
    squeezed = [d for d in first.shape if d != 1]
    if len(squeezed) != 1 or squeezed[0] < 2 or not np.issubdtype(first.dtype, np.number):
        return None
    return first.reshape(-1)


class TopK:
    """Counts of label hits at top-1 and top-5."""

    def __init__(self) -> None:
        self.count = self.top1 = self.top5 = 0
        self.classes = 0

    def add(self, scores: np.ndarray, label: int) -> None:
        self.classes = len(scores)
        if label >= self.classes:
            raise ValueError(
                f"label {label} is out of range for a model with {self.classes} classes"
            )
        order = np.argsort(-scores.astype(np.float64), kind="stable")
        self.count += 1
        self.top1 += int(order[0] == label)
        self.top5 += int(label in order[:TOP_K])

    def fill(self, report: AccuracyReport) -> None:
        if not self.count:
            return
        report.top1 = self.top1 / self.count
        report.top5 = self.top5 / self.count if self.classes > TOP_K else None
        report.classes = self.classes
        report.reference = "labels"


class Errors:
    """Mean absolute and largest error of outputs against reference outputs."""

    def __init__(self) -> None:
        self.total = 0.0
        self.elements = 0
        self.largest = 0.0

    def add(self, outputs: Sequence[Any], reference: Sequence[Any]) -> None:
        if len(outputs) != len(reference):
            raise ValueError(f"{len(outputs)} outputs, the reference has {len(reference)}")
        for index, (got, want) in enumerate(zip(outputs, reference, strict=True)):
            got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
            if got.size != want.size:
                raise ValueError(
                    f"output {index} has shape {list(got.shape)}, the reference {list(want.shape)}"
                )
            diff = np.abs(got.reshape(want.shape) - want)
            self.total += float(diff.sum())
            self.elements += diff.size
            self.largest = max(self.largest, float(diff.max(initial=0.0)))

    def fill(self, report: AccuracyReport, reference: str) -> None:
        if not self.elements:
            return
        report.output_mae = self.total / self.elements
        report.output_max_error = self.largest
        report.reference = report.reference or reference
