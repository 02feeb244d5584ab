"""The words a failed job uses for how its process ended, checked on real processes."""

import signal
import subprocess
import sys

from backends.core.exits import exit_cause, exit_reason, stop_child


def _ended(code: str) -> int:
    """The return code of a real child that runs ``code``."""
    return subprocess.run([sys.executable, "-c", code], check=False).returncode


def test_a_signal_is_named_and_an_exit_gives_its_code():
    segv = _ended("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    abort = _ended("import os; os.abort()")
    exited = _ended("raise SystemExit(3)")
    assert (exit_cause(segv), exit_cause(abort), exit_cause(exited)) == (
        "SIGSEGV",
        "SIGABRT",
        "exit code 3",
    )
    assert exit_reason(segv) == "killed by SIGSEGV"
    assert exit_reason(exited) == "exit code 3"


def test_an_unknown_signal_number_and_a_running_process():
    unnamed = max(signal.SIGRTMAX, 64) + 1  # no Signals member has this number
    assert exit_cause(-unnamed) == f"signal {unnamed}"
    assert exit_reason(None) == "still running"


def test_stop_child_kills_a_child_that_ignores_sigterm() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "up"
    stop_child(child, 0.5)
    assert child.returncode == -signal.SIGKILL


def test_stop_child_lets_an_asked_child_exit_its_own_way() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    stop_child(child, 10.0, asked=True)  # it ends by itself within the grace: no signal sent
    assert child.returncode == 0
