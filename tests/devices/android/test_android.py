"""The Android backend end to end, with real components only.

A private real adb server (the adbutils wheel's binary, never on the default port 5037) talks to
virtual phones (emulated adbds whose ``onnxruntime_perf_test`` and ``benchmark_model`` stand-ins
really run ONNX Runtime); jobs go through the real Lab, workers and a SQLite store in tmp_path.
No timed asserts: every wait is a bounded poll.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import adbutils
import adbutils._adb
import pytest
from adbutils.sync import Sync

from backends.core.events import (
    DeviceAdded,
    DeviceChanged,
    DeviceRemoved,
    Event,
    JobFailed,
    JobProgress,
)
from backends.core.lab import Lab
from backends.core.records import Device, DeviceState, Job, JobSettings, JobState, Model, Result
from backends.core.store import Store
from backends.devices.android.adb import WORKDIR
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.devices.android.sessions import PhoneSession
from backends.devices.base import BenchError
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.models.intake import load_model
from backends.virtual import PhoneProfile, ThermalZone, VirtualPhone
from support.adb_fixtures import connect_phone, device_state, free_port, port_accepts
from support.power_jobs import COPY_CONVERTER
from support.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]
MODELS = REPO / "assets" / "models"
WAIT_S = 60.0  # bound of every poll for a job; they take a few seconds at most

PROFILE = PhoneProfile(
    serial="VPAND01",
    name="husky_virtual",
    model="Pixel 8 Virtual",
    device="husky",
    manufacturer="Google",
    board_platform="zuma",
    soc_model="Tensor G3",
    cpu_abi="arm64-v8a",
    sdk=34,
    release="14",
    battery_level=64,
    battery_temp_c=29.7,
    thermal_zones=[ThermalZone("cpu-1-0-usr", 41.5), ThermalZone("battery", 30.0)],
    cpu_governor="performance",
)


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def virtual_phone_profile() -> PhoneProfile:
    """Overrides the fixture of adb_fixtures: this module's phones use PROFILE."""
    return PROFILE


@pytest.fixture
def adb_port(adb_server: tuple[adbutils.AdbClient, int]) -> int:
    return adb_server[1]


@pytest.fixture
def backend(adb_port: int) -> Iterator[AndroidBackend]:
    backend = AndroidBackend(AndroidConfig(adb_port=adb_port))
    yield backend
    backend.close()


@pytest.fixture
def mlp() -> Model:
    return load_model(MODELS / "mlp.onnx")


@pytest.fixture
def no_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """User config/cache/data folders inside tmp_path (the converter caches its outputs)."""
    home = tmp_path / "home"
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, str(home / name.lower()))
    return home


class Recorder:
    """Every Lab event, in order, safe to read from the test thread."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def find(self, kind: type, where: Callable[[Any], bool] = lambda _: True) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind) and where(e)]

    def wait(self, kind: type, where: Callable[[Any], bool] = lambda _: True) -> Any:
        found = wait_until(
            lambda: self.find(kind, where), timeout=WAIT_S, what=f"a {kind.__name__} event"
        )
        assert found, f"no {kind.__name__} event matched; events: {self.events}"
        return found[0]


@pytest.fixture
def make_lab(store: Store, tmp_path: Path) -> Iterator[Callable[..., tuple[Lab, Recorder]]]:
    labs: list[Lab] = []

    def make(*backends: Any) -> tuple[Lab, Recorder]:
        lab = Lab(store, list(backends), log_dir=tmp_path / "logs")
        recorder = Recorder()
        lab.subscribe(recorder)
        labs.append(lab)
        return lab, recorder

    yield make
    for lab in labs:
        lab.shutdown(interrupt=True, timeout=30)


def phone_id(phone: VirtualPhone) -> str:
    return f"adb:{phone.serial}"


def described_phone(backend: AndroidBackend, phone: VirtualPhone) -> Device:
    return backend.describe(next(d for d in backend.discover() if d.id == phone_id(phone)))


def wait_finished(lab: Lab, job: Job) -> Job:
    finished = wait_until(lambda: lab.store.job(job.id).state.finished, timeout=WAIT_S)
    stored = lab.store.job(job.id)
    assert finished, f"job {job.id} still {stored.state.value}"
    return stored


# One round, no canary, no precision gate: these tests count runs and pushes exactly (the
# protocol on a phone has its own test below).
EXACT: dict[str, Any] = {"rounds": 1, "precision_pct": 0, "skip_canary": True, "skip_parity": True}


def run_job(lab: Lab, model: Model, device_id: str, runtime: str | None, **settings: Any) -> Job:
    settings = {**EXACT, **settings}
    return wait_finished(lab, lab.submit(model, device_id, runtime, JobSettings(**settings)))


def result_of(lab: Lab, job: Job) -> Result:
    assert job.state is JobState.DONE, job.error
    result = lab.store.result(job.id)
    assert result is not None
    return result


def assert_tool_summary(result: Result, count: int, tool: str) -> None:
    assert result.stats_source == "tool summary"
    assert result.latencies_us == []  # the tools print statistics, not iterations
    assert result.stats.count == count
    assert result.round_sizes == [count]
    assert 0 < result.stats.min <= result.stats.mean <= result.stats.max
    assert result.tool == tool
    for conditions in (result.conditions_start, result.conditions_end):
        assert conditions["battery_level"] == PROFILE.battery_level
        assert "battery_temperature_c" in conditions
        assert "cpu-1-0-usr" in conditions["thermal_c"]
    assert result.device_properties["model"] == PROFILE.model


@pytest.fixture
def push_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Remote paths of every adb sync push, in order (the real push still happens)."""
    pushes: list[str] = []
    real_push = Sync.push

    def push(self: Sync, src: Any, dst: Any, *args: Any, **kwargs: Any) -> int:
        pushes.append(str(dst))
        return real_push(self, src, dst, *args, **kwargs)

    monkeypatch.setattr(Sync, "push", push)
    return pushes


@pytest.fixture
def start_server_spy(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records (and suppresses) adbutils' ``adb start-server`` fallback."""
    calls: list[list[str]] = []

    def run(argv: list[str], *args: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(adbutils._adb.subprocess, "run", run)
    return calls


# ---------------------------------------------------------------------------------------------
# Configuration


def test_config_from_raw_adb_server_tools_and_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "5999")
    config = AndroidConfig.from_raw(
        {
            "adb_server": "127.0.0.1:6123",
            "tools": {"ort": "/opt/ort/onnxruntime_perf_test"},
            "convert": {"tflite": ["onnx2tf", "{input}", "{output}"]},
            "ort_execution_provider": "nnapi",
        }
    )
    assert (config.adb_host, config.adb_port) == ("127.0.0.1", 6123)
    assert config.tools == {"ort": "/opt/ort/onnxruntime_perf_test"}
    assert config.convert == {"tflite": ["onnx2tf", "{input}", "{output}"]}
    assert config.ort_execution_provider == "nnapi"
    port_only = AndroidConfig.from_raw({"adb_server": "6124"})
    assert (port_only.adb_host, port_only.adb_port) == ("127.0.0.1", 6124)


def test_config_port_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "5999")
    assert AndroidConfig.from_raw({}).adb_port == 5999
    monkeypatch.delenv("ANDROID_ADB_SERVER_PORT")
    config = AndroidConfig.from_raw({})
    assert (config.adb_host, config.adb_port) == ("127.0.0.1", 5037)  # read, never contacted


def test_config_unknown_tool_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown runtime.*snpe.*known: \['ort', 'tflite'\]"):
        AndroidConfig.from_raw({"tools": {"snpe": "/opt/snpe-net-run"}})


# ---------------------------------------------------------------------------------------------
# No adb server


def test_no_adb_server_means_no_phones_and_no_server_started(
    monkeypatch: pytest.MonkeyPatch, start_server_spy: list[list[str]]
) -> None:
    port = free_port()
    # an adbutils fallback would start its server on this port (never on 5037), and the spy
    # records the attempt
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    backend = AndroidBackend(AndroidConfig(adb_port=port))
    try:
        assert backend.discover() == []
        backend.watch(lambda: None)  # the hot-plug thread waits for a server, starts none
        assert backend.discover() == []
    finally:
        backend.close()
    assert start_server_spy == []
    assert not port_accepts(port)


def test_no_adb_server_conditions_and_sessions_start_no_server(
    monkeypatch: pytest.MonkeyPatch, start_server_spy: list[list[str]], mlp: Model
) -> None:
    """The adb server went away after discovery (``adb kill-server``): reading conditions or
    opening a session fails with a message, and never runs ``adb start-server``."""
    port = free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    backend = AndroidBackend(AndroidConfig(adb_port=port))
    device = Device(id="adb:GONE01", kind="android", name="gone", runtimes=["ort"])
    job = Job(id="j-gone", model=mlp, device_id=device.id, runtime="ort")
    try:
        assert "error" in backend.conditions(device)
        with pytest.raises(BenchError, match="adb:GONE01 vanished"):
            backend.open_session(device, job, mlp)
    finally:
        backend.close()
    assert start_server_spy == []
    assert not port_accepts(port)


# ---------------------------------------------------------------------------------------------
# Discovery


def test_discover_and_describe_the_virtual_phone(
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
) -> None:
    found = {device.id: device for device in backend.discover()}
    seen = found[phone_id(virtual_phone)]
    assert seen.state is DeviceState.ONLINE
    assert seen.kind == "android"

    device = backend.describe(seen)
    assert device.state is DeviceState.ONLINE
    assert device.name == "Google Pixel 8 Virtual"
    assert device.runtimes == ["ort", "tflite"]  # both tools are on the phone's PATH
    props = device.properties
    assert props["model"] == "Pixel 8 Virtual"
    assert props["manufacturer"] == "Google"
    assert props["soc"] == "Tensor G3"
    assert props["board_platform"] == "zuma"
    assert props["abi"] == "arm64-v8a"
    assert props["sdk"] == "34"
    assert props["release"] == "14"
    assert props["battery_level"] == 64
    assert props["battery_temperature_c"] == pytest.approx(29.7)
    assert props["thermal_c"] == {"cpu-1-0-usr": 41.5, "battery": 30.0}
    assert props["temperature_c"] == 41.5
    assert props["governor"] == "performance"

    # described once: the next discovery returns the described device as it is
    again = {d.id: d for d in backend.discover()}
    assert again[device.id] == device
    assert backend.describe(again[device.id]) is again[device.id]


def test_lab_discovery_lists_host_and_phone(
    make_lab: Callable[..., tuple[Lab, Recorder]],
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
) -> None:
    lab, events = make_lab(HostBackend(), backend)
    devices = {device.id: device for device in lab.discover()}
    assert HOST_DEVICE_ID in devices
    phone = devices[phone_id(virtual_phone)]
    assert phone.runtimes == ["ort", "tflite"]
    assert phone.properties["model"] == PROFILE.model
    added = {event.device.id for event in events.find(DeviceAdded)}
    assert {HOST_DEVICE_ID, phone.id} <= added


# ---------------------------------------------------------------------------------------------
# Jobs through the Lab


@pytest.fixture
def phone_lab(
    make_lab: Callable[..., tuple[Lab, Recorder]],
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
) -> tuple[Lab, Recorder]:
    lab, events = make_lab(HostBackend(), backend)
    lab.discover()
    lab.start()
    return lab, events


def test_ort_job_end_to_end_pushes_the_model_once(
    phone_lab: tuple[Lab, Recorder],
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    mlp: Model,
    push_spy: list[str],
) -> None:
    lab, _ = phone_lab
    remote = f"{WORKDIR}/models/{mlp.sha256}.onnx"

    first = result_of(lab, run_job(lab, mlp, phone_id(virtual_phone), "ort", runs=20, warmup=2))
    assert_tool_summary(first, 20, "onnxruntime_perf_test")
    assert first.tool_version or first.tool
    assert first.load_us is not None and first.load_us > 0  # "Session creation time cost"
    assert push_spy == [remote]
    pushed = virtual_device.sync.stat(remote)
    assert pushed.size == Path(mlp.path).stat().st_size

    second_job = run_job(lab, mlp, phone_id(virtual_phone), "ort", runs=7, warmup=0)
    second = result_of(lab, second_job)
    assert second.stats.count == 7
    assert push_spy == [remote]  # cached: not pushed again
    assert virtual_device.sync.stat(remote).mtime == pushed.mtime

    # a new backend (devlab restarted) finds the model on the phone and does not push it
    fresh = AndroidBackend(backend.config)
    assert fresh.push_model(virtual_device, "ort", mlp) == remote
    assert push_spy == [remote]


def test_default_protocol_on_a_phone_interleaves_with_the_canary(
    phone_lab: tuple[Lab, Recorder],
    virtual_phone: VirtualPhone,
    mlp: Model,
    push_spy: list[str],
) -> None:
    """The default protocol on a phone: rounds with the reference canary pushed and measured
    on the phone before each one, the normalised headline and the gate's interval."""
    lab, _ = phone_lab
    job = run_job(
        lab,
        mlp,
        phone_id(virtual_phone),
        "ort",
        runs=30,
        warmup=1,
        rounds=3,
        precision_pct=50.0,
        skip_canary=False,
    )
    result = result_of(lab, job)
    assert len(result.round_sizes) >= 3
    assert len(result.round_canary_us) == len(result.round_sizes)
    assert all(c is not None and c > 0 for c in result.round_canary_us)
    assert result.normalised_median_us is not None and result.normalised_median_us > 0
    assert result.ci_half_width_pct is not None
    from backends.measure.probe import CANARY_PATH

    canary = load_model(CANARY_PATH)
    assert sorted(push_spy) == sorted(  # the model and the canary, each pushed once
        [f"{WORKDIR}/models/{mlp.sha256}.onnx", f"{WORKDIR}/models/{canary.sha256}.onnx"]
    )


def test_ort_outputs_of_a_debug_io_build_give_output_parity(
    phone_lab: tuple[Lab, Recorder],
    virtual_phone: VirtualPhone,
) -> None:
    """The virtual phone's onnxruntime_perf_test stands for a debug node-I/O build: devlab
    feeds it the parity input as test_data_set_0 and reads the graph outputs it dumps."""
    lab, _ = phone_lab
    model = load_model(MODELS / "mnv2_cifar32.onnx")
    job = run_job(lab, model, phone_id(virtual_phone), "ort", runs=5, warmup=0, skip_parity=False)
    parity = result_of(lab, job).parity
    assert parity is not None and parity["ok"] is True, parity
    assert parity["top1_agree"] is True and parity["cosine"] > 0.9999
    parity_dir = virtual_phone.sandbox.host_path(f"{WORKDIR}/parity")
    assert list(parity_dir.iterdir()) == []  # the job's parity folder was removed


def test_a_release_build_gives_no_parity_and_is_not_asked_again(
    phone_lab: tuple[Lab, Recorder],
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
    mlp: Model,
) -> None:
    """A release onnxruntime_perf_test ignores the dump variables: no parity, nothing fails,
    and later jobs on that phone do not try again."""
    lab, _ = phone_lab
    tool = virtual_phone.sandbox.root / "system/bin/onnxruntime_perf_test"
    real = tool.with_name("onnxruntime_perf_test.debug-io")
    tool.rename(real)
    tool.write_text(  # a release build: the same tool, blind to ORT_DEBUG_NODE_IO_*
        "#!/bin/sh\n"
        "unset ORT_DEBUG_NODE_IO_DUMP_OUTPUT_DATA\n"
        f'echo run >> "{tool.parent}/release-runs"\n'
        f'exec "{real}" "$@"\n'
    )
    tool.chmod(0o755)
    first = run_job(lab, mlp, phone_id(virtual_phone), "ort", runs=5, warmup=0, skip_parity=False)
    result = result_of(lab, first)
    assert result.parity is None and not result.warnings
    runs_first = (tool.parent / "release-runs").read_text().count("run")
    assert runs_first == 2  # the timed round and the one parity attempt
    assert backend.no_output_dump == {(virtual_phone.serial, "onnxruntime_perf_test")}
    second = run_job(lab, mlp, phone_id(virtual_phone), "ort", runs=4, warmup=0, skip_parity=False)
    assert result_of(lab, second).parity is None
    assert (tool.parent / "release-runs").read_text().count("run") == runs_first + 1


def test_ort_per_layer_pulls_the_profile(
    phone_lab: tuple[Lab, Recorder],
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    mlp: Model,
) -> None:
    lab, _ = phone_lab
    job = run_job(
        lab, mlp, phone_id(virtual_phone), "ort", runs=10, warmup=1, per_layer=True, profile_runs=5
    )
    result = result_of(lab, job)
    assert_tool_summary(result, 10, "onnxruntime_perf_test")
    assert result.layers, "no layers from the pulled ORT profile"
    assert all(layer.op_type for layer in result.layers)  # ORT fuses the MLP into Gemms
    assert len({layer.name for layer in result.layers}) == len(result.layers)
    assert all(layer.mean_us >= 0 for layer in result.layers)
    assert result.layers_stats is not None
    assert result.layers_stats.count == 5  # profile_runs, the tool's warm-up run left out
    assert result.raw_log_path is not None
    raw = Path(result.raw_log_path)
    assert raw.is_file() and raw.parent == lab.log_dir / job.id
    assert isinstance(json.loads(raw.read_text()), list)  # the Chrome trace ORT wrote
    left = virtual_device.shell(shlex.join(["ls", f"{WORKDIR}/profiles"]))
    assert left.strip() == ""  # pulled, then removed from the phone


def test_tflite_needs_a_converter(
    phone_lab: tuple[Lab, Recorder],
    virtual_phone: VirtualPhone,
    mlp: Model,
    no_user_dirs: Path,
) -> None:
    lab, events = phone_lab
    job = run_job(lab, mlp, phone_id(virtual_phone), "tflite", runs=10, warmup=1)
    assert job.state is JobState.FAILED
    assert "convert first" in (job.error or "")
    assert "[android.convert]" in (job.error or "")
    assert events.find(JobFailed, lambda e: e.job.id == job.id)


def test_tflite_with_a_converter(
    phone_lab: tuple[Lab, Recorder],
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    mlp: Model,
    no_user_dirs: Path,
) -> None:
    lab, _ = phone_lab
    backend.config.convert = {"tflite": COPY_CONVERTER}  # the stand-in reads ONNX anyway
    job = run_job(lab, mlp, phone_id(virtual_phone), "tflite", runs=10, warmup=1, per_layer=True)
    result = result_of(lab, job)
    assert_tool_summary(result, 10, "benchmark_model")
    assert result.tool_version == ""  # benchmark_model prints no version
    assert result.layers, "no layers from --enable_op_profiling"
    assert result.layers_stats is not None
    remote = f"{WORKDIR}/models/{mlp.sha256}.tflite"
    assert virtual_device.sync.stat(remote).size == Path(mlp.path).stat().st_size
    converted = list((no_user_dirs / "xdg_cache_home").rglob(f"{mlp.sha256}.tflite"))
    assert len(converted) == 1  # converted once, into the user cache folder


def test_min_seconds_with_ort_fails_clearly(
    phone_lab: tuple[Lab, Recorder],
    virtual_phone: VirtualPhone,
    mlp: Model,
) -> None:
    lab, _ = phone_lab
    job = run_job(lab, mlp, phone_id(virtual_phone), "ort", runs=None, min_seconds=0.5, warmup=0)
    assert job.state is JobState.FAILED
    assert "give --runs" in (job.error or "")
    assert "--min-seconds" in (job.error or "")


def test_tool_missing_on_the_phone(
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    mlp: Model,
) -> None:
    device = described_phone(backend, virtual_phone)
    (virtual_phone.sandbox.root / "system/bin/onnxruntime_perf_test").unlink()
    job = Job(id="j-notool", model=mlp, device_id=device.id, runtime="ort")
    with pytest.raises(BenchError, match=r"no onnxruntime_perf_test: set \[android.tools\] ort"):
        backend.open_session(device, job, mlp)


def test_configured_tool_is_pushed_once_and_used(
    make_lab: Callable[..., tuple[Lab, Recorder]],
    adb_port: int,
    virtual_phone: VirtualPhone,
    virtual_device: adbutils.AdbDevice,
    mlp: Model,
    push_spy: list[str],
    tmp_path: Path,
) -> None:
    """[android.tools] ort = host binary: pushed once (by content hash) and run from there."""
    on_path = virtual_phone.sandbox.root / "system/bin/onnxruntime_perf_test"
    host_tool = tmp_path / "tools" / "onnxruntime_perf_test"
    host_tool.parent.mkdir()
    shutil.copy(on_path, host_tool)
    on_path.unlink()  # only the pushed copy can run now
    backend = AndroidBackend(AndroidConfig(adb_port=adb_port, tools={"ort": str(host_tool)}))
    lab, _ = make_lab(backend)
    assert lab.discover()[0].runtimes == ["ort", "tflite"]
    lab.start()

    first = run_job(lab, mlp, phone_id(virtual_phone), "ort", runs=5, warmup=1)
    assert result_of(lab, first).stats.count == 5
    second = run_job(lab, mlp, phone_id(virtual_phone), "ort", runs=6, warmup=0)
    assert result_of(lab, second).stats.count == 6

    tools = [path for path in push_spy if path.startswith(f"{WORKDIR}/bin/")]
    assert len(tools) == 1, push_spy
    assert re.fullmatch(rf"{WORKDIR}/bin/[0-9a-f]{{16}}/onnxruntime_perf_test", tools[0])
    assert virtual_device.sync.stat(tools[0]).mode & 0o111  # executable


# ---------------------------------------------------------------------------------------------
# The headless CLI


def cli_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    home = tmp_path / "cli-home"
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_DATA_HOME=str(home / "data"),
        ANDROID_ADB_SERVER_PORT=str(port),
        PYTHONUNBUFFERED="1",
        COLUMNS="400",
    )
    env.pop("PYTHONPATH", None)
    return env


def devlab(*args: Any, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.entry", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_runs_a_model_on_the_phone(
    tmp_path: Path,
    adb_port: int,
    virtual_phone: VirtualPhone,
) -> None:
    model = tmp_path / "models" / "mlp.onnx"
    model.parent.mkdir()
    shutil.copy(MODELS / "mlp.onnx", model)
    config = tmp_path / "devlab.toml"
    config.write_text(f'[android]\nadb_server = "127.0.0.1:{adb_port}"\n', encoding="utf-8")
    env = cli_env(tmp_path, adb_port)
    out = tmp_path / "out"
    device = phone_id(virtual_phone)

    run = devlab(
        "--run", model, "--device", device, "--runtime", "ort", "--runs", "10", "--warmup", "1",
        "--out", out, "--config", config, env=env,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "done", row
    assert row["device"] == device
    assert row["runtime"] == "ort"
    # the default protocol: 5 rounds of 2 runs, more if the precision gate asked for them
    assert int(row["rounds"]) >= 5 and int(row["count"]) == 2 * int(row["rounds"])
    assert float(row["min_us"]) <= float(row["mean_us"]) <= float(row["max_us"])

    listed = devlab("devices", "--json", "--config", config, env=env)
    assert listed.returncode == 0, listed.stderr
    devices = {device["id"]: device for device in json.loads(listed.stdout)}
    assert devices[device]["state"] == "online"
    assert devices[device]["runtimes"] == ["ort", "tflite"]
    assert devices[device]["properties"]["model"] == PROFILE.model
    assert HOST_DEVICE_ID in devices


# ---------------------------------------------------------------------------------------------
# Hot-plug and a phone that vanishes mid-benchmark


def test_hot_plug_adds_and_removes_a_phone(
    make_lab: Callable[..., tuple[Lab, Recorder]],
    adb_server: tuple[adbutils.AdbClient, int],
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
    tmp_path: Path,
) -> None:
    client, _ = adb_server
    lab, events = make_lab(backend)
    lab.discover()
    lab.start()  # calls backend.watch: adb track-devices from now on

    second = VirtualPhone(tmp_path / "phone2", PhoneProfile(serial="VPAND02", model="Second VP"))
    second.start()
    try:
        connect_phone(client, second)
        added = events.wait(DeviceAdded, lambda e: e.device.id == phone_id(second))
        assert added.device.kind == "android"

        def described() -> bool:
            device = lab.device(phone_id(second))
            return device.state is DeviceState.ONLINE and device.properties.get("model")

        assert wait_until(described, timeout=WAIT_S)
        assert lab.device(phone_id(second)).runtimes == ["ort", "tflite"]

        second.stop()
        client.disconnect(second.serial)
        events.wait(DeviceRemoved, lambda e: e.device_id == phone_id(second))
        assert phone_id(second) not in {device.id for device in lab.devices}
        assert phone_id(virtual_phone) in {device.id for device in lab.devices}
    finally:
        with contextlib.suppress(Exception):
            client.disconnect(second.serial)
        second.stop()


def test_phone_vanishes_mid_benchmark_then_returns(
    phone_lab: tuple[Lab, Recorder],
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,
    mlp: Model,
) -> None:
    client, _ = adb_server
    lab, events = phone_lab
    device = phone_id(virtual_phone)
    big = load_model(MODELS / "mnv2_224.onnx")
    # ~4 ms per inference on one core: about 3 s of timed runs, plenty to pull the plug in
    job = lab.submit(big, device, "ort", JobSettings(runs=750, warmup=0, **EXACT))
    events.wait(JobProgress, lambda e: e.job_id == job.id and e.phase == "warmup")
    assert wait_until(virtual_phone.child_pids, timeout=WAIT_S), "the tool never started"

    virtual_phone.stop()  # the cable is pulled while onnxruntime_perf_test runs

    failed = wait_finished(lab, job)
    assert failed.state is JobState.FAILED, "the job finished before the phone was stopped"
    error = failed.error or ""
    assert device in error and "vanished" in error and "reconnect" in error, error
    assert lab.store.result(job.id) is None
    events.wait(
        DeviceChanged, lambda e: e.device.id == device and e.device.state is DeviceState.OFFLINE
    )
    assert wait_until(lambda: device_state(client, virtual_phone.serial) == "offline")

    # the queue goes on: a job on the host runs while the phone is away
    host_job = run_job(lab, mlp, HOST_DEVICE_ID, None, runs=5, warmup=0)
    assert host_job.state is JobState.DONE

    virtual_phone.start()  # same port: the adb server reconnects by itself

    def back_online() -> bool:
        now = lab.device(device)
        return now.state is DeviceState.ONLINE and now.properties.get("model") == PROFILE.model

    assert wait_until(back_online, timeout=WAIT_S), lab.device(device)
    assert lab.device(device).runtimes == ["ort", "tflite"]
    retried = wait_finished(lab, lab.retry(job.id))
    assert retried.attempts == 2
    assert result_of(lab, retried).stats.count == 750


def test_phone_that_went_offline_stays_offline_after_its_job_fails(
    phone_lab: tuple[Lab, Recorder],
    virtual_phone: VirtualPhone,
    mlp: Model,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deterministic order: discovery sees the phone go offline, then its job fails."""
    lab, events = phone_lab
    device = phone_id(virtual_phone)
    real_run = PhoneSession.run
    pulled = threading.Event()

    def run(self: PhoneSession, *args: Any, **kwargs: Any) -> Any:
        if not pulled.is_set():
            pulled.set()
            virtual_phone.stop()
            wait_until(lambda: lab.device(device).state is DeviceState.OFFLINE, timeout=WAIT_S)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(PhoneSession, "run", run)
    first = lab.submit(mlp, device, "ort", JobSettings(runs=5, warmup=0, **EXACT))
    behind = lab.submit(mlp, device, "ort", JobSettings(runs=6, warmup=0, **EXACT))
    failed = events.wait(JobFailed, lambda e: e.job.id == first.id)  # after Lab._track_busy
    assert "vanished" in failed.error
    assert events.find(
        DeviceChanged, lambda e: e.device.id == device and e.device.state is DeviceState.OFFLINE
    )
    assert lab.device(device).state is DeviceState.OFFLINE  # fails: online or busy again

    virtual_phone.start()
    assert wait_finished(lab, behind).state is JobState.DONE  # it waited for the phone


def test_session_reports_a_vanished_phone(
    backend: AndroidBackend,
    virtual_phone: VirtualPhone,
    mlp: Model,
) -> None:
    """A session whose phone is gone says so in BenchError (without going through the Lab)."""
    device = described_phone(backend, virtual_phone)
    job = Job(id="j-direct", model=mlp, device_id=device.id, runtime="ort")
    session = backend.open_session(device, job, mlp)
    assert isinstance(session, PhoneSession)
    virtual_phone.stop()
    with pytest.raises(BenchError, match=rf"{device.id} vanished during the benchmark"):
        session.run(5, None, lambda done, latencies: None)
