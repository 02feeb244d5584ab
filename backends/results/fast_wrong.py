"""The "fast but wrong" report: per model and device, a float run beside its quantized run, with
the latency gained and the accuracy lost, flagged when the loss passes a threshold.

A quantized run is told from its float source by what devlab itself writes, so nothing has to
be declared by hand:

* ``devlab quantize --scheme ort-qdq`` names its model ``<model>.int8-qdq.onnx`` (``int16`` with
  ``--bits 16``): a row of that model is the quantized twin of ``<model>`` on the same device;
* an SNPE DSP run (``snpe-dsp``) runs a quantized DLC of the same model (with ``devlab quantize
  --scheme snpe`` encodings when ``--quantization-overrides`` was given): its float twin is the
  same model with another runtime on the same device, SNPE's CPU first.

Rows are plain dicts, flat (``settings.clip_ranges``, as ``results.csv`` reads back) or nested
(as ``results_records`` builds them), so the CLI, the TUI and ``devlab report`` share this code.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backends.results.tables import atomic_write_text

DEFAULT_MAX_DROP_POINTS = 2.0  # top-1 points an int8 twin may lose before it is flagged
QDQ_NAME = re.compile(r"^(?P<source>.+)\.int(?P<bits>8|16)-qdq$")
QUANTIZED_RUNTIMES = {"snpe-dsp": "int8"}  # runtimes that only run a quantized graph
FLOAT_TWIN_ORDER = ("snpe-cpu", "snpe-gpu", "ort", "onnxruntime")  # for a quantized runtime
FAST_WRONG_FILES = ("fast_wrong.csv", "fast_wrong.json")

FP32 = "fp32"


@dataclass(frozen=True)
class Variant:
    """What a row measured: which float model it comes from, and in which precision."""

    source: str  # the float model's name
    precision: str  # fp32, int8, int16
    scheme: str | None  # ort-qdq, snpe-encodings, snpe-calibrated; None for float


@dataclass
class FastWrongRow:
    """One float run and its quantized twin on one device."""

    model: str
    device: str
    scheme: str
    precision: str
    fp32_model: str
    fp32_runtime: str
    quant_model: str
    quant_runtime: str
    accuracy_set: str | None
    fp32_us: float | None
    quant_us: float | None
    speedup: float | None  # fp32 latency / quantized latency
    fp32_top1: float | None
    quant_top1: float | None
    drop_points: float | None  # (fp32 - quantized) top-1, in percentage points
    flagged: bool  # drop_points > the threshold
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParetoPoint:
    """One done row with latency and top-1, for the accuracy-vs-latency plot."""

    label: str
    device: str
    precision: str
    latency_us: float
    top1: float


def variant_of(row: Mapping[str, Any]) -> Variant:
    """The float source and precision a results row stands for (see the module docstring)."""
    model = str(_get(row, "model") or "")
    match = QDQ_NAME.match(model)
    if match:
        return Variant(match["source"], f"int{match['bits']}", "ort-qdq")
    runtime = str(_get(row, "runtime") or "")
    if runtime in QUANTIZED_RUNTIMES:
        scheme = "snpe-encodings" if _get(row, "settings.clip_ranges") else "snpe-calibrated"
        return Variant(model, QUANTIZED_RUNTIMES[runtime], scheme)
    return Variant(model, FP32, None)


def latency_us(row: Mapping[str, Any]) -> float | None:
    """The row's headline latency (drift-normalised where it was), else its median, else its
    mean (tools that print averages only, as snpe-diagview)."""
    for key in ("headline_us", "median_us", "mean_us"):
        value = _number(_get(row, key))
        if value is not None and value > 0:
            return value
    return None


def fast_wrong_rows(
    rows: Iterable[Mapping[str, Any]], max_drop_points: float = DEFAULT_MAX_DROP_POINTS
) -> list[FastWrongRow]:
    """Every quantized run paired with its float twin on the same device, store order kept;
    a key measured twice keeps the latest row. Rows that did not finish are left out."""
    latest: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for row in rows:
        if str(_get(row, "status") or "done") != "done":
            continue
        latest[(str(_get(row, "model")), str(_get(row, "device")), str(_get(row, "runtime")))] = row
    floats: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in latest.values():
        variant = variant_of(row)
        if variant.precision == FP32:
            floats.setdefault((variant.source, str(_get(row, "device"))), []).append(row)
    paired = []
    for row in latest.values():
        variant = variant_of(row)
        if variant.precision == FP32:
            continue
        twin = _float_twin(floats.get((variant.source, str(_get(row, "device"))), []), row)
        if twin is not None:
            paired.append(_pair(twin, row, variant, max_drop_points))
    return paired


def pareto_points(rows: Iterable[Mapping[str, Any]]) -> list[ParetoPoint]:
    """Done rows that have both a latency and a top-1 (the latest per model, device, runtime)."""
    latest: dict[tuple[str, str, str], ParetoPoint] = {}
    for row in rows:
        if str(_get(row, "status") or "done") != "done":
            continue
        latency, top1 = latency_us(row), _number(_get(row, "accuracy_top1"))
        if latency is None or top1 is None:
            continue
        model, device, runtime = (str(_get(row, k)) for k in ("model", "device", "runtime"))
        latest[(model, device, runtime)] = ParetoPoint(
            f"{model} ({runtime})", device, variant_of(row).precision, latency, top1
        )
    return list(latest.values())


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats, by rising latency.

    A point is dominated when another is at least as fast and at least as accurate, and
    strictly better in one; of exact duplicates the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = -math.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def has_accuracy(rows: Iterable[Mapping[str, Any]]) -> bool:
    return any(_number(_get(row, "accuracy_top1")) is not None for row in rows)


def write_fast_wrong(out_dir: str | Path, table: Sequence[FastWrongRow]) -> list[Path]:
    """fast_wrong.csv and fast_wrong.json beside the results tables."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [row.to_dict() for row in table]
    columns = list(FastWrongRow.__dataclass_fields__)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
    csv_path, json_path = (out / name for name in FAST_WRONG_FILES)
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(json_path, json.dumps(records, indent=2) + "\n")
    return [csv_path, json_path]


def _float_twin(
    candidates: list[Mapping[str, Any]], quantized: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The float run to set beside ``quantized``: the same runtime, else (for a runtime that only
    runs quantized graphs) the first of FLOAT_TWIN_ORDER, else any, preferring the same set."""
    if not candidates:
        return None
    runtime = _get(quantized, "runtime")
    same_set = [c for c in candidates if _get(c, "accuracy_set") == _get(quantized, "accuracy_set")]
    pool = same_set or candidates
    for row in pool:
        if _get(row, "runtime") == runtime:
            return row
    ranked = sorted(
        pool,
        key=lambda r: (
            FLOAT_TWIN_ORDER.index(_get(r, "runtime"))
            if _get(r, "runtime") in FLOAT_TWIN_ORDER
            else len(FLOAT_TWIN_ORDER),
        ),
    )
    return ranked[0]


def _pair(
    fp32: Mapping[str, Any], quant: Mapping[str, Any], variant: Variant, max_drop: float
) -> FastWrongRow:
    fp32_us, quant_us = latency_us(fp32), latency_us(quant)
    fp32_top1 = _number(_get(fp32, "accuracy_top1"))
    quant_top1 = _number(_get(quant, "accuracy_top1"))
    set_a, set_b = _get(fp32, "accuracy_set"), _get(quant, "accuracy_set")
    note = ""
    drop = None
    if set_a != set_b and set_a and set_b:
        note = f"scored on different sets ({set_a} vs {set_b}): no drop computed"
    elif fp32_top1 is None or quant_top1 is None:
        note = "no top-1 on one side: run both with --accuracy SET"
    else:
        drop = round((fp32_top1 - quant_top1) * 100.0, 4)
    flagged = drop is not None and drop > max_drop
    if flagged:
        note = f"loses {drop:.2f} points of top-1 (threshold {max_drop:g})"
    return FastWrongRow(
        model=variant.source,
        device=str(_get(quant, "device")),
        scheme=variant.scheme or "",
        precision=variant.precision,
        fp32_model=str(_get(fp32, "model")),
        fp32_runtime=str(_get(fp32, "runtime")),
        quant_model=str(_get(quant, "model")),
        quant_runtime=str(_get(quant, "runtime")),
        accuracy_set=(set_b or set_a) or None,
        fp32_us=fp32_us,
        quant_us=quant_us,
        speedup=round(fp32_us / quant_us, 4) if fp32_us and quant_us else None,
        fp32_top1=fp32_top1,
        quant_top1=quant_top1,
        drop_points=drop,
        flagged=flagged,
        note=note,
    )


def _get(row: Mapping[str, Any], key: str) -> Any:
    """``row[key]`` from a flat row (``settings.clip_ranges``) or a nested one."""
    if key in row:
        value = row[key]
    else:
        head, _, rest = key.partition(".")
        inner = row.get(head)
        value = inner.get(rest) if rest and isinstance(inner, Mapping) else None
    if isinstance(value, float) and math.isnan(value):
        return None
    return None if value == "" else value


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
