"""Result tables: the tidy results table, raw iterations and devlab's latency table.

The latency table has nnabla-nas's row format in devlab's own layout; ``nnabla_nas.py`` builds
nnabla-nas's exact layout from the same done jobs (``latest_results``).

Everything here takes ``rows`` (``(Job, Result | None)`` pairs in store order; the result is
``None`` for jobs that are not done) and ``devices`` (device id -> Device, possibly missing
some of the jobs' devices). Only pandas, never textual: the CLI and the TUI both call this.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from backends.core.extras import require
from backends.core.records import Device, Job, JobState, Result, Stats

Row = tuple[Job, Result | None]
LatencyRow = tuple[str, str, str, str, float]

STAT_FIELDS: tuple[str, ...] = ("min", "mean", "median", "p90", "p99", "max", "std")
RESULT_FORMATS: tuple[str, ...] = ("csv", "json", "parquet")

TOTAL_KEY = "Total Inference Time"
FORWARD_KEY = "Forward Propagate"
LAYERS_KEY = "Layers Time"
# the fixed cost of one call (binding, copies, the call), measured on a null model: a model's
# latency is about the sum of its modules' Forward Propagate plus this once
CALL_KEY = "Call Overhead"
LATENCY_STATS: tuple[tuple[str, str], ...] = (
    ("Min_Time", "min"),
    ("Avg_Time", "mean"),
    ("Max_Time", "max"),
    ("Median_Time", "median"),  # the headline (median of round medians); not in nnabla-nas
)
NORMALISED_STAT = "Normalised_Time"  # the drift-normalised headline, where the canary ran
LATENCY_FORMAT = "<ModuleUID>,<Runtime>,<LatencyKey>,<Stats>,<Value>"


# --- results table -------------------------------------------------------------------------


def results_records(rows: Sequence[Row], devices: Mapping[str, Device]) -> list[dict[str, Any]]:
    """One nested, JSON-ready dict per job: the single source for results.json/.csv/.parquet."""
    return [_record(job, result, devices.get(job.device_id)) for job, result in rows]


def results_frame(rows: Sequence[Row], devices: Mapping[str, Device]) -> pd.DataFrame:
    """The tidy flat table (one row per job); nested dicts become ``settings.warmup`` etc."""
    records = results_records(rows, devices)
    if not records:
        return pd.DataFrame(columns=_empty_columns())
    frame = pd.json_normalize(records, sep=".")
    # json_normalize turns int columns holding a None into floats ("100.0" in the CSV);
    # columns that only ever hold ints become nullable Int64 so they stay integers.
    for column in _int_columns(records):
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    return frame


def write_results(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Row],
    devices: Mapping[str, Device],
    formats: Iterable[str] = ("csv", "json"),
) -> list[Path]:
    """Write results.csv / results.json / results.parquet (as asked) and return their paths."""
    formats = tuple(formats)
    unknown = [f for f in formats if f not in RESULT_FORMATS]
    if unknown:
        raise ValueError(
            f"unknown results format(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(RESULT_FORMATS)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "csv" in formats:
        frame = _cells_as_json(results_frame(rows, devices))
        path = out / "results.csv"
        atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))
        written.append(path)
    if "json" in formats:
        path = out / "results.json"
        atomic_write_text(path, _dumps(results_records(rows, devices)))
        written.append(path)
    if "parquet" in formats:
        require("pyarrow", "parquet", "Parquet files")  # what pandas writes Parquet with
        frame = _parquet_ready(results_frame(rows, devices))
        path = out / "results.parquet"
        _atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
        written.append(path)
    return written


def write_iterations(out_dir: str | os.PathLike[str], rows: Sequence[Row]) -> Path:
    """iterations.csv: every raw timed iteration of every done job, one row each (long form).

    ``iteration`` counts from 0 across the whole job; ``round`` is the round it belongs to,
    or 0 when the result does not record round sizes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job_id", "model", "device", "runtime", "round", "iteration", "latency_us"])
    for job, result in _done(rows):
        rounds = _round_numbers(result)
        for index, (latency, round_no) in enumerate(zip(result.latencies_us, rounds, strict=True)):
            writer.writerow(
                [job.id, job.model.name, job.device_id, job.runtime, round_no, index, latency]
            )
    path = out / "iterations.csv"
    atomic_write_text(path, buffer.getvalue())
    return path


# --- nnabla-nas latency table --------------------------------------------------------------


def latency_table_rows(rows: Sequence[Row], devices: Mapping[str, Device]) -> list[LatencyRow]:
    """``(ModuleUID, Runtime, LatencyKey, Stats, Value)`` rows, values in µs to 0.1.

    Only done jobs with a result count. When they span several devices the Runtime column
    becomes ``<runtime>@<device_id>`` so two devices never write the same key. If one model
    was measured more than once with the same runtime (label), the latest job in store order
    wins, because the table maps each key to exactly one value.
    """
    table: list[LatencyRow] = []
    for (uid, runtime), (_job, result) in latest_results(rows).items():
        for key, stats in _latency_stats(result):
            for stat_name, attr in LATENCY_STATS:
                value = getattr(stats, attr)
                if value is not None:  # a tool that prints no median has no Median_Time row
                    table.append((uid, runtime, key, stat_name, round(float(value), 1)))
            if key == TOTAL_KEY and result.normalised_median_us is not None:
                normalised = round(float(result.normalised_median_us), 1)
                table.append((uid, runtime, key, NORMALISED_STAT, normalised))
        if result.call_cost_us is not None:
            table.append((uid, runtime, CALL_KEY, "Median_Time", round(result.call_cost_us, 1)))
    return table


def latest_results(rows: Sequence[Row]) -> dict[tuple[str, str], tuple[Job, Result]]:
    """``(ModuleUID, Runtime label) -> (job, result)``: the done jobs the latency table holds.

    The label is the job's runtime, or ``<runtime>@<device>`` when the jobs span several
    devices; a key measured twice keeps the latest job in store order.
    """
    done = list(_done(rows))
    labeller = _runtime_labeller(done)
    latest: dict[tuple[str, str], tuple[Job, Result]] = {}
    for job, result in done:
        latest[(job.model.module_uid, labeller(job))] = (job, result)
    return latest


def latency_table_nested(rows_of_latency_table: Iterable[LatencyRow]) -> dict[str, Any]:
    """ModuleUID -> Runtime -> LatencyKey -> Stats -> Value, the nnabla-nas JSON shape."""
    nested: dict[str, Any] = {}
    for uid, runtime, key, stat, value in rows_of_latency_table:
        nested.setdefault(uid, {}).setdefault(runtime, {}).setdefault(key, {})[stat] = value
    return nested


def write_latency_table(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Row],
    devices: Mapping[str, Device],
    tool_versions: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write latency_table.csv (headerless), .json (nested) and .meta (provenance), atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = latency_table_rows(rows, devices)

    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerows(table)
    csv_path = out / "latency_table.csv"
    atomic_write_text(csv_path, buffer.getvalue())

    json_path = out / "latency_table.json"
    atomic_write_text(json_path, _dumps(latency_table_nested(table)))

    meta_path = out / "latency_table.meta"
    atomic_write_text(meta_path, _dumps(latency_meta(rows, devices, table, tool_versions)))
    return [csv_path, json_path, meta_path]


def write_all(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Row],
    devices: Mapping[str, Device],
    formats: Iterable[str] = ("csv", "json"),
) -> list[Path]:
    """Results, iterations and latency table in one folder (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_results(out, rows, devices, formats)
    paths.append(write_iterations(out, rows))
    paths.extend(write_latency_table(out, rows, devices))
    return paths


# --- helpers -------------------------------------------------------------------------------


def _record(job: Job, result: Result | None, device: Device | None) -> dict[str, Any]:
    """The nested record of one job; statistics stay None when there is no result."""
    stats = result.stats if result is not None else None
    record: dict[str, Any] = {
        "job_id": job.id,
        "model": job.model.name,
        "model_path": job.model.path,
        "model_sha256": job.model.sha256,
        "module_uid": job.model.module_uid,
        "device": job.device_id,
        "device_kind": device.kind if device is not None else None,
        "device_name": device.name if device is not None else None,
        "runtime": job.runtime,
        "priority": job.priority,
        "attempts": job.attempts,
        "status": JobState(job.state).value,
        "error": job.error,
        "settings": job.settings.to_dict(),
    }
    for name in STAT_FIELDS:
        record[f"{name}_us"] = getattr(stats, name) if stats is not None else None
    record["cv"] = stats.cv if stats is not None else None
    record["count"] = stats.count if stats is not None else None
    record["load_us"] = result.load_us if result is not None else None
    record["first_inference_us"] = result.first_inference_us if result is not None else None
    record["forward_median_us"] = _median(result.forward_stats if result else None)
    record["call_cost_us"] = result.call_cost_us if result is not None else None
    record["cold_weights_us"] = result.cold_weights_us if result is not None else None
    record["layers_median_us"] = _median(result.layers_stats if result else None)
    record["tool"] = result.tool if result is not None else None
    record["tool_version"] = result.tool_version if result is not None else None
    record["stats_source"] = result.stats_source if result is not None else None
    record["warnings"] = "; ".join(result.warnings) if result is not None else None
    power = (result.power or {}) if result is not None else {}
    record["power_mean_w"] = power.get("mean_w")
    record["power_baseline_w"] = power.get("baseline_w")
    record["energy_per_inference_mj"] = power.get("energy_per_inference_mj")
    record["power_trace"] = power.get("trace_path")
    record["power_sync"] = power.get("power_sync")  # beacon, one beacon, windows (--power-sync)
    record["power_sync_reason"] = power.get("power_sync_reason") or None
    record["power_beacons"] = power.get("power_beacons")  # job or round (--power-beacons)
    record["beacons_found"] = power.get("beacons_found")
    record["power_window"] = power.get("power_window")  # timed loop, command, ... (power-sync.md)
    accuracy = (result.accuracy or {}) if result is not None else {}  # --accuracy SET
    record["accuracy_set"] = accuracy.get("set_name")
    record["accuracy_set_size"] = accuracy.get("set_size")
    record["accuracy_top1"] = accuracy.get("top1")
    record["accuracy_top5"] = accuracy.get("top5")
    record["output_mae"] = accuracy.get("output_mae")
    record["output_max_error"] = accuracy.get("output_max_error")
    record.update(_trust_fields(result))
    record["started_at"] = _iso_utc(job.started_at)
    record["finished_at"] = _iso_utc(job.finished_at)
    record["device_properties"] = _device_properties(device, result)
    record["model_parameters"] = job.model.parameters
    record["model_macs"] = job.model.macs
    return record


def _trust_fields(result: Result | None) -> dict[str, Any]:
    """Rounds, the canary, the precision gate's interval, parity, drift and conditions."""
    if result is None:
        return {}
    canaries = [c for c in result.round_canary_us if c is not None]
    large = [c for c in result.round_canary_large_us if c is not None]
    parity = result.parity or {}
    return {
        "rounds": len(result.round_sizes),
        "extra_rounds": result.extra_rounds,
        "round_medians_us": json.dumps([round(m, 3) for m in result.round_medians_us]),
        "ci_low_us": result.ci_low_us,
        "ci_high_us": result.ci_high_us,
        "ci_half_width_pct": result.ci_half_width_pct,
        "converged": result.converged,
        "canary_median_us": statistics.median(canaries) if canaries else None,
        "canary_reference_us": result.canary_reference_us,
        "canary_large_median_us": statistics.median(large) if large else None,
        "canary_large_reference_us": result.canary_large_reference_us,
        "reference_large_weight": result.reference_large_weight,
        "normalised_median_us": result.normalised_median_us,
        "headline_us": result.headline_us,
        "headline_basis": result.headline_basis,
        "drifting": (result.drift or {}).get("drifting") if result.drift else None,
        "parity_ok": parity.get("ok"),
        "parity_max_abs_diff": parity.get("max_abs_diff"),
        "parity_cosine": parity.get("cosine"),
        "parity_top1_agree": parity.get("top1_agree"),
        "conditions_start": _json_ready(result.conditions_start),
        "conditions_end": _json_ready(result.conditions_end),
    }


def _median(stats: Stats | None) -> float | None:
    return stats.median if stats is not None else None


def _device_properties(device: Device | None, result: Result | None) -> dict[str, Any]:
    """Known device's properties, gaps filled from the snapshot the result carried."""
    snapshot = dict(result.device_properties) if result is not None else {}
    if device is None:
        return _json_ready(snapshot)
    return _json_ready({**snapshot, **device.properties})


def _json_ready(value: Any) -> Any:
    """A deep copy that json.dumps accepts, so records never alias (or leak) device state."""
    return json.loads(json.dumps(value, default=str))


def _iso_utc(epoch: float | None) -> str | None:
    """Job timestamps are epoch floats; tables show ISO-8601 UTC for humans and pandas."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def _done(rows: Sequence[Row]) -> Iterable[tuple[Job, Result]]:
    """Done jobs that actually carry a result (the only ones with numbers to report)."""
    for job, result in rows:
        if result is not None and JobState(job.state) is JobState.DONE:
            yield job, result


def _runtime_labeller(done: Sequence[tuple[Job, Result]]) -> Callable[[Job], str]:
    """Runtime column: plain runtime on one device, ``runtime@device`` across several."""
    if len({job.device_id for job, _ in done}) > 1:
        return lambda job: f"{job.runtime}@{job.device_id}"
    return lambda job: job.runtime


def _latency_stats(result: Result) -> list[tuple[str, Stats]]:
    """The latency keys this result can fill, in nnabla-nas order."""
    keys = [(TOTAL_KEY, result.stats)]
    if result.forward_stats is not None:
        keys.append((FORWARD_KEY, result.forward_stats))
    if result.layers_stats is not None:
        keys.append((LAYERS_KEY, result.layers_stats))
    return keys


def _round_numbers(result: Result) -> list[int]:
    """Round number of each timed iteration (all 0 when the result has no round sizes)."""
    count = len(result.latencies_us)
    if sum(result.round_sizes) != count:
        return [0] * count
    return [r for r, size in enumerate(result.round_sizes) for _ in range(size)]


def latency_meta(
    rows: Sequence[Row],
    devices: Mapping[str, Device],
    table: Sequence[LatencyRow],
    tool_versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Provenance of a latency table: which devices, tools and runtimes produced it, and the
    keys and stats it holds (``Normalised_Time`` too, where the canary gave one)."""
    done = list(_done(rows))
    used_devices: dict[str, Any] = {}
    tools: dict[str, str] = {}
    for job, result in done:
        device = devices.get(job.device_id)
        used_devices.setdefault(
            job.device_id,
            {
                "kind": device.kind if device is not None else None,
                "name": device.name if device is not None else None,
                "properties": _device_properties(device, result),
            },
        )
        if result.tool:
            tools[result.tool] = result.tool_version
    tools.update(tool_versions or {})
    return {
        "created": datetime.now(tz=UTC).isoformat(),
        "format": LATENCY_FORMAT,
        "units": "us",
        "devices": used_devices,
        "tools": tools,
        "runtimes": sorted({job.runtime for job, _ in done}),
        "runtime_labels": _unique(row[1] for row in table),
        "latency_keys": _unique(row[2] for row in table),
        "stats": _unique(row[3] for row in table),
        "modules": len({row[0] for row in table}),
        "rows": len(table),
    }


def _unique(values: Iterable[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def _int_columns(records: Sequence[Mapping[str, Any]], prefix: str = "") -> set[str]:
    """Flattened column names whose non-null values are all ints (bools excluded)."""
    kinds: dict[str, set[str]] = {}
    _collect_kinds(records, prefix, kinds)
    return {name for name, seen in kinds.items() if seen == {"int"}}


def _collect_kinds(
    records: Iterable[Mapping[str, Any]], prefix: str, kinds: dict[str, set[str]]
) -> None:
    for record in records:
        for key, value in record.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                _collect_kinds([value], f"{name}.", kinds)
            elif value is not None:
                is_int = isinstance(value, int) and not isinstance(value, bool)
                kinds.setdefault(name, set()).add("int" if is_int else "other")


def _cells_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists/dicts left in cells (e.g. input shapes) become JSON text, not Python reprs."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(
                lambda v: json.dumps(v) if isinstance(v, list | dict) else v
            )
    return frame


def _parquet_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow needs one type per column: nested cells become JSON, mixed columns text."""
    frame = _cells_as_json(frame)
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        types = {type(v) for v in frame[column] if v is not None and not _is_nan(v)}
        if len(types) > 1:
            frame[column] = frame[column].map(lambda v: None if v is None or _is_nan(v) else str(v))
    return frame


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _empty_columns() -> list[str]:
    """Top-level columns of an empty table, so an empty results.csv still has a header."""
    return [
        "job_id",
        "model",
        "model_path",
        "model_sha256",
        "module_uid",
        "device",
        "device_kind",
        "device_name",
        "runtime",
        "priority",
        "attempts",
        "status",
        "error",
        *(f"{name}_us" for name in STAT_FIELDS),
        "cv",
        "count",
        "load_us",
        "first_inference_us",
        "forward_median_us",
        "call_cost_us",
        "cold_weights_us",
        "layers_median_us",
        "tool",
        "tool_version",
        "started_at",
        "finished_at",
        "model_parameters",
        "model_macs",
    ]


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write text so readers see the old file or the whole new one, never half a table."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    _atomic_write(path, write)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Let ``write`` fill a temp file beside ``path``, then os.replace it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp makes 0600 files; tables are shared artefacts, keep the usual mode.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
