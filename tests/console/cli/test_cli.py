"""The headless ``devlab --run`` command, end to end: real subprocesses, real ONNX Runtime, a
real SQLite store and the tables it writes into ``--out``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from support.helpers import (
    MODELS_DIR,
    STORE_NAME,
    expected_module_uid,
    make_mlp,
    read_json,
    read_latency_csv,
    read_results_csv,
    run_devlab,
    store_jobs,
)

LATENCY_KEYS = {"Total Inference Time", "Forward Propagate", "Layers Time", "Call Overhead"}
STAT_NAMES = ["Min_Time", "Avg_Time", "Max_Time", "Median_Time"]
TOTAL_STAT_NAMES = [*STAT_NAMES, "Normalised_Time"]  # the canary ran: the normalised median too
NUMERIC_COLUMNS = ("min_us", "mean_us", "median_us", "p90_us", "p99_us", "max_us", "std_us")
# exact counts: no extra rounds, rounds not sized by time
FAST = ("--runs", "5", "--warmup", "1", "--precision", "0", "--min-round-seconds", "0")


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    """A private copy of the sample MLP (so the test never touches the repository)."""
    target = tmp_path / "models" / "mlp.onnx"
    target.parent.mkdir(exist_ok=True)
    return Path(shutil.copy(MODELS_DIR / "mlp.onnx", target))


def copy_asset(tmp_path: Path, name: str) -> Path:
    target = tmp_path / "models" / name
    target.parent.mkdir(exist_ok=True)
    return Path(shutil.copy(MODELS_DIR / name, target))


def by_model(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["model"]: row for row in rows}


def assert_measured(row: dict[str, str], runs: int) -> None:
    """A done results.csv row with finite, ordered statistics over ``runs`` iterations."""
    assert row["status"] == "done", row
    assert row["error"] == ""
    values = {column: float(row[column]) for column in NUMERIC_COLUMNS}
    assert all(math.isfinite(v) for v in values.values()), values
    assert 0 < values["min_us"] <= values["median_us"] <= values["max_us"], values
    assert values["min_us"] <= values["mean_us"] <= values["max_us"], values
    assert int(row["count"]) == runs
    assert int(row["attempts"]) == 1


# --- a normal run ---------------------------------------------------------------------------


def test_run_writes_results_and_latency_table(tmp_path: Path, mlp: Path) -> None:
    cifar = copy_asset(tmp_path, "mnv2_cifar32.onnx")
    out = tmp_path / "out"

    run = run_devlab(
        "--run",
        mlp,
        cifar,
        "--out",
        out,
        "--runs",
        "20",
        "--warmup",
        "2",
        "--precision",
        "0",
        "--min-round-seconds",
        "0",
        home=tmp_path,
    )

    assert run.returncode == 0, run.describe()
    for name in (
        STORE_NAME,
        "results.csv",
        "results.json",
        "iterations.csv",
        "latency_table.csv",
        "latency_table.json",
        "latency_table.meta",
    ):
        assert (out / name).is_file(), f"{name} missing; {run.describe()}"

    rows = read_results_csv(out)
    assert len(rows) == 2
    results = by_model(rows)
    assert set(results) == {"mlp", "mnv2_cifar32"}
    for row in rows:
        assert_measured(row, runs=20)
        assert row["device"] == "host:cpu"
        assert row["runtime"] == "onnxruntime"
    assert results["mlp"]["model_path"] == str(mlp)
    uids = {"mlp": expected_module_uid(mlp), "mnv2_cifar32": expected_module_uid(cifar)}
    assert uids["mlp"] == "mlp[[1,256]]"
    for model, uid in uids.items():
        assert results[model]["module_uid"] == uid

    records = read_json(out / "results.json")
    assert [r["job_id"] for r in records] == [r["job_id"] for r in rows]
    assert {r["job_id"]: r["median_us"] for r in records} == pytest.approx(
        {r["job_id"]: float(r["median_us"]) for r in rows}
    )

    iterations = (out / "iterations.csv").read_text().splitlines()
    assert len(iterations) == 1 + 2 * 20  # header + every timed run of both jobs

    # latency_table.csv: headerless "<ModuleUID>,<Runtime>,<LatencyKey>,<Stats>,<Value>"
    table = read_latency_csv(out)
    assert table, "latency_table.csv is empty"
    for line in table:
        assert len(line) == 5, line
        uid, runtime, key, stat, value = line
        assert " " not in uid
        assert runtime == "onnxruntime"
        assert key in LATENCY_KEYS
        assert stat in TOTAL_STAT_NAMES
        assert math.isfinite(float(value)) and float(value) > 0, line
    assert {line[0] for line in table} == set(uids.values())
    # no --per-layer: the total time (five stats), the forward time (the total less the call
    # cost of a null model, four stats) and that call cost, per model
    assert len(table) == 2 * (len(TOTAL_STAT_NAMES) + len(STAT_NAMES) + 1)
    assert {line[2] for line in table} == {
        "Total Inference Time",
        "Forward Propagate",
        "Call Overhead",
    }

    nested = read_json(out / "latency_table.json")
    assert set(nested) == set(uids.values())
    for uid, runtime, key, stat, value in table:
        assert nested[uid][runtime][key][stat] == pytest.approx(float(value))
    for uid in uids.values():
        stats = nested[uid]["onnxruntime"]["Total Inference Time"]
        assert list(stats) == TOTAL_STAT_NAMES
        assert stats["Min_Time"] <= stats["Avg_Time"] <= stats["Max_Time"]
    # the table's Min_Time is the results table's min, in µs to 0.1
    mlp_min = nested[uids["mlp"]]["onnxruntime"]["Total Inference Time"]["Min_Time"]
    assert mlp_min == pytest.approx(float(results["mlp"]["min_us"]), abs=0.051)

    meta = read_json(out / "latency_table.meta")
    assert meta["units"] == "us"
    assert meta["rows"] == len(table)
    assert meta["modules"] == 2
    assert "host:cpu" in meta["devices"]
    assert meta["tools"] == {"onnxruntime-python": ort.__version__}


def test_per_layer_on_a_device_without_it_is_a_usage_error_with_the_fix(
    tmp_path: Path, mlp: Path
) -> None:
    """OpenVINO's CPU plugin has no per-layer pass here: the run refuses rather than measure
    a job whose per-layer table would stay empty."""
    pytest.importorskip("openvino")
    out = tmp_path / "out"

    run = run_devlab(
        "--run", mlp, "--out", out, *FAST, "--device", "openvino:CPU", "--per-layer", home=tmp_path
    )

    assert run.returncode == 2, run.describe()
    assert "openvino:CPU cannot profile per layer" in run.stderr, run.describe()
    assert "without per-layer profiling (no --per-layer" in run.stderr, run.describe()


def test_per_layer_adds_forward_and_layers_rows(tmp_path: Path, mlp: Path) -> None:
    out = tmp_path / "out"

    run = run_devlab("--run", mlp, "--out", out, *FAST, "--per-layer", home=tmp_path)

    assert run.returncode == 0, run.describe()
    table = read_latency_csv(out)
    uid = expected_module_uid(mlp)
    keys = {}
    for line in table:
        assert len(line) == 5 and line[0] == uid, line
        keys.setdefault(line[2], []).append(line[3])
        assert float(line[4]) > 0, line
    assert set(keys) == LATENCY_KEYS
    assert keys.pop("Total Inference Time") == TOTAL_STAT_NAMES
    assert keys.pop("Call Overhead") == ["Median_Time"]  # the null model's call, once
    assert all(stats == STAT_NAMES for stats in keys.values()), keys
    (row,) = read_results_csv(out)
    assert_measured(row, runs=5)
    assert float(row["forward_median_us"]) > 0
    assert float(row["layers_median_us"]) > 0
    assert set(read_json(out / "latency_table.meta")["latency_keys"]) == LATENCY_KEYS


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_is_reported_and_good_model_still_measured(tmp_path: Path, mlp: Path) -> None:
    bad = tmp_path / "not-a-model.txt"
    bad.write_text("these are not the bytes of an ONNX model\n")
    out = tmp_path / "out"

    run = run_devlab("--run", bad, mlp, "--out", out, *FAST, home=tmp_path)

    assert run.returncode == 1, run.describe()
    failure_lines = [line for line in run.stderr.splitlines() if "not-a-model.txt" in line]
    assert failure_lines, run.describe()
    assert any("not an ONNX model" in line for line in failure_lines), run.describe()

    rows = read_results_csv(out)
    assert len(rows) == 2
    (good,) = [r for r in rows if r["model_path"] == str(mlp)]
    (failed,) = [r for r in rows if r["model_path"] != str(mlp)]
    assert_measured(good, runs=5)
    assert Path(failed["model_path"]).name == "not-a-model.txt"
    assert failed["status"] == "failed"
    assert "not an ONNX model" in failed["error"]
    assert failed["median_us"] == ""
    # only the measured model reaches the latency table
    assert {line[0] for line in read_latency_csv(out)} == {"mlp[[1,256]]"}


def test_truncated_model_and_empty_folder_are_named(tmp_path: Path, mlp: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(mlp.read_bytes()[:1000])
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    out = tmp_path / "out"

    run = run_devlab("--run", truncated, empty, mlp, "--out", out, *FAST, home=tmp_path)

    assert run.returncode == 1, run.describe()
    lines = run.stderr.splitlines()
    truncated_lines = [line for line in lines if "truncated.onnx" in line]
    assert any("truncated or corrupt ONNX file" in line for line in truncated_lines), run.describe()
    folder_lines = [line for line in lines if "empty-folder" in line]
    assert any("no .onnx files" in line for line in folder_lines), run.describe()

    rows = read_results_csv(out)
    states = {Path(r["model_path"]).name: r["status"] for r in rows}
    assert states == {"truncated.onnx": "failed", "empty-folder": "failed", "mlp.onnx": "done"}


def test_no_valid_input_exits_2(tmp_path: Path, mlp: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(mlp.read_bytes()[:1000])
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    out = tmp_path / "out"

    run = run_devlab(
        "--run", truncated, empty, tmp_path / "missing.onnx", "--out", out, *FAST, home=tmp_path
    )

    assert run.returncode == 2, run.describe()
    assert "no valid input" in run.err_text
    for name in ("truncated.onnx", "empty-folder", "missing.onnx"):
        assert name in run.stderr, run.describe()
    assert "no such file" in run.err_text
    assert {r["status"] for r in read_results_csv(out)} == {"failed"}


def test_dynamic_batch_needs_input_shape(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "dyn.onnx", hidden=32, in_features=16, batch="batch")

    first = run_devlab("--run", model, "--out", tmp_path / "out1", *FAST, home=tmp_path)

    assert first.returncode == 2, first.describe()  # its only input could not be read
    assert "--input-shape" in first.err_text
    assert "--input-shape x=<batch>x16" in first.err_text  # the fix, its dynamic dim named
    (row,) = read_results_csv(tmp_path / "out1")
    assert row["status"] == "failed" and "--input-shape" in row["error"]

    out = tmp_path / "out2"
    second = run_devlab(
        "--run", model, "--out", out, *FAST, "--input-shape", "x=1x16", home=tmp_path
    )

    assert second.returncode == 0, second.describe()
    (row,) = read_results_csv(out)
    assert_measured(row, runs=5)
    assert row["module_uid"] == "dyn[[1,16]]"
    assert {line[0] for line in read_latency_csv(out)} == {"dyn[[1,16]]"}


def test_fixed_item_replaces_its_failure_in_the_same_out(tmp_path: Path) -> None:
    """Rerunning into the same --out with the fix: the old failure row goes away."""
    model = make_mlp(tmp_path / "dyn.onnx", hidden=32, in_features=16, batch="batch")
    out = tmp_path / "out"
    first = run_devlab("--run", model, "--out", out, *FAST, home=tmp_path)
    assert first.returncode == 2, first.describe()

    second = run_devlab(
        "--run", model, "--out", out, *FAST, "--input-shape", "x=1x16", home=tmp_path
    )

    assert second.returncode == 0, second.describe()
    (row,) = read_results_csv(out)
    assert row["status"] == "done"


# --- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--runs", "5", "--min-seconds", "1"], ["--runs", "--min-seconds"]),
        (["--device", "nosuch:dev"], ["nosuch:dev", "host:cpu"]),
        (["--config", "/nonexistent.toml"], ["/nonexistent.toml", "does not exist"]),
        (["--input-shape", "bad"], ["'bad'", "NAME="]),
    ],
    ids=["runs-and-min-seconds", "unknown-device", "missing-config", "bad-input-shape"],
)
def test_usage_errors_exit_2(
    tmp_path: Path, mlp: Path, extra: list[str], expected: list[str]
) -> None:
    out = tmp_path / "out"

    run = run_devlab("--run", mlp, "--out", out, *extra, home=tmp_path)

    assert run.returncode == 2, run.describe()
    assert "devlab: error:" in run.err_text
    for text in expected:
        assert text in run.err_text, run.describe()
    assert "Traceback" not in run.stderr
    assert not (out / "results.csv").exists()  # nothing was measured


# --- machine-readable output, devices, no arguments ----------------------------------------


def test_json_prints_result_records(tmp_path: Path, mlp: Path) -> None:
    out = tmp_path / "out"

    run = run_devlab("--run", mlp, "--out", out, *FAST, "--json", home=tmp_path)

    assert run.returncode == 0, run.describe()
    records = json.loads(run.stdout)  # stdout holds nothing but the JSON
    assert isinstance(records, list) and len(records) == 1
    (record,) = records
    assert record["status"] == "done"
    assert record["model"] == "mlp"
    assert record["module_uid"] == "mlp[[1,256]]"
    assert record["device"] == "host:cpu"
    assert record["count"] == 5
    assert isinstance(record["median_us"], float) and record["median_us"] > 0
    assert record["settings"]["runs"] == 5 and record["settings"]["warmup"] == 1
    assert records == read_json(out / "results.json")


def test_devices_json_lists_host_cpu(tmp_path: Path) -> None:
    run = run_devlab("devices", "--json", home=tmp_path)

    assert run.returncode == 0, run.describe()
    devices = {d["id"]: d for d in json.loads(run.stdout)}
    host = devices["host:cpu"]
    assert host["kind"] == "host"
    assert host["state"] == "online"
    assert "onnxruntime" in host["runtimes"]
    properties = host["properties"]
    assert properties["onnxruntime"] == ort.__version__
    assert isinstance(properties["cores"], int) and properties["cores"] >= 1
    assert properties["cpu_model"]
    assert properties["machine"]


def test_help_documents_run_and_exit_codes(tmp_path: Path) -> None:
    run = run_devlab("--help", home=tmp_path)

    assert run.returncode == 0, run.describe()
    assert "--run" in run.stdout and "--min-seconds" in run.stdout
    assert "130 interrupted" in run.stdout


# --- running again --------------------------------------------------------------------------


def test_second_run_keeps_results_and_fresh_measures_again(tmp_path: Path, mlp: Path) -> None:
    cifar = copy_asset(tmp_path, "mnv2_cifar32.onnx")
    out = tmp_path / "out"
    args = ("--run", mlp, cifar, "--out", out, *FAST)

    first = run_devlab(*args, home=tmp_path)
    assert first.returncode == 0, first.describe()
    before = read_results_csv(out)
    jobs_before = store_jobs(out / STORE_NAME)

    second = run_devlab(*args, home=tmp_path)

    assert second.returncode == 0, second.describe()
    assert "2 job(s) already measured" in second.err_text
    assert "results kept" in second.err_text
    after = read_results_csv(out)
    assert len(after) == len(before) == 2
    keep = ("job_id", "median_us", "min_us", "max_us", "started_at", "finished_at", "attempts")
    assert [{k: r[k] for k in keep} for r in after] == [{k: r[k] for k in keep} for r in before]
    jobs_after = store_jobs(out / STORE_NAME)
    assert jobs_after == jobs_before  # the store was not touched: nothing re-measured
    assert "done mlp" not in second.err_text  # and no job ran

    third = run_devlab(*args, "--fresh", home=tmp_path)

    assert third.returncode == 0, third.describe()
    assert "already measured" not in third.err_text
    fresh = read_results_csv(out)
    assert len(fresh) == 2
    assert {r["job_id"] for r in fresh}.isdisjoint({r["job_id"] for r in before})
    for old, new in zip(before, fresh, strict=True):
        assert new["model"] == old["model"]
        assert new["started_at"] > old["finished_at"]  # ISO-8601 UTC strings sort by time
        assert_measured(new, runs=5)
    assert len(store_jobs(out / STORE_NAME)) == 2


# --- known defects --------------------------------------------------------------------------


def test_error_lines_are_not_wrapped_in_logs(tmp_path: Path, mlp: Path) -> None:
    folder = tmp_path / ("a-folder-with-a-long-name-" + "x" * 60)
    folder.mkdir()
    bad = folder / "not-a-model.txt"
    bad.write_text("not onnx\n")

    run = run_devlab(
        "--run", bad, mlp, "--out", tmp_path / "out", *FAST, home=tmp_path, columns=None
    )

    assert run.returncode == 1, run.describe()
    assert any(str(bad) in line for line in run.stderr.splitlines()), run.describe()


def test_out_that_is_a_file_is_a_usage_error(tmp_path: Path, mlp: Path) -> None:
    not_a_folder = tmp_path / "results.txt"
    not_a_folder.write_text("a file, not a folder\n")

    run = run_devlab("--run", mlp, "--out", not_a_folder, *FAST, home=tmp_path)

    assert "Traceback" not in run.stderr, run.describe()
    assert run.returncode == 2, run.describe()
    assert "devlab: error:" in run.err_text and "results.txt" in run.err_text


def test_explicit_runs_overrides_config_min_seconds(tmp_path: Path, mlp: Path) -> None:
    config = tmp_path / "devlab.toml"
    config.write_text("[defaults]\nmin_seconds = 0.01\n")
    out = tmp_path / "out"

    run = run_devlab(
        "--run",
        mlp,
        "--out",
        out,
        "--config",
        config,
        "--runs",
        "20000",
        "--warmup",
        "1",
        "--precision",
        "0",
        "--min-round-seconds",
        "0",
        "--json",
        home=tmp_path,
    )

    assert run.returncode == 0, run.describe()
    (record,) = json.loads(run.stdout)
    assert record["settings"]["runs"] == 20000
    assert record["settings"]["min_seconds"] is None
    assert record["count"] == 20000


def test_config_string_for_a_boolean_option_does_not_enable_it(tmp_path: Path, mlp: Path) -> None:
    config = tmp_path / "devlab.toml"
    config.write_text('[defaults]\nper_layer = "no"\n')
    out = tmp_path / "out"

    run = run_devlab("--run", mlp, "--out", out, "--config", config, *FAST, "--json", home=tmp_path)

    if run.returncode == 2:  # rejected as a bad config: a right outcome
        assert "devlab: error:" in run.err_text and "devlab.toml" in run.err_text, run.describe()
        return
    assert run.returncode == 0, run.describe()
    (record,) = json.loads(run.stdout)
    assert record["settings"]["per_layer"] is False
    assert record["forward_median_us"] is None


# --- the default protocol -------------------------------------------------------------------


def test_default_protocol_rows_carry_rounds_canary_interval_and_parity(
    tmp_path: Path, mlp: Path
) -> None:
    out = tmp_path / "out"
    run = run_devlab("--run", mlp, "--out", out, "--runs", "50", home=tmp_path)
    assert run.returncode == 0, run.describe()
    (row,) = read_results_csv(out)
    rounds = int(row["rounds"])
    # 5 rounds (plus extras) of at least 10 runs each, sized by time: a ~20 us model runs
    # thousands of times in a round's 0.2 s
    assert rounds >= 5 and int(row["count"]) > 100 * rounds
    assert len(json.loads(row["round_medians_us"])) == rounds
    assert float(row["canary_median_us"]) > 0 and float(row["normalised_median_us"]) > 0
    # the interval brackets the headline: normalised unless that made the rounds clearly noisier
    assert float(row["ci_low_us"]) <= float(row["headline_us"]) <= float(row["ci_high_us"])
    assert row["headline_basis"].startswith(("normalised", "raw"))
    assert float(row["headline_us"]) in (
        float(row["normalised_median_us"]),
        float(row["median_us"]),
    )
    assert row["converged"] in ("True", "False")
    assert row["parity_ok"] == "True"
    assert float(row["conditions_start.loadavg_1m"]) >= 0


def test_unconverged_results_are_listed_at_the_end(tmp_path: Path, mlp: Path) -> None:
    run = run_devlab(
        "--run",
        mlp,
        "--out",
        tmp_path / "out",
        "--runs",
        "6",
        "--rounds",
        "3",
        "--precision",
        "0.0001",
        "--max-rounds",
        "4",
        home=tmp_path,
    )
    assert run.returncode == 0, run.describe()
    assert "1 result(s) did not reach the precision target" in run.stderr
    assert "mlp on host:cpu" in run.stderr and "after 4 rounds" in run.stderr
    (row,) = read_results_csv(tmp_path / "out")
    assert row["converged"] == "False" and row["extra_rounds"] == "1"
    assert "precision gate: not converged" in row["warnings"]
