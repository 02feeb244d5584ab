"""Queue: every job with its state, priority and progress; the selected job is acted on."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from backends.core.records import Job, JobState
from console.charts import bar, format_us
from console.tui.state import Changes, LabState, LiveJob
from console.tui.views.table import cursor_key, upsert_row

COLUMNS = (
    "job",
    "model",
    "device",
    "runtime",
    "state",
    "prio",
    "progress",
    "median",
    "tries",
    "error",
)
STATE_STYLE = {
    JobState.QUEUED: "",
    JobState.RUNNING: "bold yellow",
    JobState.DONE: "green",
    JobState.FAILED: "bold red",
    JobState.CANCELLED: "dim",
}


def progress_cell(job: Job, live: LiveJob | None) -> str:
    if job.state is JobState.DONE:
        return bar(1, 1, 10) + " 100%"
    if live is None or job.state is not JobState.RUNNING:
        return ""
    return f"{bar(live.fraction, 1, 10):<10} {live.fraction:4.0%} {live.phase}"


def short_error(job: Job, error: str) -> str:
    """The first line of an error, without the model path every intake error starts with."""
    line = error.splitlines()[0] if error else ""
    return line.removeprefix(f"{job.model.path}: ")


def job_cells(job: Job, state: LabState) -> list[str | Text]:
    live = state.live.get(job.id)
    stats = state.stats.get(job.id)
    median = stats.median if stats else (live.median_us if live else None)
    error = short_error(job, state.errors.get(job.id) or job.error or "")
    return [
        job.id,
        job.model.name,
        job.device_id,
        job.runtime,
        Text(job.state.value, style=STATE_STYLE.get(job.state, "")),
        str(job.priority),
        progress_cell(job, live),
        format_us(median) if median is not None else "",
        str(job.attempts),
        Text(error, style="red"),
    ]


class QueueView(Vertical):
    """The queue, newest last; the cursor row is the job that keys act on."""

    def __init__(self, state: LabState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state

    def compose(self) -> ComposeResult:
        yield DataTable(id="queue-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)

    @property
    def selected_job(self) -> Job | None:
        key = cursor_key(self.query_one(DataTable))
        return self.state.jobs.get(key) if key else None

    def update_from(self, changes: Changes | None) -> None:
        table = self.query_one(DataTable)
        wanted = None
        if changes is not None:  # changed jobs, and running ones whose progress moved
            wanted = changes.jobs | (set(self.state.live) if changes.live else set())
        for job_id, job in self.state.jobs.items():  # submission order, so new rows go last
            if wanted is None or job_id in wanted:
                upsert_row(table, job_id, job_cells(job, self.state))
