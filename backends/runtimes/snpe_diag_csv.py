"""``snpe-diagview --output FILE.csv``: every inference of a diagnostic log, one row per message.

The text report prints averages only; the CSV has each inference's ``TOTAL_INFERENCE_TIME``,
``FORWARD_PROPAGATE`` and ``FORWARD_PROPAGATE_LAYER`` rows, so it gives the distribution
(median, min, max, percentiles) and Layers Time per inference. Layout as SNPE 1.17 writes it::

    Msg Timestamp, Message, Layer Id, Time
    67156044030,LOAD,-1,128
    67156044036,TOTAL_INFERENCE_TIME,-1,326
    67156044036,FORWARD_PROPAGATE_LAYER,0,1

``extra["total_inference_us"]`` keeps every inference's Total Inference Time, in order (what
devlab's SNPE session times a round by). Columns are found by their header names. 1.17 has
four; 2.x adds a fifth headed ``Runtime`` that holds the unit on statistic rows (``us``,
``NONE`` for what was not measured) and the runtime on layer rows. Without a unit, times are
microseconds (diagview's ``Time Scale: 1e-06``). A new inference starts at each
``TOTAL_INFERENCE_TIME`` row. Rows that cannot be read, and unknown latency-like messages, are
warnings quoting the row, never dropped silently.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.runtimes.common import ToolOutputError, ToolRun, clean_log, tail, to_us
from backends.runtimes.snpe import (
    DIAGVIEW,
    INIT_KEYS_BY_SQUASHED_NAME,
    LATENCY_WORDS,
    apply_layer_rows,
    squashed_name,
)

TOTAL = "TOTAL_INFERENCE_TIME"
FORWARD = "FORWARD_PROPAGATE"
LAYER = "FORWARD_PROPAGATE_LAYER"
# What a 2.x CSV's fifth column (headed ``Runtime``) holds on statistic rows: the unit.
_UNITS = {"us", "ms", "s", "ns", "sec", "cycles", "cycle", "none", ""}


def _columns(header: list[str]) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    found = {}
    for key in ("message", "layer", "time"):
        # "Time" itself before any other name starting so (never "Msg Timestamp"'s column)
        matches = [i for i, name in enumerate(names) if name == key]
        matches += [i for i, name in enumerate(names) if name.startswith(key) and name != key]
        if not matches:
            raise ToolOutputError(
                DIAGVIEW,
                [",".join(header)],
                reason=f"not a snpe-diagview CSV: no {key!r} column in the header",
            )
        found[key] = matches[0]
    # 2.x: "Runtime" (2.5); 2.25 writes "RuntimeGraph Name", a comma short, over rows that
    # hold the runtime/unit and then the graph's name
    for key in ("unit", "runtime"):
        matches = [i for i, name in enumerate(names) if name.startswith(key)]
        if matches:
            found[key] = matches[0]
    return found


@dataclass
class _Reading:
    """What the rows say, gathered before the statistics are made."""

    totals: list[float] = field(default_factory=list)
    forwards: list[float] = field(default_factory=list)
    layers: list[dict[int, tuple[float, str, str]]] = field(default_factory=list)
    session: dict[str, float] = field(default_factory=dict)
    averages: dict[str, float] = field(default_factory=dict)
    per_inference: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    not_recorded: list[str] = field(default_factory=list)


def parse_diagview_csv(
    text: str,
    *,
    input_layer_indices: Collection[int] | None = None,
    layer_names: Mapping[int, str] | None = None,
) -> ToolRun:
    """The :class:`ToolRun` of one ``snpe-diagview --output`` CSV: per-inference statistics of
    Total Inference Time and Forward Propagate, mean layer times and Layers Time with its
    per-inference range. ToolOutputError when it is not such a CSV or holds no inference.

    The CSV names no layer: ``layer_names`` (index -> name, e.g. from the same log's text
    report) names them, ``input_layer_indices`` says which are the input (default: index 0,
    the rule of the unnamed layout)."""
    text = clean_log(text)
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise ToolOutputError(DIAGVIEW, [], reason="empty snpe-diagview CSV")
    if not any("message" in cell.lower() for cell in rows[0]):
        raise ToolOutputError(
            DIAGVIEW, tail(text.splitlines()), reason="no snpe-diagview CSV header"
        )
    columns = _columns(rows[0])
    run = ToolRun(tool=DIAGVIEW)
    seen = _Reading()
    for row in rows[1:]:
        _read_row(run, seen, row, columns)
    if not seen.totals:
        raise ToolOutputError(
            DIAGVIEW, tail(text.splitlines()), reason=f"no {TOTAL} row in the CSV"
        )
    _set_totals(run, np.array(seen.totals))
    run.extra["total_inference_us"] = seen.totals  # every inference, in order
    if seen.forwards:
        values = np.array(seen.forwards)
        run.forward_us = {
            "min": float(values.min()),
            "mean": float(values.mean()),
            "max": float(values.max()),
            "count": len(seen.forwards),
        }
    run.init_us = seen.session.get("init")  # the set-up's, logged before the inferences
    run.extra["init"] = seen.session
    if seen.averages:
        run.extra["averages"] = seen.averages
    if seen.not_recorded:
        run.extra["not_recorded"] = seen.not_recorded
    if seen.per_inference:
        run.extra["per_inference"] = {
            name: {"count": len(values), "mean_us": float(np.mean(values))}
            for name, values in seen.per_inference.items()
        }
    if any(seen.layers):
        _set_layers(run, seen.layers, input_layer_indices, layer_names or {})
    return run


def _read_row(run: ToolRun, seen: _Reading, row: list[str], columns: dict[str, int]) -> None:
    line = ",".join(row)
    try:
        message = row[columns["message"]].strip().upper()
        layer = int(row[columns["layer"]])
        value = float(row[columns["time"]])
        unit, runtime = "us", ""
        for key in ("unit", "runtime"):  # 2.x heads its unit column "Runtime"
            if key in columns and columns[key] < len(row):
                cell = row[columns[key]].strip()
                if cell.lower() in _UNITS:
                    unit = cell or "NONE"  # 2.25 leaves what it did not measure blank
                else:
                    runtime = cell
        if unit.lower() not in ("none", "cycles", "cycle"):
            value = to_us(value, unit)
    except (IndexError, ValueError) as error:
        run.warnings.append(f"{DIAGVIEW}: cannot read CSV row {line!r} ({error})")
        return
    if unit.upper() == "NONE":  # "RPC INIT TIME,-1,0,NONE" / ",0,,": not measured, not 0 us
        if value != 0:
            run.warnings.append(
                f"{DIAGVIEW}: cannot read CSV row {line!r} (a value without a unit)"
            )
        elif message not in seen.not_recorded:
            seen.not_recorded.append(message)
        return
    if message == LAYER:
        if not seen.layers:
            seen.layers.append({})
        seen.layers[-1][layer] = (value, unit, runtime)
        return
    if unit.lower() in ("cycles", "cycle"):
        seen.per_inference[f"{message} (cycles)"].append(value)
        return
    if message == TOTAL:
        seen.totals.append(value)
        seen.layers.append({})
    elif message == FORWARD:
        seen.forwards.append(value)
    elif message.startswith("AVG_"):
        seen.averages[message] = value
    elif (key := INIT_KEYS_BY_SQUASHED_NAME.get(squashed_name(message))) and not seen.totals:
        # the set-up's messages (1.17 ``LOAD``, 2.x also ``DE-INIT``, ``CREATE NETWORK(S)``)
        seen.session.setdefault(key, value)
    else:
        if (
            message not in seen.per_inference
            and squashed_name(message) not in INIT_KEYS_BY_SQUASHED_NAME
            and any(word in message.lower() for word in LATENCY_WORDS)
        ):
            run.warnings.append(
                f"{DIAGVIEW}: unknown message {message!r} (row {line!r}) kept in "
                "per_inference, not read as a latency"
            )
        seen.per_inference[message].append(value)


def _set_totals(run: ToolRun, totals: np.ndarray) -> None:
    run.count = int(totals.size)
    run.first_inference_us = float(totals[0])
    run.avg_us = float(totals.mean())
    run.median_us = float(np.median(totals))
    run.min_us = float(totals.min())
    run.max_us = float(totals.max())
    run.std_us = float(totals.std(ddof=1)) if totals.size > 1 else 0.0
    run.p90_us, run.p95_us, run.p99_us = (float(v) for v in np.percentile(totals, [90, 95, 99]))
    run.total_inference = {
        "min": run.min_us,
        "mean": run.avg_us,
        "max": run.max_us,
        "median": run.median_us,
        "count": run.count,
    }


def _set_layers(
    run: ToolRun,
    layers: list[dict[int, tuple[float, str, str]]],
    input_layer_indices: Collection[int] | None,
    names: Mapping[int, str],
) -> None:
    """Mean time per layer over the inferences that logged it; Layers Time's range from each
    inference's own sum (left out when an inference misses a layer or a layer is in cycles)."""
    layers = [inference for inference in layers if inference]
    ids = sorted({index for inference in layers for index in inference})
    rows: list[dict[str, Any]] = []
    for index in ids:
        logged = [inference[index] for inference in layers if index in inference]
        rows.append(
            {
                "index": index,
                "name": names.get(index, f"layer_{index:03d}"),
                "value": float(np.mean([value for value, _, _ in logged])),
                "unit": logged[0][1],
                "runtime": logged[0][2],
                "inferences": len(logged),
            }
        )
    apply_layer_rows(run, rows, input_layer_indices if input_layer_indices is not None else [0])
    if run.layers_total_us is None:
        return
    inputs = set(run.extra.get("input_layer_indices", ()))
    if all(set(inference) == set(ids) for inference in layers):
        sums = [
            sum(value for i, (value, _, _) in inference.items() if i not in inputs)
            for inference in layers
        ]
        run.layers_total_range_us = (min(sums), max(sums))


__all__ = ["parse_diagview_csv"]
