"""The latency table in the layout sony/nnabla-nas writes and reads (``--table-format nnabla-nas``).

nnabla-nas's SNPE profiler (``nnabla_nas/utils/profiler/snpe/``, last in commit 8d18f3c^):
``create_latency_table.py`` writes ``<name>.csv`` (``csv.writer``: headerless
``uid,runtime,key,stat,value`` rows, CRLF line ends), ``<name>.json`` (``json.dump`` of
uid -> runtime -> key -> stat -> value, one line) and ``<name>.meta`` (``csv.writer`` with ``:``
as delimiter: the phone's properties, the date and the SNPE SDK version); ``sample_nnps.py``
``main()`` then sums ``table[uid][runtime]["Layers Time"]["Avg_Time"]`` over the modules of a
sampled net, for the runtimes CPU, GPU, GPU_FP16 and DSP.

Built from the same done jobs as devlab's own table (``tables.latest_results``), with:

* SNPE runtimes under SNPE's names (``snpe-gpu-fp16`` -> ``GPU_FP16``), others as devlab names
  them; one table per device (``latency_table.<device>.*`` when there are several), since a
  ``.meta`` describes one phone;
* every (module, runtime) with Forward Propagate, Total Inference Time and Layers Time, in
  nnabla-nas's order, each Min/Avg/Max (then devlab's Median_Time and Normalised_Time, and its
  Call Overhead, which nnabla-nas does not read). Forward Propagate is the total where the
  runtime gives no forward time; Layers Time is the sum of the layers where they were profiled,
  else the forward time, else the total (the devlab meta counts which, ``layers_time_from``);
* Forward Propagate and Total Inference Time in whole microseconds, as snpe-bench gives them,
  Layers Time to 0.1 us, as nnabla-nas's float sums;
* devlab's JSON provenance beside it as ``<name>.devlab-meta.json``.

Layers Time Min/Max: nnabla-nas sums the layers' own minima and maxima (no run need have taken
either); devlab's are the fastest and slowest run's layer sum where each run's layers are timed
(ONNX Runtime), and the sum of the layers' averages where the tool reports averages only
(snpe-diagview). Avg_Time, the one nnabla-nas reads, is the same sum of means under both.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.core.records import Device, Job, JobSettings, JobState, Result, Stats
from backends.results.tables import (
    CALL_KEY,
    FORWARD_KEY,
    LATENCY_STATS,
    LAYERS_KEY,
    NORMALISED_STAT,
    TOTAL_KEY,
    LatencyRow,
    Row,
    atomic_write_text,
    latency_meta,
    latency_table_nested,
    latest_results,
)
from backends.runtimes.snpe import RUNTIMES as SNPE_RUNTIMES

LAYOUT = "nnabla-nas"
STEM = "latency_table"
DEVLAB_META_SUFFIX = ".devlab-meta.json"
KEY_ORDER: tuple[str, ...] = (FORWARD_KEY, TOTAL_KEY, LAYERS_KEY)  # create_simple_stats' order
# the runtimes sample_nnps.py main() looks up, in its order (SNPE's own names)
NNABLA_NAS_RUNTIMES: tuple[str, ...] = ("CPU", "GPU", "GPU_FP16", "DSP")
LAYERS_PROFILED = "per-layer profile"
UNKNOWN = "unknown"  # what snpe-bench writes for a device property it could not read
SNPE_VERSION_FIELD = "SNPE SDK version:"  # the key create_latency_table.py writes, colon included
# Android ABI -> the architecture snpe-bench names its SDK build by
_ARCHITECTURES = {
    "arm64-v8a": "aarch64",
    "armeabi-v7a": "arm",
    "armeabi": "arm",
    "x86_64": "x86_64",
    "x86": "x86",
}


def runtime_name(runtime: str) -> str:
    """SNPE's name of a devlab SNPE runtime (``snpe-gpu-fp16`` -> ``GPU_FP16``), else as given."""
    if runtime.startswith("snpe-"):
        name = runtime.removeprefix("snpe-").upper().replace("-", "_")
        if name in SNPE_RUNTIMES:
            return name
    return runtime


def settings_for_table(
    settings: JobSettings, devices: Iterable[Device], runtime: str | None
) -> JobSettings:
    """A run written in this layout profiles per layer wherever every device can, because
    nnabla-nas adds up Layers Time; where one cannot, the settings stay as given (and Layers
    Time falls back to the forward time) rather than the Lab refusing the run."""
    if settings.per_layer:
        return settings
    for device in devices:
        capabilities = device.capabilities_for(runtime)
        if capabilities is not None and not capabilities.per_layer:
            return settings
    return dataclasses.replace(settings, per_layer=True)


def table_rows(rows: Sequence[Row]) -> tuple[list[LatencyRow], dict[str, dict[str, int]]]:
    """One device's rows in nnabla-nas's layout, and where Forward Propagate and Layers Time
    came from (latency key -> source -> how many module/runtime pairs)."""
    table: list[LatencyRow] = []
    sources: dict[str, Counter[str]] = {FORWARD_KEY: Counter(), LAYERS_KEY: Counter()}
    for (uid, runtime), (_job, result) in latest_results(rows).items():
        name = runtime_name(runtime)
        forward, forward_from = _forward(result)
        layers, layers_from = _layers(result)
        sources[FORWARD_KEY][forward_from] += 1
        sources[LAYERS_KEY][layers_from] += 1
        for key, stats in ((FORWARD_KEY, forward), (TOTAL_KEY, result.stats), (LAYERS_KEY, layers)):
            number = _tenths if key == LAYERS_KEY else _whole
            for stat_name, attr in LATENCY_STATS:
                value = getattr(stats, attr)
                if value is not None:
                    table.append((uid, name, key, stat_name, number(value)))
            if key == TOTAL_KEY and result.normalised_median_us is not None:
                table.append((uid, name, key, NORMALISED_STAT, _whole(result.normalised_median_us)))
        if result.call_cost_us is not None:
            table.append((uid, name, CALL_KEY, "Median_Time", _tenths(result.call_cost_us)))
    return table, {key: dict(counts) for key, counts in sources.items()}


def write_nnabla_nas_table(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Row],
    devices: Mapping[str, Device],
    tool_versions: Mapping[str, str] | None = None,
) -> list[Path]:
    """``<stem>.csv``, ``.json``, ``.meta`` and ``.devlab-meta.json`` per device, atomically.

    The stem is ``latency_table``, or ``latency_table.<device>`` when the done jobs span
    several devices.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = _by_device(rows)
    several = len(groups) > 1
    written: list[Path] = []
    for device_id, device_rows in groups.items():
        stem = f"{STEM}.{_slug(device_id)}" if several and device_id else STEM
        table, sources = table_rows(device_rows)
        meta = latency_meta(device_rows, devices, table, tool_versions)
        meta.update(
            layout=LAYOUT,
            nnabla_nas_meta=f"{stem}.meta",
            runtime_names=_runtime_names(device_rows),
            layers_time_from=sources,
        )
        files = {
            ".csv": _csv_text(table),
            ".json": json.dumps(latency_table_nested(table)),
            ".meta": _colon_text(meta_fields(device_id, device_rows, meta)),
            DEVLAB_META_SUFFIX: json.dumps(meta, indent=2) + "\n",
        }
        for suffix, text in files.items():
            path = out / f"{stem}{suffix}"
            atomic_write_text(path, text)
            written.append(path)
    return written


def meta_fields(
    device_id: str | None, rows: Sequence[Row], meta: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The nine lines of create_latency_table.py's ``.meta``, in its order, for one device.

    ``ro.*`` are the phone's getprop values (``unknown`` where devlab has none, as snpe-bench
    writes); Date is when the table's last job finished (UTC, ``str(datetime)`` form); the SNPE
    SDK version is that of the SNPE runs, ``unknown`` for a table without any.
    """
    described = meta.get("devices", {}).get(device_id, {}) if device_id else {}
    props = described.get("properties", {})
    done = [(job, result) for job, result in rows if _is_done(job, result)]
    finished = [job.finished_at for job, _ in done if job.finished_at is not None]
    when = datetime.fromtimestamp(max(finished), tz=UTC) if finished else datetime.now(tz=UTC)
    abi = props.get("abi")
    architecture = _ARCHITECTURES.get(abi, abi) if abi else props.get("machine")
    snpe_versions = _unique(
        result.tool_version
        for job, result in done
        if result is not None and runtime_name(job.runtime) in SNPE_RUNTIMES
    )
    return [
        ("ro.product.model", _text(props.get("model"))),
        ("ro.product.board", _text(props.get("board"))),
        ("ro.product.cpu.abi", _text(abi)),
        ("ro.build.version.sdk", _text(props.get("sdk"))),
        ("ro.product.manufacturer", _text(props.get("manufacturer"))),
        ("Date", when.strftime("%Y-%m-%d %H:%M:%S.%f")),
        ("Architectures", _text(architecture)),
        ("Devices", _text(_serial(device_id) if device_id else None)),
        (SNPE_VERSION_FIELD, _text(",".join(snpe_versions))),
    ]


# --- helpers ---------------------------------------------------------------------------------


def _forward(result: Result) -> tuple[Stats, str]:
    if result.forward_stats is not None:
        return result.forward_stats, FORWARD_KEY
    return result.stats, TOTAL_KEY


def _layers(result: Result) -> tuple[Stats, str]:
    if result.layers_stats is not None:
        return result.layers_stats, LAYERS_PROFILED
    return _forward(result)


def _whole(value: float) -> int:
    """snpe-bench reports Forward Propagate and Total Inference Time in whole microseconds."""
    return int(round(float(value)))


def _tenths(value: float) -> float:
    return round(float(value), 1)


def _by_device(rows: Sequence[Row]) -> dict[str | None, list[Row]]:
    """Each device's rows in store order; one empty group when no job is done."""
    groups: dict[str | None, list[Row]] = {}
    done_devices = {job.device_id for job, result in rows if _is_done(job, result)}
    for job, result in rows:
        if job.device_id in done_devices:
            groups.setdefault(job.device_id, []).append((job, result))
    return groups or {None: []}


def _is_done(job: Job, result: Result | None) -> bool:
    return result is not None and JobState(job.state) is JobState.DONE


def _runtime_names(rows: Sequence[Row]) -> dict[str, str]:
    """devlab runtime -> the name the table uses, for the runtimes in it."""
    return {job.runtime: runtime_name(job.runtime) for job, result in rows if _is_done(job, result)}


def _csv_text(table: Sequence[LatencyRow]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(table)  # csv's defaults, as create_latency_table.py: CRLF
    return buffer.getvalue()


def _colon_text(fields: Sequence[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=":").writerows(fields)  # as create_latency_table.py's .meta
    return buffer.getvalue()


def _slug(device_id: str) -> str:
    """A device id as part of a file name (``adb:emulator-5554`` -> ``adb-emulator-5554``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", device_id).strip("-") or "device"


def _serial(device_id: str) -> str:
    """snpe-bench lists phones by adb serial; other devices keep their devlab id."""
    return device_id.removeprefix("adb:")


def _text(value: Any) -> str:
    return str(value) if value not in (None, "") else UNKNOWN


def _unique(values: Iterable[str]) -> list[str]:
    return [value for value in dict.fromkeys(values) if value]
