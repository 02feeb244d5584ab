"""devlab's latency table in the layout aw_nas's search-space profiler (ssprofile) reads.

ssprofile (github:patrick22414/ssprofile, the profiling phase of aw_nas's BBSSP example) keeps,
per profile folder, ``latency_table.yaml`` and ``accuracy_table.yaml``: ``ssprofile/main.py``
writes each as one ``yaml.safe_dump({model_id: value})`` per sorted key, so the file is one flat
mapping. A latency is in milliseconds: ``SearchSpaceProfiler.profile_latency`` (``_profiler.py``)
saves the DPU's answer as ``vitis/<model_id>.latency.txt`` and takes the mean of the RunTime(ms)
column (``line.split()[3]``) of its ``All`` rows. ``select_search_space`` then pairs the tables
by model id: every model with an accuracy must have a latency.

devlab writes the latency side from ``tables.latency_table_rows`` (one profile folder per runtime
label, the model's file name as its id, so ONNX files named after ssprofile's ids
``<space>_<i>_<j>...`` keep them). devlab runs no accuracy jobs yet: ``write_accuracy_table`` is
the hook that side fills (a future accuracy job, or the user's own training), and
``pair_tables`` joins the two the way ``select_search_space`` does. No accuracy is ever made up.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from backends.core.records import Device, Job, JobState
from backends.results.tables import (
    LATENCY_STATS,
    NORMALISED_STAT,
    TOTAL_KEY,
    Row,
    atomic_write_text,
    latency_table_rows,
)

FOLDER = "aw_nas"
LATENCY_TABLE = "latency_table.yaml"
ACCURACY_TABLE = "accuracy_table.yaml"
DPU_FOLDER = "vitis"  # where ssprofile keeps each model's DPU answer, <model_id>.latency.txt
META_FILE = "devlab_meta.json"
DEFAULT_STAT = "Median_Time"  # devlab's headline; Avg_Time is the plain mean of the runs
STATS: tuple[str, ...] = (*(name for name, _ in LATENCY_STATS), NORMALISED_STAT)


@dataclass(frozen=True)
class LatencyEntry:
    """One model's latency for aw_nas: its id, the runtime label it was measured with, and ms."""

    model_id: str
    label: str
    latency_ms: float
    stat: str
    workload_mop: float | None  # 2 x MACs / 1e6, the DPU profiler's Workload(MOP) column


@dataclass(frozen=True)
class PairedEntry:
    """A model with both figures, the pair ssprofile's ``select_search_space`` costs."""

    model_id: str
    accuracy: float
    latency_ms: float


def latency_entries(
    rows: Sequence[Row], devices: Mapping[str, Device], stat: str = DEFAULT_STAT
) -> list[LatencyEntry]:
    """One entry per model and runtime label, from devlab's latency table (its rows).

    The table's ``Total Inference Time`` row with ``stat`` is used (µs to ms); a result without
    that statistic (a tool that prints no median) falls back to ``Avg_Time``. Two models with
    one file name and label: the later job in store order wins, as in the latency table.
    """
    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}; choose from {', '.join(STATS)}")
    values: dict[tuple[str, str], dict[str, float]] = {}
    for uid, label, key, name, value in latency_table_rows(rows, devices):
        if key == TOTAL_KEY:
            values.setdefault((uid, label), {})[name] = value
    labels = {label for _, label in values}
    entries: dict[tuple[str, str], LatencyEntry] = {}
    for job in _done_jobs(rows):
        label = _label(job, labels)
        figures = values.get((job.model.module_uid, label))
        if not figures:
            continue
        used = stat if stat in figures else "Avg_Time"
        macs = job.model.macs
        entries[(job.model.name, label)] = LatencyEntry(
            model_id=job.model.name,
            label=label,
            latency_ms=round(figures[used] / 1000.0, 4),
            stat=used,
            workload_mop=round(2 * macs / 1e6, 3) if macs else None,
        )
    return list(entries.values())


def write_awnas_tables(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Row],
    devices: Mapping[str, Device],
    stat: str = DEFAULT_STAT,
) -> list[Path]:
    """``aw_nas/<label>/latency_table.yaml`` and ``vitis/<model_id>.latency.txt`` per model.

    Returns the tables, the ``vitis`` folders (not their thousand files) and the meta files.
    An accuracy table is never written here (see the module doc).
    """
    by_label: dict[str, list[LatencyEntry]] = {}
    for entry in latency_entries(rows, devices, stat):
        by_label.setdefault(entry.label, []).append(entry)
    written: list[Path] = []
    for label, entries in by_label.items():
        profile_dir = Path(out_dir) / FOLDER / _safe(label)
        (profile_dir / DPU_FOLDER).mkdir(parents=True, exist_ok=True)
        table = {entry.model_id: entry.latency_ms for entry in entries}
        path = profile_dir / LATENCY_TABLE
        atomic_write_text(path, _table_yaml(table, f"latency in ms ({entries[0].stat}), {label}"))
        written.append(path)
        for entry in entries:
            path = profile_dir / DPU_FOLDER / f"{_safe(entry.model_id)}.latency.txt"
            atomic_write_text(path, _dpu_answer(entry))
        written.append(profile_dir / DPU_FOLDER)
        meta = {
            "written_by": "devlab",
            "runtime_label": label,
            "units": "ms",
            "statistic": sorted({entry.stat for entry in entries}),
            "source": "devlab's latency table, LatencyKey 'Total Inference Time'",
            "accuracy_table": f"not written: devlab measures no accuracy ({ACCURACY_TABLE})",
        }
        path = profile_dir / META_FILE
        atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
        written.append(path)
    return written


def write_accuracy_table(
    profile_dir: str | os.PathLike[str], accuracy: Mapping[str, float]
) -> Path:
    """The accuracy side, in ssprofile's layout, from accuracies measured elsewhere.

    The hook for accuracy jobs: the ids must be the latency table's (the model file names).
    """
    path = Path(profile_dir) / ACCURACY_TABLE
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {model_id: float(value) for model_id, value in accuracy.items()}
    atomic_write_text(path, _table_yaml(table, "accuracy (fraction correct)"))
    return path


def read_table(path: str | os.PathLike[str]) -> dict[str, float]:
    """A latency or accuracy table as ssprofile wrote it (an empty file is an empty table)."""
    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    return {str(key): float(value) for key, value in (loaded or {}).items()}


def pair_tables(latency: Mapping[str, float], accuracy: Mapping[str, float]) -> list[PairedEntry]:
    """Join on model id as ``select_search_space`` does: per accuracy entry, its latency.

    ssprofile would stop with a KeyError on the first id without a latency; this names all.
    """
    missing = sorted(set(accuracy) - set(latency))
    if missing:
        raise ValueError(f"no latency for {len(missing)} model(s): {', '.join(missing)}")
    return [PairedEntry(mid, accuracy[mid], latency[mid]) for mid in accuracy]


# --- helpers -------------------------------------------------------------------------------


def _done_jobs(rows: Sequence[Row]) -> list[Job]:
    return [
        job for job, result in rows if result is not None and JobState(job.state) is JobState.DONE
    ]


def _label(job: Job, labels: set[str]) -> str:
    """The job's runtime label in the latency table (``runtime@device`` across devices)."""
    qualified = f"{job.runtime}@{job.device_id}"
    return qualified if qualified in labels else job.runtime


def _safe(name: str) -> str:
    """A file or folder name: anything but letters, digits and ``.-_@`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", name)


def _table_yaml(table: Mapping[str, float], what: str) -> str:
    """ssprofile's layout: one ``safe_dump({key: value})`` per sorted key, under a comment."""
    lines = [f"# {what}; written by devlab\n"]
    lines += [yaml.safe_dump({key: table[key]}) for key in sorted(table)]
    return "".join(lines)


def _dpu_answer(entry: LatencyEntry) -> str:
    """A DPU profiler's summary as ssprofile parses it: the ``All`` row's 4th field in ms."""
    workload = f"{entry.workload_mop:g}" if entry.workload_mop is not None else "-"
    return (
        f"# devlab: {entry.model_id} with {entry.label}; RunTime(ms) is {entry.stat}; "
        "Mem(MB) is not measured\n"
        "NodeName  Workload(MOP)  Mem(MB)  RunTime(ms)\n"
        f"All  {workload}  -  {entry.latency_ms:.4f}\n"
    )
