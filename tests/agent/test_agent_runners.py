"""The agent's tool runners against stand-in ``xdputil`` / ``test_performance_x`` programs.

Each stand-in is a script written into tmp_path that replays a real captured output
(``tests/fixtures/bench-output/``) on the streams the real tool uses (glog lines on stderr),
pausing after the progress lines, and exits with the status the real run had.
"""

from __future__ import annotations

import ast
import sys
import threading
import time
from pathlib import Path

import pytest

from backends.agent.process import run_tool
from backends.agent.runners import (
    OnnxRuntimeRunner,
    ProgressUpdate,
    RunnerCancelled,
    RunnerError,
)
from backends.agent.serve import AgentThread
from backends.agent.settings import JobSettingsIn
from backends.agent.tool_runners import (
    CommandRunner,
    TestPerformanceRunner,
    XdputilRunner,
    split_template,
)
from support.agent_helpers import (
    MLP,
    events,
    make_config,
    process_alive,
    request,
    standin_script,
    submit,
    wait_for,
)
from support.waiting import wait_until

approx = pytest.approx


class Recorder:
    """A progress callback that keeps every update (called from the runner's thread)."""

    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []
        self.lock = threading.Lock()

    def __call__(self, update: ProgressUpdate) -> None:
        with self.lock:
            self.updates.append(update)

    @property
    def lines(self) -> list[str]:
        return [line for update in self.updates for line in update.lines]

    @property
    def percents(self) -> list[int]:
        return [u.done for u in self.updates if u.total == 100]


def run(runner, settings: JobSettingsIn, model: Path = MLP, cancel=None):
    recorder = Recorder()
    result = runner.run(model, settings, recorder, cancel or threading.Event())
    return result, recorder


# ------------------------------------------------------------------------------ xdputil


@pytest.mark.parametrize(
    ("fixture", "threads", "fps", "frames", "mean", "mean_is"),
    [
        ("xdputil_benchmark_1.txt", 2, 28.5485, 1714, 1e6 / 28.5485, "inverse throughput"),
        ("xdputil_benchmark_2.txt", 1, 1254.93, 75300, 1e6 / 1254.93, "latency"),
    ],
)
def test_xdputil_runner_reports_the_tool_summary(
    tmp_path: Path, fixture: str, threads: int, fps: float, frames: int, mean: float, mean_is: str
) -> None:
    argv_file = tmp_path / "argv"
    tool = standin_script(tmp_path / "xdputil", fixture, argv_file=argv_file)
    result, recorder = run(XdputilRunner(str(tool)), JobSettingsIn("xdputil", threads=threads))

    assert ast.literal_eval(argv_file.read_text()) == [
        "benchmark",
        str(MLP),
        "-i",
        "-1",
        str(threads),
    ]
    assert result.stats_source == "tool summary"
    assert len(result.rounds) == 1
    assert result.rounds[0].latencies_us == []
    assert result.rounds[0].summary["count"] == frames
    assert result.rounds[0].summary["mean"] == approx(mean)
    assert result.rounds[0].summary["median"] is None
    assert result.extras["fps"] == approx(fps)
    assert result.extras["threads"] == threads
    assert result.extras["mean_is"] == mean_is
    assert result.tool == "xdputil"
    assert any("60 s" in note for note in result.notes)
    if threads > 1:
        assert any("inverse throughput" in note for note in result.notes)
    # progress streamed from the NN% lines (stderr), and every line reached the log
    assert recorder.percents[-1] == 100
    assert recorder.percents == sorted(recorder.percents)
    assert any("FPS=" in line for line in recorder.lines)
    assert sum("% ..." in line for line in recorder.lines) >= 3


def test_xdputil_failure_fixture_is_a_runner_error_quoting_the_tool(tmp_path: Path) -> None:
    tool = standin_script(tmp_path / "xdputil", "xdputil_benchmark_3.txt", exit_code=134)
    with pytest.raises(RunnerError) as caught:
        run(XdputilRunner(str(tool)), JobSettingsIn("xdputil"))
    message = str(caught.value)
    assert "Check failed: retval == 0 (-1 vs. 0) run dpu failed." in message
    assert "Aborted" in message
    assert "exit code 134" in message


def test_xdputil_cancel_kills_the_tool(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    tool = standin_script(
        tmp_path / "xdputil", "xdputil_benchmark_1.txt", pid_file=pid_file, hang_s=30
    )
    cancel = threading.Event()
    recorder = Recorder()
    caught: list[BaseException] = []

    def work() -> None:
        try:
            XdputilRunner(str(tool)).run(MLP, JobSettingsIn("xdputil"), recorder, cancel)
        except BaseException as error:
            caught.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    wait_until(lambda: recorder.lines, 10, what="the stand-in to print")
    assert recorder.lines, "the stand-in never printed"
    pid = int(pid_file.read_text())
    started = time.monotonic()
    cancel.set()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3
    assert isinstance(caught[0], RunnerCancelled)
    assert not process_alive(pid)


def test_cancel_reaches_the_tools_children(tmp_path: Path) -> None:
    """A shell wrapper (like the real xdputil) and its child both go."""
    child_file = tmp_path / "child"
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f"#!/bin/sh\necho started\nsleep 30 &\necho $! > {child_file}\nwait\n")
    wrapper.chmod(0o755)
    cancel = threading.Event()
    got_line = threading.Event()

    def on_lines(lines: list[str]) -> None:
        got_line.set()

    timer = threading.Timer(0.1, lambda: got_line.wait(5) and cancel.set())
    timer.start()
    with pytest.raises(RunnerCancelled):
        run_tool([str(wrapper)], cancel, on_lines, timeout_s=20)
    timer.join()
    child = int(child_file.read_text())
    wait_until(lambda: not process_alive(child), 5, what="the tool's child to end", interval=0.05)
    assert not process_alive(child)


def test_tool_timeout_and_missing_program(tmp_path: Path) -> None:
    slow = tmp_path / "slow"
    slow.write_text(f"#!{sys.executable}\nimport time\nprint('x', flush=True)\ntime.sleep(30)\n")
    slow.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(RunnerError, match="did not finish within 0.5 s"):
        run_tool([str(slow)], threading.Event(), lambda lines: None, timeout_s=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(RunnerError, match="cannot start"):
        run_tool([str(tmp_path / "absent")], threading.Event(), lambda lines: None, 5)


# ------------------------------------------------------------------------------ test_performance


@pytest.mark.parametrize(
    ("fixture", "fps", "e2e", "dpu", "threads", "seconds"),
    [
        ("vitis_ai_test_performance_1.txt", 216.327, 18394.5, 15711.6, 4, 10),
        ("vitis_ai_test_performance_2.txt", 386.133, 2588.76, 1346.91, 1, 30),
        ("vitis_ai_test_performance_3.txt", 18.0589, 217547, 214647, 4, 10),
    ],
)
def test_test_performance_runner(
    tmp_path: Path, fixture: str, fps: float, e2e: float, dpu: float, threads: int, seconds: int
) -> None:
    argv_file = tmp_path / "argv"
    tool = standin_script(tmp_path / "test_performance_x", fixture, argv_file=argv_file)
    images = tmp_path / "images.list"
    images.write_text("a.jpg\n")
    runner = TestPerformanceRunner(str(tool), str(images))
    settings = JobSettingsIn(runner.name, threads=threads, seconds=seconds - 0.5)
    result, recorder = run(runner, settings)

    assert ast.literal_eval(argv_file.read_text()) == [
        str(MLP),
        str(images),
        "-t",
        str(threads),
        "-s",
        str(seconds),
    ]
    assert result.stats_source == "tool summary"
    assert result.rounds[0].latencies_us == []
    assert result.rounds[0].summary["mean"] == approx(e2e)
    assert result.extras["e2e_mean_us"] == approx(e2e)
    assert result.extras["dpu_mean_us"] == approx(dpu)
    assert result.extras["fps"] == approx(fps)
    assert result.extras["threads"] == threads
    assert result.extras["mean_is"] == "latency"
    assert "FPS=" + str(fps) in " ".join(recorder.lines)
    assert recorder.updates[-1].total == seconds


def test_test_performance_failure(tmp_path: Path) -> None:
    tool = standin_script(tmp_path / "test_performance_x", "xdputil_benchmark_3.txt", 134)
    runner = TestPerformanceRunner(str(tool), str(tmp_path / "images.list"))
    with pytest.raises(RunnerError, match="Check failed"):
        run(runner, JobSettingsIn(runner.name))


# ------------------------------------------------------------------------------ command


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\nimport json, sys\n{body}\n")
    path.chmod(0o755)
    return path


def test_command_template_is_split_once_and_placeholders_filled(tmp_path: Path) -> None:
    tool = script(
        tmp_path / "bench tool",
        "print(json.dumps({'argv': sys.argv[1:]}), file=sys.stderr)\n"
        "print(json.dumps({'latencies_us': [10, 20, 30, 40, 50]}))",
    )
    template = (
        f"'{tool}' --model={{model}} -t {{threads}} --runs {{runs}} --warmup {{warmup}} '{{x}}'"
    )
    runner = CommandRunner(template)
    assert runner.argv_template[0] == str(tool)
    settings = JobSettingsIn("command", warmup=3, rounds=[2, 3], threads=4)
    assert runner.argv(MLP, settings) == [
        str(tool),
        f"--model={MLP}",
        "-t",
        "4",
        "--runs",
        "5",
        "--warmup",
        "3",
        "{x}",
    ]
    result, recorder = run(runner, settings)
    assert result.stats_source == "iterations"
    assert [r.latencies_us for r in result.rounds] == [[10, 20], [30, 40, 50]]
    assert result.rounds[1].summary["mean"] == approx(40)
    assert any('"argv"' in line for line in recorder.lines)


@pytest.mark.parametrize(
    ("body", "source", "mean"),
    [
        (
            "print('warming up'); print(json.dumps({'mean_us': 123.5, 'count': 7}))",
            "tool summary",
            123.5,
        ),
        ("print(json.dumps({'latencies_us': [1.5, 2.5]}))", "iterations", 2.0),
        ("print(open(sys.argv[1]).read())", "tool summary", 1e6 / 1254.93),
    ],
)
def test_command_output_formats(tmp_path: Path, body: str, source: str, mean: float) -> None:
    fixture = tmp_path / "out.txt"
    fixture.write_text(
        (
            Path(__file__).resolve().parents[1]
            / "fixtures"
            / "bench-output"
            / "xdputil_benchmark_2.txt"
        ).read_text()
    )
    tool = script(tmp_path / "tool", body)
    result, _ = run(CommandRunner(f"{tool} {fixture} {{model}}"), JobSettingsIn("command"))
    assert result.stats_source == source
    assert result.rounds[-1].summary["mean"] == approx(mean)


def test_command_test_performance_output_and_errors(tmp_path: Path) -> None:
    tool = script(tmp_path / "tp", "print('FPS=100'); print('E2E_MEAN=2.5e+04')")
    result, _ = run(CommandRunner(f"{tool} {{model}}"), JobSettingsIn("command"))
    assert result.extras["e2e_mean_us"] == approx(25000)

    silent = script(tmp_path / "silent", "print('hello')")
    with pytest.raises(RunnerError, match="printed no result.*hello"):
        run(CommandRunner(f"{silent} {{model}}"), JobSettingsIn("command"))

    failing = script(tmp_path / "failing", "print('bad model', file=sys.stderr); sys.exit(3)")
    with pytest.raises(RunnerError, match=r"exit code 3.*bad model"):
        run(CommandRunner(f"{failing} {{model}}"), JobSettingsIn("command"))

    for template, problem in [
        ("", "empty"),
        ("tool --x", "must contain {model}"),
        ("{model}", "start with a program"),
        ("tool 'unclosed {model}", "cannot split"),
    ]:
        with pytest.raises(ValueError, match=problem):
            split_template(template)


# ------------------------------------------------------------------------------ through the API


def test_xdputil_jobs_through_the_api(tmp_path: Path) -> None:
    ok = standin_script(tmp_path / "xdputil", "xdputil_benchmark_2.txt", delay_s=0.01)
    failing = standin_script(tmp_path / "xdputil_bad", "xdputil_benchmark_3.txt", exit_code=134)
    runners = {"xdputil": XdputilRunner(str(ok)), "broken": XdputilRunner(str(failing))}
    config = make_config(tmp_path / "agent", runners, kind="dpu")
    with AgentThread(config) as agent:
        first = submit(agent.url, {"runner": "xdputil"}, filename="resnet50.xmodel").data
        seen = list(events(agent.url, first["id"]))
        kinds = [kind for kind, _ in seen]
        assert kinds[0] == "job" and kinds[-1] == "job"
        assert "log" in kinds and "progress" in kinds
        logs = [data["line"] for kind, data in seen if kind == "log"]
        assert any("FPS= 1254.93" in line for line in logs)
        done = seen[-1][1]
        assert done["state"] == "done"
        assert done["model"]["name"] == "resnet50.xmodel"
        assert done["result"]["stats_source"] == "tool summary"
        assert done["result"]["rounds"][0]["summary"]["count"] == 75300

        bad = submit(agent.url, {"runner": "broken"}, filename="resnet50.xmodel").data
        failed = wait_for(agent.url, bad["id"], ("failed",))
        assert "Check failed: retval == 0" in failed["error"]
        assert "Aborted" in failed["error"]
        assert failed["result"] is None


def test_cancel_running_tool_job_through_the_api(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    tool = standin_script(
        tmp_path / "xdputil", "xdputil_benchmark_1.txt", pid_file=pid_file, hang_s=30
    )
    runners = {"xdputil": XdputilRunner(str(tool)), "onnxruntime": OnnxRuntimeRunner()}
    with AgentThread(make_config(tmp_path / "agent", runners)) as agent:
        hung = submit(agent.url, {"runner": "xdputil"}).data
        wait_for(agent.url, hung["id"], ("running",))
        wait_until(pid_file.exists, 10, what="the stand-in's pid file")
        pid = int(pid_file.read_text())
        reply = request(agent.url, "DELETE", f"/v1/jobs/{hung['id']}")
        assert reply.status == 200 and reply.data["state"] == "cancelled"
        # the next job runs as soon as the stand-in is gone
        after = submit(agent.url, {"runner": "onnxruntime", "rounds": [5], "warmup": 0}).data
        assert wait_for(agent.url, after["id"], ("done",), timeout=20)["state"] == "done"
        assert not process_alive(pid)
