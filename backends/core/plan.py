"""Turn paths on disk into jobs: model intake, then one job per model and device.

Both front ends queue work through ``queue_paths``; a bad item becomes a failed job with its
reason (so it shows in the tables) and never stops the good ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from backends.core.lab import ModelRefused
from backends.core.lab_api import LabApi
from backends.core.records import Job, JobSettings, JobState, Model
from backends.models.input_shapes import InputShapes
from backends.models.intake import ModelError, collect_models


@dataclass
class QueueReport:
    """What ``queue_paths`` did: jobs waiting to run, results kept from earlier, bad items."""

    queued: list[Job] = field(default_factory=list)
    kept: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        return self.queued + self.kept + self.failed


def queue_paths(
    lab: LabApi,
    paths: Sequence[str | Path],
    device_ids: Sequence[str],
    runtime: str | None = None,
    settings: JobSettings | None = None,
    priority: int = 0,
    input_shapes: InputShapes | None = None,
) -> QueueReport:
    """Queue every model found under ``paths`` on every device in ``device_ids``.

    ``input_shapes`` is an ``--input-shapes`` file's; ``settings.input_shapes`` (the command
    line's) win over it. With a file, each job's settings hold its own model's shapes, so that
    they are part of what identifies the job. Raises ``InputShapesError`` for a wrong file.
    """
    settings = settings or JobSettings()
    shapes = (input_shapes or InputShapes()).with_command_line(settings.input_shapes)
    report = QueueReport()
    for item in collect_models(paths, shapes):
        for device_id in device_ids:
            if isinstance(item, ModelError):
                report.failed.append(
                    lab.record_failure(
                        _stand_in(item), device_id, item.reason, runtime, settings, priority
                    )
                )
                continue
            own = settings
            if input_shapes is not None:
                own = replace(settings, input_shapes=shapes.applied_to(item))
            misfit = _accuracy_misfit(item, own)
            if misfit:  # that model cannot take the --accuracy set: say so before measuring
                report.failed.append(
                    lab.record_failure(item, device_id, misfit, runtime, own, priority)
                )
                continue
            try:
                job = lab.submit(item, device_id, runtime, own, priority)
            except ModelRefused as refused:  # that model only: the others are still measured
                report.failed.append(
                    lab.record_failure(item, device_id, str(refused), runtime, own, priority)
                )
                continue
            (report.kept if job.state is JobState.DONE else report.queued).append(job)
    return report


def _accuracy_misfit(model: Model, settings: JobSettings) -> str | None:
    """Why ``model`` cannot take the job's evaluation set (file and fix named), else None."""
    if not settings.accuracy_set:
        return None
    from backends.accuracy.sets import SetError, open_set

    try:
        open_set(settings.accuracy_set).check(model)
    except SetError as error:
        return f"--accuracy: {error}"
    return None


def _stand_in(error: ModelError) -> Model:
    """A Model record for an item that failed intake, identified by its bytes when readable."""
    path = Path(error.path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        digest = None
    digest = digest or hashlib.sha256(f"unreadable:{path.resolve()}".encode()).hexdigest()
    return Model(path=str(path), name=path.name, sha256=digest)
