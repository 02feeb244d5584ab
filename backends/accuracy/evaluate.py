"""Evaluating a set through any session that hands back outputs, and the host reference.

A device plugs in by giving ``evaluate`` a function from feeds to outputs: the same
``BenchSession.outputs`` that output parity uses (``backends.devices.base``), so every
session with parity gets accuracy too. A session that can compute many samples in one device
call (``BatchOutputs``: SNPE on a phone, one ``snpe-net-run`` for a whole chunk) is given the
samples in chunks instead. Host ONNX Runtime (fp32 for a float model) is the reference where a
set has neither labels for a classifier nor expected outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from backends.accuracy.score import AccuracyReport, Errors, TopK, class_scores
from backends.accuracy.sets import TEST_DATA, EvalSet, Sample, SetError
from backends.core.records import Model
from backends.models.intake import ort_model_source
from backends.runtimes.ort_session import session_options

OutputsFn = Callable[[dict[str, np.ndarray]], list[Any] | None]
ProgressFn = Callable[[int, int], None]  # (samples done, set size)
BatchFn = Callable[[list[dict[str, np.ndarray]]], list[list[Any]]]
BATCH_SIZE = 100  # samples per device call: bounded pushes and pulls, progress in between


@runtime_checkable
class BatchOutputs(Protocol):
    """A session that computes many samples' outputs in one device call."""

    def outputs_batch(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[Any]]:
        """One list of outputs (graph order) per entry of ``feeds``."""
        ...


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
    batch: BatchFn | None = None,
) -> AccuracyReport | None:
    """Run every sample of ``eval_set`` through ``outputs`` (or ``batch``, ``BATCH_SIZE``
    samples a call) and score it; None when ``outputs`` says it cannot return them. SetError
    names a sample that does not fit."""
    report = AccuracyReport(eval_set.name, eval_set.size, str(eval_set.path))
    top_k, errors = TopK(), Errors()
    reference: OutputsFn | None = None
    for index, sample, got in _computed(outputs, batch, eval_set.samples(model)):
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


def _computed(
    outputs: OutputsFn, batch: BatchFn | None, samples: Iterable[Sample]
) -> Iterator[tuple[int, Sample, list[Any] | None]]:
    """``(index, sample, outputs)`` for every sample, a chunk per ``batch`` call when given."""
    if batch is None:
        for index, sample in enumerate(samples):
            yield index, sample, outputs(sample.feeds)
        return
    iterator, index = iter(samples), 0
    while chunk := list(islice(iterator, BATCH_SIZE)):
        results = batch([dict(sample.feeds) for sample in chunk])
        if len(results) != len(chunk):
            raise SetError(f"the device returned {len(results)} outputs for {len(chunk)} samples")
        for sample, got in zip(chunk, results, strict=True):
            yield index, sample, got
            index += 1
