"""devlab's results as the status rows of archai's SNPE benchmark farm.

archai's farm (github:microsoft/archai, ``tasks/face_segmentation/aml/azure/runner.py`` over
``archai/common/store.py``'s ``ArchaiStore``) keeps one Azure Table entity per model, named by
its friendly name (``name``, also the RowKey, in partition ``main``). Each benchmark run of the
runner appends the run's average inference time in seconds to ``total_inference_avg`` (a JSON
list), sets ``mean`` to their mean and, from the second run, ``stdev`` to their standard
deviation in percent of the mean; a finished row has ``status`` ``complete``, a failed one an
``error``. ``RemoteAzureBenchmarkEvaluator.fetch_all`` reads ``entity[metric_key]`` (``mean`` in
archai's snp_search.yaml) of complete rows and skips rows with an ``error``.

devlab writes the same entity per finished job, one devlab round standing for one benchmark run,
plus ``devlab_*`` columns (the job, the device's id and name, the runtime, and devlab's headline
in seconds, which a search may read instead with ``metric_key: devlab_headline_s``):
``archai/status.json`` (the entities, for ``ArchaiStore.update_status_entity``) and
``archai/status.csv`` (the layout ``ArchaiStore.print_entities`` prints, which ``status.py`` saves
and ``compare_status.py`` reads).
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.core.records import Device, Job, JobState, Result
from backends.results.tables import Row, atomic_write_text

FOLDER = "archai"
ENTITIES_FILE = "status.json"
STATUS_CSV = "status.csv"
PARTITION_KEY = "main"  # ArchaiStore's default partition
KEYS_NOT_PRINTED = ("PartitionKey", "RowKey")  # print_entities leaves these out


def status_entities(rows: Sequence[Row], devices: Mapping[str, Device]) -> list[dict[str, Any]]:
    """One entity per finished job (done: ``complete``; failed or cancelled: ``error``).

    Rows are named by the model's file name; when jobs span several devices or runtimes, by
    ``<name>@<runtime>@<device>`` (``/`` and other characters a RowKey refuses become ``_``).
    The same name twice: the later job in store order wins (one row per name, as in archai).
    """
    finished = [(job, result) for job, result in rows if JobState(job.state).finished]
    qualify = len({(job.device_id, job.runtime) for job, _ in finished}) > 1
    entities: dict[str, dict[str, Any]] = {}
    for job, result in finished:
        name = _row_name(job, qualify)
        entities[name] = _entity(name, job, result, devices.get(job.device_id))
    return list(entities.values())


def write_archai_status(
    out_dir: str | os.PathLike[str], rows: Sequence[Row], devices: Mapping[str, Device]
) -> list[Path]:
    """``archai/status.json`` and ``archai/status.csv``; returns their paths."""
    folder = Path(out_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    entities = status_entities(rows, devices)
    json_path = folder / ENTITIES_FILE
    atomic_write_text(json_path, json.dumps(entities, indent=2) + "\n")
    csv_path = folder / STATUS_CSV
    atomic_write_text(csv_path, printed_entities(entities))
    return [json_path, csv_path]


def printed_entities(entities: Sequence[Mapping[str, Any]]) -> str:
    """The text ``ArchaiStore.print_entities`` prints: a ``", "``-joined header of every key
    but the table keys (first-seen order), then per entity each cell followed by ``", "``
    (empty where the entity lacks the key), with commas and line breaks turned into spaces."""
    keys: list[str] = []
    for entity in entities:
        keys += [k for k in entity if k not in keys and k not in KEYS_NOT_PRINTED]
    lines = [", ".join(keys) + "\n"]
    for entity in entities:
        cells = [_cell(entity[key]) if key in entity else "" for key in keys]
        lines.append("".join(f"{cell}, " for cell in cells) + "\n")
    return "".join(lines)


def run_averages_s(result: Result) -> list[float]:
    """Each round's mean inference time in seconds: the runner's per-run ``total_inference_avg``
    entries (one round when the result records no round sizes that fit its iterations)."""
    latencies = result.latencies_us
    sizes = result.round_sizes if sum(result.round_sizes) == len(latencies) else [len(latencies)]
    averages, start = [], 0
    for size in sizes:
        if size:
            averages.append(statistics.fmean(latencies[start : start + size]) / 1e6)
        start += size
    return averages


# --- helpers -------------------------------------------------------------------------------


def _entity(name: str, job: Job, result: Result | None, device: Device | None) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": PARTITION_KEY,
        "RowKey": name,
        "name": name,
        "model_name": Path(job.model.path).name,
        "benchmark_only": 1,  # devlab measures latency only: no F1 columns will come
    }
    if job.model.macs is not None:
        entity["macs"] = job.model.macs
    if job.model.parameters is not None:
        entity["params"] = job.model.parameters
    if JobState(job.state) is JobState.DONE and result is not None and result.latencies_us:
        averages = run_averages_s(result)
        entity["total_inference_avg"] = json.dumps(averages)
        mean = statistics.mean(averages)
        entity["mean"] = mean
        if len(averages) > 1:
            entity["stdev"] = statistics.stdev(averages) * 100 / mean
        entity["status"] = "complete"
        if job.finished_at is not None:
            entity["completed"] = datetime.fromtimestamp(job.finished_at, tz=UTC).isoformat()
    else:
        entity["status"] = "error"
        entity["error"] = job.error or f"{JobState(job.state).value} in devlab"
    entity["devlab_job_id"] = job.id
    entity["devlab_device"] = job.device_id
    if device is not None:
        entity["devlab_device_name"] = device.name
    entity["devlab_runtime"] = job.runtime
    headline = _headline_us(result) if entity["status"] == "complete" else None
    if headline is not None:
        entity["devlab_headline_s"] = headline / 1e6
    return entity


def _headline_us(result: Result | None) -> float | None:
    if result is None:
        return None
    if result.headline_us is not None:
        return result.headline_us
    return result.stats.median if result.stats.median is not None else result.stats.mean


def _row_name(job: Job, qualify: bool) -> str:
    """The friendly name: the model file's name without ``.onnx`` (a file that failed intake
    is known by its whole name), qualified by runtime and device when asked."""
    base = job.model.name.removesuffix(".onnx")
    name = f"{base}@{job.runtime}@{job.device_id}" if qualify else base
    return re.sub(r"[/\\#?\x00-\x1f\x7f]", "_", name)


def _cell(value: Any) -> str:
    return str(value).replace(",", " ").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
