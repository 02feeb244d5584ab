"""A devlab command run as a real process by a test, its stdout lines read by a thread.

The cluster tests start ``devlab scheduler``, ``devlab worker`` and ``devlab --run`` this way:
each prints its address or result on stdout, and a test waits for the first line without
blocking on a pipe.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
from pathlib import Path

from support.helpers import REPO_ROOT, devlab_env

START_S = 60.0


class Process:
    """A devlab process; stdout lines are collected by a thread, stderr goes to a file."""

    def __init__(self, args: list[str], home: Path, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=devlab_env(home),
            stdout=subprocess.PIPE,
            stderr=open(log, "w"),  # noqa: SIM115 - closed with the process
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def first_line(self, timeout: float = START_S) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from {self.proc.args}\n{self.stderr()}") from None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not leave; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
