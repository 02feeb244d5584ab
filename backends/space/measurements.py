"""What the estimator is fitted on: a module latency table and measured sampled architectures.

Reads devlab's own outputs -- latency_table.csv/.json (or a results.csv standing in for one)
and the results.csv of the sampled run -- and pairs every sampled model with its ModuleUIDs
(from the index.json beside it or the model's metadata). Errors name the file and the fix.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from backends.space.modules import (
    INDEX_FILE,
    META_UID,
    META_UIDS,
    META_UIDS_OP,
)

TOTAL_KEY = "Total Inference Time"
FORWARD_KEY = "Forward Propagate"
LAYERS_KEY = "Layers Time"
CALL_KEY = "Call Overhead"  # the fixed cost of one call, once per model (devlab's own key)
NORMALISED_STAT = "Normalised_Time"  # the drift-normalised median, where the canary ran
STATS: tuple[str, ...] = ("Min_Time", "Avg_Time", "Median_Time", "Max_Time", NORMALISED_STAT)

# results.csv column holding each (latency key, stat) of a whole model.
RESULT_COLUMNS: dict[tuple[str, str], str] = {
    (TOTAL_KEY, "Min_Time"): "min_us",
    (TOTAL_KEY, "Avg_Time"): "mean_us",
    (TOTAL_KEY, "Median_Time"): "median_us",
    (TOTAL_KEY, "Max_Time"): "max_us",
    (TOTAL_KEY, "Normalised_Time"): "normalised_median_us",
    (FORWARD_KEY, "Median_Time"): "forward_median_us",
    (CALL_KEY, "Median_Time"): "call_cost_us",
    (LAYERS_KEY, "Median_Time"): "layers_median_us",
}
_META_BY_GRANULARITY = {"block": META_UIDS, "op": META_UIDS_OP}
_INDEX_BY_GRANULARITY = {"block": "module_uids", "op": "module_uids_op"}


class EstimatorError(Exception):
    """Inputs that cannot give an estimate; the message names the input and the fix."""


# --- reading ---------------------------------------------------------------------------------


@dataclass
class LatencyTable:
    """``(ModuleUID, Runtime, LatencyKey, Stats) -> microseconds``, as devlab exports it.

    ``devices`` lists the devices behind the table (from ``latency_table.meta``), or is None
    when unknown; a plain ``runtime`` label is then taken to be from the measured device.
    """

    values: dict[tuple[str, str, str, str], float]
    devices: list[str] | None = None
    source: str = ""

    def runtime_labels(self) -> list[str]:
        return sorted({label for _, label, _, _ in self.values})

    def latency_keys(self) -> list[str]:
        return sorted({key for _, _, key, _ in self.values})

    def stats(self, key: str) -> list[str]:
        return sorted({stat for _, _, k, stat in self.values if k == key})

    def modules(self, label: str, key: str, stat: str) -> dict[str, float]:
        """ModuleUID -> latency for one runtime label, latency key and statistic."""
        return {
            uid: value
            for (uid, lab, k, s), value in self.values.items()
            if lab == label and k == key and s == stat
        }

    def label_for(self, device: str, runtime: str) -> str | None:
        """The table's Runtime column for measurements of ``runtime`` on ``device``."""
        labels = set(self.runtime_labels())
        if f"{runtime}@{device}" in labels:
            return f"{runtime}@{device}"
        if runtime in labels and (self.devices is None or device in self.devices):
            return runtime
        return None


@dataclass
class SampledMeasurement:
    """A whole architecture measured on one device: its latencies and its modules."""

    name: str
    path: str
    sha256: str
    device: str
    runtime: str
    latencies: dict[tuple[str, str], float]  # (latency key, stat) -> us
    module_uids: dict[str, list[str]]  # granularity -> ModuleUIDs, repeats included
    macs: int | None = None
    parameters: int | None = None


def read_latency_table(path: str | Path) -> LatencyTable:
    """latency_table.csv (headerless), latency_table.json (nested) or a results.csv.

    A results.csv serves as a table too (Min/Avg/Median/Max of the Total Inference Time), with
    each module's UID read from its model's ``devlab.module_uid`` metadata.
    """
    path = Path(path)
    text = read_text(path, "latency table")
    devices = _meta_devices(path)
    if path.suffix.lower() == ".json":
        values = _table_from_json(path, text)
    elif {"model_path", "status"} <= set(next(csv.reader([text.split("\n", 1)[0]]), [])):
        return _table_from_results(path)
    else:
        values = _table_from_csv(path, text)
    if not values:
        raise EstimatorError(f"{path}: the latency table is empty; bench the modules first")
    return LatencyTable(values, devices, str(path))


def read_sampled(path: str | Path, notes: list[str] | None = None) -> list[SampledMeasurement]:
    """The done rows of a results.csv whose models carry ModuleUIDs (sampled architectures).

    Each row's module lists come from ``index.json`` beside its model (matched by sha256) or
    from the model's ``devlab.module_uids`` metadata. Rows without them are left out, counted
    in ``notes``. If a model was measured more than once on a device, the last row wins.
    """
    path = Path(path)
    rows = _result_rows(path)
    indexes: dict[Path, dict[str, dict[str, Any]]] = {}
    found: dict[tuple[str, str, str], SampledMeasurement] = {}
    no_uids: list[str] = []
    for row in rows:
        if row.get("status") != "done":
            continue
        uids = _uids_of(row, indexes)
        if not uids:
            no_uids.append(row.get("model") or row.get("model_path", "?"))
            continue
        latencies = {
            pair: value
            for pair, column in RESULT_COLUMNS.items()
            if (value := _float(row.get(column))) is not None
        }
        item = SampledMeasurement(
            name=row.get("model", ""),
            path=row.get("model_path", ""),
            sha256=row.get("model_sha256", ""),
            device=row.get("device", ""),
            runtime=row.get("runtime", ""),
            latencies=latencies,
            module_uids=uids,
            macs=_int(row.get("model_macs")),
            parameters=_int(row.get("model_parameters")),
        )
        found[(item.sha256, item.device, item.runtime)] = item
    if no_uids and notes is not None:
        notes.append(
            f"{path}: {len(no_uids)} done row(s) have no ModuleUID list (not a sampled "
            f"architecture), left out: {few(no_uids)}"
        )
    return list(found.values())


def model_module_uids(path: str | Path, granularity: str = "block") -> list[str]:
    """The ModuleUIDs a generated model carries: its architecture's list, or its own UID."""
    path = Path(path)
    props = _model_props(path)
    if _META_BY_GRANULARITY[granularity] in props:
        return list(json.loads(props[_META_BY_GRANULARITY[granularity]]))
    if META_UID in props:
        return [props[META_UID]]
    raise EstimatorError(
        f"{path}: no {_META_BY_GRANULARITY[granularity]} metadata; estimate models made by "
        "'devlab space sample', or give the architecture with --arch and --space"
    )


# --- helpers ---------------------------------------------------------------------------------


def _uids_of(
    row: Mapping[str, str], indexes: dict[Path, dict[str, dict[str, Any]]]
) -> dict[str, list[str]]:
    """A result row's ModuleUID lists: from index.json beside the model, else its metadata."""
    model_path = row.get("model_path") or ""
    if not model_path:
        return {}
    folder = Path(model_path).parent
    if folder not in indexes:
        indexes[folder] = _sampled_index(folder / INDEX_FILE)
    entry = indexes[folder].get(row.get("model_sha256", ""))
    if entry is not None:
        return {
            g: list(entry[k])
            for g, k in _INDEX_BY_GRANULARITY.items()
            if isinstance(entry.get(k), list)
        }
    try:
        props = _model_props(Path(model_path))
    except EstimatorError:
        return {}
    # Only sampled architectures carry lists; a module model has its own single UID.
    return {g: list(json.loads(props[k])) for g, k in _META_BY_GRANULARITY.items() if k in props}


def _sampled_index(path: Path) -> dict[str, dict[str, Any]]:
    """sha256 -> entry of a sampled-architecture index.json (empty when there is none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("architectures"), list):
        return {}
    return {a["sha256"]: a for a in data["architectures"] if isinstance(a, dict) and "sha256" in a}


def _result_rows(path: Path) -> list[dict[str, str]]:
    text = read_text(path, "results")
    rows = list(csv.DictReader(text.splitlines()))
    needed = {"model_path", "model_sha256", "device", "runtime", "status"}
    if rows and not needed <= set(rows[0]):
        absent = ", ".join(sorted(needed - set(rows[0])))
        raise EstimatorError(f"{path}: not a devlab results.csv (no column {absent})")
    return rows


def _table_from_csv(path: Path, text: str) -> dict[tuple[str, str, str, str], float]:
    values: dict[tuple[str, str, str, str], float] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row:
            continue
        if len(row) != 5:
            raise EstimatorError(
                f"{path}:{number}: expected <ModuleUID>,<Runtime>,<LatencyKey>,<Stats>,<Value>, "
                f"got {len(row)} field(s)"
            )
        value = _float(row[4])
        if value is None:
            raise EstimatorError(f"{path}:{number}: the value {row[4]!r} is not a number")
        values[(row[0], row[1], row[2], row[3])] = value
    return values


def _table_from_json(path: Path, text: str) -> dict[tuple[str, str, str, str], float]:
    try:
        nested = json.loads(text)
        return {
            (uid, label, key, stat): float(value)
            for uid, runtimes in nested.items()
            for label, keys in runtimes.items()
            for key, stats in keys.items()
            for stat, value in stats.items()
        }
    except (ValueError, AttributeError, TypeError) as exc:
        raise EstimatorError(
            f"{path}: not a nested latency table (ModuleUID -> Runtime -> LatencyKey -> Stats "
            f"-> Value): {exc}"
        ) from None


def _table_from_results(path: Path) -> LatencyTable:
    """A latency table built from a results.csv; UIDs from the models' metadata."""
    done = [row for row in _result_rows(path) if row.get("status") == "done"]
    devices = sorted({row["device"] for row in done})
    several = len(devices) > 1
    values: dict[tuple[str, str, str, str], float] = {}
    for row in done:
        uid = _own_uid(row)
        label = f"{row['runtime']}@{row['device']}" if several else row["runtime"]
        for (key, stat), column in RESULT_COLUMNS.items():
            value = _float(row.get(column))
            if value is not None:
                values[(uid, label, key, stat)] = value
    if not values:
        raise EstimatorError(f"{path}: no done rows with latencies; bench the modules first")
    return LatencyTable(values, devices, str(path))


def _own_uid(row: Mapping[str, str]) -> str:
    """The model's ``devlab.module_uid`` metadata when it has one, else results' module_uid."""
    model_path = row.get("model_path") or ""
    if model_path:
        try:
            uid = _model_props(Path(model_path)).get(META_UID)
        except EstimatorError:  # moved or unreadable: keep the UID the results recorded
            uid = None
        if uid:
            return uid
    return row.get("module_uid") or row.get("model", "")


def _model_props(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (weights are parsed too: files are small)."""
    if not path.is_file():
        raise EstimatorError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf and onnx raise several types for damaged files
        raise EstimatorError(f"{path}: cannot read the ONNX model: {exc}") from None
    return {p.key: p.value for p in model.metadata_props}


def _meta_devices(path: Path) -> list[str] | None:
    meta = path.with_suffix(".meta")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    devices = data.get("devices") if isinstance(data, dict) else None
    return sorted(devices) if isinstance(devices, dict) and devices else None


def read_text(path: Path, what: str) -> str:
    """A text file's content, or an EstimatorError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EstimatorError(f"{path}: no such {what} file; check the path") from None
    except OSError as exc:
        raise EstimatorError(f"{path}: cannot read the {what} file: {exc.strerror}") from None


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _int(text: Any) -> int | None:
    value = _float(text)
    return int(value) if value is not None else None


def few(items: Sequence[str], limit: int = 3) -> str:
    """The first few distinct items for a message, and how many more there are."""
    unique = list(dict.fromkeys(items))
    shown = ", ".join(unique[:limit])
    return shown + (f" (and {len(unique) - limit} more)" if len(unique) > limit else "")
