"""The board agent (``make agent``: dist/devlab-agent.pyz) on Python 3.8, driven by the console.

The archive is built from the tree, a Python 3.8 virtualenv gets only agent/requirements.txt
(cached under ~/.cache/devlab-test by the requirements' hash, built on first use), and the
agent runs from it on 127.0.0.1: the console (this Python) runs one job with the command runner
and one with the xdputil stand-in through the Lab and devlab's DPU client, with the token
enforced. Skipped only when no Python 3.8 interpreter exists.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends.agent import zipapp
from backends.core.events import Event, JobFailed, JobFinished
from backends.core.lab import Lab
from backends.core.records import DeviceState, JobSettings, JobState
from backends.core.store import Store
from backends.devices.dpu.backend import DpuBackend
from backends.devices.dpu.client import AgentClient, AgentRefused
from backends.devices.dpu.config import DpuConfig, Endpoint
from backends.models.intake import load_model
from support.agent_helpers import standin_script
from support.helpers import MODELS_DIR, REPO_ROOT
from support.waiting import wait_until

TOKEN = "zipapp-token-0123456789abcdef"
LISTENING = re.compile(r"devlab agent listening on (http://127\.0\.0\.1:\d+)")
MLP = MODELS_DIR / "mlp.onnx"
XDPUTIL_FPS = 1254.93  # tests/fixtures/bench-output/xdputil_benchmark_2.txt
XDPUTIL_FRAMES = 75300
PIP_TIMEOUT_S = 600

# The server with the xdputil and command runners loads no ONNX and no zeroconf; then every
# packed module imports on 3.8, but for those that need a package only an optional feature uses.
IMPORT_CHECK = """
import importlib, sys, zipfile
sys.path.insert(0, sys.argv[1])
from backends.agent.cli import build_agent_parser, build_config
from backends.agent.app import create_app
parsed = build_agent_parser().parse_args(sys.argv[2:])
app = create_app(build_config(parsed))
heavy = sorted(m for m in ("onnxruntime", "onnx", "zeroconf", "ifaddr") if m in sys.modules)
print("heavy=" + ",".join(heavy))
OPTIONAL = ("onnxruntime", "onnx", "google", "zeroconf", "ifaddr")
for name in zipfile.ZipFile(sys.argv[1]).namelist():
    if name.startswith("backends/") and name.endswith(".py"):
        module = name[:-3].replace("/", ".").replace(".__init__", "")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in OPTIONAL:
                raise
            print("optional", module, error.name)
print("imported")
"""

COMPILE_CHECK = """
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive:
    for name in archive.namelist():
        if name.endswith(".py"):
            compile(archive.read(name), name, "exec")
print("compiled")
"""

BENCH = """
import hashlib, json, sys, time
model, runs = sys.argv[1], int(sys.argv[2])
data = open(model, "rb").read()
latencies = []
for _ in range(runs):
    start = time.perf_counter_ns()
    hashlib.sha256(data * 20).digest()
    latencies.append((time.perf_counter_ns() - start) / 1e3)
with open(sys.argv[3], "w") as handle:
    json.dump({"sha256": hashlib.sha256(data).hexdigest(), "python": sys.version_info[:2]}, handle)
print("bench: %d runs" % runs)
print(json.dumps({"latencies_us": latencies}))
"""


def find_python38() -> tuple[str, str] | None:
    """A working Python 3.8 interpreter (on PATH, or one pyenv installed) and its version."""
    candidates = [shutil.which("python3.8")]
    for root in (os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")):
        if root:
            candidates += sorted(
                glob.glob(os.path.join(root, "versions", "3.8*", "bin", "python3.8"))
            )
    for candidate in filter(None, candidates):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version)"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and probe.stdout.startswith("3.8."):
            return candidate, probe.stdout.strip()
    return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "devlab-test"


def agent_venv(python38: str, version: str) -> Path:
    """The cached Python 3.8 virtualenv holding only agent/requirements.txt (built once per
    requirements and interpreter; built aside and renamed, so an interrupted build is redone)."""
    requirements = REPO_ROOT / zipapp.REQUIREMENTS
    key = hashlib.sha256(requirements.read_bytes() + version.encode()).hexdigest()[:12]
    venv = cache_dir() / f"py38-agent-{key}"
    if (venv / ".devlab-ready").is_file():
        return venv
    building = venv.with_name(f"{venv.name}.building-{os.getpid()}")
    building.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([python38, "-m", "venv", str(building)], check=True, timeout=120)
        install = subprocess.run(
            [str(building / "bin" / "python"), "-m", "pip", "install"]
            + ["--disable-pip-version-check", "-r", str(requirements)],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
        )
        assert install.returncode == 0, f"pip install -r {requirements} failed:\n{install.stderr}"
        (building / ".devlab-ready").write_text(json.dumps({"requirements": key}))
        if venv.exists() and not (venv / ".devlab-ready").is_file():
            shutil.rmtree(venv)  # a half-built one left by an interrupted run
        with contextlib.suppress(OSError):  # another run may have finished first: use its venv
            building.rename(venv)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return venv


@pytest.fixture(scope="module")
def python38() -> Path:
    found = find_python38()
    if found is None:
        pytest.skip("no Python 3.8 interpreter (python3.8 on PATH or under pyenv) to test with")
    return agent_venv(*found) / "bin" / "python"


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zipapp.build(tmp_path_factory.mktemp("zipapp") / "devlab-agent.pyz")


@dataclass
class BoardAgent:
    """The zipapp agent process we started; ``stop`` only ever signals this pid."""

    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_board_agent(python: Path, pyz: Path, home: Path, runner_args: list[str]) -> BoardAgent:
    home.mkdir(parents=True, exist_ok=True)
    token_file = home / "agent.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    log = home / "agent.log"
    argv = [str(python), str(pyz), "--host", "127.0.0.1", "--port", "0"]
    argv += ["--token-file", str(token_file), "--workdir", str(home / "work")]
    argv += ["--board", "zipapp-board", *runner_args]
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            argv, cwd=home, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def listening() -> re.Match[str] | None:
        match = LISTENING.search(log.read_text())
        if not match and proc.poll() is not None:
            raise RuntimeError(f"the zipapp agent exited at start:\n{log.read_text()}")
        return match

    try:
        match = wait_until(listening, 60, what="the zipapp agent's listening line", interval=0.05)
    except AssertionError:
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError(f"the zipapp agent did not start:\n{log.read_text()}") from None
    return BoardAgent(proc, match.group(1), log)


@pytest.fixture
def board_agent(python38: Path, pyz: Path, tmp_path: Path) -> Iterator[tuple[BoardAgent, Path]]:
    """The zipapp agent with the command runner (a Python 3.8 bench script that times hashing
    the uploaded model) and the xdputil stand-in; yields it and the bench's report file."""
    bench = tmp_path / "bench.py"
    bench.write_text(BENCH)
    report = tmp_path / "bench-report.json"
    xdputil = standin_script(tmp_path / "xdputil", "xdputil_benchmark_2.txt", delay_s=0.01)
    template = " ".join(shlex.quote(str(p)) for p in (python38, bench)) + " {model} {runs} "
    agent = start_board_agent(
        python38,
        pyz,
        tmp_path / "board",
        ["--runner", "command", "--command", template + shlex.quote(str(report))]
        + ["--runner", "xdputil", "--xdputil", str(xdputil)],
    )
    try:
        yield agent, report
    finally:
        agent.stop()


# -- the archive --------------------------------------------------------------------------------


def test_archive_holds_the_agent_modules_and_its_requirements(pyz: Path) -> None:
    with zipfile.ZipFile(pyz) as archive:
        names = set(archive.namelist())
        shipped = archive.read("requirements.txt").decode()
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert "__main__.py" in names
    assert shipped == (REPO_ROOT / "agent" / "requirements.txt").read_text()
    agent_sources = {
        f"backends/agent/{p.name}" for p in (REPO_ROOT / "backends/agent").glob("*.py")
    }
    assert agent_sources <= names  # the tree's own modules, not copies kept elsewhere
    assert {"backends/measure/stats.py", "backends/runtimes/vitis.py"} <= names
    assert not any("__pycache__" in name or name.startswith("console/") for name in names)


def test_every_packed_module_is_linted_for_python_38() -> None:
    """pyproject's ruff per-file-target-version lists what the agent packs: a module newly
    pulled into the agent is linted for 3.8 too (add it there when this fails)."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    targets = config["tool"]["ruff"]["per-file-target-version"]
    patterns = [pattern for pattern, version in targets.items() if version == "py38"]
    unlisted = [
        str(path)
        for path in zipapp.agent_files()
        if not any(fnmatch.fnmatch(str(path), pattern) for pattern in patterns)
    ]
    assert unlisted == [], f"add to [tool.ruff.per-file-target-version] as py38: {unlisted}"


def test_archive_compiles_and_serves_on_python_38_without_onnx(
    python38: Path, pyz: Path, tmp_path: Path
) -> None:
    compiled = subprocess.run(
        [str(python38), "-c", COMPILE_CHECK, str(pyz)], capture_output=True, text=True, timeout=60
    )
    assert compiled.returncode == 0 and "compiled" in compiled.stdout, compiled.stderr
    (tmp_path / "token").write_text("secret\n")
    xdputil = standin_script(tmp_path / "xdputil", "xdputil_benchmark_2.txt")
    args = ["--token-file", str(tmp_path / "token"), "--workdir", str(tmp_path / "w")]
    args += ["--runner", "xdputil", "--xdputil", str(xdputil), "--runner", "command"]
    args += ["--command", "bench {model}"]
    check = subprocess.run(
        [str(python38), "-c", IMPORT_CHECK, str(pyz), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "heavy=\n" in check.stdout  # onnxruntime is imported only by its own runner
    assert "imported" in check.stdout


def test_onnxruntime_runner_without_onnxruntime_names_what_to_install(
    python38: Path, pyz: Path, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("secret\n")
    run = subprocess.run(
        [str(python38), str(pyz), "--token-file", "token", "--runner", "onnxruntime"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "devlab-agent.pyz: error: --runner onnxruntime needs onnxruntime" in run.stderr
    assert "pip install onnxruntime onnx" in run.stderr


# -- the agent on Python 3.8, driven by the console ----------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def ended(self) -> list[Event]:
        return [e for e in self.events if isinstance(e, (JobFinished, JobFailed))]


def test_console_runs_command_and_xdputil_jobs_on_the_zipapp_agent(
    board_agent: tuple[BoardAgent, Path], tmp_path: Path
) -> None:
    agent, report = board_agent
    # the token is enforced: none, or a wrong one, is 401
    request = urllib.request.Request(agent.url + "/v1/info")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 401
    with pytest.raises(AgentRefused) as wrong:
        AgentClient(agent.url, "not-the-token").info()
    assert wrong.value.status == 401
    info = AgentClient(agent.url, TOKEN).info()
    assert info["versions"]["python"].startswith("3.8.")
    assert info["versions"]["devlab"] == zipapp.project_version()  # stamped into the archive
    assert info["runners"] == ["command", "xdputil"] and info["kind"] == "dpu"

    backend = DpuBackend(DpuConfig(endpoints=[Endpoint(agent.url, TOKEN)], poll_s=0.3))
    store = Store(tmp_path / "store" / "devlab.sqlite")
    lab = Lab(store, [backend])
    recorder = Recorder()
    lab.subscribe(recorder)
    (device,) = lab.discover()
    assert device.state is DeviceState.ONLINE and device.runtimes == ["command", "xdputil"]
    model = load_model(MLP)
    settings = JobSettings(warmup=1, runs=20, rounds=1, precision_pct=0)
    command = lab.submit(model, device.id, runtime="command", settings=settings)
    xdputil = lab.submit(model, device.id, runtime="xdputil", settings=settings)
    lab.start()
    try:
        wait_until(lambda: len(recorder.ended()) == 2, 120, what="both jobs ending")
    finally:
        lab.shutdown()
    try:
        assert store.job(command.id).state is JobState.DONE, store.job(command.id).error
        assert store.job(xdputil.id).state is JobState.DONE, store.job(xdputil.id).error
        timed = store.result(command.id)
        summary = store.result(xdputil.id)
    finally:
        store.close()

    # command: the bench (on the board's Python 3.8) timed 20 runs of the uploaded model
    bench = json.loads(report.read_text())
    assert bench == {"sha256": model.sha256, "python": [3, 8]}
    assert timed.stats_source == "iterations"
    assert len(timed.latencies_us) == 20 and timed.stats.count == 20
    assert all(0 < x < 1e6 for x in timed.latencies_us)
    assert timed.stats.min <= timed.stats.median <= timed.stats.max
    # xdputil: the stand-in's real captured summary, parsed on the board
    assert summary.stats_source == "tool summary"
    assert summary.latencies_us == []
    assert summary.stats.count == XDPUTIL_FRAMES
    assert summary.stats.mean == pytest.approx(1e6 / XDPUTIL_FPS)
    assert summary.tool == "xdputil"
