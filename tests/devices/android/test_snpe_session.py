"""The SNPE runtime for phones, end to end with the stand-in SNPE SDK and a virtual phone.

A private real adb server (never on port 5037) talks to a virtual phone; the stand-in SDK's
``snpe-net-run`` is pushed to it and really runs the model with ONNX Runtime, its diag log is
pulled and decoded by the stand-in ``snpe-diagview`` on the host. No timed asserts.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import adbutils
import numpy as np
import pytest

from backends.core.records import Job, JobSettings, Model
from backends.devices.android.adb import WORKDIR
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.devices.android.dlc_cache import calibration_list, convert_to_dlc, quantize_dlc
from backends.devices.android.snpe import SnpeSession
from backends.devices.android.snpe_config import (
    SNPE_RUNTIMES,
    SnpeConfig,
    SnpeConfigError,
    load_snpe_config,
    snpe_runtimes,
)
from backends.devices.base import BenchError
from backends.measure.parity import compare_outputs, parity_inputs, reference_outputs
from backends.models.intake import load_model
from backends.runtimes.snpe import parse_diagview
from backends.virtual import VirtualPhone
from backends.virtual.snpe_sdk import CALLS_LOG, make_standin_sdk
from backends.virtual.tools.snpe_standin import read_container

MODELS = Path(__file__).resolve().parents[3] / "assets" / "models"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def sdk(tmp_path: Path) -> Path:
    return make_standin_sdk(tmp_path / "snpe-sdk")


@pytest.fixture
def config(sdk: Path, tmp_path: Path) -> SnpeConfig:
    return SnpeConfig(sdk=sdk, cache_dir=tmp_path / "cache", calibration_inputs=3)


@pytest.fixture(scope="module")
def mlp() -> Model:
    return load_model(MODELS / "mlp.onnx")


def calls(sdk: Path, tool: str) -> list[str]:
    """The stand-in SDK's recorded calls of ``tool`` (one line each)."""
    path = sdk / CALLS_LOG
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if f" {tool} " in line]


def write_clip_ranges(path: Path, low: float = -4.0, high: float = 4.0) -> Path:
    """A small MQBench-style clip-range JSON for tensors of mlp.onnx."""
    encoding = {"bitwidth": 8, "min": low, "max": high, "scale": (high - low) / 255, "offset": -128}
    data = {
        "activation_encodings": {"x": [encoding], "fc0/out": [encoding], "fc1/out": [encoding]},
        "param_encodings": {
            "fc0.weight": [{"bitwidth": 8, "min": -1.0, "max": 1.0}],
            "fc1.weight": [{"bitwidth": 8, "min": -0.5, "max": 0.5}],
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def make_job(model: Model, runtime: str, device_id: str = "adb:test", **settings: Any) -> Job:
    options = {"runs": 10, "warmup": 2, "per_layer": True, **settings}
    perf_profile = options.pop("perf_profile", None)
    job_settings = JobSettings(**options)
    if perf_profile is not None:
        job_settings.perf_profile = perf_profile  # type: ignore[attr-defined]
    return Job(
        id=f"job-{runtime}",
        model=model,
        device_id=device_id,
        runtime=runtime,
        settings=job_settings,
    )


def never_push(local: str, remote: str, mode: int) -> None:
    raise AssertionError(f"nothing should reach the phone, got a push of {local} to {remote}")


@pytest.fixture
def pusher(
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_device: adbutils.AdbDevice,
) -> Callable[[str, str, int], None]:
    """AndroidBackend's own push-once helper bound to the virtual phone (as it will be wired)."""
    _, port = adb_server
    backend = AndroidBackend(AndroidConfig(adb_host="127.0.0.1", adb_port=port))
    return functools.partial(backend._push_once, virtual_device)


def phone_dir(phone: VirtualPhone, device_path: str) -> Path:
    return phone.sandbox.host_path(device_path)


# --------------------------------------------------------------------------- on the phone


def test_cpu_session_times_and_profiles(
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    pusher: Callable[[str, str, int], None],
    config: SnpeConfig,
    mlp: Model,
    tmp_path: Path,
) -> None:
    job = make_job(mlp, "snpe-cpu", f"adb:{virtual_phone.serial}")
    session = SnpeSession(virtual_device, job.device_id, job, mlp, config, pusher)
    try:
        session.warmup(2)
        seen: list[int] = []
        timed = session.run(10, None, lambda done, _latencies: seen.append(done))
        # every inference's time, from diagview's --output CSV (whole microseconds)
        assert len(timed.latencies_us) == 10 and timed.count == 10 and timed.summary is None
        assert all(value > 0 and value == int(value) for value in timed.latencies_us)
        assert seen == [10]
        decoded = calls(config.sdk, "snpe-diagview")
        assert decoded and all("--output" in line for line in decoded)

        profile = session.profile_layers(5, str(tmp_path / "logs"))
        assert profile is not None and profile.layers
        # a separate detailed pass of 5 runs: profiling never slows the timed runs
        assert profile.forward_stats is not None and profile.forward_stats.count == 5
        # measured in its own (profiled, slower) pass, so not comparable with the timed mean
        assert profile.forward_stats.mean > 0
        assert profile.layers_stats is not None and profile.layers_stats.count == 5
        # CPU rows have no Input row: Layers Time is the sum of every layer
        assert profile.layers_stats.mean == pytest.approx(sum(x.mean_us for x in profile.layers))
        # each inference's layers from diagview's CSV: Layers Time's real fastest and slowest
        stats = profile.layers_stats
        assert stats.min is not None and stats.max is not None
        assert stats.min <= stats.mean <= stats.max
        report = Path(profile.raw_log_path or "")
        assert report.is_file() and parse_diagview(report.read_text()).layers
        assert (tmp_path / "logs" / "SNPEDiag_0.log").is_file()
        assert "devlab_standin" in session.info.tool_version
        assert session.info.load_us and session.info.load_us > 0

        with pytest.raises(BenchError, match="--runs"):
            session.run(None, 2.0, lambda *_: None)

        argv = session.net_run_argv("LIST", "OUT", "detailed")
        assert argv[:2] == ["env", f"LD_LIBRARY_PATH={session.remote_lib}"]
        assert argv[2] == session.remote_bin and session.remote_bin.startswith(f"{WORKDIR}/")
        assert argv[argv.index("--perf_profile") + 1] == "high_performance"
        assert argv[argv.index("--profiling_level") + 1] == "detailed"
        assert "--use_dsp" not in argv and "--use_gpu" not in argv
        assert not any(arg.startswith("ADSP_LIBRARY_PATH=") for arg in argv)
    finally:
        session.close()

    snpe = phone_dir(virtual_phone, f"{WORKDIR}/snpe")
    assert list((snpe / "out").iterdir()) == []  # every output dir was removed
    raws = list((snpe / "inputs").iterdir())
    assert len(raws) == 1 and raws[0].stat().st_size == 256 * 4  # one raw file, reused
    lists = {len(p.read_text().splitlines()): p for p in (snpe / "lists").iterdir()}
    assert set(lists) == {2, 10, 5}  # warm-up, timed and profiled runs: a line per inference
    assert set(lists[10].read_text().splitlines()) == {f"{WORKDIR}/snpe/inputs/{raws[0].name}"}
    pushed_bin = phone_dir(virtual_phone, session.remote_bin)
    assert pushed_bin.is_file() and pushed_bin.stat().st_mode & 0o111
    assert (phone_dir(virtual_phone, session.remote_lib) / "libSNPE.so").is_file()
    assert not session._tmp.exists()


def test_a_diagview_without_output_falls_back_to_the_reports_average(
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    pusher: Callable[[str, str, int], None],
    config: SnpeConfig,
    sdk: Path,
    mlp: Model,
) -> None:
    # a diagview build that does not know --output: it refuses the flag (exit 1, no CSV)
    tool = sdk / "bin" / "x86_64-linux-clang" / "snpe-diagview"
    original = tool.with_name("snpe-diagview.real")
    tool.rename(original)
    tool.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" --output "*) echo "Unknown option: --output" >&2; exit 1;; esac\n'
        f'exec "{original}" "$@"\n'
    )
    tool.chmod(0o755)
    job = make_job(mlp, "snpe-cpu", f"adb:{virtual_phone.serial}")
    session = SnpeSession(virtual_device, job.device_id, job, mlp, config, pusher)
    try:
        timed = session.run(10, None, lambda *_: None)
    finally:
        session.close()
    assert timed.latencies_us == [] and timed.count == 10
    assert timed.summary is not None and timed.summary.min == timed.summary.max > 0


def test_outputs_come_back_from_the_phone_for_parity(
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    pusher: Callable[[str, str, int], None],
    config: SnpeConfig,
) -> None:
    model = load_model(MODELS / "mnv2_cifar32.onnx")
    job = make_job(model, "snpe-gpu", f"adb:{virtual_phone.serial}")
    session = SnpeSession(virtual_device, job.device_id, job, model, config, pusher)
    try:
        feeds = parity_inputs(model)
        got = session.outputs(feeds)
        expected = reference_outputs(model.path, feeds)
        assert [g.shape for g in got] == [e.shape for e in expected]
        report = compare_outputs(expected, got)
        assert report.ok and report.top1_agree is True and report.cosine > 0.9999
        # a different input gives different outputs: they really come from this input
        other = {name: value + 1.0 for name, value in feeds.items()}
        assert not np.allclose(session.outputs(other)[0], got[0])
    finally:
        session.close()
    assert list(phone_dir(virtual_phone, f"{WORKDIR}/snpe/out").iterdir()) == []


def test_dsp_with_clip_ranges_goes_through_quantize(
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    pusher: Callable[[str, str, int], None],
    config: SnpeConfig,
    sdk: Path,
    mlp: Model,
    tmp_path: Path,
) -> None:
    clip = write_clip_ranges(tmp_path / "snpe_clip_ranges.json")
    job = make_job(mlp, "snpe-dsp", f"adb:{virtual_phone.serial}", perf_profile="burst")
    session = SnpeSession(virtual_device, job.device_id, job, mlp, config, pusher, clip_ranges=clip)
    try:
        [convert] = calls(sdk, "snpe-onnx-to-dlc")
        assert f"--quantization_overrides {clip}" in convert
        [quantize] = calls(sdk, "snpe-dlc-quantize")
        assert "--override_params" in quantize and "--bias_bitwidth 32" in quantize
        _, meta = read_container(session.dlc)
        assert meta["quantization"]["override_params"] is True
        assert meta["quantization"]["calibration_inputs"] == 3
        assert meta["quantization_overrides"] == json.loads(clip.read_text())

        argv = session.net_run_argv("LIST", "OUT", "basic")
        assert "--use_dsp" in argv
        assert argv[argv.index("--perf_profile") + 1] == "burst"
        adsp = next(arg for arg in argv if arg.startswith("ADSP_LIBRARY_PATH="))
        assert adsp.split("=", 1)[1].split(";")[0] == session.remote_dsp
        assert session.remote_dsp is not None
        skels = list(phone_dir(virtual_phone, session.remote_dsp).iterdir())
        assert [p.name for p in skels] == ["libsnpe_dsp_domains_v2_skel.so"]

        timed = session.run(10, None, lambda *_: None)
        assert len(timed.latencies_us) == 10 and timed.count == 10
        profile = session.profile_layers(5, str(tmp_path / "logs"))
        # DSP/HTP layer times are cycles: Forward Propagate only, no Layers Time
        assert profile is not None and profile.forward_stats is not None
        assert profile.forward_stats.count == 5  # its own profiled pass
        assert profile.layers == [] and profile.layers_stats is None
        assert "cycles" in Path(profile.raw_log_path or "").read_text()
    finally:
        session.close()


def test_phone_vanishing_is_a_bench_error(
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    pusher: Callable[[str, str, int], None],
    config: SnpeConfig,
    mlp: Model,
) -> None:
    job = make_job(mlp, "snpe-gpu", f"adb:{virtual_phone.serial}")
    session = SnpeSession(virtual_device, job.device_id, job, mlp, config, pusher)
    try:
        assert "--use_gpu" in session.net_run_argv("L", "O", "basic")
        virtual_phone.stop()
        with pytest.raises(BenchError, match="vanished.*reconnect"):
            session.run(3, None, lambda *_: None)
    finally:
        session.close()


# --------------------------------------------------------------------------- errors


def test_no_sdk_names_the_setting(mlp: Model, tmp_path: Path) -> None:
    job = make_job(mlp, "snpe-cpu")
    with pytest.raises(BenchError, match=r"\[snpe\] sdk"):
        SnpeSession(None, "adb:x", job, mlp, None, never_push)  # type: ignore[arg-type]
    for raw in (None, {}, {"sdk": ""}):
        with pytest.raises(SnpeConfigError, match=r"\[snpe\] sdk"):
            SnpeConfig.from_raw(raw)
    assert issubclass(SnpeConfigError, ValueError)
    missing = SnpeConfig.from_raw({"sdk": str(tmp_path / "nowhere")})
    with pytest.raises(BenchError, match=r"\[snpe\] sdk = .*nowhere.*no such folder"):
        SnpeSession(None, "adb:x", job, mlp, missing, never_push)  # type: ignore[arg-type]
    with pytest.raises(SnpeConfigError, match="unknown setting.*sdk_path"):
        SnpeConfig.from_raw({"sdk_path": "/opt/snpe"})
    assert load_snpe_config({"android": {}}) is None
    assert snpe_runtimes(None) == []


def test_config_defaults_follow_the_sdk_layout(sdk: Path, tmp_path: Path) -> None:
    config = SnpeConfig.from_raw({"sdk": str(sdk), "cache_dir": str(tmp_path / "c")})
    assert config.host_bin == sdk / "bin" / "x86_64-linux-clang"
    assert config.device_bin == sdk / "bin" / "aarch64-android" / "snpe-net-run"
    assert config.device_lib == sdk / "lib" / "aarch64-android"
    assert config.dsp_lib == sdk / "lib" / "dsp"
    assert snpe_runtimes(config) == list(SNPE_RUNTIMES)
    for runtime in SNPE_RUNTIMES.values():
        config.check(runtime)
    no_dsp = SnpeConfig(sdk=sdk, dsp_lib=tmp_path / "no-skels")
    assert "snpe-dsp" not in snpe_runtimes(no_dsp)
    with pytest.raises(SnpeConfigError, match=r"\[snpe\] dsp_lib = .*no-skels"):
        no_dsp.check("DSP")
    with pytest.raises(SnpeConfigError, match=r"\[snpe\] device_bin"):
        SnpeConfig(sdk=sdk, device_bin=tmp_path / "nope").check("CPU")
    with pytest.raises(SnpeConfigError, match=r"\[snpe\] host_bin"):
        SnpeConfig(sdk=sdk, host_bin=tmp_path).check("CPU")


def test_bad_clip_ranges_name_the_file(config: SnpeConfig, sdk: Path, mlp: Model, tmp_path: Path):
    job = make_job(mlp, "snpe-dsp")
    inverted = write_clip_ranges(tmp_path / "inverted_ranges.json", low=3.0, high=-3.0)
    with pytest.raises(BenchError, match="inverted_ranges.json.*min 3.0 > max -3.0"):
        SnpeSession(None, "adb:x", job, mlp, config, never_push, clip_ranges=inverted)  # type: ignore[arg-type]
    broken = tmp_path / "broken_ranges.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(BenchError, match="broken_ranges.json.*not valid JSON"):
        convert_to_dlc(config, mlp, broken)
    with pytest.raises(BenchError, match="absent_ranges.json.*no such file"):
        quantize_dlc(config, tmp_path / "x.dlc", mlp, tmp_path / "absent_ranges.json")
    assert calls(sdk, "snpe-onnx-to-dlc") == []  # rejected before any tool ran


def test_unknown_runtime_and_perf_profile(config: SnpeConfig, mlp: Model) -> None:
    with pytest.raises(BenchError, match="unknown SNPE runtime 'snpe-aip'"):
        SnpeSession(None, "adb:x", make_job(mlp, "snpe-aip"), mlp, config, never_push)  # type: ignore[arg-type]
    job = make_job(mlp, "snpe-cpu", perf_profile="warp_speed")
    with pytest.raises(BenchError, match="perf_profile 'warp_speed'.*sustained_high_performance"):
        SnpeSession(None, "adb:x", job, mlp, config, never_push)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- host tools


def test_conversion_is_cached(config: SnpeConfig, sdk: Path, mlp: Model, tmp_path: Path) -> None:
    first = convert_to_dlc(config, mlp)
    stamp = first.stat().st_mtime_ns
    again = convert_to_dlc(config, mlp)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert len(calls(sdk, "snpe-onnx-to-dlc")) == 1
    _, meta = read_container(first)
    assert meta["standin"] is True and meta["quantization"] is None

    clip = write_clip_ranges(tmp_path / "clip.json")
    with_clip = convert_to_dlc(config, mlp, clip)
    assert with_clip != first and len(calls(sdk, "snpe-onnx-to-dlc")) == 2
    assert convert_to_dlc(config, mlp, clip) == with_clip
    assert len(calls(sdk, "snpe-onnx-to-dlc")) == 2

    quantized = quantize_dlc(config, with_clip, mlp, clip)
    assert quantize_dlc(config, with_clip, mlp, clip) == quantized
    assert len(calls(sdk, "snpe-dlc-quantize")) == 1
    calibrated = quantize_dlc(config, first, mlp)  # no clip ranges: a different DLC
    assert calibrated != quantized and len(calls(sdk, "snpe-dlc-quantize")) == 2
    assert "--override_params" not in calls(sdk, "snpe-dlc-quantize")[1]


def test_convert_and_quantize_argv(
    config: SnpeConfig, mlp: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess:
        seen.append(list(argv))
        flag = "--output_path" if "--output_path" in argv else "--output_dlc"
        Path(argv[argv.index(flag) + 1]).write_bytes(b"stand-in output")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr("backends.devices.android.dlc_cache.subprocess.run", fake_run)
    clip = write_clip_ranges(tmp_path / "clip.json")
    dlc = convert_to_dlc(config, mlp, clip)
    [argv] = seen
    host_bin = config.host_bin
    assert host_bin is not None
    assert argv[:5] == [
        str(host_bin / "snpe-onnx-to-dlc"),
        "--input_network",
        mlp.path,
        "--output_path",
        argv[4],
    ]
    assert argv[4].endswith(".dlc") and Path(argv[4]).parent == dlc.parent
    assert argv[5:] == ["--quantization_overrides", str(clip)]

    out = quantize_dlc(config, dlc, mlp, clip)
    argv = seen[1]
    listing = calibration_list(config, mlp)
    assert argv == [
        str(host_bin / "snpe-dlc-quantize"),
        "--input_dlc",
        str(dlc),
        "--input_list",
        str(listing),
        "--output_dlc",
        argv[6],
        "--override_params",
        "--bias_bitwidth",
        "32",
    ]
    assert out.is_file() and out.parent == dlc.parent
    lines = listing.read_text().splitlines()
    assert len(lines) == 3  # calibration_inputs
    assert all(Path(line).stat().st_size == 256 * 4 for line in lines)  # float32 [1, 256]
