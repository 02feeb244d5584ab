"""A SIGKILLed virtual lab leaves nothing running: the reaper (backends/virtual/reaper.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backends.devices.android.adb import server_reachable
from backends.virtual.reaper import Watched, alive, reap, start_time, watched

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20.0


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The phone registry (and the agent's caches) in tmp, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def wait_for(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def running(pid: int) -> bool:
    """Still a live process (a zombie child of this test counts as ended)."""
    return alive(Watched(pid, start_time(pid)))


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_reap_ends_the_processes_it_was_given() -> None:
    first, second = sleeper(), sleeper()
    try:
        ended = reap([watched(first.pid), watched(second.pid)], grace_s=2.0)
        assert sorted(ended) == sorted([first.pid, second.pid])
        assert first.wait(timeout=5) == -signal.SIGTERM
        assert second.wait(timeout=5) == -signal.SIGTERM
    finally:
        for process in (first, second):
            process.kill()
            process.wait()


def test_reap_never_touches_a_recycled_pid() -> None:
    """A pid whose start time is not the one recorded belongs to someone else now."""
    process = sleeper()
    try:
        stranger = Watched(process.pid, "1")  # same pid, another start time
        assert not alive(stranger)
        assert reap([stranger], grace_s=0.2) == []
        assert process.poll() is None  # untouched
    finally:
        process.kill()
        process.wait()


def test_a_sigkilled_lab_leaves_no_process_and_no_folder(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    lab = subprocess.Popen(
        [sys.executable, "-m", "console.entry", "lab", "--virtual", "--no-console"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert lab.stdout is not None
        line = lab.stdout.readline()
        assert line, "the lab printed no record of its pieces"
        record = json.loads(line)
        pids = record["pids"]
        folder = Path(record["config"]).parent
        adb = next(p for p in record["pieces"] if p["name"] == "adb server")["address"]
        host, _, port = adb.rpartition(":")
        assert len(pids) == 2 and all(running(pid) for pid in pids)
        assert folder.is_dir() and server_reachable(host, int(port))

        lab.send_signal(signal.SIGKILL)  # no handler, no teardown: only the reaper is left
        lab.wait(timeout=10)

        assert wait_for(lambda: not any(running(pid) for pid in pids)), pids
        assert wait_for(lambda: not folder.exists()), folder
        assert not server_reachable(host, int(port))
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
