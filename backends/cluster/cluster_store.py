"""The dispatcher's store: devlab's Store plus what a cluster needs of it.

With prefetch, a job is claimed (``running``, attempts + 1) when it is handed to a lab host,
which may be a moment before the host starts it. If the host leaves before it starts the
job, the job goes back to the queue and that attempt does not count: ``attempts`` keeps
meaning "times a device started it". And the jobs waiting for a device that no host offers
any more are read by the dispatch index, not by scanning the whole queue.
"""

from __future__ import annotations

from backends.records import Job
from backends.store import _JOB_COLUMNS, Store, _job_from_row  # the same row layout


class ClusterStore(Store):
    def release(self, job_id: str) -> Job:
        """Give back a claimed job that never started: queued again, its attempt uncounted."""
        with self._mutex, self._transaction():
            self._db.execute(
                "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), "
                "started_at = NULL, finished_at = NULL, error = NULL "
                "WHERE id = ? AND state = 'running'",
                (job_id,),
            )
            return self._get(job_id)

    def queued_on(self, device_id: str) -> list[Job]:
        """The queued jobs of one device, in queue order."""
        with self._mutex:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND device_id = ? "
                "ORDER BY priority, seq",
                (device_id,),
            ).fetchall()
        return [_job_from_row(row) for row in rows]
