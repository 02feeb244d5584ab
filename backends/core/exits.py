"""How a child process ended, in the words an operator reads in a failed job's error, and
how devlab ends a child it started (by its Popen, never by name)."""

from __future__ import annotations

import signal
import subprocess


def exit_cause(code: int) -> str:
    """``SIGSEGV`` for a process killed by signal 11, ``exit code 3`` for one that exited
    (``code`` is a ``Popen.returncode``: negative for the signal that killed it)."""
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def exit_reason(code: int | None) -> str:
    """The same as a clause: ``killed by SIGKILL``, ``exit code 1``, ``still running``."""
    if code is None:
        return "still running"
    cause = exit_cause(code)
    return f"killed by {cause}" if code < 0 else cause


def stop_child(process: subprocess.Popen, timeout_s: float, *, asked: bool = False) -> None:
    """End a child we started: SIGTERM, then SIGKILL if it is still there after ``timeout_s``.
    ``asked``: it was already told to exit its own way (``adb kill-server``), so it first gets
    ``timeout_s`` to do so before the signals."""
    if asked:
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)
