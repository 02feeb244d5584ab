"""The trtexec runner and the virtual Jetson: the stand-in ``trtexec`` and ``tegrastats``
(ONNX Runtime behind TensorRT's output formats; the virtual board's rails rise while the
stand-in runs), driven as real subprocesses by the runner, by a real agent on 127.0.0.1, and
by ``devlab --run`` end to end: latency per iteration, per-layer times, energy per inference.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.agent.runners import ProgressUpdate, RunnerCancelled, RunnerError, RunnerResult
from backends.agent.settings import JobSettingsIn
from backends.agent.trtexec_runner import TrtexecRunner
from backends.core.events import Event, JobFailed, JobFinished, PowerSamples
from backends.core.lab import Lab
from backends.core.records import JobSettings
from backends.core.store import STORE_FILE, Store
from backends.devices.dpu.backend import DpuBackend
from backends.devices.dpu.config import DpuConfig, Endpoint
from backends.models.intake import load_model
from backends.power.rails import rail_energy
from backends.runtimes import trtexec
from backends.virtual.jetson import JetsonTools, jetson_agent, provision_jetson
from backends.virtual.loopback_agent import LoopbackAgent
from support.agent_fixtures import write_config
from support.helpers import MODELS_DIR, read_results_csv, run_devlab
from support.waiting import wait_until

MODEL = MODELS_DIR / "mnv2_cifar32.onnx"  # ~1 ms a query here: rounds span several samples
MLP = MODELS_DIR / "mlp.onnx"


@pytest.fixture
def tools(tmp_path: Path) -> JetsonTools:
    return provision_jetson(tmp_path / "jetson")


def run(runner: TrtexecRunner, settings: JobSettingsIn, model: Path = MODEL):
    updates: list[ProgressUpdate] = []
    result = runner.run(model, settings, updates.append, threading.Event())
    return result, updates


def test_standin_trtexec_prints_what_the_parser_reads(tools: JetsonTools, tmp_path: Path) -> None:
    """The stand-in's output is the real format: the parser reads it, the exported times
    hold one record per query and agree with the printed summary."""
    import subprocess

    engine, times = tmp_path / "m.engine", tmp_path / "times.json"
    built = subprocess.run(
        [tools.trtexec, f"--onnx={MLP}", f"--saveEngine={engine}", "--int8", "--iterations=5",
         "--duration=0", "--warmUp=0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert "&&&& PASSED TensorRT.trtexec [TensorRT v8602]" in built.stdout
    argv = trtexec.timed_argv(str(tools.trtexec), str(engine), 30, 0, str(times))
    timed = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    parsed = trtexec.parse_trtexec(timed.stdout, timed.returncode)
    assert parsed.tool_version == "8.6.2" and parsed.count == 30
    series = trtexec.parse_export_times(times.read_text())
    assert len(series["latency"]) == 30
    assert parsed.avg_us == pytest.approx(sum(series["latency"]) / 30, rel=1e-3)
    assert parsed.forward_us is not None and parsed.forward_us["mean"] <= parsed.avg_us


def test_runner_builds_once_then_times_rounds_with_layers_and_power(
    tools: JetsonTools, tmp_path: Path
) -> None:
    runner = TrtexecRunner(
        str(tools.trtexec), tmp_path / "work", "fp16", 256, str(tools.tegrastats), 50, 0.5
    )
    result, updates = run(runner, JobSettingsIn("trtexec", warmup=3, rounds=[300, 200]))
    assert [len(r.latencies_us) for r in result.rounds] == [300, 200]
    assert result.stats_source == "iterations" and result.tool == "trtexec"
    assert result.tool_version == "8.6.2"
    assert all(r.summary["median"] > 0 for r in result.rounds)
    phases = {u.phase for u in updates}
    assert {"build engine", "round 1/2", "round 2/2", "profile", "power baseline"} <= phases
    extras = result.extras
    assert extras["engine_built"] is True and extras["precision"] == "fp16"
    assert extras["gpu_compute_us"]["mean"] > 0 and extras["h2d_us"]["mean"] >= 0
    assert extras["layers"] and all(layer["mean_us"] > 0 for layer in extras["layers"])
    assert extras["profile_runs"] == 100  # the job's 500 runs, capped for the profiled pass
    power = extras["power"]
    assert power["rail"] == "VDD_IN" and len(power["t"]) == len(power["mw"]) >= 10
    assert power["iterations"] == 500 and len(power["timed_windows"]) == 2
    # the board's energy per inference from the samples, with the baseline method
    reading = rail_energy(power, tmp_path / "power.csv")
    assert reading.power["baseline_w"] == pytest.approx(4.8, abs=0.2)  # the idle board
    assert reading.power["mean_w"] > reading.power["baseline_w"] + 1.0  # trtexec running
    assert reading.power["energy_per_inference_mj"] > 0
    assert set(reading.power["rails_mean_w"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    engines = sorted((tmp_path / "work" / "engines").glob("*.engine"))
    assert len(engines) == 1
    # the same model and flags: the cached engine, untouched
    mtime = engines[0].stat().st_mtime_ns
    again, _ = run(runner, JobSettingsIn("trtexec", warmup=0, rounds=[10]))
    assert again.extras["engine_built"] is False and again.load_us is None
    assert engines[0].stat().st_mtime_ns == mtime
    # another precision is another engine
    int8 = TrtexecRunner(str(tools.trtexec), tmp_path / "work", "int8")
    third, _ = run(int8, JobSettingsIn("trtexec", warmup=0, rounds=[5]))
    assert third.extras["engine_built"] is True and "power" not in third.extras
    assert len(list((tmp_path / "work" / "engines").glob("*.engine"))) == 2


def test_a_model_trtexec_cannot_parse_fails_quoting_its_errors(
    tools: JetsonTools, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    runner = TrtexecRunner(str(tools.trtexec), tmp_path / "work")
    with pytest.raises(RunnerError) as caught:
        run(runner, JobSettingsIn("trtexec", rounds=[5]), bad)
    assert "building the engine" in str(caught.value)
    assert "Failed to parse onnx file" in str(caught.value)
    assert not list((tmp_path / "work" / "engines").glob("*"))  # no half engine left


def test_an_engine_from_elsewhere_fails_like_a_foreign_plan(tools: JetsonTools, tmp_path) -> None:
    import subprocess

    plan = tmp_path / "foreign.plan"
    plan.write_bytes(b"\x00" * 64)
    out = subprocess.run(
        [tools.trtexec, f"--loadEngine={plan}"], capture_output=True, text=True, timeout=60
    )
    with pytest.raises(trtexec.ToolOutputError) as caught:
        trtexec.parse_trtexec(out.stdout, out.returncode)
    assert "Engine deserialization failed" in str(caught.value)


def our_standins() -> list[str]:
    """Command lines of stand-in tools that are children of this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and "backends.virtual.tools" in cmdline:
            found.append(cmdline)
    return found


def test_cancel_stops_trtexec_and_tegrastats(tools: JetsonTools, tmp_path: Path) -> None:
    runner = TrtexecRunner(
        str(tools.trtexec), tmp_path / "work", tegrastats=str(tools.tegrastats), baseline_s=0.2
    )
    cancel, updates, outcome = threading.Event(), [], {}

    def work() -> None:
        try:
            runner.run(MLP, JobSettingsIn("trtexec", rounds=[50_000_000]), updates.append, cancel)
        except BaseException as error:  # the outcome is what the test reads
            outcome["error"] = error

    thread = threading.Thread(target=work)
    thread.start()
    wait_until(lambda: any(u.phase == "round 1/1" for u in updates), 60, what="the timed round")
    time.sleep(0.3)
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), RunnerCancelled)
    assert our_standins() == []  # trtexec's group and tegrastats were killed and reaped
    assert not [p for p in (tmp_path / "work").iterdir() if p.name.startswith("trtexec-")]


def test_runner_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8"):
        TrtexecRunner("trtexec", tmp_path, precision="bf16")
    with pytest.raises(ValueError, match="workspace"):
        TrtexecRunner("trtexec", tmp_path, workspace_mib=0)
    with pytest.raises(ValueError, match="interval"):
        TrtexecRunner("trtexec", tmp_path, tegrastats="tegrastats", interval_ms=0)


# -- the virtual Jetson: a real agent, then devlab --run ----------------------------------------


@pytest.fixture
def jetson(tmp_path: Path) -> Iterator[LoopbackAgent]:
    devlab = [sys.executable, "-m", "console.entry"]
    agent = jetson_agent(devlab, tmp_path / "vj", interval_ms=50, baseline_s=0.6).start()
    try:
        yield agent
    finally:
        agent.stop()  # the pid we started, SIGTERM then SIGKILL


def test_devlab_run_on_a_virtual_jetson_gives_latency_layers_and_energy(
    jetson: LoopbackAgent, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", [(jetson.url, jetson.token_file)])
    out = tmp_path / "out"
    done = run_devlab(
        "--run", MODEL, "--device", f"dpu:{jetson.url}", "--runtime", "trtexec",
        "--runs", "600", "--rounds", "2", "--warmup", "5", "--precision", "0",
        "--per-layer", "--power", "--config", config, "--out", out,
        home=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = read_results_csv(out)
    assert row["status"] == "done" and row["runtime"] == "trtexec"
    assert row["stats_source"] == "iterations" and row["count"] == "600"
    assert row["tool"] == "trtexec" and row["tool_version"] == "8.6.2"
    assert float(row["median_us"]) > 0
    assert float(row["power_mean_w"]) > float(row["power_baseline_w"]) > 4.0
    assert float(row["energy_per_inference_mj"]) > 0
    [(job, result)] = Store(out / STORE_FILE).rows()
    assert result is not None and len(result.latencies_us) == 600
    assert result.layers and all(layer.mean_us > 0 for layer in result.layers)
    assert result.power is not None and result.power["source"] == "tegrastats"
    assert result.power["rail"] == "VDD_IN"
    trace = Path(result.power["trace_path"])
    assert trace.is_file() and len(trace.read_text().splitlines()) > 10
    assert job.runtime == "trtexec" and job.settings.power and job.settings.per_layer


def test_lab_job_on_the_virtual_jetson_shows_the_board_rail_in_the_power_view(
    jetson: LoopbackAgent, tmp_path: Path
) -> None:
    """The Lab in process: the power job's rail samples reach the event bus as one
    ``PowerSamples`` batch (what the Power view draws), named after the board."""
    token = jetson.token_file.read_text().strip()
    backend = DpuBackend(DpuConfig(endpoints=[Endpoint(jetson.url, token)], poll_s=0.3))
    store = Store(tmp_path / "store" / STORE_FILE)
    lab = Lab(store, [backend])
    events: list[Event] = []
    lab.subscribe(events.append)
    lab.discover()
    device_id = f"dpu:{jetson.url}"
    assert lab.device(device_id).capabilities_for("trtexec").per_layer
    settings = JobSettings(warmup=2, runs=400, rounds=1, precision_pct=0, power=True)
    job = lab.submit(load_model(MODEL), device_id, runtime="trtexec", settings=settings)
    lab.start()
    try:
        wait_until(
            lambda: any(isinstance(e, (JobFinished, JobFailed)) for e in events),
            120,
            what="the power job on the virtual Jetson",
        )
    finally:
        lab.shutdown()
    failed = [e.error for e in events if isinstance(e, JobFailed)]
    assert not failed, failed
    [batch] = [e for e in events if isinstance(e, PowerSamples)]
    assert batch.monitor_id == f"tegrastats:{device_id}"
    assert batch.interval_s == pytest.approx(0.05)
    assert min(batch.watts) < 5.0 < 7.0 < max(batch.watts)  # idle baseline, then trtexec
    result = store.result(job.id)
    assert result is not None and result.power["energy_per_inference_mj"] > 0
    store.close()


def test_the_virtual_lab_config_names_the_jetson_when_asked(tmp_path: Path) -> None:
    import tomllib

    from backends.virtual.lab import config_text

    args = ("127.0.0.1:15099", "adb:127.0.0.1:1", "/dev/pts/9", "http://127.0.0.1:2", tmp_path)
    plain = tomllib.loads(config_text(*args))
    assert "jetson" not in plain["aliases"] and len(plain["dpu"]["endpoints"]) == 1
    both = tomllib.loads(config_text(*args, ("http://127.0.0.1:3", tmp_path / "j.token")))
    assert both["aliases"]["jetson"] == "dpu:http://127.0.0.1:3"
    assert [e["url"] for e in both["dpu"]["endpoints"]] == [
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
    ]
    assert both["dpu"]["endpoints"][1]["token_file"] == str(tmp_path / "j.token")


def test_results_keep_the_latencies_when_the_rail_samples_are_unusable(tmp_path: Path) -> None:
    """Bad samples from a device never lose the job: a reading with a warning."""
    reading = rail_energy({"source": "tegrastats", "t": [1.0], "mw": ["x"]}, tmp_path / "p.csv")
    assert reading.warning is not None and "not a number" in reading.warning
    assert reading.power["trace_path"].endswith("p.csv")


def test_runner_result_round_trips_through_json(tools: JetsonTools, tmp_path: Path) -> None:
    runner = TrtexecRunner(str(tools.trtexec), tmp_path / "work", "fp32")
    result, _ = run(runner, JobSettingsIn("trtexec", warmup=0, rounds=[7]), MLP)
    again = RunnerResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.rounds[0].latencies_us == result.rounds[0].latencies_us
    assert again.extras["layers"] == result.extras["layers"]
