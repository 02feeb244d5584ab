"""devlab's latency table in aw_nas's layout, read back the way aw_nas's profiler reads it.

The rows come from real jobs on host:cpu (ONNX Runtime, tiny settings) kept in a real SQLite
store; the expected numbers are read from that store, never typed in. The readers below are
re-implementations of ssprofile's own code (github:patrick22414/ssprofile, the search-space
profiling phase of aw_nas's BBSSP example, linked from aw_nas's examples/research/bbssp):

- ``read_dpu_latency``: ``ssprofile/_profiler.py`` ``SearchSpaceProfiler.profile_latency``, the
  part after the DPU answered (mean of ``float(line.split()[3])`` over lines starting ``All``);
- ``read_table``: the tables ``ssprofile/main.py`` ``main`` dumps (one ``yaml.safe_dump({k: v})``
  per sorted key), loaded as one YAML mapping;
- ``select_search_space``: ``ssprofile/_profiler.py`` ``SearchSpaceProfiler.select_search_space``,
  which pairs the accuracy and latency tables by model id and parses the ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from backends.core.records import JobSettings, JobState
from backends.core.store import STORE_FILE, Store
from backends.results import awnas
from support.helpers import make_mlp, measure_on_host, run_devlab

TINY = JobSettings(
    warmup=1, runs=5, rounds=1, min_round_s=0, skip_canary=True, precision_pct=0, skip_parity=True
)
# ssprofile names a search-space base network <space>_<block index per cell group>
MODEL_IDS = ("Mobile_1_1", "Mobile_2_1", "Mobile_1_0")


# --- the reader: ssprofile's own code, re-implemented ---------------------------------------


def read_dpu_latency(path: Path) -> float:
    """SearchSpaceProfiler.profile_latency: the mean RunTime(ms) of the ``All`` rows."""
    latency = []
    with open(path) as fi:
        for line in fi:
            if line.strip().startswith("All"):
                latency.append(float(line.split()[3]))
    return sum(latency) / len(latency)


def read_table(path: Path) -> dict[str, float]:
    with open(path) as fi:
        return yaml.safe_load(fi)


def select_search_space(
    accuracy_table: dict[str, float],
    latency_table: dict[str, float],
    search_spaces: dict[str, list[str]],
    num_cell_groups: int,
    select_ss_threshold: int,
    latency_cost_coeff: float = 0.5,
    accuracy_threshold: float = 0.92,
    accuracy_cost_scale: float = 1.0,
) -> list[list[str]]:
    """SearchSpaceProfiler.select_search_space, without its prints."""
    cost_table = {}
    for model_id in accuracy_table:
        acc = accuracy_table[model_id]
        lat = latency_table[model_id]
        cost_acc = math.exp(-(acc - accuracy_threshold) / accuracy_cost_scale)
        cost_lat = -1 / lat
        cost_table[model_id] = cost_acc + latency_cost_coeff * cost_lat
    selected_models: dict[str, list[str]] = {ss: [] for ss in search_spaces}
    selected_ss = None
    for model_id in sorted(cost_table, key=lambda k: cost_table[k]):
        for ss in search_spaces:
            if model_id.startswith(ss):
                selected_models[ss].append(model_id)
            if len(selected_models[ss]) >= select_ss_threshold:
                selected_ss = ss
        if selected_ss is not None:
            break
    else:
        raise RuntimeError("No search space contains enough SSBNs")
    cell_shared: list[set[int]] = [set() for _ in range(num_cell_groups)]
    for model_id in selected_models[selected_ss]:
        selected = [int(prim_idx) for prim_idx in model_id.split("_")[1:]]
        assert len(selected) == num_cell_groups
        for i in range(num_cell_groups):
            cell_shared[i].add(selected[i])
    shared = search_spaces[selected_ss]
    return [[shared[idx] for idx in sorted(group)] for group in cell_shared]


# --- real rows --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list, dict]]:
    """Three tiny MLPs and one unreadable file queued on host:cpu; the store's rows."""
    folder = tmp_path_factory.mktemp("awnas")
    models = [
        make_mlp(folder / f"{mid}.onnx", 8 * (i + 1), seed=i) for i, mid in enumerate(MODEL_IDS)
    ]
    broken = folder / "Mobile_0_0.onnx"
    broken.write_bytes(b"not an onnx model")
    store, rows, devices = measure_on_host(folder, [*models, broken], TINY)
    yield folder, rows, devices
    store.close()


def done_results(rows: list) -> dict[str, object]:
    return {job.model.name: result for job, result in rows if JobState(job.state) is JobState.DONE}


# --- tests ------------------------------------------------------------------------------------


def test_latency_table_is_ssprofiles_mapping_of_model_id_to_ms(measured, tmp_path: Path) -> None:
    _, rows, devices = measured
    written = awnas.write_awnas_tables(tmp_path, rows, devices)

    profile = tmp_path / "aw_nas" / "onnxruntime"
    assert profile / "latency_table.yaml" in written
    table = read_table(profile / "latency_table.yaml")
    stored = done_results(rows)
    assert sorted(stored) == sorted(MODEL_IDS)  # the broken file failed and is not in it
    assert set(table) == set(MODEL_IDS)
    for model_id, result in stored.items():
        # Median_Time (devlab's headline) of the nnabla-nas table, µs to 0.1, here in ms
        assert table[model_id] == pytest.approx(result.stats.median / 1000, abs=1e-4)
    # one safe_dump per sorted key, as ssprofile's main writes it
    keys = [
        line.split(":")[0] for line in (profile / "latency_table.yaml").read_text().splitlines()
    ]
    assert [k for k in keys if not k.startswith("#")] == sorted(MODEL_IDS)


def test_each_models_dpu_answer_parses_to_its_table_entry(measured, tmp_path: Path) -> None:
    _, rows, devices = measured
    awnas.write_awnas_tables(tmp_path, rows, devices)

    profile = tmp_path / "aw_nas" / "onnxruntime"
    table = read_table(profile / "latency_table.yaml")
    for model_id in MODEL_IDS:
        assert read_dpu_latency(profile / "vitis" / f"{model_id}.latency.txt") == table[model_id]


def test_the_mean_statistic_is_the_runs_mean(measured, tmp_path: Path) -> None:
    _, rows, devices = measured
    awnas.write_awnas_tables(tmp_path, rows, devices, stat="Avg_Time")

    table = read_table(tmp_path / "aw_nas" / "onnxruntime" / "latency_table.yaml")
    for model_id, result in done_results(rows).items():
        assert table[model_id] == pytest.approx(result.stats.mean / 1000, abs=1e-4)
    with pytest.raises(ValueError, match="unknown statistic"):
        awnas.write_awnas_tables(tmp_path, rows, devices, stat="p50")


def test_no_accuracy_is_written_and_the_hook_pairs_as_ssprofile_does(
    measured, tmp_path: Path
) -> None:
    """devlab writes no accuracy; accuracies measured elsewhere go through the hook and
    ssprofile's selection reads both tables, ids parsed into block indices."""
    _, rows, devices = measured
    awnas.write_awnas_tables(tmp_path, rows, devices)
    profile = tmp_path / "aw_nas" / "onnxruntime"
    assert not (profile / "accuracy_table.yaml").exists()

    # accuracies the user measured (inputs of this test, not results of devlab)
    given = {"Mobile_1_1": 0.93, "Mobile_2_1": 0.90, "Mobile_1_0": 0.91}
    awnas.write_accuracy_table(profile, given)
    accuracy = read_table(profile / "accuracy_table.yaml")
    latency = read_table(profile / "latency_table.yaml")
    assert accuracy == given

    spaces = {"Mobile": ["Mobileblock_0", "Mobileblock_1", "Mobileblock_2"]}
    selected = select_search_space(accuracy, latency, spaces, 2, select_ss_threshold=3)
    assert selected == [["Mobileblock_1", "Mobileblock_2"], ["Mobileblock_0", "Mobileblock_1"]]

    paired = awnas.pair_tables(awnas.read_table(profile / "latency_table.yaml"), accuracy)
    assert {(p.model_id, p.latency_ms) for p in paired} == set(latency.items())
    with pytest.raises(ValueError, match="no latency for 1 model"):
        awnas.pair_tables(latency, {**given, "Mobile_0_0": 0.5})  # the broken model


def test_devlab_run_with_export_writes_the_aw_nas_tables(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "Res_1_1.onnx", 16)
    out = tmp_path / "out"
    run = run_devlab(
        *("--run", model, "--out", out, "--runs", "5", "--warmup", "1", "--rounds", "1"),
        *("--min-round-seconds", "0", "--no-canary", "--no-parity", "--precision", "0"),
        *("--export", "aw_nas"),
        home=tmp_path,
    )
    assert run.returncode == 0, run.describe()

    table = read_table(out / "aw_nas" / "onnxruntime" / "latency_table.yaml")
    store = Store(out / STORE_FILE)
    try:
        ((job, result),) = store.rows()
    finally:
        store.close()
    assert table == {"Res_1_1": pytest.approx(result.stats.median / 1000, abs=1e-4)}
    assert "latency_table.yaml" in run.err_text
