"""Results: finished jobs, sortable by any column, filtered with ``/``, and a latency plot."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from backends.core.records import Job, JobState, Stats
from console.charts import format_us, latency_bars
from console.tui.state import Changes, LabState
from console.tui.views.queue import short_error
from console.tui.views.table import remove_rows, upsert_row

COLUMNS = (
    "job",
    "model",
    "device",
    "runtime",
    "status",
    "median",
    "p90",
    "p99",
    "mean",
    "cv",
    "runs",
    "error",
)
NUMERIC = {"median", "p90", "p99", "mean", "cv", "runs"}
FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
STATUS_STYLE = {JobState.DONE: "green", JobState.FAILED: "bold red", JobState.CANCELLED: "dim"}


class Number(Text):
    """A formatted number that sorts by its value (missing values sort last)."""

    def __init__(self, value: float | None, shown: str) -> None:
        super().__init__(shown, justify="right")
        self.value = value

    def sort_key(self) -> tuple[bool, float]:
        return (self.value is None, self.value or 0.0)


def result_cells(job: Job, stats: Stats | None, error: str) -> list[str | Text]:
    def us(attr: str) -> Number:
        value = getattr(stats, attr) if stats else None
        return Number(value, format_us(value))

    return [
        job.id,
        job.model.name,
        job.device_id,
        job.runtime,
        Text(job.state.value, style=STATUS_STYLE.get(job.state, "")),
        us("median"),
        us("p90"),
        us("p99"),
        us("mean"),
        Number(
            stats.cv if stats else None,
            f"{stats.cv:.1%}" if stats and stats.cv is not None else "-",
        ),
        Number(stats.count if stats else None, str(stats.count) if stats else "-"),
        short_error(job, error),
    ]


def matches(job: Job, error: str, needle: str) -> bool:
    haystack = " ".join(
        (job.id, job.model.name, job.device_id, job.runtime, job.state.value, error)
    ).lower()
    return all(word in haystack for word in needle.lower().split())


class ResultsView(Vertical):
    def __init__(self, state: LabState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state
        self.filter_text = ""
        self._sort: tuple[str, bool] | None = None

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter: words to match (model, device, status...)", id="results-filter"
        )
        yield DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="results-plot")

    def on_mount(self) -> None:
        self.query_one("#results-filter").display = False
        table = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)

    def open_filter(self) -> None:
        field = self.query_one("#results-filter", Input)
        field.display = True
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "results-filter":
            self.filter_text = event.value
            self.update_from(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "results-filter":
            self.query_one(DataTable).focus()
            if not event.value:
                event.input.display = False

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = event.column_key.value or ""
        reverse = self._sort == (column, False)
        self._sort = (column, reverse)
        self._apply_sort()

    def _apply_sort(self) -> None:
        if self._sort is None:
            return
        column, reverse = self._sort
        if column in NUMERIC:
            self.query_one(DataTable).sort(
                column, key=lambda cell: cell.sort_key(), reverse=reverse
            )
        else:
            self.query_one(DataTable).sort(
                column, key=lambda cell: str(cell).lower(), reverse=reverse
            )

    def update_from(self, changes: Changes | None) -> None:
        if changes is not None and not changes.finished_jobs:
            return
        table = self.query_one(DataTable)
        shown = []
        for job_id, job in self.state.jobs.items():
            error = self.state.errors.get(job_id) or job.error or ""
            if job.state in FINISHED and matches(job, error, self.filter_text):
                shown.append(job_id)
                if changes is None or job_id in changes.finished_jobs or job_id not in table.rows:
                    upsert_row(
                        table, job_id, result_cells(job, self.state.stats.get(job_id), error)
                    )
        keep = set(shown)
        remove_rows(table, [key.value for key in list(table.rows) if key.value not in keep])
        self._apply_sort()
        self._plot(shown)

    def _plot(self, job_ids: list[str]) -> None:
        rows = []
        for job_id in job_ids:
            stats = self.state.stats.get(job_id)
            if stats is not None:
                job = self.state.jobs[job_id]
                centre = stats.median if stats.median is not None else stats.mean
                rows.append((f"{job.model.name} @ {job.device_id}", centre, stats.p90))
        self.query_one("#results-plot", Static).update(
            latency_bars(rows, title="median latency (bar) and p90 (line) per model and device")
        )

    @property
    def has_results(self) -> bool:
        return bool(self.state.stats)
