"""The nnabla-nas layout of the latency table (backends/results/nnabla_nas.py), from records.

What create_latency_table.py (sony/nnabla-nas, nnabla_nas/utils/profiler/snpe/, 8d18f3c^)
writes: csv.writer rows with CRLF ends, a one-line json.dump, and the ``.meta`` as csv.writer
lines with ``:`` as delimiter. nnabla-nas never reads the ``.meta`` back, so its test reads it
with the inverse of that writer, ``csv.reader(..., delimiter=":")``, and checks the bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest

from backends.core.config import ConfigError, load_config
from backends.core.options import DEFAULT_TABLE_FORMAT, TABLE_FORMATS
from backends.core.records import (
    Capabilities,
    Device,
    Job,
    JobSettings,
    JobState,
    Model,
    ModelInput,
    Result,
)
from backends.devices.android.snpe_config import SNPE_RUNTIMES
from backends.measure.stats import summarize
from backends.results import formats, nnabla_nas, tables

FINISHED = 1_700_000_002.0  # 2023-11-14 22:13:22 UTC
PHONE = Device(
    id="adb:R58M",
    kind="adb",
    name="Google Pixel 8",
    runtimes=list(SNPE_RUNTIMES),
    properties={"model": "Pixel 8", "manufacturer": "Google", "abi": "arm64-v8a", "sdk": "34"},
)
HOST = Device(id="host:cpu", kind="host", name="Host CPU", runtimes=["onnxruntime"])
CONV = Model(
    path="/m/0000.onnx",
    name="0000",
    sha256="c" * 64,
    inputs=[ModelInput("x", [1, 3, 32, 32], "float32")],
    uid="Conv[in_channels=3,out_channels=16][[1,3,32,32]]",
)
RELU = Model(path="/m/0001.onnx", name="0001", sha256="d" * 64, uid="ReLU[][[1,16,32,32]]")

TOTAL = [410.0, 420.0, 440.0]
FORWARD = [300.4, 310.6, 320.2]
LAYERS = [250.04, 260.0, 275.1]


def job(job_id: str, model: Model, device: str, runtime: str, **kw: object) -> Job:
    return Job(
        id=job_id,
        model=model,
        device_id=device,
        runtime=runtime,
        settings=JobSettings(runs=3, warmup=1, rounds=1),
        state=JobState.DONE,
        finished_at=float(kw.pop("finished_at", FINISHED)),  # type: ignore[arg-type]
    )


def result(job_id: str, **kw: object) -> Result:
    return Result(
        job_id=job_id,
        latencies_us=TOTAL,
        stats=summarize(TOTAL),
        tool=str(kw.pop("tool", "snpe-net-run")),
        tool_version=str(kw.pop("tool_version", "2.10.0.4541")),
        **kw,  # type: ignore[arg-type]
    )


def profiled(job_id: str) -> Result:
    return result(job_id, forward_stats=summarize(FORWARD), layers_stats=summarize(LAYERS))


def nested_from_csv(text: str) -> dict:
    """The CSV rows as the JSON's nesting, numbers as json.load would give them."""
    nested: dict = {}
    for uid, runtime, key, stat, value in csv.reader(io.StringIO(text, newline="")):
        number = float(value) if "." in value else int(value)
        nested.setdefault(uid, {}).setdefault(runtime, {}).setdefault(key, {})[stat] = number
    return nested


def sample_nnps_lookup(table: dict, uids: list[str], runtime: str) -> float:
    """sample_nnps.py main()'s lookup for one runtime (the drop-in test has the whole loop)."""
    return sum(table[uid][runtime]["Layers Time"]["Avg_Time"] for uid in uids)


# --- runtimes, keys and numbers ---------------------------------------------------------------


def test_snpe_runtimes_get_snpe_names_others_keep_theirs() -> None:
    assert {name: nnabla_nas.runtime_name(name) for name in SNPE_RUNTIMES} == SNPE_RUNTIMES
    assert tuple(SNPE_RUNTIMES.values()) == nnabla_nas.NNABLA_NAS_RUNTIMES
    for other in ("onnxruntime", "ort", "tflite", "snpe-aip", "snpe"):
        assert nnabla_nas.runtime_name(other) == other


def test_every_module_has_the_three_keys_in_nnabla_nas_order() -> None:
    rows = [
        (job("a", CONV, PHONE.id, "snpe-cpu"), profiled("a")),
        (job("b", CONV, PHONE.id, "snpe-dsp"), result("b", forward_stats=summarize(FORWARD))),
        (job("c", RELU, PHONE.id, "snpe-gpu-fp16"), result("c")),  # measured without a profile
    ]
    table, sources = nnabla_nas.table_rows(rows)

    pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for uid, runtime, key, stat, _ in table:
        pairs.setdefault((uid, runtime), []).append((key, stat))
    assert set(pairs) == {(CONV.uid, "CPU"), (CONV.uid, "DSP"), (RELU.uid, "GPU_FP16")}
    for found in pairs.values():
        assert list(dict.fromkeys(key for key, _ in found)) == [
            "Forward Propagate",
            "Total Inference Time",
            "Layers Time",
        ]
        for key in ("Forward Propagate", "Total Inference Time", "Layers Time"):
            assert {"Min_Time", "Avg_Time", "Max_Time"} <= {s for k, s in found if k == key}
    value = {(u, r, k, s): v for u, r, k, s, v in table}
    # profiled: Layers Time is the per-layer sum, to 0.1 us; the two snpe-bench keys whole us
    assert value[(CONV.uid, "CPU", "Layers Time", "Avg_Time")] == round(summarize(LAYERS).mean, 1)
    assert value[(CONV.uid, "CPU", "Layers Time", "Max_Time")] == 275.1
    assert value[(CONV.uid, "CPU", "Forward Propagate", "Avg_Time")] == 310
    assert isinstance(value[(CONV.uid, "CPU", "Forward Propagate", "Avg_Time")], int)
    assert value[(CONV.uid, "CPU", "Total Inference Time", "Max_Time")] == 440
    # DSP: no layer breakdown, Layers Time holds the forward time
    assert value[(CONV.uid, "DSP", "Layers Time", "Avg_Time")] == round(summarize(FORWARD).mean, 1)
    # no profile at all: both fall back to the total
    assert value[(RELU.uid, "GPU_FP16", "Forward Propagate", "Avg_Time")] == 423
    assert value[(RELU.uid, "GPU_FP16", "Layers Time", "Avg_Time")] == 423.3
    assert sources == {
        "Forward Propagate": {"Forward Propagate": 2, "Total Inference Time": 1},
        "Layers Time": {"per-layer profile": 1, "Forward Propagate": 1, "Total Inference Time": 1},
    }


def test_key_order_per_module_and_devlab_extras_after() -> None:
    r = profiled("a")
    r.normalised_median_us = 418.6
    r.call_cost_us = 12.34
    table, _ = nnabla_nas.table_rows([(job("a", CONV, PHONE.id, "snpe-cpu"), r)])
    assert [(k, s) for _, _, k, s, _ in table] == [
        ("Forward Propagate", "Min_Time"),
        ("Forward Propagate", "Avg_Time"),
        ("Forward Propagate", "Max_Time"),
        ("Forward Propagate", "Median_Time"),
        ("Total Inference Time", "Min_Time"),
        ("Total Inference Time", "Avg_Time"),
        ("Total Inference Time", "Max_Time"),
        ("Total Inference Time", "Median_Time"),
        ("Total Inference Time", "Normalised_Time"),
        ("Layers Time", "Min_Time"),
        ("Layers Time", "Avg_Time"),
        ("Layers Time", "Max_Time"),
        ("Layers Time", "Median_Time"),
        ("Call Overhead", "Median_Time"),
    ]
    assert table[8][4] == 419 and table[-1][4] == 12.3


def test_devlab_layout_fails_nnabla_nas_lookup_this_one_does_not() -> None:
    rows = [(job("a", CONV, HOST.id, "onnxruntime"), result("a", tool="onnxruntime"))]
    devlab = tables.latency_table_nested(tables.latency_table_rows(rows, {}))
    with pytest.raises(KeyError, match="Layers Time"):
        sample_nnps_lookup(devlab, [CONV.uid], "onnxruntime")
    table, _ = nnabla_nas.table_rows(rows)
    nested = tables.latency_table_nested(table)
    assert sample_nnps_lookup(nested, [CONV.uid, CONV.uid], "onnxruntime") == 2 * 423.3


# --- the files --------------------------------------------------------------------------------


def test_files_csv_crlf_json_one_line_and_devlab_meta_beside(tmp_path: Path) -> None:
    r = profiled("a")
    r.normalised_median_us = 418.6
    rows = [
        (job("a", CONV, PHONE.id, "snpe-cpu"), r),
        (job("b", RELU, PHONE.id, "snpe-gpu"), profiled("b")),
        (job("q", RELU, PHONE.id, "snpe-dsp"), None),  # not done: not in the table
    ]
    paths = nnabla_nas.write_nnabla_nas_table(tmp_path, rows, {PHONE.id: PHONE})
    assert [p.name for p in paths] == [
        "latency_table.csv",
        "latency_table.json",
        "latency_table.meta",
        "latency_table.devlab-meta.json",
    ]
    raw = (tmp_path / "latency_table.csv").read_bytes().decode()
    lines = raw.split("\r\n")
    assert lines[-1] == "" and all("\n" not in line for line in lines)
    assert (
        lines[0]
        == '"Conv[in_channels=3,out_channels=16][[1,3,32,32]]",CPU,Forward Propagate,Min_Time,300'
    )
    assert f'"{CONV.uid}",CPU,Layers Time,Avg_Time,{round(summarize(LAYERS).mean, 1)}' in lines

    text = (tmp_path / "latency_table.json").read_text()
    assert "\n" not in text and text.startswith('{"Conv[')
    nested = json.loads(text)
    assert nested == nested_from_csv(raw)
    assert set(nested[CONV.uid]) == {"CPU"} and set(nested[RELU.uid]) == {"GPU"}

    meta = json.loads((tmp_path / "latency_table.devlab-meta.json").read_text())
    assert meta["layout"] == "nnabla-nas"
    assert meta["nnabla_nas_meta"] == "latency_table.meta"
    assert meta["runtime_names"] == {"snpe-cpu": "CPU", "snpe-gpu": "GPU"}
    assert meta["runtime_labels"] == ["CPU", "GPU"]
    assert meta["latency_keys"] == ["Forward Propagate", "Total Inference Time", "Layers Time"]
    assert meta["stats"] == ["Min_Time", "Avg_Time", "Max_Time", "Median_Time", "Normalised_Time"]
    assert meta["layers_time_from"]["Layers Time"] == {"per-layer profile": 2}
    assert list(meta["devices"]) == [PHONE.id]
    assert meta["tools"] == {"snpe-net-run": "2.10.0.4541"}


def test_meta_is_nnabla_nas_colon_layout_read_back_with_csv(tmp_path: Path) -> None:
    rows = [
        (job("a", CONV, PHONE.id, "snpe-cpu", finished_at=FINISHED - 60), profiled("a")),
        (job("b", RELU, PHONE.id, "snpe-dsp"), profiled("b")),
    ]
    nnabla_nas.write_nnabla_nas_table(tmp_path, rows, {PHONE.id: PHONE})
    raw = (tmp_path / "latency_table.meta").read_bytes()
    assert raw == (
        b"ro.product.model:Pixel 8\r\n"
        b"ro.product.board:unknown\r\n"
        b"ro.product.cpu.abi:arm64-v8a\r\n"
        b"ro.build.version.sdk:34\r\n"
        b"ro.product.manufacturer:Google\r\n"
        b'Date:"2023-11-14 22:13:22.000000"\r\n'
        b"Architectures:aarch64\r\n"
        b"Devices:R58M\r\n"
        b'"SNPE SDK version:":2.10.0.4541\r\n'
    )
    with open(tmp_path / "latency_table.meta", newline="", encoding="utf-8") as handle:
        fields = [tuple(line) for line in csv.reader(handle, delimiter=":")]
    # the keys create_latency_table.py writes, in its order, each with one value
    assert [key for key, _ in fields] == [
        "ro.product.model",
        "ro.product.board",
        "ro.product.cpu.abi",
        "ro.build.version.sdk",
        "ro.product.manufacturer",
        "Date",
        "Architectures",
        "Devices",
        "SNPE SDK version:",
    ]
    assert dict(fields)["Date"] == "2023-11-14 22:13:22.000000"


def test_meta_of_a_host_table_says_unknown_where_it_has_no_value(tmp_path: Path) -> None:
    host = dataclasses.replace(HOST, properties={"machine": "x86_64", "cpu_model": "Ryzen"})
    rows = [(job("a", CONV, HOST.id, "onnxruntime"), result("a", tool="onnxruntime"))]
    nnabla_nas.write_nnabla_nas_table(tmp_path, rows, {HOST.id: host})
    with open(tmp_path / "latency_table.meta", newline="", encoding="utf-8") as handle:
        fields = dict(tuple(line) for line in csv.reader(handle, delimiter=":"))
    assert fields["ro.product.model"] == fields["ro.product.cpu.abi"] == "unknown"
    assert fields["Architectures"] == "x86_64"
    assert fields["Devices"] == "host:cpu"
    assert fields["SNPE SDK version:"] == "unknown"


def test_several_devices_get_one_table_each(tmp_path: Path) -> None:
    rows = [
        (job("a", CONV, PHONE.id, "snpe-cpu"), profiled("a")),
        (job("b", CONV, HOST.id, "onnxruntime"), profiled("b")),
    ]
    paths = nnabla_nas.write_nnabla_nas_table(tmp_path, rows, {PHONE.id: PHONE, HOST.id: HOST})
    names = {p.name for p in paths}
    assert {"latency_table.adb-R58M.json", "latency_table.host-cpu.meta"} <= names
    assert len(names) == 8 and not (tmp_path / "latency_table.csv").exists()
    phone = json.loads((tmp_path / "latency_table.adb-R58M.json").read_text())
    assert set(phone[CONV.uid]) == {"CPU"}  # never <runtime>@<device>


def test_empty_store_writes_empty_tables(tmp_path: Path) -> None:
    paths = nnabla_nas.write_nnabla_nas_table(tmp_path, [], {})
    assert len(paths) == 4
    assert (tmp_path / "latency_table.csv").read_text() == ""
    assert (tmp_path / "latency_table.json").read_text() == "{}"


# --- devlab's own layout, the format switch, the config -----------------------------------------


def test_devlab_meta_lists_normalised_time(tmp_path: Path) -> None:
    r = result("a", tool="onnxruntime")
    r.normalised_median_us = 418.6
    tables.write_latency_table(tmp_path, [(job("a", CONV, HOST.id, "onnxruntime"), r)], {})
    meta = json.loads((tmp_path / "latency_table.meta").read_text())
    assert meta["stats"] == ["Min_Time", "Avg_Time", "Max_Time", "Median_Time", "Normalised_Time"]


def test_every_table_format_has_a_writer(tmp_path: Path) -> None:
    assert set(formats.TABLE_WRITERS) == set(TABLE_FORMATS)
    assert DEFAULT_TABLE_FORMAT == "devlab"
    rows = [(job("a", CONV, PHONE.id, "snpe-gpu"), profiled("a"))]
    written = formats.write_all(tmp_path / "n", rows, {PHONE.id: PHONE}, table_format="nnabla-nas")
    assert {"results.csv", "iterations.csv", "latency_table.devlab-meta.json"} <= {
        p.name for p in written
    }
    assert json.loads((tmp_path / "n" / "latency_table.json").read_text())[CONV.uid]["GPU"]
    written = formats.write_all(tmp_path / "d", rows, {PHONE.id: PHONE})
    assert "latency_table.devlab-meta.json" not in {p.name for p in written}
    assert json.loads((tmp_path / "d" / "latency_table.meta").read_text())["runtimes"]
    with pytest.raises(ValueError, match="unknown table format 'yaml'.*nnabla-nas"):
        formats.write_all(tmp_path / "x", rows, {}, table_format="yaml")


def test_settings_profile_per_layer_where_every_device_can() -> None:
    settings = JobSettings()
    can = dataclasses.replace(PHONE, capabilities={"snpe-cpu": Capabilities(per_layer=True)})
    cannot = dataclasses.replace(HOST, capabilities={"onnxruntime": Capabilities()})
    assert nnabla_nas.settings_for_table(settings, [can], "snpe-cpu").per_layer is True
    assert nnabla_nas.settings_for_table(settings, [HOST], None).per_layer is True  # unknown
    assert nnabla_nas.settings_for_table(settings, [can, cannot], None).per_layer is False
    assert settings.per_layer is False  # not changed in place


def test_config_table_format(tmp_path: Path) -> None:
    config = tmp_path / "devlab.toml"
    config.write_text('[defaults]\ntable_format = "nnabla-nas"\nruns = 7\n', encoding="utf-8")
    loaded = load_config(config)
    assert loaded.table_format == "nnabla-nas" and loaded.defaults.runs == 7
    config.write_text("[defaults]\nruns = 7\n", encoding="utf-8")
    assert load_config(config).table_format == "devlab"
    config.write_text('[defaults]\ntable_format = "yaml"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="table_format must be one of devlab, nnabla-nas"):
        load_config(config)
