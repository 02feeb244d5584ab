"""Live: each running job's progress, live median and p90, latency plot and log tail."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, ProgressBar, Sparkline, Static

from backends.core.records import Job
from console.charts import format_us
from console.tui.state import Changes, LabState, LiveJob


def live_numbers(job: Job, live: LiveJob) -> Text:
    total = live.total if live.total is not None else "?"
    if job.settings.min_seconds and live.total is None:
        total = f"{job.settings.min_seconds:g} s"
    return Text.assemble(
        ("phase ", "dim"),
        live.phase or "-",
        ("   iterations ", "dim"),
        f"{live.done}/{total}",
        ("   median ", "dim"),
        format_us(live.median_us),
        ("   p90 ", "dim"),
        format_us(live.p90_us),
    )


class JobPanel(Vertical):
    """One running job."""

    def __init__(self, job: Job, **kwargs: object) -> None:
        super().__init__(classes="job-panel", **kwargs)  # type: ignore[arg-type]
        self.job = job
        self._log_lines: list[str] = []

    def compose(self) -> ComposeResult:
        job = self.job
        yield Label(
            Text(f"{job.model.name} on {job.device_id} ({job.runtime})  [{job.id}]"),
            classes="panel-title",
        )
        yield ProgressBar(total=100, show_eta=False, classes="job-progress")
        yield Static(classes="job-numbers")
        yield Sparkline([], classes="job-latency")
        yield Static(classes="job-log")

    def show(self, live: LiveJob, log_lines: list[str]) -> None:
        if not self.query(ProgressBar):  # mounted but not composed yet: the next tick draws
            return
        self.query_one(ProgressBar).update(progress=live.fraction * 100)
        self.query_one(".job-numbers", Static).update(live_numbers(self.job, live), layout=False)
        self.query_one(Sparkline).data = list(live.latencies)
        if log_lines != self._log_lines:  # the log changes far less often than the numbers
            self._log_lines = log_lines
            self.query_one(".job-log", Static).update(Text("\n".join(log_lines), style="dim"))


class LiveView(VerticalScroll):
    """Panels appear when jobs start and go when they end."""

    def __init__(self, state: LabState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state

    def compose(self) -> ComposeResult:
        yield Static("no job is running", id="live-empty", classes="placeholder")

    def update_from(self, changes: Changes | None) -> None:
        if changes is not None and not (changes.live or changes.logs):
            return
        running = {job.id: job for job in self.state.running()}
        panels = {panel.job.id: panel for panel in self.query(JobPanel)}
        for job_id, panel in panels.items():
            if job_id not in running:
                panel.remove()
        for job_id, job in running.items():
            if job_id not in panels:
                panels[job_id] = JobPanel(job, id=f"live-{job_id}")
                self.mount(panels[job_id])
        self.query_one("#live-empty").display = not running
        for job_id in running:
            live = self.state.live.get(job_id) or LiveJob()
            panel = panels[job_id]
            if panel.is_mounted:
                panel.show(live, self.state.log_tail(job_id, 5))
            else:
                panel.call_after_refresh(panel.show, live, self.state.log_tail(job_id, 5))
