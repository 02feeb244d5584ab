"""A job's ``--accuracy`` step: its evaluation set through the device's own session.

Called by the device worker after the timed rounds and parity, with the session still open:
the accuracy is the device's, with the job's runtime. Like parity it never loses the latency:
a set that cannot be evaluated becomes a warning on the result.
"""

from __future__ import annotations

from typing import Any

from backends.accuracy.evaluate import BatchOutputs, ProgressFn, evaluate
from backends.accuracy.sets import SetError, open_set
from backends.core.records import Job
from backends.devices.base import BenchError, BenchSession, returns_outputs


def job_accuracy(
    job: Job, session: BenchSession, warnings: list[str], progress: ProgressFn | None = None
) -> dict[str, Any] | None:
    """The job's AccuracyReport as a dict, or None (not asked, or a warning says why not).
    ``progress`` may raise to stop (a cancelled job)."""
    path = job.settings.accuracy_set
    if not path:
        return None
    if not returns_outputs(session):
        warnings.append(
            f"accuracy not evaluated: {job.runtime} on {job.device_id} cannot hand back outputs"
        )
        return None
    try:
        batch = session.outputs_batch if isinstance(session, BatchOutputs) else None
        report = evaluate(
            session.outputs, job.model, open_set(path), _every_percent(progress), batch
        )
    except (SetError, BenchError) as error:
        warnings.append(f"accuracy not evaluated: {error}")
        return None
    if report is None:
        warnings.append(
            f"accuracy not evaluated: this {job.runtime} build on {job.device_id} "
            "returns no outputs"
        )
        return None
    return report.to_dict()


def _every_percent(progress: ProgressFn | None) -> ProgressFn | None:
    """``progress`` called about a hundred times per set at most (and at the last sample), so
    a large set does not flood the event bus; cancellation is checked at each call."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 100) == 0:
            progress(done, total)

    return report
