"""Evaluating a set through any session that hands back outputs, and the host reference.

A device plugs in by giving ``evaluate`` a function from feeds to outputs: the same
``BenchSession.outputs`` that output parity uses (``backends.devices.base``), so every
session with parity gets accuracy too. Host ONNX Runtime (fp32 for a float model) is the
reference where a set has neither labels for a classifier nor expected outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from backends.accuracy.score import AccuracyReport, Errors, TopK, class_scores
from backends.accuracy.sets import TEST_DATA, EvalSet, SetError
from backends.core.records import Model
from backends.models.intake import ort_model_source
from backends.runtimes.ort_session import session_options

OutputsFn = Callable[[dict[str, np.ndarray]], list[Any] | None]
ProgressFn = Callable[[int, int], None]  # (samples done, set size)


def host_outputs(model_path: str) -> OutputsFn:
    """Host ONNX Runtime (CPU, one thread, the options every in-process run uses) as an
    outputs function."""
    try:
        session = ort.InferenceSession(
            ort_model_source(model_path), session_options(1), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # ORT raises its own exception types
        raise SetError(f"{model_path}: host ONNX Runtime cannot load the model: {error}") from error

    def run(feeds: Mapping[str, np.ndarray]) -> list[Any]:
        return list(session.run(None, dict(feeds)))

    return run


def evaluate(
    outputs: OutputsFn,
    model: Model,
    eval_set: EvalSet,
    progress: ProgressFn | None = None,
) -> AccuracyReport | None:
    """Run every sample of ``eval_set`` through ``outputs`` and score it; None when
    ``outputs`` says it cannot return them. SetError names a sample that does not fit."""
    report = AccuracyReport(eval_set.name, eval_set.size, str(eval_set.path))
    top_k, errors = TopK(), Errors()
    reference: OutputsFn | None = None
    for index, sample in enumerate(eval_set.samples(model)):
        got = outputs(sample.feeds)
        if got is None:
            return None
        scores = class_scores(got) if sample.label is not None else None
        try:
            if scores is not None and sample.label is not None:
                top_k.add(scores, sample.label)
            elif sample.expected is not None:
                errors.add(got, sample.expected)
            else:
                reference = reference or host_outputs(model.path)
                expected = reference(sample.feeds)
                assert expected is not None
                errors.add(got, expected)
        except ValueError as error:
            raise SetError(f"{eval_set.path}, sample {index}: {error}") from error
        if progress is not None:
            progress(index + 1, eval_set.size)
    top_k.fill(report)
    errors.fill(report, "expected outputs" if eval_set.kind == TEST_DATA else "host onnxruntime")
    return report
