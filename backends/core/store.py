"""The record of truth: jobs and results in one SQLite file (WAL).

Every state change is one committed transaction, so the queue survives ``kill -9``: a job
that was running when the process died is found ``running`` at the next start and re-queued,
and a result is written in the same transaction that marks its job done, so a finished
result is never lost nor written twice. One process owns a store at a time (a lock file
beside it), which is what makes "running means it died" a safe conclusion.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from backends.core.records import Job, JobState, Result

STORE_FILE = "devlab.sqlite"  # the store's name inside an --out or lab folder

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    runtime TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    job_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_dispatch ON jobs (device_id, state, priority, seq);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    created_at REAL NOT NULL,
    result_json TEXT NOT NULL
);
"""

_JOB_COLUMNS = (
    "id, device_id, runtime, priority, state, attempts, created_at, started_at, "
    "finished_at, error, job_json"
)


class StoreLocked(RuntimeError):
    """Another devlab process is using this store."""


class Store:
    """Jobs and results of one lab (or one ``--out`` folder)."""

    def __init__(self, path: str | Path, fresh: bool = False) -> None:
        """Open (or create) the store; ``fresh`` forgets every job and result in it first."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = _take_lock(self.path.with_name(self.path.name + ".lock"))
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._mutex = threading.RLock()

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._lock_file.close()

    # -- writing ---------------------------------------------------------------------------

    def release(self, job_id: str) -> Job:
        """Give back a claimed job that never started (a cluster host left before starting a
        prefetched job): queued again, its attempt uncounted."""
        with self._mutex, self._transaction():
            self._db.execute(
                "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), "
                "started_at = NULL, finished_at = NULL, error = NULL "
                "WHERE id = ? AND state = 'running'",
                (job_id,),
            )
            return self._get(job_id)

    def queued_on(self, device_id: str) -> list[Job]:
        """The queued jobs of one device, in queue order (the dispatch index, no full scan)."""
        with self._mutex:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND device_id = ? "
                "ORDER BY priority, seq",
                (device_id,),
            ).fetchall()
        return [_job_from_row(row) for row in rows]

    def add_job(self, job: Job, key: str) -> tuple[Job, bool]:
        """Insert ``job`` unless a job with the same ``key`` exists; returns (job, inserted)."""
        with self._mutex, self._transaction():
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                return _job_from_row(row), False
            job.created_at = job.created_at or time.time()
            self._db.execute(
                "INSERT INTO jobs (id, key, device_id, runtime, priority, state, attempts, "
                "created_at, started_at, finished_at, error, job_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    key,
                    job.device_id,
                    job.runtime,
                    job.priority,
                    job.state.value,
                    job.attempts,
                    job.created_at,
                    job.started_at,
                    job.finished_at,
                    job.error,
                    json.dumps(job.to_dict()),
                ),
            )
            return job, True

    def claim_next(self, device_ids: Iterable[str]) -> Job | None:
        """Mark the next queued job of these devices running and return it.

        Order: lowest priority number first, then first in, first out.
        """
        ids = list(device_ids)
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        with self._mutex, self._transaction():
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' "
                f"AND device_id IN ({marks}) ORDER BY priority, seq LIMIT 1",
                ids,
            ).fetchone()
            if row is None:
                return None
            now = time.time()
            self._db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, "
                "finished_at = NULL, error = NULL WHERE id = ?",
                (now, row[0]),
            )
            return self._get(row[0])

    def claim_batch(self, device_id: str, limit: int, together: Callable[[Job], bool]) -> list[Job]:
        """Claim the next queued job of a device and up to ``limit - 1`` more that may share its
        rounds: same priority, and ``together(job)`` true for all of them (the first included).
        Order as in :meth:`claim_next`."""
        with self._mutex, self._transaction():
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND device_id = ? "
                "ORDER BY priority, seq LIMIT ?",
                (device_id, max(limit, 1) * 4),
            ).fetchall()
            if not rows:
                return []
            chosen = [_job_from_row(rows[0])]
            if together(chosen[0]):
                for row in rows[1:]:
                    if len(chosen) >= limit:
                        break
                    job = _job_from_row(row)
                    if job.priority == chosen[0].priority and together(job):
                        chosen.append(job)
            now = time.time()
            for job in chosen:
                self._db.execute(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                    "started_at = ?, finished_at = NULL, error = NULL WHERE id = ?",
                    (now, job.id),
                )
            return [self._get(job.id) for job in chosen]

    def finish(self, job_id: str, result: Result) -> Job:
        """Write the result and mark the job done, atomically."""
        with self._mutex, self._transaction():
            self._db.execute(
                "INSERT INTO results (job_id, created_at, result_json) VALUES (?, ?, ?)",
                (job_id, time.time(), json.dumps(result.to_dict())),
            )
            self._set_state(job_id, JobState.DONE, error=None, finished=True)
            return self._get(job_id)

    def set_power_field(self, job_id: str, key: str, value: Any) -> Result:
        """Set one key of a stored result's ``power``, atomically (a figure that needs later
        jobs, as a queue's clock fit, added after the job's own result was stored)."""
        with self._mutex, self._transaction():
            row = self._db.execute(
                "SELECT result_json FROM results WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"job {job_id!r} has no result in {self.path}")
            data = json.loads(row[0])
            if data.get("power") is None:
                raise ValueError(f"job {job_id!r} has no power figures to add {key!r} to")
            data["power"][key] = value
            self._db.execute(
                "UPDATE results SET result_json = ? WHERE job_id = ?", (json.dumps(data), job_id)
            )
        return Result.from_dict(data)

    def fail(self, job_id: str, error: str) -> Job:
        with self._mutex, self._transaction():
            self._set_state(job_id, JobState.FAILED, error=error, finished=True)
            return self._get(job_id)

    def cancel(self, job_id: str) -> Job:
        with self._mutex, self._transaction():
            self._set_state(job_id, JobState.CANCELLED, error=None, finished=True)
            return self._get(job_id)

    def cancel_if_queued(self, job_id: str) -> Job | None:
        """Cancel a job that no worker has claimed yet; None if it is no longer queued."""
        with self._mutex, self._transaction():
            if self._get(job_id).state is not JobState.QUEUED:
                return None
            self._set_state(job_id, JobState.CANCELLED, error=None, finished=True)
            return self._get(job_id)

    def requeue(self, job_id: str) -> Job:
        """Put a job back in the queue (retry, or an interrupted run that must run again)."""
        with self._mutex, self._transaction():
            if self._has_result(job_id):
                raise ValueError(f"job {job_id} is done; its result is kept, not measured again")
            self._set_state(job_id, JobState.QUEUED, error=None, finished=False)
            self._db.execute("UPDATE jobs SET started_at = NULL WHERE id = ?", (job_id,))
            return self._get(job_id)

    def recover_interrupted(self) -> list[Job]:
        """Re-queue jobs left ``running`` by a process that died (we hold the lock)."""
        with self._mutex:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'running'")]
        return [self.requeue(job_id) for job_id in ids]

    def forget_failed(self, key: str) -> bool:
        """Delete the failed job with ``key`` (it never produced a result); True if one was."""
        with self._mutex, self._transaction():
            cursor = self._db.execute(
                "DELETE FROM jobs WHERE key = ? AND state = 'failed' "
                "AND id NOT IN (SELECT job_id FROM results)",
                (key,),
            )
            return cursor.rowcount > 0

    def set_priority(self, job_id: str, priority: int) -> Job:
        with self._mutex, self._transaction():
            self._db.execute("UPDATE jobs SET priority = ? WHERE id = ?", (priority, job_id))
            return self._get(job_id)

    # -- reading ---------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        with self._mutex:
            return self._get(job_id)

    def jobs(self, states: Iterable[JobState] | None = None) -> list[Job]:
        """Jobs in submission order, optionally only those in ``states``."""
        query = f"SELECT {_JOB_COLUMNS} FROM jobs"
        args: list[str] = []
        if states is not None:
            wanted = [s.value for s in states]
            query += f" WHERE state IN ({','.join('?' * len(wanted))})"
            args = wanted
        with self._mutex:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [_job_from_row(r) for r in rows]

    def result(self, job_id: str) -> Result | None:
        with self._mutex:
            row = self._db.execute(
                "SELECT result_json FROM results WHERE job_id = ?", (job_id,)
            ).fetchone()
        return Result.from_dict(json.loads(row[0])) if row else None

    def rows(self) -> list[tuple[Job, Result | None]]:
        """Every job with its result (None unless done), in submission order."""
        with self._mutex:
            rows = self._db.execute(
                f"SELECT {', '.join('j.' + c.strip() for c in _JOB_COLUMNS.split(','))}, "
                "r.result_json FROM jobs j LEFT JOIN results r ON r.job_id = j.id ORDER BY j.seq"
            ).fetchall()
        return [
            (_job_from_row(r[:-1]), Result.from_dict(json.loads(r[-1])) if r[-1] else None)
            for r in rows
        ]

    # -- internals -------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _get(self, job_id: str) -> Job:
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id!r} in {self.path}")
        return _job_from_row(row)

    def _has_result(self, job_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM results WHERE job_id = ?", (job_id,)).fetchone()
            is not None
        )

    def _set_state(
        self, job_id: str, state: JobState, *, error: str | None, finished: bool
    ) -> None:
        cursor = self._db.execute(
            "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
            (state.value, error, time.time() if finished else None, job_id),
        )
        if cursor.rowcount != 1:
            raise KeyError(f"no job {job_id!r} in {self.path}")


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _job_from_row(row: tuple) -> Job:
    (
        job_id,
        device_id,
        runtime,
        priority,
        state,
        attempts,
        created,
        started,
        finished,
        error,
        job_json,
    ) = row
    job = Job.from_dict(json.loads(job_json))
    job.id, job.device_id, job.runtime = job_id, device_id, runtime
    job.priority, job.state, job.attempts = priority, JobState(state), attempts
    job.created_at, job.started_at, job.finished_at, job.error = created, started, finished, error
    return job


def _take_lock(lock_path: Path):
    """Hold an exclusive lock for the life of the Store; say who holds it otherwise."""
    handle = open(lock_path, "a+")  # noqa: SIM115 - kept open while the store lives
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreLocked(
            f"{lock_path.parent} is in use by another devlab process (pid {holder}); "
            "wait for it to finish or use another --out folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
