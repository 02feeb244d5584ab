"""Ends a virtual lab's processes when the lab itself is killed without a chance to stop them.

``devlab lab --virtual`` stops its adb server and agents on Ctrl-C, quit, SIGTERM and SIGHUP.
A SIGKILL (or an OOM kill, or a crash of the interpreter) gives it no chance, and its private
adb server and agents would run on, holding their ports. So once its pieces are up the lab
starts this small watcher in its own session: it polls the lab's pid, and when the lab is
gone it ends the pids it was given -- only those, and only while each is still the very
process the lab started (same start time in ``/proc``, so a recycled pid is never touched) --
and removes the lab's own temp folder. A lab that closes normally stops the watcher itself.

Usage: ``python -m backends.virtual.reaper --parent PID --pid PID [--pid PID ...]
[--remove DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.5
GRACE_S = 3.0  # between SIGTERM and SIGKILL


@dataclass(frozen=True)
class Watched:
    """A process as it was when the watcher was told of it."""

    pid: int
    started: str | None  # /proc start time (clock ticks since boot); None off Linux


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (the process's start time), None where unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def watched(pid: int) -> Watched:
    return Watched(pid, start_time(pid))


def alive(process: Watched) -> bool:
    """Whether ``process`` still runs as the same process (not a zombie, not a new owner)."""
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the pid
        return False
    if process.started is None:
        return True
    try:
        state = Path(f"/proc/{process.pid}/stat").read_text()
    except OSError:
        return False
    if state[state.rfind(")") + 2 :].split()[:1] == ["Z"]:
        return False
    return start_time(process.pid) == process.started


def reap(processes: Sequence[Watched], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every process still alive, SIGKILL those left after ``grace_s``; the pids ended."""
    ended = [p.pid for p in processes if alive(p)]
    for process in processes:
        if alive(process):
            _signal(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in processes):
        time.sleep(0.05)
    for process in processes:
        if alive(process):
            _signal(process.pid, signal.SIGKILL)
    return ended


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def watch(parent: Watched, children: Sequence[Watched], remove: Path | None) -> list[int]:
    """Block while ``parent`` lives; then end ``children`` and remove ``remove``."""
    while alive(parent):
        time.sleep(POLL_S)
    ended = reap(children)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)
    return ended


def start_reaper(
    parent: int, pids: Sequence[int], remove: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start the watcher for ``pids`` of the lab ``parent`` (this process, normally), in its
    own session so that a signal to the lab's process group does not end it first."""
    command = [sys.executable, "-m", "backends.virtual.reaper", "--parent", str(parent)]
    for pid in pids:
        command += ["--pid", f"{pid}:{start_time(pid) or ''}"]
    if remove is not None:
        command += ["--remove", str(remove)]
    command += ["--parent-started", start_time(parent) or ""]
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        command,
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _watched_arg(text: str) -> Watched:
    pid, _, started = text.partition(":")
    return Watched(int(pid), started or None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=int, required=True, help="the lab's pid")
    parser.add_argument("--parent-started", default="", help="its /proc start time")
    parser.add_argument(
        "--pid", type=_watched_arg, action="append", default=[], help="PID[:START] to end"
    )
    parser.add_argument("--remove", type=Path, help="the lab's own temp folder")
    args = parser.parse_args(argv)
    watch(Watched(args.parent, args.parent_started or None), args.pid, args.remove)
    return 0


if __name__ == "__main__":
    sys.exit(main())
