"""Output parity: does the device compute what host ONNX Runtime computes for the same input?

A latency is only worth comparing if the device ran the model faithfully. One fixed,
deterministic input (``parity_inputs``) goes through the device and through host ONNX Runtime
(``reference_outputs``); ``compare_outputs`` reports the largest difference, the cosine
similarity, top-1 agreement for classifier-shaped outputs, and whether that is within
tolerance.

Default tolerances (``FLOAT32``), measured on devlab's sample models and the canary: float32
runtimes with other kernels, fusions or thread counts (ORT with all graph optimisations off
and 2 threads, OpenVINO CPU in f32) differ from the reference by at most 2e-6 of the output's
largest magnitude and have 1 - cosine below 2e-7. A row passes when, per output,
``max |diff| <= atol + rtol x max |reference|`` (atol 1e-5, rtol 1e-3: 500x that margin, for
deeper nets) and the cosine is at least 0.9999. A conv weight scaled by 1.05 (about 5% on the
outputs) fails by 50x. Runtimes that compute in bf16/fp16/int8 by design differ by 0.5-3%
(OpenVINO's default bf16 on this CPU) and are flagged under ``FLOAT32``: that is true, and the
row shows the figures; ``REDUCED_PRECISION`` is a looser preset for such runtimes that still
catches a wrong model, layout or preprocessing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from backends.core.records import Model
from backends.models.intake import ort_model_source, random_inputs
from backends.runtimes.ort_session import session_options

PARITY_SEED = 1  # fixed forever, so parity figures are comparable across runs and devices


@dataclass(frozen=True)
class Tolerance:
    """``max |diff| <= atol + rtol x max |reference|`` per output, and ``cosine >= min_cosine``."""

    atol: float
    rtol: float
    min_cosine: float


FLOAT32 = Tolerance(atol=1e-5, rtol=1e-3, min_cosine=0.9999)
REDUCED_PRECISION = Tolerance(atol=1e-3, rtol=0.1, min_cosine=0.99)


class ParityError(Exception):
    """The host reference could not be computed (the model does not load or run in ORT)."""


@dataclass
class ParityReport:
    """How closely a device's outputs match host ONNX Runtime on the parity input.

    ``max_rel_diff`` is the largest ``max |diff| / max |reference|`` over the outputs (relative
    to the output's scale, so near-zero elements do not blow it up). ``cosine`` is over all
    outputs flattened together. ``top1_agree`` is None unless an output is classifier-shaped
    ([N, C] or [N, C, 1, 1], C >= 2); then True when every row's arg-max agrees. The figures
    are None when the outputs cannot be compared at all (count or shape mismatch).
    """

    ok: bool
    max_abs_diff: float | None
    max_rel_diff: float | None
    cosine: float | None
    top1_agree: bool | None
    reason: str = ""
    outputs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row_fields(self) -> dict[str, Any]:
        """The ``parity_*`` columns of a results row."""
        return {
            "parity_ok": self.ok,
            "parity_max_abs_diff": self.max_abs_diff,
            "parity_max_rel_diff": self.max_rel_diff,
            "parity_cosine": self.cosine,
            "parity_top1_agree": self.top1_agree,
            "parity_reason": self.reason or None,
        }


def parity_inputs(model: Model) -> dict[str, np.ndarray]:
    """The one fixed input every device and the host reference run for ``model``."""
    return random_inputs(model, seed=PARITY_SEED)


def reference_outputs(
    model_path: str | os.PathLike[str], inputs: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Host ONNX Runtime outputs (CPU, all graph optimisations, one thread), in graph order."""
    try:
        session = ort.InferenceSession(
            ort_model_source(model_path), session_options(1), providers=["CPUExecutionProvider"]
        )
        return list(session.run(None, dict(inputs)))
    except Exception as error:  # ORT raises its own exception types
        raise ParityError(
            f"{model_path}: host ONNX Runtime cannot run the model: {error}"
        ) from error


def compare_outputs(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    atol: float = FLOAT32.atol,
    rtol: float = FLOAT32.rtol,
    min_cosine: float = FLOAT32.min_cosine,
) -> ParityReport:
    """Compare a device's outputs with the reference's, output by output (same order).

    A candidate output whose shape differs only by size-1 dimensions (a runtime that returns
    [1000] for [1, 1000]) is reshaped; any other shape or count difference is reported as
    not ok. Integer and bool outputs must match exactly.
    """
    count = len(reference)
    if len(candidate) != count:
        reason = f"output count differs: reference {count}, candidate {len(candidate)}"
        return ParityReport(False, None, None, None, None, reason, count)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for index, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        ref, cand = np.asarray(ref), np.asarray(cand)
        if ref.shape != cand.shape:
            if ref.size != cand.size or _squeezed(ref.shape) != _squeezed(cand.shape):
                reason = (
                    f"output {index} shape differs: reference {list(ref.shape)}, "
                    f"candidate {list(cand.shape)}"
                )
                return ParityReport(False, None, None, None, None, reason, count)
            cand = cand.reshape(ref.shape)
        pairs.append((ref, cand))

    problems: list[str] = []
    max_abs = 0.0
    max_rel = 0.0
    worst_excess = -math.inf
    worst_text = ""
    for index, (ref, cand) in enumerate(pairs):
        a, b = ref.astype(np.float64), cand.astype(np.float64)
        finite = np.isfinite(a) & np.isfinite(b)
        same_special = ~finite & ((a == b) | (np.isnan(a) & np.isnan(b)))
        odd = int((~finite & ~same_special).sum())
        if odd:
            problems.append(f"output {index} has {odd} non-finite value(s) the other lacks")
        diff = float(np.abs(a[finite] - b[finite]).max(initial=0.0))
        scale = float(np.abs(a[finite]).max(initial=0.0))
        exact = not np.issubdtype(ref.dtype, np.floating)
        allowed = 0.0 if exact else atol + rtol * scale
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
        if diff > allowed and diff - allowed > worst_excess:
            worst_excess = diff - allowed
            worst_text = f"max |diff| {diff:.3g} > {allowed:.3g}"
    if worst_text:
        problems.insert(0, worst_text)

    cosine = _cosine(pairs)
    if cosine < min_cosine:
        problems.append(f"cosine {cosine:.6f} < {min_cosine:g}")
    top1 = _top1_agree(pairs)
    reason = ""
    if problems:
        details = list(problems)
        if cosine >= min_cosine:
            details.append(f"cosine {cosine:.6f}")
        if top1 is False:
            details.append("top-1 differs")
        reason = "outputs differ: " + ", ".join(details)
    ok = not problems
    return ParityReport(ok, max_abs, max_rel, cosine, top1, reason, count)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _cosine(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Cosine similarity of all outputs flattened into one vector (finite elements only)."""
    a = np.concatenate([ref.astype(np.float64).ravel() for ref, _ in pairs] or [np.zeros(0)])
    b = np.concatenate([c.astype(np.float64).ravel() for _, c in pairs] or [np.zeros(0)])
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 1.0 if norm_a == norm_b else 0.0
    return float(np.clip(a @ b / (norm_a * norm_b), -1.0, 1.0))


def _top1_agree(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> bool | None:
    """Arg-max agreement over every row of every classifier-shaped output; None if none is."""
    verdicts = []
    for ref, cand in pairs:
        if not _classifier_shaped(ref.shape):
            continue
        rows = ref.shape[0]
        ref_top = ref.reshape(rows, -1).argmax(axis=1)
        cand_top = cand.reshape(rows, -1).argmax(axis=1)
        verdicts.append(bool(np.array_equal(ref_top, cand_top)))
    return all(verdicts) if verdicts else None


def _classifier_shaped(shape: tuple[int, ...]) -> bool:
    """[N, C] or [N, C, 1, 1] with at least two classes."""
    if len(shape) == 2:
        return shape[1] >= 2
    return len(shape) == 4 and shape[1] >= 2 and shape[2] == 1 and shape[3] == 1
