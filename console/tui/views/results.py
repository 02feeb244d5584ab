"""Results: finished jobs, sortable by any column, filtered with ``/``, and a latency plot; ``w``
turns it to the "fast but wrong" table (each quantized run beside its float model)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from backends.core.records import Job, JobState, Result, Stats
from backends.results.fast_wrong import DEFAULT_MAX_DROP_POINTS, FastWrongRow, fast_wrong_rows
from backends.results.tables import results_records
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
    "top-1",
    "energy/inf",
    "error",
)
NUMERIC = {"median", "p90", "p99", "mean", "cv", "runs", "top-1", "energy/inf"}
FAST_WRONG_COLUMNS = (
    "model",
    "device",
    "scheme",
    "fp32",
    "int",
    "speed-up",
    "top-1 fp32",
    "top-1 int",
    "drop",
    "flag",
)
FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
STATUS_STYLE = {JobState.DONE: "green", JobState.FAILED: "bold red", JobState.CANCELLED: "dim"}


class Number(Text):
    """A formatted number that sorts by its value (missing values sort last)."""

    def __init__(self, value: float | None, shown: str) -> None:
        super().__init__(shown, justify="right")
        self.value = value

    def sort_key(self) -> tuple[bool, float]:
        return (self.value is None, self.value or 0.0)


def result_cells(
    job: Job, stats: Stats | None, error: str, result: Result | None = None
) -> list[str | Text]:
    """One row: latency, then what the job scored (--accuracy) and spent (--power)."""

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
        accuracy_cell(result),
        energy_cell(result),
        short_error(job, error),
    ]


def accuracy_cell(result: Result | None) -> Number:
    """Top-1 in percent, or the output error where the set scores outputs."""
    scores = (result.accuracy or {}) if result is not None else {}
    top1, mae = scores.get("top1"), scores.get("output_mae")
    if top1 is not None:
        return Number(float(top1), f"{float(top1) * 100:.2f}%")
    if mae is not None:
        return Number(None, f"mae {float(mae):.3g}")
    return Number(None, "-")


def energy_cell(result: Result | None) -> Number:
    """Energy per inference in mJ, where power was captured."""
    energy = ((result.power or {}) if result is not None else {}).get("energy_per_inference_mj")
    if energy is None:
        return Number(None, "-")
    return Number(float(energy), f"{float(energy):.3f} mJ")


def fast_wrong_cells(row: FastWrongRow) -> list[str | Text]:
    def pct(value: float | None) -> Number:
        return Number(value, f"{value * 100:.2f}%" if value is not None else "-")

    flag = (
        Text("FAST BUT WRONG", style="bold red")
        if row.flagged
        else Text(row.note or "ok", style="dim" if row.note else "green")
    )
    return [
        row.model,
        row.device,
        f"{row.scheme} ({row.fp32_runtime} / {row.quant_runtime})",
        Number(row.fp32_us, format_us(row.fp32_us)),
        Number(row.quant_us, format_us(row.quant_us)),
        Number(row.speedup, f"{row.speedup:.2f}x" if row.speedup else "-"),
        pct(row.fp32_top1),
        pct(row.quant_top1),
        Number(
            row.drop_points, f"{row.drop_points:+.2f} pt" if row.drop_points is not None else "-"
        ),
        flag,
    ]


def matches(job: Job, error: str, needle: str) -> bool:
    haystack = " ".join(
        (job.id, job.model.name, job.device_id, job.runtime, job.state.value, error)
    ).lower()
    return all(word in haystack for word in needle.lower().split())


class ResultsView(Vertical):
    BINDINGS = [
        Binding("w", "toggle_fast_wrong", "Fast but wrong", id="results.fast_wrong"),
    ]

    def __init__(self, state: LabState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state
        self.filter_text = ""
        self._sort: tuple[str, bool] | None = None
        self.showing_fast_wrong = False
        self.max_drop_points = DEFAULT_MAX_DROP_POINTS

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter: words to match (model, device, status...)", id="results-filter"
        )
        yield DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="results-plot")
        yield Static(id="fast-wrong-title")
        yield DataTable(id="fast-wrong-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#results-filter").display = False
        table = self.query_one("#results-table", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        fast_wrong = self.query_one("#fast-wrong-table", DataTable)
        for column in FAST_WRONG_COLUMNS:
            fast_wrong.add_column(column, key=column)
        self._show_fast_wrong(False, focus=False)  # focus would switch the app to this tab

    def action_toggle_fast_wrong(self) -> None:
        self._show_fast_wrong(not self.showing_fast_wrong)

    def _show_fast_wrong(self, on: bool, focus: bool = True) -> None:
        """One table at a time: the results (with their plot) or the fast-but-wrong pairs."""
        self.showing_fast_wrong = on
        for widget_id in ("#results-table", "#results-plot"):
            self.query_one(widget_id).display = not on
        for widget_id in ("#fast-wrong-title", "#fast-wrong-table"):
            self.query_one(widget_id).display = on
        if on:
            self._fill_fast_wrong()
        if focus:
            self.query_one("#fast-wrong-table" if on else "#results-table").focus()

    def _fill_fast_wrong(self) -> None:
        """Keyed rows (model, device, quantized runtime), rebuilt from the finished results."""
        rows = [(job, self.state.results.get(job_id)) for job_id, job in self.state.jobs.items()]
        table = fast_wrong_rows(results_records(rows, self.state.devices), self.max_drop_points)
        widget = self.query_one("#fast-wrong-table", DataTable)
        keys = []
        for row in table:
            key = f"{row.model}|{row.device}|{row.quant_runtime}"
            keys.append(key)
            upsert_row(widget, key, fast_wrong_cells(row))
        remove_rows(widget, [k.value for k in list(widget.rows) if k.value not in set(keys)])
        flagged = sum(row.flagged for row in table)
        title = (
            f"fast but wrong: {len(table)} quantized run(s) beside their float model, "
            f"{flagged} losing more than {self.max_drop_points:g} points of top-1 (w: back)"
            if table
            else "fast but wrong: no quantized run beside its float model yet (a model "
            "from devlab quantize, or snpe-dsp, next to the float one on the same device; "
            "w: back)"
        )
        self.query_one("#fast-wrong-title", Static).update(Text(title))

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
            self.query_one("#results-table", DataTable).focus()
            if not event.value:
                event.input.display = False

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table.id != "results-table":
            event.data_table.sort(event.column_key, key=_sort_key)
            return
        column = event.column_key.value or ""
        reverse = self._sort == (column, False)
        self._sort = (column, reverse)
        self._apply_sort()

    def _apply_sort(self) -> None:
        if self._sort is None:
            return
        column, reverse = self._sort
        table = self.query_one("#results-table", DataTable)
        if column in NUMERIC:
            table.sort(column, key=lambda cell: cell.sort_key(), reverse=reverse)
        else:
            table.sort(column, key=lambda cell: str(cell).lower(), reverse=reverse)

    def update_from(self, changes: Changes | None) -> None:
        if changes is not None and not changes.finished_jobs:
            return
        table = self.query_one("#results-table", DataTable)
        shown = []
        for job_id, job in self.state.jobs.items():
            error = self.state.errors.get(job_id) or job.error or ""
            if job.state in FINISHED and matches(job, error, self.filter_text):
                shown.append(job_id)
                if changes is None or job_id in changes.finished_jobs or job_id not in table.rows:
                    cells = result_cells(
                        job, self.state.stats.get(job_id), error, self.state.results.get(job_id)
                    )
                    upsert_row(table, job_id, cells)
        keep = set(shown)
        remove_rows(table, [key.value for key in list(table.rows) if key.value not in keep])
        self._apply_sort()
        self._plot(shown)
        if self.showing_fast_wrong:
            self._fill_fast_wrong()

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


def _sort_key(cell: object) -> tuple[bool, float] | str:
    return cell.sort_key() if isinstance(cell, Number) else str(cell).lower()
