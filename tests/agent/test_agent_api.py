"""The agent's HTTP API end to end: a real server on 127.0.0.1 (in a thread, or a real
``devlab agent`` process), the ONNX Runtime runner on ``assets/models/mlp.onnx``, and every
response checked against the served OpenAPI document.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from backends.agent.discovery import AgentBrowser
from backends.agent.jobs import RESTART_ERROR
from backends.agent.serve import LISTENING, AgentThread
from console.cli.agent import run_agent_tool
from support.agent_helpers import (
    REPO_ROOT,
    SPEC,
    TOKEN,
    Reply,
    check_events,
    check_response,
    events,
    job,
    make_config,
    request,
    submit,
    wait_for,
)
from support.waiting import wait_until

LONG = {"rounds": [1_000_000], "warmup": 0}  # minutes of mlp: only ever cancelled


@pytest.fixture
def agent(tmp_path: Path):
    with AgentThread(make_config(tmp_path / "agent")) as running:
        yield running


def checked(reply: Reply, path: str, method: str) -> Reply:
    check_response(path, method, reply)
    return reply


def test_info_and_openapi(agent: AgentThread) -> None:
    info = checked(request(agent.url, "GET", "/v1/info"), "/v1/info", "GET").data
    assert info["api"] == 1
    assert info["board"] == "test-board"
    assert info["kind"] == "host"
    assert info["runners"] == ["onnxruntime"]
    assert info["default_runner"] == "onnxruntime"
    assert info["versions"]["onnxruntime"] != "unknown"
    assert info["queue"] == {"running": None, "waiting": 0}
    assert info["max_upload_bytes"] == 512 * 1024 * 1024

    spec = request(agent.url, "GET", "/v1/openapi.json").data
    assert spec == SPEC
    assert set(spec["paths"]) == {
        "/v1/info",
        "/v1/openapi.json",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/events",
        "/v1/power/stream",
    }


def test_end_to_end_with_events(agent: AgentThread) -> None:
    reply = checked(submit(agent.url, {"rounds": [20, 20], "warmup": 5}), "/v1/jobs", "POST")
    assert reply.status == 201
    assert reply.data["reused"] is False
    job_id = reply.data["id"]
    assert reply.data["model"]["name"] == "mlp.onnx"
    assert reply.data["settings"] == {
        "runner": "onnxruntime",
        "warmup": 5,
        "rounds": [20, 20],
        "threads": 1,
        "seconds": None,
        "client_key": None,
        "outputs": False,
    }

    seen = list(events(agent.url, job_id))
    real = [(kind, data) for kind, data in seen if kind != "ping"]
    assert real[0][0] == "job" and real[-1][0] == "job"
    assert real[-1][1]["state"] == "done"
    check_events(real)
    assert {kind for kind, _ in real} == {"job", "progress"}
    streamed = [x for kind, data in real if kind == "progress" for x in data["recent_us"]]

    view = checked(request(agent.url, "GET", f"/v1/jobs/{job_id}"), "/v1/jobs/{id}", "GET").data
    assert view["state"] == "done"
    assert view["error"] is None and view["position"] is None
    result = view["result"]
    assert result["stats_source"] == "iterations"
    assert [len(r["latencies_us"]) for r in result["rounds"]] == [20, 20]
    assert all(x > 0 for r in result["rounds"] for x in r["latencies_us"])
    assert result["rounds"][0]["summary"]["count"] == 20
    assert result["load_us"] > 0 and result["first_inference_us"] > 0
    assert result["tool"] == "onnxruntime-python"
    assert streamed == [x for r in result["rounds"] for x in r["latencies_us"]]
    assert view["created_at"] <= view["started_at"] <= view["finished_at"]

    listed = checked(request(agent.url, "GET", "/v1/jobs"), "/v1/jobs", "GET").data
    assert [j["id"] for j in listed["jobs"]] == [job_id]

    # a finished job's stream: the terminal job event at once, then the end
    started = time.monotonic()
    again = list(events(agent.url, job_id))
    assert [kind for kind, _ in again] == ["job"]
    assert again[0][1]["state"] == "done"
    assert time.monotonic() - started < 1


def test_one_job_at_a_time_in_fifo_order(agent: AgentThread) -> None:
    first = submit(agent.url, {"rounds": [15_000, 15_000], "warmup": 0}).data  # ~0.5-1 s
    second = submit(agent.url, {"rounds": [10]}).data
    third = submit(agent.url, {"rounds": [10]}).data
    assert second["state"] == "queued"
    wait_for(agent.url, first["id"], ("running",))
    view = job(agent.url, second["id"])
    assert view["state"] == "queued" and view["position"] == 1
    assert job(agent.url, third["id"])["position"] == 2
    info = request(agent.url, "GET", "/v1/info").data
    assert info["queue"] == {"running": first["id"], "waiting": 2}
    ends = [wait_for(agent.url, j["id"], ("done",)) for j in (first, second, third)]
    for earlier, later in zip(ends, ends[1:], strict=False):
        assert later["started_at"] >= earlier["finished_at"]


def test_ping_while_waiting(agent: AgentThread) -> None:
    blocker = submit(agent.url, LONG).data
    waiting = submit(agent.url, {"rounds": [5]}).data
    stream = events(agent.url, waiting["id"], timeout=10)
    kind, data = next(stream)
    assert kind == "job" and data["state"] == "queued" and data["position"] == 1
    started = time.monotonic()
    assert next(stream)[0] == "ping"
    assert time.monotonic() - started < 2.5
    stream.close()
    request(agent.url, "DELETE", f"/v1/jobs/{blocker['id']}")
    assert wait_for(agent.url, waiting["id"], ("done",))["state"] == "done"


def test_cancel_queued_and_running(agent: AgentThread) -> None:
    running = submit(agent.url, LONG).data
    queued = submit(agent.url, {"rounds": [5]}).data
    wait_for(agent.url, running["id"], ("running",))

    reply = checked(
        request(agent.url, "DELETE", f"/v1/jobs/{queued['id']}"), "/v1/jobs/{id}", "DELETE"
    )
    assert reply.status == 200
    assert reply.data["state"] == "cancelled" and reply.data["position"] is None
    assert job(agent.url, running["id"])["state"] == "running"  # untouched

    reply = request(agent.url, "DELETE", f"/v1/jobs/{running['id']}")
    assert reply.status == 200 and reply.data["state"] == "cancelled"
    again = checked(
        request(agent.url, "DELETE", f"/v1/jobs/{running['id']}"), "/v1/jobs/{id}", "DELETE"
    )
    assert again.status == 409 and "already cancelled" in again.data["error"]

    # the queue moves on: the runner stopped at its next iteration
    after = submit(agent.url, {"rounds": [5]}).data
    assert wait_for(agent.url, after["id"], ("done",), timeout=15)["state"] == "done"
    assert job(agent.url, queued["id"])["state"] == "cancelled"
    assert job(agent.url, running["id"])["result"] is None


def test_idempotent_client_key(agent: AgentThread) -> None:
    running = submit(agent.url, {**LONG, "client_key": "run-1"}).data
    wait_for(agent.url, running["id"], ("running",))
    reused = checked(submit(agent.url, {"client_key": "run-1"}), "/v1/jobs", "POST")
    assert reused.status == 200
    assert reused.data["reused"] is True and reused.data["id"] == running["id"]
    request(agent.url, "DELETE", f"/v1/jobs/{running['id']}")

    # cancelled: not reused
    fresh = submit(agent.url, {"rounds": [5], "client_key": "run-1"})
    assert fresh.status == 201 and fresh.data["id"] != running["id"]
    wait_for(agent.url, fresh.data["id"], ("done",))
    done_again = submit(agent.url, {"rounds": [999], "client_key": "run-1"})
    assert done_again.status == 200 and done_again.data["id"] == fresh.data["id"]
    assert done_again.data["state"] == "done" and done_again.data["reused"] is True

    # failed (not an ONNX model): a new job starts
    broken = submit(agent.url, {"client_key": "bad-1"}, model=b"not a model").data
    failed = wait_for(agent.url, broken["id"], ("failed",))
    assert "not a model ONNX Runtime can run" in failed["error"]
    assert "/jobs/" not in failed["error"]  # the agent's own paths stay private
    retry = submit(agent.url, {"client_key": "bad-1"})
    assert retry.status == 201 and retry.data["id"] != broken["id"]


def test_restart_keeps_finished_jobs_and_fails_interrupted_ones(tmp_path: Path) -> None:
    config = make_config(tmp_path / "agent")
    with AgentThread(config) as agent:
        done = submit(agent.url, {"rounds": [7]}).data
        wait_for(agent.url, done["id"], ("done",))
        running = submit(agent.url, LONG).data
        queued = submit(agent.url, {"rounds": [5]}).data
        wait_for(agent.url, running["id"], ("running",))
        before = job(agent.url, done["id"])
    assert (
        json.loads((tmp_path / "agent/jobs" / running["id"] / "job.json").read_text())["state"]
        == "running"
    )

    with AgentThread(make_config(tmp_path / "agent")) as agent:
        after = job(agent.url, done["id"])
        assert after["state"] == "done"
        assert after["result"] == before["result"]
        for interrupted, state in ((running, "running"), (queued, "queued")):
            view = job(agent.url, interrupted["id"])
            assert view["state"] == "failed"
            assert view["error"] == RESTART_ERROR.format(state=state)
            assert view["error"].startswith("the agent restarted while this job was")
        listed = request(agent.url, "GET", "/v1/jobs").data["jobs"]
        assert [j["id"] for j in listed] == [done["id"], running["id"], queued["id"]]
        # the finished job is never run again; the key of a done job is still reused
        info = request(agent.url, "GET", "/v1/info").data
        assert info["queue"] == {"running": None, "waiting": 0}


# ------------------------------------------------------------------------------ real process

AGENT_CMD = [sys.executable, "-m", "console.entry", "agent"]  # `devlab agent`


def test_real_agent_process(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    board = f"proc-board-{secrets.token_hex(4)}"
    browser = AgentBrowser(interfaces=["127.0.0.1"]).start()
    proc = subprocess.Popen(
        [
            *AGENT_CMD,
            "--port",
            "0",
            "--token-file",
            str(token_file),
            "--runner",
            "onnxruntime",
            "--workdir",
            str(tmp_path / "work"),
            "--board",
            board,
            "--advertise",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the agent printed nothing within 30 s"
        line = proc.stdout.readline().strip()
        assert line.startswith(LISTENING + " http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.removeprefix(LISTENING + " ")
        assert request(url, "GET", "/v1/info").data["board"] == board
        assert request(url, "GET", "/v1/info", token="wrong").status == 401
        submitted = submit(url, {"rounds": [10, 10]}).data
        finished = wait_for(url, submitted["id"], ("done",))
        assert [len(r["latencies_us"]) for r in finished["result"]["rounds"]] == [10, 10]
        assert (tmp_path / "work" / "jobs").stat().st_mode & 0o777 == 0o700
        if not browser.error:  # multicast on loopback works here: the agent is announced
            found = wait_until(
                lambda: [a for a in browser.endpoints() if a.board == board],
                8,
                what="the agent to be announced",
                interval=0.05,
            )
            assert found[0].url == url and found[0].runners == ("onnxruntime",)
    finally:
        browser.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, proc.stderr.read()


# ------------------------------------------------------------------------------ usage errors


def agent_usage(args: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    code = run_agent_tool(args, Console(file=buffer, width=400))
    return code, buffer.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runner", "onnxruntime", "--token-file", "{tmp}/absent"], "does not exist"),
        (["--runner", "onnxruntime", "--token-file", "{tmp}/empty"], "is empty"),
        (["--runner", "tflite", "--token-file", "{tmp}/token"], "unknown runner 'tflite'"),
        (
            ["--runner", "vitis-test-performance", "--token-file", "{tmp}/token"],
            "needs --test-performance PROGRAM and --image-list FILE",
        ),
        (["--runner", "command", "--token-file", "{tmp}/token"], "needs --command"),
        (
            ["--runner", "command", "--command", "bench", "--token-file", "{tmp}/token"],
            "must contain {model}",
        ),
        (
            ["--runner", "xdputil", "--xdputil", "{tmp}/absent", "--token-file", "{tmp}/token"],
            "is not an executable file",
        ),
        (
            ["--runner", "onnxruntime", "--xdputil", "/bin/true", "--token-file", "{tmp}/token"],
            "only used by --runner xdputil",
        ),
        (
            ["--runner", "onnxruntime", "--port", "70000", "--token-file", "{tmp}/token"],
            "--port must be",
        ),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").write_text("  \n")
    (tmp_path / "token").write_text("secret\n")
    code, output = agent_usage([a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2, output
    assert message in output


def test_missing_token_option_exits_2() -> None:
    code, _ = agent_usage(["--runner", "onnxruntime"])
    assert code == 2


def test_cli_builds_dpu_config(tmp_path: Path) -> None:
    from console.cli.agent import build_agent_parser, build_config

    (tmp_path / "token").write_text("secret\n")
    (tmp_path / "images.list").write_text("a.jpg\n")
    tool = tmp_path / "xdputil"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    parsed = build_agent_parser().parse_args(
        textwrap.dedent(f"""
        --token-file {tmp_path}/token --runner xdputil --xdputil {tool}
        --runner vitis-test-performance --test-performance {tool}
        --image-list {tmp_path}/images.list --runner command --command
    """).split()
        + ["bench {model} -t {threads}"]
    )
    config = build_config(parsed)
    assert config.kind == "dpu"
    assert list(config.runners) == ["xdputil", "vitis-test-performance", "command"]
    assert config.default_runner == "xdputil"
    assert config.token == "secret"
