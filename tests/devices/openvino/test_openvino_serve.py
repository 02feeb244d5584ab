"""The OpenVINO runner kept loaded across rounds (``runner.py --serve``) and the session that
drives it: one process per session, rounds that neither re-read nor re-compile, a runner that
dies or hangs failing only its round, and nothing left running after close.

The protocol and the session run the real runner with the venv's OpenVINO on the host CPU
(skipped without it); deaths, hangs and floods use a tiny stand-in for the far end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.core.records import Job, Model
from backends.devices.base import BenchError
from backends.devices.openvino.backend import (
    RUNNER_PATH,
    OpenVinoBackend,
    OpenVinoSession,
    RunnerProcess,
    run_runner,
    runner_command,
    serve_command,
)
from support.helpers import MODELS_DIR

MLP = MODELS_DIR / "mlp.onnx"
OPEN_KEYS = {
    "read_us",
    "compile_us",
    "load_us",
    "first_inference_us",
    "device",
    "device_full_name",
    "available_devices",
    "openvino_version",
    "api",
    "python",
    "model",
}

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino not installed"
)


def gone(pid: int) -> bool:
    """Whether no process ``pid`` exists any more (reaped, not a zombie)."""
    return not Path(f"/proc/{pid}").exists()


# -- the protocol, spoken by hand ------------------------------------------------------------


class Served:
    """A ``--serve`` runner driven line by line, as devlab's client would, with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER_PATH), *args, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def read(self, timeout_s: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        assert readable, "the runner did not answer"
        line = self.proc.stdout.readline()
        assert line.endswith(b"\n"), line
        return json.loads(line)

    def ask(self, request: dict[str, Any] | str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        text = request if isinstance(request, str) else json.dumps(request)
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def served() -> Iterator[Served]:
    runner = Served("--model", str(MLP), "--device", "CPU", "--threads", "1")
    try:
        yield runner
    finally:
        runner.stop()


@needs_openvino
def test_serve_prints_the_open_info_then_answers_each_request(
    served: Served, tmp_path: Path
) -> None:
    opened = served.read()
    assert set(opened) == OPEN_KEYS  # the one-shot keys without latencies (nor warmup)
    assert opened["load_us"] > 0 and opened["first_inference_us"] > 0
    assert opened["device"] == "CPU" and opened["api"] == "core"

    reply = served.ask({"op": "run", "warmup": 2, "runs": 5, "min_seconds": None})
    assert set(reply) == {"latencies_us"} and len(reply["latencies_us"]) == 5
    assert all(value > 0 for value in reply["latencies_us"])
    # both bounds given: both are lower bounds (the count and the time are each reached)
    by_count = served.ask({"op": "run", "warmup": 0, "runs": 300, "min_seconds": 0.001})
    assert len(by_count["latencies_us"]) >= 300
    by_time = served.ask({"op": "run", "warmup": 0, "runs": 2, "min_seconds": 0.05})
    assert len(by_time["latencies_us"]) > 2
    assert sum(by_time["latencies_us"]) >= 0.8 * 50_000
    alone = served.ask({"op": "run", "warmup": 0, "runs": None, "min_seconds": 0.02})
    assert len(alone["latencies_us"]) >= 1

    # errors are answered and the loop goes on
    garbage = served.ask("this is not json")
    assert garbage["stage"] == "request" and "not a JSON request" in garbage["error"]
    unknown = served.ask({"op": "dance"})
    assert unknown["stage"] == "request" and "dance" in unknown["error"]
    bad_runs = served.ask({"op": "run", "warmup": 0, "runs": "many"})
    assert bad_runs["stage"] == "request"
    missing = served.ask(
        {"op": "parity", "inputs": str(tmp_path / "none.npz"), "outputs": str(tmp_path / "o")}
    )
    assert missing["stage"] == "parity" and "none.npz" in missing["error"]
    again = served.ask({"op": "run", "warmup": 0, "runs": 3, "min_seconds": None})
    assert len(again["latencies_us"]) == 3

    assert served.proc.stdin is not None
    served.proc.stdin.write(b'{"op": "exit"}\n')
    served.proc.stdin.flush()
    assert served.proc.wait(timeout=30) == 0
    assert served.proc.stdout is not None and served.proc.stdout.read() == b""


@needs_openvino
def test_serve_ends_with_exit_0_at_the_end_of_stdin(served: Served) -> None:
    served.read()
    assert served.proc.stdin is not None
    served.proc.stdin.close()
    assert served.proc.wait(timeout=30) == 0


@needs_openvino
def test_serve_on_a_corrupt_model_prints_the_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(MLP.read_bytes()[:40])
    runner = Served("--model", str(bad), "--device", "CPU")
    try:
        payload = runner.read()
        assert payload["stage"] == "read_model" and payload["device"] == "CPU"
        assert runner.proc.wait(timeout=30) == 2
    finally:
        runner.stop()


@needs_openvino
def test_one_shot_cli_still_runs_parity_and_prints_one_object(tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    x = np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)
    np.savez(inputs, in_0=x)
    Path(f"{inputs}.names.json").write_text(json.dumps(["x"]))
    argv = [sys.executable, str(RUNNER_PATH), "--model", str(MLP), "--device", "CPU"]
    argv += ["--warmup", "1", "--runs", "4", "--min-seconds", "10"]
    argv += ["--parity-inputs", str(inputs), "--parity-outputs", str(outputs)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    # one-shot: whichever comes first, as before (4 runs of mlp end long before 10 s)
    assert len(payload["latencies_us"]) == 4 and payload["warmup"] == 1
    assert set(payload) == OPEN_KEYS | {"latencies_us", "warmup"}
    with np.load(outputs) as data:
        assert data["out_0"].shape == (1, 10)
    parsed = run_runner(runner_command(sys.executable, str(MLP), "CPU", 0, 3), timeout_s=300)
    assert len(parsed.latencies_us) == 3 and parsed.load_us and parsed.api == "core"


# -- the session -------------------------------------------------------------------------------


def open_cpu_session(model_path: Path, timeout_s: float = 300.0) -> OpenVinoSession:
    backend = OpenVinoBackend(timeout_s=timeout_s)
    (cpu,) = [d for d in backend.discover() if d.id == "openvino:CPU"]
    model = Model(path=str(model_path), name=model_path.stem, sha256="0" * 64)
    job = Job(id="j", model=model, device_id=cpu.id, runtime="openvino")
    session = backend.open_session(cpu, job, model)
    assert isinstance(session, OpenVinoSession)
    return session


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every request a session sends to its runners."""
    messages: list[dict[str, Any]] = []
    original = RunnerProcess.request

    def spy(self: RunnerProcess, message: dict[str, Any], doing: str) -> dict[str, Any]:
        messages.append(message)
        return original(self, message, doing)

    monkeypatch.setattr(RunnerProcess, "request", spy)
    return messages


def mlp_feeds() -> dict[str, np.ndarray]:
    return {"x": np.ones((1, 256), dtype=np.float32)}


@needs_openvino
def test_one_runner_serves_every_round_and_compiles_once(
    tmp_path: Path, sent: list[dict[str, Any]]
) -> None:
    model_path = tmp_path / "mlp.onnx"
    shutil.copy(MLP, model_path)
    session = open_cpu_session(model_path)
    try:
        pid = session.runner_pid
        assert pid is not None and session.starts == 1
        assert session.info.load_us and session.info.load_us > 0  # reported once, at open
        session.warmup(3)
        seen: list[int] = []
        first = session.run(5, None, lambda done, _: seen.append(done))
        assert len(first.latencies_us) == 5 and seen == [1, 2, 3, 4, 5]
        # the model file is gone: a runner that read or compiled it again would fail now
        model_path.unlink()
        second = session.run(4, None, lambda *_: None)
        third = session.run(2, 0.02, lambda *_: None)
        assert len(second.latencies_us) == 4 and len(third.latencies_us) >= 2
        outputs = session.outputs(mlp_feeds())
        assert len(outputs) == 1 and outputs[0].shape == (1, 10)
        assert session.runner_pid == pid and session.starts == 1
        # warmup before the first round only: later rounds reuse the warm, compiled model
        assert [m.get("warmup") for m in sent if m["op"] == "run"] == [3, 0, 0]
        assert [m["op"] for m in sent] == ["run", "run", "run", "parity"]
    finally:
        session.close()
    assert gone(pid)


@needs_openvino
def test_a_killed_runner_fails_its_round_and_the_next_round_gets_a_fresh_one(
    sent: list[dict[str, Any]],
) -> None:
    session = open_cpu_session(MLP)
    try:
        session.warmup(2)
        session.run(3, None, lambda *_: None)
        killed = session.runner_pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        with pytest.raises(BenchError, match=r"mlp\.onnx on CPU: .*killed by SIGKILL"):
            session.run(3, None, lambda *_: None)
        assert session.runner_pid is None and gone(killed)
        after = session.run(3, None, lambda *_: None)
        assert len(after.latencies_us) == 3
        fresh = session.runner_pid
        assert fresh is not None and fresh != killed and session.starts == 2
        # the round that found it dead asked a warm runner (no warmup); the fresh one warmed up
        assert [m["warmup"] for m in sent if m["op"] == "run"] == [2, 0, 2]
        assert len(session.outputs(mlp_feeds())) == 1
    finally:
        session.close()
    assert gone(fresh)


@needs_openvino
def test_close_kills_a_runner_that_does_not_exit() -> None:
    session = open_cpu_session(MLP)
    pid = session.runner_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it cannot read the exit request any more
    started = time.monotonic()
    session.close()
    assert gone(pid) and session.runner_pid is None
    assert time.monotonic() - started < 30
    session.close()  # closing twice is harmless


@needs_openvino
def test_a_session_that_cannot_open_leaves_no_runner(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    before = set(runner_pids())
    with pytest.raises(BenchError, match=r"corrupt\.onnx on CPU: OpenVINO \(read_model\)"):
        open_cpu_session(bad)
    assert set(runner_pids()) <= before


def runner_pids() -> list[int]:
    """The pids of this process's children that run runner.py."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and str(RUNNER_PATH).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def test_serve_command_asks_for_serve_and_keeps_device_options() -> None:
    argv = serve_command("/py", "m.onnx", "MYRIAD", threads=None, select="1-2")
    assert argv == ["/py", str(RUNNER_PATH), "--model", "m.onnx", "--device", "MYRIAD"] + [
        "--serve",
        "--select",
        "1-2",
    ]


# -- the far end faked: deaths, hangs, floods --------------------------------------------------


def fake_runner(body: str) -> list[str]:
    """A stand-in for ``runner.py --serve``: prints an open line, then runs ``body``."""
    script = textwrap.dedent(
        """
        import json, sys, time
        def reply(payload):
            sys.stdout.write(json.dumps(payload) + "\\n")
            sys.stdout.flush()
        reply({"load_us": 1.0, "api": "fake"})
        """
    ) + textwrap.dedent(body)
    return [sys.executable, "-c", script]


def test_a_runner_that_exits_mid_round_names_its_exit_code_and_stderr() -> None:
    runner = RunnerProcess(
        fake_runner(
            """
            sys.stdin.readline()
            sys.stderr.write("loading...\\nboom from the runtime\\n")
            sys.exit(3)
            """
        ),
        timeout_s=60,
    )
    assert runner.opened["api"] == "fake"
    with pytest.raises(BenchError, match=r"died while timing a round \(exit code 3\): .*boom"):
        runner.request({"op": "run"}, "timing a round")
    assert not runner.alive()
    runner.close()


def test_a_runner_that_hangs_is_killed_at_the_deadline() -> None:
    runner = RunnerProcess(fake_runner("sys.stdin.readline()\ntime.sleep(600)\n"), timeout_s=2)
    started = time.monotonic()
    with pytest.raises(BenchError, match=r"did not answer within 2 s while timing a round"):
        runner.request({"op": "run"}, "timing a round")
    assert time.monotonic() - started < 10
    assert runner.proc.returncode == -signal.SIGKILL and gone(runner.pid)
    runner.close()


def test_a_runner_killed_between_requests_names_the_signal() -> None:
    runner = RunnerProcess(fake_runner("sys.stdin.readline()\n"), timeout_s=60)
    runner.proc.terminate()
    runner.proc.wait()
    with pytest.raises(BenchError, match=r"died while idle, before timing .*killed by SIGTERM"):
        runner.request({"op": "run"}, "timing a round")
    runner.close()


def test_a_long_reply_and_a_flood_on_stderr_do_not_block() -> None:
    runner = RunnerProcess(
        fake_runner(
            """
            sys.stdin.readline()
            sys.stderr.write("x" * 4_000_000)  # far beyond a pipe's buffer
            sys.stderr.flush()
            sys.stdout.write("native noise that is not json\\n")
            reply({"latencies_us": [float(i) for i in range(200_000)]})
            sys.stdin.readline()
            """
        ),
        timeout_s=60,
    )
    reply = runner.request({"op": "run"}, "timing a round")
    assert len(reply["latencies_us"]) == 200_000 and reply["latencies_us"][-1] == 199_999.0
    runner.close()
    assert runner.proc.returncode == 0 and gone(runner.pid)


def test_a_reported_error_keeps_the_runner() -> None:
    runner = RunnerProcess(
        fake_runner(
            """
            sys.stdin.readline()
            reply({"error": "inference failed on CPU: bad", "stage": "infer"})
            sys.stdin.readline()
            reply({"latencies_us": [1.0]})
            sys.stdin.readline()
            """
        ),
        timeout_s=60,
    )
    with pytest.raises(BenchError, match=r"OpenVINO \(infer\): inference failed on CPU: bad"):
        runner.request({"op": "run"}, "timing a round")
    assert runner.alive()
    assert runner.request({"op": "run"}, "timing a round") == {"latencies_us": [1.0]}
    runner.close()
    assert runner.proc.returncode == 0


def test_an_interpreter_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot start the OpenVINO runner"):
        RunnerProcess([str(tmp_path / "no-python"), "x"], timeout_s=5)
