"""DPU endpoints end to end: a real ``devlab agent`` process on 127.0.0.1 (onnxruntime runner),
reached by devlab's client through the Lab, the headless CLI and the store.

What must hold: jobs run on the agent and come back as ordinary results; an agent killed
mid-job gives a clear error (or, when it comes back in time, a retry) and loses nothing
measured; a console restart re-attaches to the job still running on the agent instead of
running it twice; an unreachable agent shows offline and its queued jobs fail after the
timeout with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.core.events import Event, JobFailed, JobFinished
from backends.core.lab import Lab
from backends.core.records import DeviceState, JobSettings, JobState
from backends.core.store import Store
from backends.devices.dpu.backend import DpuBackend
from backends.devices.dpu.config import DpuConfig, Endpoint
from backends.devices.dpu.session import client_key
from backends.models.intake import load_model
from support.agent_fixtures import TOKEN, AgentProcess, restart_agent, start_agent, write_config
from support.helpers import (
    MODELS_DIR,
    REPO_ROOT,
    devlab_cmd,
    devlab_env,
    make_mlp,
    read_results_csv,
    run_devlab,
)
from support.waiting import wait_until

WAIT_S = 60.0
MLP = MODELS_DIR / "mlp.onnx"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    process = start_agent(tmp_path / "agent-home")
    try:
        yield process
    finally:
        process.stop()


def dpu_backend(url: str, token_file: Path | None, **settings: float) -> DpuBackend:
    token = token_file.read_text().strip() if token_file else None
    return DpuBackend(DpuConfig(endpoints=[Endpoint(url, token)], poll_s=0.3, **settings))


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def exact(runs: int) -> JobSettings:
    """One round of exactly ``runs`` (no precision-gate extras: counts are asserted)."""
    return JobSettings(warmup=1, runs=runs, rounds=1, precision_pct=0)


def big_model(tmp_path: Path) -> Path:
    """An MLP slow enough (a few hundred µs) that a job with many runs stays running a while."""
    return make_mlp(tmp_path / "big.onnx", 2048, in_features=1024, seed=7)


def running_agent_job(agent: AgentProcess) -> dict | None:
    for job in agent.jobs():
        if job["state"] == "running" and job["progress"].get("done", 0) > 0:
            return job
    return None


# -- discovery --------------------------------------------------------------------------------


def test_agent_is_a_device_with_its_info(agent: AgentProcess) -> None:
    backend = dpu_backend(agent.url, agent.token_file)
    (device,) = backend.discover()
    assert device.id == f"dpu:{agent.url}"
    assert device.state is DeviceState.ONLINE
    assert device.runtimes[0] == "onnxruntime"
    assert device.properties["board"] == "test-board"
    assert device.properties["url"] == agent.url


def test_wrong_token_is_unauthorized_and_missing_token_says_what_to_add(
    agent: AgentProcess, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token")
    (device,) = dpu_backend(agent.url, wrong).discover()
    assert device.state is DeviceState.UNAUTHORIZED
    assert "401" in device.properties["offline_reason"]
    (device,) = dpu_backend(agent.url, None).discover()
    assert device.state is DeviceState.UNAUTHORIZED
    assert "token_file" in device.properties["offline_reason"]


def test_an_advertised_agent_is_found_by_zeroconf_browsing(tmp_path: Path) -> None:
    board = f"zc-board-{os.getpid()}-{time.monotonic_ns() % 100000}"
    agent = start_agent(tmp_path / "zc-home", extra=["--advertise", "--board", board])
    try:
        backend = DpuBackend(
            DpuConfig(browse=True, token=TOKEN, browse_interfaces=["127.0.0.1"], browse_wait_s=10.0)
        )
        try:
            devices = wait_until(
                lambda: [d for d in backend.discover() if d.properties.get("board") == board],
                what="the announced agent",
                timeout=30,
            )
        finally:
            backend.close()
    finally:
        agent.stop()
    (device,) = devices
    assert device.id == f"dpu:{agent.url}"
    assert device.state is DeviceState.ONLINE and device.runtimes == ["onnxruntime"]
    assert device.properties["source"] == "zeroconf"


def test_config_endpoints_are_read_with_token_files(tmp_path: Path) -> None:
    token_file = tmp_path / "t.token"
    token_file.write_text("abc\n")
    config = DpuConfig.from_raw(
        {"endpoints": [{"url": "http://127.0.0.1:9/", "token_file": "t.token"}], "retry_s": 2},
        base_dir=tmp_path,
    )
    assert config.endpoints[0].url == "http://127.0.0.1:9"
    assert config.endpoints[0].token == "abc"
    assert config.retry_s == 2.0
    with pytest.raises(ValueError, match="needs url"):
        DpuConfig.from_raw({"endpoints": [{"token": "x"}]})
    with pytest.raises(ValueError, match="cannot read token_file"):
        DpuConfig.from_raw({"endpoints": [{"url": "http://127.0.0.1:9", "token_file": "nope"}]})


# -- the headless CLI -------------------------------------------------------------------------


def test_run_assets_on_the_agent_end_to_end(agent: AgentProcess, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", [(agent.url, agent.token_file)])
    out = tmp_path / "out"
    run = run_devlab(
        "--run",
        MODELS_DIR,
        "--device",
        f"dpu:{agent.url}",
        "--runs",
        "20",
        "--rounds",
        "2",
        "--warmup",
        "2",
        "--precision",
        "0",
        "--config",
        config,
        "--out",
        out,
        home=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rows = read_results_csv(out)
    assert len(rows) == len(list(MODELS_DIR.glob("*.onnx")))
    for row in rows:
        assert row["device"] == f"dpu:{agent.url}"
        assert row["status"] == "done"
        assert row["count"] == "20"
        assert row["stats_source"] == "iterations"
        assert float(row["median_us"]) > 0
        # the agent returned its outputs for the parity input: they match host ONNX Runtime
        assert row["parity_ok"] == "True" and float(row["parity_cosine"]) > 0.9999
        assert row["tool"].startswith("onnxruntime") or "agent" in row["tool"]
    jobs = agent.jobs()
    assert len(jobs) == len(rows)  # one agent job per devlab job, none run twice
    assert all(job["state"] == "done" for job in jobs)
    assert (out / "latency_table.csv").read_text().count(",Total Inference Time,") >= len(rows)


def test_unknown_dpu_device_says_how_to_configure_it(tmp_path: Path) -> None:
    run = run_devlab("--run", MLP, "--device", "dpu:http://127.0.0.1:9", home=tmp_path)
    assert run.returncode == 2
    assert "[[dpu.endpoints]]" in run.stderr


def test_offline_agent_jobs_wait_then_fail_with_the_reason(tmp_path: Path) -> None:
    token_file = tmp_path / "t.token"
    token_file.write_text(TOKEN)
    dead = "http://127.0.0.1:9"  # discard port: nothing listens there
    config = write_config(
        tmp_path / "config.toml", [(dead, token_file)], offline_timeout_s=1.5, poll_s=0.5
    )
    run = run_devlab(
        "--run",
        MLP,
        "--device",
        f"dpu:{dead}",
        "--runtime",
        "onnxruntime",
        "--config",
        config,
        "--out",
        tmp_path / "out",
        home=tmp_path,
    )
    assert run.returncode == 1
    (row,) = read_results_csv(tmp_path / "out")
    assert row["status"] == "failed"
    assert f"dpu:{dead} has been offline" in row["error"]
    assert "connection refused" in row["error"]


# -- failures: the agent dies, the console restarts -------------------------------------------


def test_agent_killed_mid_job_fails_it_clearly_and_keeps_what_was_measured(
    agent: AgentProcess, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store" / "devlab.sqlite")
    lab = Lab(store, [dpu_backend(agent.url, agent.token_file, retry_s=2.0)])
    recorder = Recorder()
    lab.subscribe(recorder)
    lab.discover()
    device_id = f"dpu:{agent.url}"
    first = lab.submit(load_model(MLP), device_id, settings=exact(20))
    second = lab.submit(load_model(big_model(tmp_path)), device_id, settings=exact(200_000))
    lab.start()
    try:
        wait_until(lambda: running_agent_job(agent), what="the long job running on the agent")
        agent.kill()
        wait_until(lambda: recorder.of(JobFailed), what="the long job failing")
    finally:
        lab.shutdown(interrupt=True)
    states = {job.id: job for job in store.jobs()}
    assert states[first.id].state is JobState.DONE
    assert store.result(first.id).stats.count == 20  # measured before the kill: kept
    failed = states[second.id]
    assert failed.state is JobState.FAILED
    assert device_id in failed.error and "stopped answering" in failed.error
    assert "retry" in failed.error
    store.close()


def test_agent_back_within_the_retry_budget_reruns_the_job(
    agent: AgentProcess, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store" / "devlab.sqlite")
    lab = Lab(store, [dpu_backend(agent.url, agent.token_file, retry_s=60.0)])
    recorder = Recorder()
    lab.subscribe(recorder)
    lab.discover()
    job = lab.submit(
        load_model(big_model(tmp_path)),
        f"dpu:{agent.url}",
        settings=exact(3000),
    )
    lab.start()
    replacement = None
    try:
        wait_until(lambda: running_agent_job(agent), what="the job running on the agent")
        agent.kill()
        replacement = restart_agent(agent, tmp_path / "agent-home")
        wait_until(
            lambda: recorder.of(JobFinished), what="the job finishing on the restarted agent"
        )
    finally:
        lab.shutdown(interrupt=True)
        if replacement is not None:
            jobs = replacement.jobs()
            replacement.stop()
    assert store.job(job.id).state is JobState.DONE
    assert store.result(job.id).stats.count == 3000
    states = sorted(j["state"] for j in jobs)
    assert states == ["done", "failed"]  # the interrupted run, marked, and the rerun
    store.close()


def test_console_restart_reattaches_to_the_running_agent_job(
    agent: AgentProcess, tmp_path: Path
) -> None:
    """kill -9 of a real ``devlab --run`` while its job runs on the agent; the rerun follows
    that same agent job to its end instead of starting it again."""
    config = write_config(tmp_path / "config.toml", [(agent.url, agent.token_file)])
    model = big_model(tmp_path)
    out = tmp_path / "out"
    args = (
        "--run",
        model,
        "--device",
        f"dpu:{agent.url}",
        "--runs",
        "4000",
        "--warmup",
        "1",
        "--precision",
        "0",
        "--rounds",
        "1",
        "--config",
        config,
        "--out",
        out,
    )
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            devlab_cmd(*args),
            cwd=REPO_ROOT,
            env=devlab_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        running = wait_until(lambda: running_agent_job(agent), what="the job running on the agent")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    assert running is not None
    rerun = run_devlab(*args, home=tmp_path, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    (row,) = read_results_csv(out)
    assert row["status"] == "done" and row["count"] == "4000"
    jobs = agent.jobs()
    assert [j["id"] for j in jobs] == [running["id"]]  # re-attached: never run twice
    assert jobs[0]["state"] == "done"
    assert jobs[0]["client_key"] == running["client_key"]
    assert jobs[0]["client_key"].startswith("devlab.")


def test_cancel_stops_the_agent_job(agent: AgentProcess, tmp_path: Path) -> None:
    store = Store(tmp_path / "store" / "devlab.sqlite")
    lab = Lab(store, [dpu_backend(agent.url, agent.token_file)])
    lab.discover()
    job = lab.submit(
        load_model(big_model(tmp_path)),
        f"dpu:{agent.url}",
        settings=exact(200_000),
    )
    lab.start()
    try:
        running = wait_until(lambda: running_agent_job(agent), what="the job running on the agent")
        lab.cancel(job.id)
        wait_until(lambda: store.job(job.id).state is JobState.CANCELLED, what="the devlab cancel")
        wait_until(
            lambda: agent.request(f"/v1/jobs/{running['id']}")["state"] == "cancelled",
            what="the agent job cancelled",
        )
    finally:
        lab.shutdown(interrupt=True)
    assert client_key(job, 0) == running["client_key"]
    store.close()
