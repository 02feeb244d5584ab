"""``tegrastats --interval N`` running beside a benchmark on a Jetson: every line it prints,
stamped with the agent's clock when it arrived, and the board's power read from it.

The samples go back to the console with the job's result (``extras["power"]``); the console
turns them into energy per inference with the baseline method (``backends.power.rails``).
Runs on Python 3.8 (the board agent); argument lists only, its own process group killed at
the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from typing import Any, Sequence

from backends.agent.process import kill_group
from backends.power.tegrastats import is_tegrastats_line, parse_line

MAX_SAMPLES = 200_000  # 5.5 h at 100 ms: a bounded list even for a very long job
MAX_WARNINGS = 20


class SamplerError(Exception):
    """tegrastats could not be started; the message says why and what to pass."""


def open_tegrastats(argv: Sequence[str]) -> subprocess.Popen:
    """tegrastats with its lines on a text pipe, in its own process group (so that stopping
    it also ends a wrapper script's children); shared by job sampling and the live stream."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )


class TegrastatsSampler:
    """Start with :meth:`start`, read :meth:`samples` any time, end with :meth:`stop`."""

    def __init__(self, argv: Sequence[str], interval_ms: int) -> None:
        self.argv = list(argv)
        self.interval_ms = interval_ms
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._t: list[float] = []
        self._mw: list[float] = []
        self._rails: dict[str, list[float]] = {}
        self.rail = ""
        self.warnings: list[str] = []
        self.other_lines = 0  # lines that are not tegrastats output (its own messages)
        self.last_other = ""

    def start(self) -> TegrastatsSampler:
        try:
            self._proc = open_tegrastats(self.argv)
        except OSError as error:
            raise SamplerError(
                f"cannot start {self.argv[0]}: {error.strerror or error} "
                "(pass --tegrastats /usr/bin/tegrastats, or drop it to measure no power)"
            ) from None
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            now = time.time()
            line = raw.rstrip("\r\n")
            if not is_tegrastats_line(line):
                if line.strip():
                    self.other_lines += 1
                    self.last_other = line.strip()[:300]
                continue
            parsed = parse_line(line)
            if parsed is None:
                continue
            with self._lock:
                for warning in parsed.warnings:
                    if len(self.warnings) < MAX_WARNINGS:
                        self.warnings.append(warning)
                board = parsed.board()
                if board is None or len(self._t) >= MAX_SAMPLES:
                    continue
                self.rail = self.rail or board[0]
                self._t.append(now)
                self._mw.append(board[1])
                for name, rail in parsed.rails.items():
                    self._rails.setdefault(name, []).append(rail.current_mw)

    def count(self) -> int:
        with self._lock:
            return len(self._t)

    def stop(self) -> None:
        if self._proc is not None:
            kill_group(self._proc)
            with contextlib.suppress(OSError, ValueError):
                if self._proc.stdout is not None:
                    self._proc.stdout.close()
        if self._thread is not None:
            self._thread.join(5)

    def report(self, windows: dict[str, Any]) -> dict[str, Any]:
        """The samples and windows as the job's ``extras["power"]`` (JSON)."""
        with self._lock:
            t, mw = list(self._t), list(self._mw)
            rails = {name: list(values) for name, values in self._rails.items()}
            warnings = list(self.warnings)
        if not t:
            reason = "tegrastats printed no power rail"
            if self.other_lines:
                reason += f" (it said: {self.last_other})"
            warnings.append(reason + ": no energy was measured")
        consistent = {name: v for name, v in rails.items() if len(v) == len(t)}
        return {
            "source": "tegrastats",
            "interval_ms": self.interval_ms,
            "rail": self.rail,
            "t": t,
            "mw": mw,
            "rails": consistent,
            "warnings": warnings,
            **windows,
        }
