"""devlab's ``--table-format nnabla-nas`` table is a drop-in for nnabla-nas's own.

Module models keyed by the user's ``uids.json`` are measured by the real ``devlab --run`` (a
subprocess, the real store and workers): on host:cpu with real ONNX Runtime, and on the virtual
phone behind a private real adb server with the stand-in SNPE SDK, one run per SNPE runtime. The
table is then read the way nnabla-nas reads it (``json.load``, then ``sample_nnps.py``'s lookup,
re-implemented below) and must give, with no KeyError, the sums of devlab's own results from
the store.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import onnx
import pytest

from backends.core.records import Job, Result
from backends.core.store import Store
from backends.virtual import VirtualPhone
from backends.virtual.snpe_sdk import make_standin_sdk
from support.helpers import STORE_NAME, make_mlp, run_devlab

# nnabla-nas style UIDs (helpers.uid: str(module) + input shapes, spaces removed, () -> [])
UIDS = {
    "Linear[in_features=8,out_features=16,bias=True,fix_parameters=False][[1,8]]": "0000.onnx",
    "Linear[in_features=8,out_features=32,bias=True,fix_parameters=False][[1,8]]": "0001.onnx",
    "Linear[in_features=8,out_features=64,bias=True,fix_parameters=False][[1,8]]": "0002.onnx",
}
A, B, C = UIDS
META_UID = "ReLU[inplace=False][[1,8]]"  # given in the model's metadata, not the manifest
# sampled networks: the modules sample_nnps.py would find in them, repeats included
SAMPLED = [[A, B, A], [C, B, A, C, C], [B]]
FAST = (
    "--runs", "5", "--warmup", "1", "--rounds", "1", "--min-round-seconds", "0",
    "--precision", "0", "--no-canary", "--no-parity",
)  # fmt: skip
SAMPLE_NNPS_RUNTIMES = ["CPU", "GPU", "GPU_FP16", "DSP"]


def accumulated_latency(
    latency_table: dict, modules: list[str], runtimes: list[str] = SAMPLE_NNPS_RUNTIMES
) -> dict[str, float]:
    """The lookup of ``main()`` in nnabla-nas's ``nnabla_nas/utils/profiler/snpe/sample_nnps.py``
    (last in commit 8d18f3c^), for one sampled net whose modules have these UIDs: per runtime,
    the sum of ``latency_table[uid(m)][runtime]["Layers Time"]["Avg_Time"]``; any failure of
    the lookup becomes the RuntimeError it raises."""
    accum_latency: dict[str, float] = defaultdict(float)
    try:
        for runtime in runtimes:
            accum_latency_ = 0.0
            for uid in modules:
                accum_latency_ += latency_table[uid][runtime]["Layers Time"]["Avg_Time"]
                accum_latency[runtime] = accum_latency_
    except Exception as error:
        raise RuntimeError(
            f"Sampled nnp contains {uid} which did not appear in the generation process of "
            f"the latency table. ({error!r})"
        ) from error
    return accum_latency


def make_modules(folder: Path, with_metadata_module: bool) -> Path:
    """Small module models, keyed by uids.json (and one by its metadata)."""
    folder.mkdir(parents=True)
    for hidden, file in zip((16, 32, 64), UIDS.values(), strict=True):
        make_mlp(folder / file, hidden, in_features=8, out_features=4, seed=hidden)
    (folder / "uids.json").write_text(json.dumps(UIDS, indent=2), encoding="utf-8")
    if with_metadata_module:
        path = make_mlp(folder / "relu.onnx", 8, in_features=8, out_features=8)
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, {"module_uid": META_UID})
        onnx.save(model, str(path))
    return folder


def own_results(out: Path) -> dict[tuple[str, str], tuple[Job, Result]]:
    """devlab's own record: (ModuleUID, runtime) -> the done job and its result."""
    store = Store(out / STORE_NAME)
    try:
        rows = store.rows()
    finally:
        store.close()
    found = {}
    for job, result in rows:
        assert result is not None, f"{job.model.name} on {job.runtime}: {job.state} {job.error}"
        found[(job.model.module_uid, job.runtime)] = (job, result)
    return found


def read_table(out: Path) -> dict:
    with open(out / "latency_table.json") as fp:  # as sample_nnps.py opens it
        return json.load(fp)


def csv_matches_json(out: Path, table: dict) -> None:
    raw = (out / "latency_table.csv").read_bytes().decode()
    assert raw.endswith("\r\n") and "\n" not in raw.replace("\r\n", "")
    rows = list(csv.reader(raw.splitlines()))
    assert len(rows) == sum(len(s) for r in table.values() for k in r.values() for s in k.values())
    for uid, runtime, key, stat, value in rows:
        assert float(value) == table[uid][runtime][key][stat]


# --- host:cpu ---------------------------------------------------------------------------------


def test_host_cpu_table_is_a_drop_in_for_sample_nnps(tmp_path: Path) -> None:
    modules = make_modules(tmp_path / "space-modules", with_metadata_module=True)
    out = tmp_path / "space-latency"

    run = run_devlab(
        "--run", modules, "--out", out, "--table-format", "nnabla-nas", *FAST, home=tmp_path
    )  # fmt: skip

    assert run.returncode == 0, run.describe()
    table = read_table(out)
    assert set(table) == {A, B, C, META_UID}  # the user's UIDs, not devlab's
    own_layers_time: dict[str, float] = {}
    for (uid, runtime), (job, result) in own_results(out).items():
        assert runtime == "onnxruntime"
        assert job.settings.per_layer  # the layout asks for the per-layer pass
        assert result.layers_stats is not None and result.forward_stats is not None
        own_layers_time[uid] = round(result.layers_stats.mean, 1)
        entry = table[uid][runtime]
        assert list(entry)[:3] == ["Forward Propagate", "Total Inference Time", "Layers Time"]
        assert entry["Layers Time"]["Avg_Time"] == own_layers_time[uid]
        assert entry["Forward Propagate"]["Avg_Time"] == round(result.forward_stats.mean)
        assert entry["Total Inference Time"]["Avg_Time"] == round(result.stats.mean)
    assert set(own_layers_time) == set(table)

    for net in [*SAMPLED, [META_UID, A]]:
        accum = accumulated_latency(table, net, ["onnxruntime"])
        expected = 0.0
        for uid in net:  # the same additions in the same order: equal, not approximately
            expected += own_layers_time[uid]
        assert accum == {"onnxruntime": expected}
    csv_matches_json(out, table)

    devlab_meta = json.loads((out / "latency_table.devlab-meta.json").read_text())
    assert devlab_meta["layers_time_from"]["Layers Time"] == {"per-layer profile": 4}
    assert "Normalised_Time" not in devlab_meta["stats"]  # the canary was skipped
    with open(out / "latency_table.meta", newline="", encoding="utf-8") as handle:
        meta = dict(tuple(line) for line in csv.reader(handle, delimiter=":"))
    assert meta["Devices"] == "host:cpu" and meta["SNPE SDK version:"] == "unknown"


# --- the virtual phone's SNPE runtimes ----------------------------------------------------------


def test_virtual_phone_snpe_table_is_a_drop_in_for_sample_nnps(
    tmp_path: Path,
    adb_server: tuple[object, int],
    virtual_phone: VirtualPhone,
) -> None:
    _, port = adb_server
    modules = make_modules(tmp_path / "space-modules", with_metadata_module=False)
    sdk = make_standin_sdk(tmp_path / "snpe-sdk")
    config = tmp_path / "devlab.toml"
    config.write_text(
        f'[android]\nadb_server = "127.0.0.1:{port}"\n\n'
        f'[snpe]\nsdk = "{sdk}"\ncache_dir = "{tmp_path / "dlc-cache"}"\ncalibration_inputs = 3\n',
        encoding="utf-8",
    )
    device = f"adb:{virtual_phone.serial}"
    out = tmp_path / "space-latency"

    for runtime in ("snpe-cpu", "snpe-gpu", "snpe-gpu-fp16", "snpe-dsp"):
        run = run_devlab(
            "--run", modules, "--device", device, "--runtime", runtime, "--config", config,
            "--table-format", "nnabla-nas", "--out", out, *FAST, home=tmp_path, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.describe()

    table = read_table(out)
    assert set(table) == {A, B, C}
    results = own_results(out)
    assert {runtime for _, runtime in results} == {
        "snpe-cpu",
        "snpe-gpu",
        "snpe-gpu-fp16",
        "snpe-dsp",
    }
    names = {"snpe-cpu": "CPU", "snpe-gpu": "GPU", "snpe-gpu-fp16": "GPU_FP16", "snpe-dsp": "DSP"}
    expected_per_module: dict[tuple[str, str], float] = {}
    for (uid, runtime), (job, result) in results.items():
        assert job.settings.per_layer
        if runtime == "snpe-dsp":  # DSP layer times are cycles: the forward time stands in
            assert result.layers_stats is None and result.forward_stats is not None
            own = result.forward_stats.mean
        else:
            assert result.layers_stats is not None
            own = result.layers_stats.mean
        expected_per_module[(uid, names[runtime])] = round(own, 1)
        assert table[uid][names[runtime]]["Layers Time"]["Avg_Time"] == round(own, 1)
        assert set(table[uid][names[runtime]]) >= {"Forward Propagate", "Total Inference Time"}

    for net in SAMPLED:
        accum = accumulated_latency(table, net)  # all four runtimes, as sample_nnps.py
        expected = {}
        for runtime in SAMPLE_NNPS_RUNTIMES:
            total = 0.0
            for uid in net:
                total += expected_per_module[(uid, runtime)]
            expected[runtime] = total
        assert accum == expected
    csv_matches_json(out, table)

    with open(out / "latency_table.meta", newline="", encoding="utf-8") as handle:
        meta = [tuple(line) for line in csv.reader(handle, delimiter=":")]
    assert [key for key, _ in meta][:5] == [
        "ro.product.model",
        "ro.product.board",
        "ro.product.cpu.abi",
        "ro.build.version.sdk",
        "ro.product.manufacturer",
    ]
    fields = dict(meta)
    profile = virtual_phone.profile
    assert fields["ro.product.model"] == profile.model
    assert fields["ro.product.manufacturer"] == profile.manufacturer
    assert fields["ro.product.cpu.abi"] == profile.cpu_abi == "arm64-v8a"
    assert fields["ro.build.version.sdk"] == str(profile.sdk)
    assert fields["Architectures"] == "aarch64"
    assert fields["Devices"] == virtual_phone.serial
    assert "devlab_standin" in fields["SNPE SDK version:"]
    devlab_meta = json.loads((out / "latency_table.devlab-meta.json").read_text())
    assert devlab_meta["layers_time_from"]["Layers Time"] == {
        "per-layer profile": 9,
        "Forward Propagate": 3,
    }


def test_lookup_fails_like_nnabla_nas_on_a_missing_runtime() -> None:
    table = {A: {"CPU": {"Layers Time": {"Avg_Time": 1.0}}}}
    with pytest.raises(RuntimeError, match="did not appear"):
        accumulated_latency(table, [A])
    assert accumulated_latency(table, [A, A], ["CPU"]) == {"CPU": 2.0}
