"""How a child process ended, in the words an operator reads in a failed job's error."""

from __future__ import annotations

import signal


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
