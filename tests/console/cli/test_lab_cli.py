"""``devlab lab --virtual --no-console`` and ``devlab adb start|stop`` as real subprocesses:
what they print, that their servers answer, and that nothing they started outlives them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from backends.devices.android.adb import DevlabAdbClient, server_reachable
from backends.devices.android.adb_server import DEFAULT_ADB_PORT, free_port, kill_server
from support.adb_fixtures import adb_binary
from support.helpers import REPO_ROOT, devlab_cmd, devlab_env, run_devlab

pytestmark = pytest.mark.skipif(adb_binary() is None, reason="no adb in the adbutils wheel")

START_TIMEOUT_S = 90.0


def lab_env(home: Path) -> dict[str, str]:
    """No user config, the phone registry in tmp, and any adb server kept off USB and mDNS."""
    env = devlab_env(home)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), ADB_MDNS="0", ADB_USB="0")
    return env


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def children_of(pid: int) -> set[int] | None:
    """The live child processes of ``pid``, or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    return {child.pid for child in psutil.Process(pid).children(recursive=True)}


def first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The first stdout line, bounded: a lab that never comes up fails the test, not hangs."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        proc.kill()
        raise AssertionError("the lab printed nothing in time") from None


def start_lab(home: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        devlab_cmd(*args),
        cwd=REPO_ROOT,
        env=lab_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = first_line(proc, START_TIMEOUT_S)
    if not line:
        proc.wait(30)
        raise AssertionError(f"the lab exited {proc.returncode}: {proc.stderr.read()}")
    return proc, json.loads(line)


@pytest.mark.parametrize(
    ("args", "stop_signal"),
    [
        (("lab", "--virtual", "--no-console"), signal.SIGINT),
        (("virtual", "lab", "--no-console"), signal.SIGTERM),
    ],
)
def test_the_headless_lab_runs_until_stopped_and_leaves_nothing_behind(
    tmp_path: Path, args: tuple[str, ...], stop_signal: signal.Signals
) -> None:
    proc, record = start_lab(tmp_path / "home", *args)
    try:
        config = Path(record["config"])
        assert config.is_file() and "[[power.monitors]]" in config.read_text()
        pieces = {piece["name"]: piece for piece in record["pieces"]}
        assert set(pieces) == {"adb server", "virtual phone", "virtual monsoon", "agent"}
        pids = set(record["pids"])
        assert pids == {pieces["adb server"]["pid"], pieces["agent"]["pid"]}
        reaper = record["reaper_pid"]  # the watcher for a lab killed without a teardown
        children = children_of(proc.pid)
        if children is not None:
            assert children == pids | {reaper}  # it started these, and only these
        port = int(pieces["adb server"]["address"].rpartition(":")[2])
        assert port != DEFAULT_ADB_PORT
        serials = {item.serial for item in DevlabAdbClient("127.0.0.1", port).list()}
        assert pieces["virtual phone"]["address"].removeprefix("adb:") in serials
        proc.send_signal(stop_signal)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, stderr
    assert "stopping the virtual lab" in stderr
    assert all(gone(pid) for pid in pids)
    assert gone(reaper)
    assert not server_reachable("127.0.0.1", port)
    assert not config.parent.exists()


def test_lab_without_virtual_is_a_usage_error(tmp_path: Path) -> None:
    run = run_devlab("lab", home=tmp_path, timeout=60)
    assert run.returncode == 2 and "--virtual" in run.stderr, run.describe()


def test_adb_start_prints_a_free_port_and_stop_ends_that_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = lab_env(home)
    start = subprocess.run(
        devlab_cmd("adb", "start"),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    port = int(start.stdout.strip()) if start.stdout.strip().isdigit() else 0
    try:
        assert start.returncode == 0 and port, start.stderr
        assert port != DEFAULT_ADB_PORT
        assert f"ANDROID_ADB_SERVER_PORT={port}" in start.stderr
        assert f"devlab adb stop --port {port}" in start.stderr
        assert DevlabAdbClient("127.0.0.1", port).server_version() > 0
        again = subprocess.run(
            devlab_cmd("adb", "start", "--port", str(port)),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 2 and "already listens" in again.stderr
        stop = subprocess.run(
            devlab_cmd("adb", "stop", "--port", str(port)),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stop.returncode == 0, stop.stderr
        assert not server_reachable("127.0.0.1", port)
    finally:
        if port and server_reachable("127.0.0.1", port):  # a failed test leaves no server
            kill_server(port)


def test_adb_start_on_a_given_port_and_stop_of_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = lab_env(home)
    try:
        start = subprocess.run(
            devlab_cmd("adb", "start", "--port", str(port)),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert start.returncode == 0 and start.stdout.strip() == str(port), start.stderr
        assert server_reachable("127.0.0.1", port)
    finally:
        if server_reachable("127.0.0.1", port):
            kill_server(port)
    nothing = run_devlab("adb", "stop", "--port", str(port), home=home, timeout=60)
    assert nothing.returncode == 2
    assert f"no adb server at 127.0.0.1:{port}" in nothing.stderr


def test_no_adb_server_offers_the_virtual_lab_and_adb_start(tmp_path: Path) -> None:
    config = tmp_path / "devlab.toml"
    config.write_text('[android]\nadb_server = "127.0.0.1:9"\n')
    run = run_devlab("virtual", "phone", "--config", config, home=tmp_path, timeout=60)
    assert run.returncode == 2, run.describe()
    assert "no adb server at 127.0.0.1:9" in run.err_text
    assert "devlab lab --virtual" in run.err_text and "devlab adb start" in run.err_text


def test_the_console_opens_on_the_lab_and_quitting_it_stops_every_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``devlab lab --virtual`` hands the console a lab that sees the virtual pieces; the
    console here is a stand-in that looks and quits (tests/console/tui tests the real one)."""
    from console.cli.main import main

    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    seen: dict[str, Any] = {}

    def console(lab: Any, config: Any, folder: Path) -> int:
        devices = {device.id for device in lab.discover()}
        phone = config.resolve_device("phone")
        seen.update(devices=devices, config=config, folder=folder, phone=phone)
        seen["powered"] = lab.has_power_monitor(phone)
        return 0

    assert main(["lab", "--virtual"], open_console=console) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    pieces = {piece["name"]: piece["address"] for piece in record["pieces"]}
    assert {pieces["virtual phone"], pieces["agent"]} <= seen["devices"]
    assert seen["phone"] == pieces["virtual phone"] and seen["powered"]
    assert str(seen["config"].path) == record["config"]
    assert seen["folder"].parent == Path(record["config"]).parent  # results go with the lab
    assert all(gone(pid) for pid in record["pids"])
    assert not Path(record["config"]).parent.exists()
