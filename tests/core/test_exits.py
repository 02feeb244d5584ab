"""The words a failed job uses for how its process ended, checked on real processes."""

import signal
import subprocess
import sys

from backends.core.exits import exit_cause, exit_reason


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
