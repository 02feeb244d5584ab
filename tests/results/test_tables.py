"""Tests for backends.results.tables: results, iterations and the nnabla-nas latency table."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from backends.core.records import (
    Device,
    Job,
    JobSettings,
    JobState,
    Model,
    ModelInput,
    Result,
)
from backends.measure.stats import summarize
from backends.results import tables

HOST = Device(
    id="host:cpu",
    kind="host",
    name="Host CPU",
    runtimes=["onnxruntime"],
    properties={"cpu_model": "Ryzen 7 5800X", "cores": 8},
)
PHONE = Device(
    id="adb:R58M",
    kind="adb",
    name="Galaxy S21",
    runtimes=["onnxruntime", "tflite"],
    properties={"soc": "sd888", "android": "13"},
)

MBNET = Model(
    path="/models/mbnet.onnx",
    name="mbnet",
    sha256="a" * 64,
    inputs=[ModelInput("x", [1, 3, 32, 32], "float32")],
    parameters=1_234_567,
    macs=98_765_432,
)
TINY = Model(path="/models/tiny.onnx", name="tiny", sha256="b" * 64)

# Two rounds of four: round medians are 12.5 and 101.0, the whole median is 57.5, the mean 57.0.
MBNET_LAT = [10.0, 12.0, 13.0, 15.0, 100.0, 101.0, 101.0, 104.0]
FORWARD_LAT = [8.04, 8.16, 9.0]
LAYERS_LAT = [6.01, 6.5, 7.26]
TINY_LAT = [1.0, 2.0, 3.0, 4.0, 5.0]
PHONE_LAT = [300.0, 310.0, 320.0]
STARTED = 1_700_000_000.0  # 2023-11-14T22:13:20+00:00


def _job(job_id: str, model: Model, device: str, state: JobState, **kw: object) -> Job:
    shapes = {"x": [1, 3, 32, 32]}
    settings = kw.pop("settings", JobSettings(warmup=3, runs=8, rounds=2, input_shapes=shapes))
    return Job(
        id=job_id,
        model=model,
        device_id=device,
        runtime=str(kw.pop("runtime", "onnxruntime")),
        settings=settings,  # type: ignore[arg-type]
        state=state,
        **kw,  # type: ignore[arg-type]
    )


def _result(job_id: str, latencies: list[float], **kw: object) -> Result:
    return Result(
        job_id=job_id,
        latencies_us=latencies,
        stats=summarize(latencies),
        tool=str(kw.pop("tool", "onnxruntime")),
        tool_version=str(kw.pop("tool_version", "1.18.0")),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def rows() -> list[tuple[Job, Result | None]]:
    """One device: a fully profiled job, a plain job, a failed job and a queued one."""
    j1 = _job("j1", MBNET, "host:cpu", JobState.DONE, started_at=STARTED, finished_at=STARTED + 2)
    r1 = _result(
        "j1",
        MBNET_LAT,
        round_sizes=[4, 4],
        round_medians_us=[12.5, 101.0],
        forward_stats=summarize(FORWARD_LAT),
        layers_stats=summarize(LAYERS_LAT),
        load_us=5000.0,
        first_inference_us=250.0,
    )
    j2 = _job("j2", TINY, "host:cpu", JobState.DONE, settings=JobSettings(warmup=1, runs=5))
    r2 = _result("j2", TINY_LAT)
    j3 = _job("j3", MBNET, "host:cpu", JobState.FAILED, attempts=2, error="boom, out of memory")
    j4 = _job("j4", TINY, "host:cpu", JobState.QUEUED, priority=-1)
    return [(j1, r1), (j2, r2), (j3, None), (j4, None)]


@pytest.fixture
def devices() -> dict[str, Device]:
    return {HOST.id: HOST, PHONE.id: PHONE}


@pytest.fixture
def multi_rows(rows: list[tuple[Job, Result | None]]) -> list[tuple[Job, Result | None]]:
    """The same mbnet also measured on a phone."""
    j5 = _job("j5", MBNET, "adb:R58M", JobState.DONE, settings=JobSettings(runs=3))
    r5 = _result(
        "j5",
        PHONE_LAT,
        device_properties={"soc": "sd888-snapshot", "governor": "perf", "cores": "4+4"},
    )
    return [*rows, (j5, r5)]


def _read_csv_dicts(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["job_id"]: row for row in csv.DictReader(handle)}


def _read_latency_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


# --- results -------------------------------------------------------------------------------


def test_results_csv_columns_and_values(tmp_path, rows, devices):
    paths = tables.write_results(tmp_path, rows, devices)
    assert paths == [tmp_path / "results.csv", tmp_path / "results.json"]
    by_id = _read_csv_dicts(tmp_path / "results.csv")
    assert list(by_id) == ["j1", "j2", "j3", "j4"]

    columns = set(by_id["j1"])
    for column in (
        "job_id", "model", "model_path", "model_sha256", "module_uid", "device", "device_kind",
        "device_name", "runtime", "priority", "attempts", "status", "error", "min_us", "mean_us",
        "median_us", "p90_us", "p99_us", "max_us", "std_us", "cv", "count", "load_us",
        "first_inference_us", "forward_median_us", "layers_median_us", "tool", "tool_version",
        "started_at", "finished_at", "model_parameters", "model_macs", "settings.warmup",
        "settings.runs", "settings.rounds", "device_properties.cpu_model",
        "device_properties.cores",
    ):  # fmt: skip
        assert column in columns, column
    assert "settings" not in columns and "device_properties" not in columns

    done = by_id["j1"]
    stats = summarize(MBNET_LAT)
    assert float(done["median_us"]) == pytest.approx(57.5) == stats.median
    assert float(done["min_us"]) == 10.0 and float(done["max_us"]) == 104.0
    assert float(done["p90_us"]) == pytest.approx(stats.p90)
    assert float(done["std_us"]) == pytest.approx(stats.std)
    assert float(done["cv"]) == pytest.approx(stats.std / stats.mean)
    assert done["count"] == "8"  # an integer, not "8.0"
    assert float(done["forward_median_us"]) == pytest.approx(8.16)
    assert float(done["layers_median_us"]) == pytest.approx(6.5)
    assert float(done["load_us"]) == 5000.0 and float(done["first_inference_us"]) == 250.0
    assert done["status"] == "done" and done["error"] == ""
    assert done["module_uid"] == "mbnet[[1,3,32,32]]"
    assert done["device_kind"] == "host" and done["device_name"] == "Host CPU"
    assert done["device_properties.cpu_model"] == "Ryzen 7 5800X"
    assert done["settings.warmup"] == "3" and done["settings.rounds"] == "2"
    assert json.loads(done["settings.input_shapes.x"]) == [1, 3, 32, 32]  # JSON, not a repr
    assert done["model_parameters"] == "1234567" and done["model_macs"] == "98765432"
    assert done["tool"] == "onnxruntime" and done["tool_version"] == "1.18.0"
    assert done["started_at"] == "2023-11-14T22:13:20+00:00"
    assert done["finished_at"] == "2023-11-14T22:13:22+00:00"

    assert float(by_id["j2"]["median_us"]) == 3.0
    assert by_id["j2"]["forward_median_us"] == "" and by_id["j2"]["layers_median_us"] == ""

    failed = by_id["j3"]
    assert failed["status"] == "failed"
    assert failed["error"] == "boom, out of memory"
    assert failed["attempts"] == "2"
    for stat in ("min_us", "mean_us", "median_us", "p90_us", "p99_us", "max_us", "std_us"):
        assert failed[stat] == "", stat
    assert failed["cv"] == "" and failed["count"] == "" and failed["tool"] == ""
    assert failed["started_at"] == ""

    assert by_id["j4"]["status"] == "queued" and by_id["j4"]["priority"] == "-1"


def test_results_json_round_trips(tmp_path, rows, devices):
    tables.write_results(tmp_path, rows, devices, formats=("json",))
    assert not (tmp_path / "results.csv").exists()
    text = (tmp_path / "results.json").read_text()
    assert text.startswith('[\n  {\n    "job_id": "j1"')  # a JSON list, indent 2
    records = json.loads(text)
    assert records == tables.results_records(rows, devices)
    assert [r["job_id"] for r in records] == ["j1", "j2", "j3", "j4"]

    first = records[0]
    assert JobSettings.from_dict(first["settings"]) == rows[0][0].settings
    assert first["median_us"] == summarize(MBNET_LAT).median
    assert first["count"] == 8 and first["cv"] == summarize(MBNET_LAT).cv
    assert first["device_properties"] == HOST.properties
    assert datetime.fromisoformat(first["started_at"]).timestamp() == STARTED
    assert "cv_us" not in first and "count_us" not in first

    failed = records[2]
    assert failed["status"] == "failed" and failed["error"] == "boom, out of memory"
    assert failed["median_us"] is None and failed["count"] is None
    assert failed["started_at"] is None and failed["finished_at"] is None


def test_results_frame_is_flat(rows, devices):
    frame = tables.results_frame(rows, devices)
    assert list(frame["job_id"]) == ["j1", "j2", "j3", "j4"]
    assert "settings.per_layer" in frame.columns
    assert frame.loc[0, "median_us"] == pytest.approx(57.5)
    assert pd.isna(frame.loc[2, "median_us"])
    assert str(frame["count"].dtype) == "Int64"


def test_missing_device_uses_result_snapshot(multi_rows):
    only_host = {HOST.id: HOST}
    records = tables.results_records(multi_rows, only_host)
    phone = records[-1]
    assert phone["device"] == "adb:R58M"
    assert phone["device_kind"] is None and phone["device_name"] is None
    assert phone["device_properties"] == {
        "soc": "sd888-snapshot",
        "governor": "perf",
        "cores": "4+4",
    }
    # A job on an unknown device without a result has no properties at all.
    job = _job("jx", TINY, "adb:gone", JobState.CANCELLED)
    assert tables.results_records([(job, None)], only_host)[0]["device_properties"] == {}
    assert tables.results_records([(job, None)], only_host)[0]["status"] == "cancelled"


def test_parquet_round_trips(tmp_path, multi_rows, devices):
    paths = tables.write_results(tmp_path, multi_rows, devices, formats=("csv", "json", "parquet"))
    assert tmp_path / "results.parquet" in paths
    frame = pd.read_parquet(tmp_path / "results.parquet")
    assert list(frame["job_id"]) == ["j1", "j2", "j3", "j4", "j5"]
    assert frame.loc[0, "median_us"] == pytest.approx(summarize(MBNET_LAT).median)
    assert frame.loc[4, "median_us"] == pytest.approx(310.0)
    assert pd.isna(frame.loc[2, "median_us"])
    assert list(frame["status"]) == ["done", "done", "failed", "queued", "done"]
    assert frame.loc[0, "device_properties.cpu_model"] == "Ryzen 7 5800X"
    assert frame.loc[4, "device_properties.governor"] == "perf"
    assert frame.loc[0, "count"] == 8 and pd.isna(frame.loc[2, "count"])
    assert frame.loc[0, "settings.warmup"] == 3
    assert json.loads(frame.loc[0, "settings.input_shapes.x"]) == [1, 3, 32, 32]
    # An int on one device and text on another: stored as text rather than failing.
    assert list(frame["device_properties.cores"])[0] == "8"
    assert list(frame["device_properties.cores"])[4] == "4+4"


def test_unknown_format_raises_and_writes_nothing(tmp_path, rows, devices):
    with pytest.raises(ValueError, match="xlsx"):
        tables.write_results(tmp_path, rows, devices, formats=("csv", "xlsx"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        tables.write_all(tmp_path / "all", rows, devices, formats=("feather",))


# --- iterations ----------------------------------------------------------------------------


def test_iterations_csv_long_form(tmp_path, multi_rows):
    path = tables.write_iterations(tmp_path, multi_rows)
    assert path == tmp_path / "iterations.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [
            "job_id", "model", "device", "runtime", "round", "iteration", "latency_us",
        ]  # fmt: skip
        lines = list(reader)
    done_latencies = [r.latencies_us for j, r in multi_rows if r is not None]
    assert len(lines) == sum(len(lat) for lat in done_latencies) == 8 + 5 + 3

    j1 = [row for row in lines if row["job_id"] == "j1"]
    assert [float(row["latency_us"]) for row in j1] == MBNET_LAT
    assert [int(row["iteration"]) for row in j1] == list(range(8))
    assert [int(row["round"]) for row in j1] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {row["model"] for row in j1} == {"mbnet"} and {row["device"] for row in j1} == {
        "host:cpu"
    }
    # No round sizes recorded: the boundaries are unknown, so every row is round 0.
    j2 = [row for row in lines if row["job_id"] == "j2"]
    assert {row["round"] for row in j2} == {"0"}
    assert {row["job_id"] for row in lines} == {"j1", "j2", "j5"}


def test_iterations_follow_uneven_round_sizes(tmp_path):
    job = _job("jr", TINY, "host:cpu", JobState.DONE)
    result = _result(
        "jr", [1.0, 2.0, 3.0, 4.0, 5.0], round_sizes=[3, 2], round_medians_us=[2.0, 4.5]
    )
    tables.write_iterations(tmp_path, [(job, result)])
    with (tmp_path / "iterations.csv").open(newline="") as handle:
        assert [row["round"] for row in csv.DictReader(handle)] == ["0", "0", "0", "1", "1"]


def test_iterations_round_zero_when_sizes_disagree_with_latencies(tmp_path):
    job = _job("jr", TINY, "host:cpu", JobState.DONE)
    result = _result("jr", [1.0, 2.0, 3.0, 4.0], round_sizes=[3, 3])
    tables.write_iterations(tmp_path, [(job, result)])
    with (tmp_path / "iterations.csv").open(newline="") as handle:
        assert {row["round"] for row in csv.DictReader(handle)} == {"0"}


# --- latency table -------------------------------------------------------------------------


def test_latency_table_csv(tmp_path, rows, devices):
    paths = tables.write_latency_table(tmp_path, rows, devices)
    csv_path = tmp_path / "latency_table.csv"
    assert paths == [csv_path, tmp_path / "latency_table.json", tmp_path / "latency_table.meta"]
    raw = csv_path.read_text()
    assert "\r" not in raw and raw.endswith("\n")
    assert not raw.startswith("ModuleUID") and "LatencyKey" not in raw  # no header
    assert (
        raw.splitlines()[0] == '"mbnet[[1,3,32,32]]",onnxruntime,Total Inference Time,Min_Time,10.0'
    )
    assert '"mbnet[[1,3,32,32]]",onnxruntime,' in raw

    parsed = _read_latency_csv(csv_path)
    assert len(parsed) == len(raw.splitlines()) == 3 * 4 + 1 * 4  # 4 stats per key
    for line in parsed:
        assert len(line) == 5, line
        float(line[4])

    mbnet = {(k, s): float(v) for uid, rt, k, s, v in parsed if uid == "mbnet[[1,3,32,32]]"}
    tiny = {(k, s): float(v) for uid, rt, k, s, v in parsed if uid == "tiny[]"}
    assert {rt for _, rt, *_ in parsed} == {"onnxruntime"}
    assert {k for k, _ in mbnet} == {"Total Inference Time", "Forward Propagate", "Layers Time"}
    assert {k for k, _ in tiny} == {"Total Inference Time"}  # no forward/layer stats there

    total, forward, layers = summarize(MBNET_LAT), summarize(FORWARD_LAT), summarize(LAYERS_LAT)
    for key, stats in (
        ("Total Inference Time", total),
        ("Forward Propagate", forward),
        ("Layers Time", layers),
    ):
        assert mbnet[(key, "Min_Time")] == round(stats.min, 1)
        assert mbnet[(key, "Avg_Time")] == round(stats.mean, 1)
        assert mbnet[(key, "Max_Time")] == round(stats.max, 1)
        assert mbnet[(key, "Median_Time")] == round(stats.median, 1)
    assert mbnet[("Total Inference Time", "Avg_Time")] == 57.0  # mean 57.0
    assert mbnet[("Forward Propagate", "Avg_Time")] == 8.4  # mean 8.4 exactly
    assert mbnet[("Layers Time", "Max_Time")] == 7.3  # 7.26 rounded to 0.1
    assert tiny == {
        ("Total Inference Time", "Min_Time"): 1.0,
        ("Total Inference Time", "Avg_Time"): 3.0,
        ("Total Inference Time", "Max_Time"): 5.0,
        ("Total Inference Time", "Median_Time"): 3.0,
    }
    # Key order: Total, Forward, Layers; stats Min, Avg, Max, then devlab's Median.
    assert [(k, s) for uid, _, k, s, _ in parsed if uid == "mbnet[[1,3,32,32]]"][:5] == [
        ("Total Inference Time", "Min_Time"),
        ("Total Inference Time", "Avg_Time"),
        ("Total Inference Time", "Max_Time"),
        ("Total Inference Time", "Median_Time"),
        ("Forward Propagate", "Min_Time"),
    ]


def test_latency_table_skips_jobs_without_results(devices):
    job = _job("jq", TINY, "host:cpu", JobState.RUNNING)
    failed = _job("jf", TINY, "host:cpu", JobState.FAILED, error="x")
    assert tables.latency_table_rows([(job, None), (failed, None)], devices) == []


def test_multi_device_runtime_naming(tmp_path, multi_rows, devices):
    table = tables.latency_table_rows(multi_rows, devices)
    runtimes = {row[1] for row in table}
    assert runtimes == {"onnxruntime@host:cpu", "onnxruntime@adb:R58M"}
    keys = [row[:4] for row in table]
    assert len(keys) == len(set(keys))  # no collisions
    phone = {row[3]: row[4] for row in table if row[1] == "onnxruntime@adb:R58M"}
    assert {k: v for k, v in phone.items() if k != "Median_Time"} == {
        "Min_Time": 300.0,
        "Avg_Time": 310.0,
        "Max_Time": 320.0,
    }

    tables.write_latency_table(tmp_path, multi_rows, devices)
    parsed = _read_latency_csv(tmp_path / "latency_table.csv")
    assert {line[1] for line in parsed} == runtimes
    nested = json.loads((tmp_path / "latency_table.json").read_text())
    assert set(nested["mbnet[[1,3,32,32]]"]) == runtimes


def test_same_model_measured_twice_keeps_latest(devices):
    first = _job("a", TINY, "host:cpu", JobState.DONE)
    again = _job("b", TINY, "host:cpu", JobState.DONE)
    table = tables.latency_table_rows(
        [(first, _result("a", [1.0, 2.0])), (again, _result("b", [7.0, 9.0]))], devices
    )
    assert table == [
        ("tiny[]", "onnxruntime", "Total Inference Time", "Min_Time", 7.0),
        ("tiny[]", "onnxruntime", "Total Inference Time", "Avg_Time", 8.0),
        ("tiny[]", "onnxruntime", "Total Inference Time", "Max_Time", 9.0),
        ("tiny[]", "onnxruntime", "Total Inference Time", "Median_Time", 8.0),
    ]


def test_latency_table_nested_json(tmp_path, rows, devices):
    tables.write_latency_table(tmp_path, rows, devices)
    text = (tmp_path / "latency_table.json").read_text()
    nested = json.loads(text)
    assert text.startswith('{\n  "mbnet[[1,3,32,32]]": {\n    "onnxruntime": {')
    assert nested == tables.latency_table_nested(tables.latency_table_rows(rows, devices))
    mbnet = nested["mbnet[[1,3,32,32]]"]["onnxruntime"]
    total = mbnet["Total Inference Time"]
    assert {k: total[k] for k in ("Min_Time", "Avg_Time", "Max_Time")} == {
        "Min_Time": 10.0,
        "Avg_Time": 57.0,
        "Max_Time": 104.0,
    }
    assert mbnet["Forward Propagate"]["Avg_Time"] == 8.4
    assert set(nested["tiny[]"]["onnxruntime"]) == {"Total Inference Time"}

    manual = tables.latency_table_nested(
        [("m[[1]]", "rt", "Total Inference Time", "Min_Time", 1.5)]
    )
    assert manual == {"m[[1]]": {"rt": {"Total Inference Time": {"Min_Time": 1.5}}}}


def test_latency_meta(tmp_path, multi_rows):
    only_host = {HOST.id: HOST}
    tables.write_latency_table(tmp_path, multi_rows, only_host, tool_versions={"devlab": "0.1.0"})
    meta = json.loads((tmp_path / "latency_table.meta").read_text())
    assert meta["format"] == "<ModuleUID>,<Runtime>,<LatencyKey>,<Stats>,<Value>"
    assert meta["units"] == "us"
    assert datetime.fromisoformat(meta["created"]).utcoffset().total_seconds() == 0
    assert meta["devices"]["host:cpu"] == {
        "kind": "host",
        "name": "Host CPU",
        "properties": {"cpu_model": "Ryzen 7 5800X", "cores": 8},
    }
    # The phone is not in the device map: its properties come from the result's snapshot.
    assert meta["devices"]["adb:R58M"]["properties"] == {
        "soc": "sd888-snapshot",
        "governor": "perf",
        "cores": "4+4",
    }
    assert set(meta["devices"]) == {"host:cpu", "adb:R58M"}
    assert meta["tools"] == {"onnxruntime": "1.18.0", "devlab": "0.1.0"}
    assert meta["runtimes"] == ["onnxruntime"]
    assert meta["latency_keys"] == ["Total Inference Time", "Forward Propagate", "Layers Time"]


def test_latency_meta_keys_only_those_present(tmp_path, rows, devices):
    plain = [row for row in rows if row[0].id == "j2"]
    tables.write_latency_table(tmp_path, plain, devices)
    meta = json.loads((tmp_path / "latency_table.meta").read_text())
    assert meta["latency_keys"] == ["Total Inference Time"]
    assert list(meta["devices"]) == ["host:cpu"]
    assert "Forward Propagate" not in (tmp_path / "latency_table.csv").read_text()


def test_writes_are_atomic(tmp_path, rows, devices, monkeypatch):
    tables.write_latency_table(tmp_path, rows, devices)
    before = (tmp_path / "latency_table.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latency_table.csv",
        "latency_table.json",
        "latency_table.meta",
    ]  # no temp files left behind

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(tables.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        tables.write_latency_table(tmp_path, rows[1:2], devices)
    assert (tmp_path / "latency_table.csv").read_text() == before  # old table intact
    assert len(list(tmp_path.iterdir())) == 3  # the temp file was cleaned up


def test_write_all(tmp_path, multi_rows, devices):
    out = tmp_path / "runs" / "today"
    paths = tables.write_all(out, multi_rows, devices, formats=("csv", "json", "parquet"))
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "results.csv",
            "results.json",
            "results.parquet",
            "iterations.csv",
            "latency_table.csv",
            "latency_table.json",
            "latency_table.meta",
        ]
    )
    assert all(p.exists() and p.parent == out for p in paths)
    frame = pd.read_csv(io.StringIO((out / "results.csv").read_text()))
    assert len(frame) == 5


def test_empty_rows(tmp_path):
    paths = tables.write_all(tmp_path, [], {})
    assert (tmp_path / "latency_table.csv").read_text() == ""
    assert json.loads((tmp_path / "results.json").read_text()) == []
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert "median_us" in header and "job_id" in header
    assert len(paths) == 6
