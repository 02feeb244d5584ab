"""Rich rendering of Lab events for the headless mode: progress bars and a summary table."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from backends.core.events import (
    Event,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobProgress,
    JobStarted,
    LogLine,
)
from backends.core.records import Job, JobState, Result
from console.charts import format_us


class ProgressView:
    """Subscribes to the Lab: an overall bar, one bar per running job with its live median."""

    def __init__(self, console: Console, total_jobs: int) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"),
            TextColumn("median {task.fields[median]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._overall = self.progress.add_task("all jobs", total=total_jobs, phase="", median="-")
        self._tasks: dict[str, tuple[int, int]] = {}  # job id -> (task id, bar total)
        self._lock = threading.Lock()
        self.failures: list[tuple[Job, str]] = []

    def set_total(self, total: int, already_done: int = 0) -> None:
        """Size the overall bar once the queue is known; ``already_done`` counts kept results."""
        with self._lock:
            self.progress.update(self._overall, total=total)
            self.progress.advance(self._overall, already_done)

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if isinstance(event, JobStarted):
            job = event.job
            total = job.settings.runs or 100  # a --min-seconds job shows percent of time
            task = self.progress.add_task(
                f"{job.model.name} on {job.device_id}", total=total, phase="load", median="-"
            )
            self._tasks[job.id] = (task, total)
        elif isinstance(event, JobProgress):
            if event.job_id in self._tasks:
                task, total = self._tasks[event.job_id]
                self.progress.update(
                    task,
                    completed=event.fraction * total,
                    phase=event.phase,
                    median=format_us(event.median_us),
                )
        elif isinstance(event, JobFinished):
            job = event.job
            self._end(
                job,
                "done",
                "green",
                f"{job.model.name} on {job.device_id}: "
                f"median {format_us(event.result.stats.median)}{_accuracy_text(event.result)}",
            )
        elif isinstance(event, JobFailed):
            self.failures.append((event.job, event.error))
            self._end(
                event.job,
                "failed",
                "red",
                f"{event.job.model.path} on {event.job.device_id}: {event.error}",
            )
        elif isinstance(event, JobCancelled):
            self._end(event.job, "cancelled", "yellow", event.job.model.name)
        elif isinstance(event, LogLine):
            self.console.print(Text(event.text))

    def _end(self, job: Job, state: str, colour: str, detail: str) -> None:
        task = self._tasks.pop(job.id, None)
        if task is not None:
            self.progress.remove_task(task[0])
        self.progress.advance(self._overall)
        self.console.print(Text.assemble((state, colour), " ", detail))


def numeric_order(columns: set[str]) -> list[str]:
    """The statistics columns of the summary, in reading order."""
    return [c for c in ("median", "±95%", "normalised", "p90", "cv", "runs") if c in columns]


def _half_width(result: Result | None) -> str:
    """The precision gate's 95% interval as +-%, marked when it did not converge."""
    if result is None or result.ci_half_width_pct is None:
        return "-"
    mark = "" if result.converged is not False else " !"
    return f"±{result.ci_half_width_pct:.1f}%{mark}"


def summary_table(rows: Sequence[tuple[Job, Result | None]]) -> Table:
    """One line per job: where it ran, its state and its main statistics."""
    table = Table(title="devlab results", title_justify="left")
    numeric = {"median", "±95%", "normalised", "p90", "cv", "runs"}
    for column in ("model", "device", "runtime", "status", *numeric_order(numeric)):
        table.add_column(
            column, justify="right" if column in numeric else "left", no_wrap=column in numeric
        )
    style = {JobState.DONE: "green", JobState.FAILED: "red", JobState.CANCELLED: "yellow"}
    for job, result in rows:
        stats = result.stats if result else None
        table.add_row(
            job.model.name,
            job.device_id,
            job.runtime,
            f"[{style.get(job.state, 'white')}]{job.state.value}[/]",
            format_us(stats.median if stats else None),
            _half_width(result),
            format_us(result.normalised_median_us if result else None),
            format_us(stats.p90 if stats else None),
            f"{stats.cv:.1%}" if stats and stats.cv is not None else "-",
            str(stats.count) if stats else "-",
        )
    return table


def _accuracy_text(result: Result) -> str:
    """``, top-1 97.2% on digits-test`` where the job evaluated a set (``--accuracy``)."""
    scores = result.accuracy or {}
    if scores.get("top1") is not None:
        return f", top-1 {100 * scores['top1']:.1f}% on {scores.get('set_name')}"
    if scores.get("output_mae") is not None:
        return f", output MAE {scores['output_mae']:.3g} on {scores.get('set_name')}"
    return ""
