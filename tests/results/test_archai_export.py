"""devlab's result rows as archai's SNPE benchmark-farm status rows, read back as archai does.

The rows come from real jobs on host:cpu (ONNX Runtime, two rounds each so the farm's ``stdev``
column exists) kept in a real SQLite store; the expected figures are computed here from that
store's raw iterations, never typed in. The readers are re-implementations of archai's own code
(github:microsoft/archai):

- ``fetch_all``: ``archai/discrete_search/evaluators/remote_azure_benchmark.py``
  ``RemoteAzureBenchmarkEvaluator.fetch_all``, one pass of its polling loop over stored entities
  (what ``ArchaiStore.get_existing_status`` returns);
- ``get_total_inference_avg`` / ``get_mean_benchmark`` / ``benchmarks_complete``:
  ``tasks/face_segmentation/aml/azure/runner.py``, how the runner reads a row's benchmark runs;
- ``is_pending_work``: the filters of ``runner.py`` ``find_work_prioritized`` (over
  ``get_all_status_entities(status='complete', not_equal=True)``) that decide whether a runner
  would take a row up again;
- ``read_status``: ``tasks/face_segmentation/aml/azure/compare_status.py`` ``read_status``,
  which reads the CSV that ``status.py`` (``ArchaiStore.print_entities``) prints.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backends.core.records import JobSettings, JobState
from backends.core.store import STORE_FILE, Store
from backends.results import archai
from support.helpers import make_mlp, measure_on_host, run_devlab

TWO_ROUNDS = JobSettings(
    warmup=1, runs=6, rounds=2, min_round_s=0, skip_canary=True, precision_pct=0, skip_parity=True
)
NAMES = ("id_arch_a", "id_arch_b")  # RemoteAzureBenchmarkEvaluator names rows id_<archid>


# --- the readers: archai's own code, re-implemented -------------------------------------------


def get_total_inference_avg(entity: dict) -> list[float]:
    if "total_inference_avg" in entity and entity["total_inference_avg"]:
        try:
            return json.loads(entity["total_inference_avg"])
        except Exception:
            pass
    return []


def benchmarks_complete(entity: dict) -> int:
    return len(get_total_inference_avg(entity))


def get_mean_benchmark(entity: dict) -> float:
    avg = get_total_inference_avg(entity)
    if len(avg) > 0:
        return statistics.mean(avg)
    return 0


def fetch_all(store: dict[str, dict], archids: list[str], metric_key: str) -> list:
    """One pass of RemoteAzureBenchmarkEvaluator.fetch_all's loop; (results, completed)."""
    results = [None] * len(archids)
    completed = [False] * len(archids)
    for i, archid in enumerate(archids):
        if not completed[i]:
            entity = store.get(archid)
            if entity is not None:
                if metric_key in entity and entity[metric_key]:
                    results[i] = entity[metric_key]
                # "error": skipped with a message; status "complete": done
                if "error" in entity or entity["status"] == "complete":
                    completed[i] = True
    return [results, completed]


def is_pending_work(entity: dict) -> bool:
    """Whether find_work_prioritized would queue the row (no device, benchmark-only rows)."""
    if entity["status"] == "complete":  # get_all_status_entities(status='complete', ne)
        return False
    if "node" in entity and entity["node"]:  # is_locked
        return False
    return "error" not in entity  # "skipping ... because something went wrong"


def read_status(filename: Path) -> dict[str, dict]:
    header = None
    with open(filename) as f:
        reader = csv.reader(f, delimiter=",")
        for row in reader:
            header = [x.strip() for x in row]
            break
    result = {}
    with open(filename) as f:
        reader = csv.DictReader(f, fieldnames=header, delimiter=",")
        next(reader)
        for row in reader:
            if "name" in row:
                result[row["name"]] = row
    return result


# --- real rows --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list, dict]]:
    """Two tiny MLPs in two rounds and one unreadable file on host:cpu; the store's rows."""
    folder = tmp_path_factory.mktemp("archai")
    models = [
        make_mlp(folder / f"{name}.onnx", 8 * (i + 1), seed=i) for i, name in enumerate(NAMES)
    ]
    broken = folder / "id_broken.onnx"
    broken.write_bytes(b"not an onnx model")
    store, rows, devices = measure_on_host(folder, [*models, broken], TWO_ROUNDS)
    yield rows, devices
    store.close()


def round_means_s(result) -> list[float]:
    """Each round's mean, in seconds, straight from the stored iterations."""
    bounds = np.cumsum([0, *result.round_sizes])
    lat = np.asarray(result.latencies_us)
    return [float(lat[a:b].mean()) / 1e6 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def entities_by_name(folder: Path) -> dict[str, dict]:
    entities = json.loads((folder / "archai" / "status.json").read_text())
    return {entity["RowKey"]: entity for entity in entities}


# --- tests ------------------------------------------------------------------------------------


def test_done_jobs_are_complete_rows_that_archais_evaluator_reads(measured, tmp_path) -> None:
    rows, devices = measured
    archai.write_archai_status(tmp_path, rows, devices)
    store = entities_by_name(tmp_path)

    results, completed = fetch_all(store, [*NAMES, "id_broken"], metric_key="mean")
    assert completed == [True, True, True]
    assert results[2] is None  # the broken model: an error row, skipped
    stored = {job.model.name: result for job, result in rows if result is not None}
    for name, value in zip(NAMES, results[:2], strict=True):
        averages = round_means_s(stored[name])
        assert len(averages) == 2
        assert value == pytest.approx(statistics.mean(averages), rel=1e-12)
        assert get_mean_benchmark(store[name]) == value
        assert benchmarks_complete(store[name]) == 2
        assert get_total_inference_avg(store[name]) == pytest.approx(averages, rel=1e-12)
        stdev = statistics.stdev(averages) * 100 / statistics.mean(averages)
        assert store[name]["stdev"] == pytest.approx(stdev, rel=1e-9)
        assert store[name]["devlab_headline_s"] == pytest.approx(stored[name].headline_us / 1e6)
        assert store[name]["PartitionKey"] == "main" and store[name]["name"] == name
        assert not is_pending_work(store[name])  # a runner would not measure it again


def test_failed_jobs_are_error_rows(measured, tmp_path) -> None:
    rows, devices = measured
    archai.write_archai_status(tmp_path, rows, devices)
    broken = entities_by_name(tmp_path)["id_broken"]

    assert broken["status"] == "error" and broken["error"]
    assert "mean" not in broken and "total_inference_avg" not in broken
    assert not is_pending_work(broken)
    (failed,) = [job for job, _ in rows if JobState(job.state) is JobState.FAILED]
    assert broken["error"] == failed.error


def test_status_csv_reads_back_with_compare_status(measured, tmp_path) -> None:
    rows, devices = measured
    archai.write_archai_status(tmp_path, rows, devices)
    entities = entities_by_name(tmp_path)

    table = read_status(tmp_path / "archai" / "status.csv")
    assert set(table) == {*NAMES, "id_broken"}
    for name in NAMES:
        assert float(table[name]["mean"]) == entities[name]["mean"]
        assert table[name]["status"].strip() == "complete"
        assert int(table[name]["macs"]) == entities[name]["macs"]
    assert "PartitionKey" not in table[NAMES[0]] and "RowKey" not in table[NAMES[0]]


def test_devlab_run_with_export_writes_archai_rows(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "id_cli.onnx", 16)
    out = tmp_path / "out"
    run = run_devlab(
        *("--run", model, "--out", out, "--runs", "6", "--warmup", "1", "--rounds", "2"),
        *("--min-round-seconds", "0", "--no-canary", "--no-parity", "--precision", "0"),
        *("--export", "archai"),
        home=tmp_path,
    )
    assert run.returncode == 0, run.describe()
    store = Store(out / STORE_FILE)
    try:
        ((_, result),) = store.rows()
    finally:
        store.close()

    (entity,) = json.loads((out / "archai" / "status.json").read_text())
    assert entity["name"] == "id_cli" and entity["status"] == "complete"
    assert entity["mean"] == pytest.approx(statistics.mean(round_means_s(result)), rel=1e-12)
    assert not (out / "aw_nas").exists()  # only what --export named


def test_an_unknown_export_format_is_a_usage_error(tmp_path: Path) -> None:
    run = run_devlab("--run", tmp_path, "--export", "nnabla,archai", home=tmp_path)
    assert run.returncode == 2
    assert "unknown export format(s) 'nnabla'" in run.err_text
