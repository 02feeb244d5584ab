"""Each device's reference-canary history, kept across runs in one small SQLite file.

The median of a device's first canaries is what drift-normalised latencies are scaled by, so it
must be the same for two runs on the same device: it lives beside the user's data (not in a run's
``--out`` folder), and several devlab processes may append to it at once (WAL, short
transactions, a busy timeout; no exclusive lock like the run store's).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import platformdirs

SCHEMA = """
CREATE TABLE IF NOT EXISTS canary (
    device_id TEXT NOT NULL,
    runtime TEXT NOT NULL,
    at REAL NOT NULL,
    latency_us REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS canary_by_device ON canary (device_id, runtime, at);
"""


def default_canary_path() -> Path:
    return Path(platformdirs.user_data_dir("devlab")) / "canary.sqlite"


class CanaryStore:
    """Append-only canary latencies per (device, runtime key); the newest ``limit`` are read."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_canary_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def add_canary(self, device_id: str, runtime: str, latencies_us: Iterable[float]) -> None:
        now = time.time()
        rows = [(device_id, runtime, now, float(v)) for v in latencies_us]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO canary (device_id, runtime, at, latency_us) VALUES (?, ?, ?, ?)", rows
            )

    def canary_history(self, device_id: str, runtime: str, limit: int = 500) -> list[float]:
        """The latest canary latencies of a device and runtime key, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT latency_us FROM canary WHERE device_id = ? AND runtime = ? "
                "ORDER BY at DESC, rowid DESC LIMIT ?",
                (device_id, runtime, limit),
            ).fetchall()
        return [row[0] for row in reversed(rows)]

    def first_canaries(self, device_id: str, runtime: str, count: int = 100) -> list[float]:
        """The first ``count`` canary latencies ever recorded for a device and runtime key: the
        median of these is the fixed scale of drift-normalised figures. A moving window would
        move that scale with the machine's recent pace (a loaded hour raises it), and two runs
        normalised against different scales no longer compare."""
        with self._lock:
            rows = self._db.execute(
                "SELECT latency_us FROM canary WHERE device_id = ? AND runtime = ? "
                "ORDER BY at ASC, rowid ASC LIMIT ?",
                (device_id, runtime, count),
            ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
