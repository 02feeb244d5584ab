"""Run one benchmark tool as a subprocess: argument list (never a shell), both streams read
line by line as they come, and the tool's own process group killed on cancel or timeout."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, List  # typing's: a runtime alias below, on Python 3.8

from backends.agent.runners import RunnerCancelled, RunnerError

MAX_KEPT_LINES = 20_000
MAX_LINE_CHARS = 4_000
FLUSH_INTERVAL_S = 0.1


@dataclass
class ToolOutput:
    exit_code: int
    lines: list[str]  # stderr and stdout interleaved in arrival order

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


LineBatch = Callable[[List[str]], None]


def run_tool(
    argv: Sequence[str],
    cancel: threading.Event,
    on_lines: LineBatch,
    timeout_s: float,
) -> ToolOutput:
    """Run ``argv`` to its end; ``on_lines`` gets new output lines about 10 times a second.

    Raises RunnerCancelled when ``cancel`` is set (the tool is killed first), RunnerError when
    the tool cannot start or outlives ``timeout_s``.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # its own process group, so kill() reaches its children
        )
    except OSError as error:
        raise RunnerError(f"cannot start {argv[0]}: {error.strerror or error}") from None
    lines: queue.Queue[str | None] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(stream, lines), daemon=True)
        for stream in (proc.stdout, proc.stderr)
    ]
    for reader in readers:
        reader.start()
    kept: deque[str] = deque(maxlen=MAX_KEPT_LINES)
    batch: list[str] = []
    open_streams, deadline, next_flush = 2, time.monotonic() + timeout_s, 0.0
    try:
        while open_streams:
            if cancel.is_set():
                raise RunnerCancelled()
            if time.monotonic() > deadline:
                raise RunnerError(
                    f"{argv[0]} did not finish within {timeout_s:g} s and was stopped; "
                    f"last lines: {' | '.join(list(kept)[-5:])}"
                )
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.05)
                if line is None:
                    open_streams -= 1
                else:
                    kept.append(line)
                    batch.append(line)
            if batch and time.monotonic() >= next_flush:
                on_lines(batch)
                batch, next_flush = [], time.monotonic() + FLUSH_INTERVAL_S
        exit_code = _wait(proc, cancel, deadline)
    except BaseException:
        kill_group(proc)
        raise
    if batch:
        on_lines(batch)
    return ToolOutput(exit_code, list(kept))


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the process this module started and its process group (its children)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created: its id is the child's pid
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait(proc: subprocess.Popen, cancel: threading.Event, deadline: float) -> int:
    while True:
        try:
            return proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if cancel.is_set():
                raise RunnerCancelled() from None
            if time.monotonic() > deadline:
                raise RunnerError("the tool closed its output but did not exit in time") from None


def _pump(stream, lines: queue.Queue[str | None]) -> None:
    try:
        for line in stream:
            lines.put(line.rstrip("\r\n")[:MAX_LINE_CHARS])
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)
