"""The devlab console: a Textual app over the same Lab as the headless mode.

The app holds no benchmarking logic. Lab threads push events into an inbox; a 10 Hz timer
applies each batch to ``LabState`` and updates only the visible views (hidden views catch up
when shown). Every Lab call that may block (on a cluster each is a network round trip: the
first read of the jobs, discovery, intake, export, cancel, retry, priority, pause) runs in a
named thread worker and reports back with typed messages or Lab events; a failure becomes an
``OperationFailed`` notification. Only ``devices``, ``paused`` and ``has_power_monitor`` are
read on the UI thread (the LabApi answers them from what it knows).

Power monitors are opened when the console opens (``open_monitors``) and stream to the Power
view with no job; the lab's owner closes them with the lab.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from backends.core.events import Event
from backends.core.extras import MissingExtra
from backends.core.lab_api import LabApi
from backends.core.options import build_settings
from backends.core.plan import queue_paths
from backends.core.records import Job, JobSettings, JobState, MonitorState
from backends.results.tables import write_all
from console.tui.dialogs import AddModelsScreen, AddRequest, ExportRequest, ExportScreen, HelpScreen
from console.tui.messages import (
    DevicesChanged,
    DispatchChanged,
    ExportFinished,
    JobStateChanged,
    LabLoaded,
    ModelsQueued,
    OperationFailed,
    PriorityApplied,
    RecordingChanged,
)
from console.tui.state import Changes, EventInbox, LabState
from console.tui.views import DevicesView, LiveView, PowerView, QueueView, ResultsView

VIEWS = ("devices", "queue", "live", "power", "results")
UI_TICK_S = 0.1
View = DevicesView | QueueView | LiveView | PowerView | ResultsView

# What the operator is told when a background Lab call fails, by worker group.
FAILURE_HINTS = {
    "load": "the lab's jobs could not be read; jobs show as they change",
    "discovery": "device discovery failed; devices already shown stay usable",
    "intake": "the models were not queued; check the path and options",
    "export": "nothing was exported; check that the folder is writable",
    "cancel": "the job was not cancelled",
    "retry": "the job was not queued again",
    "priority": "the job's priority did not change",
    "dispatch": "dispatch was not paused or resumed",
    "monitors": "the power monitors were not opened",
    "recording": "the power recording did not start or stop",
}
POWER_ACTIONS = {"record_power", "reopen_monitors", "power_window"}


class DevLabApp(App[None]):
    """``DevLabApp(lab)``: any LabApi (in process or a cluster); tests hand it a Lab with fixed or
    virtual devices."""

    CSS_PATH = "devlab.tcss"
    TITLE = "devlab"
    SUB_TITLE = "device lab console"

    BINDINGS = [
        Binding("1", "show('devices')", "Devices", id="view.devices", show=False),
        Binding("2", "show('queue')", "Queue", id="view.queue", show=False),
        Binding("3", "show('live')", "Live", id="view.live", show=False),
        Binding("4", "show('power')", "Power", id="view.power", show=False),
        Binding("5", "show('results')", "Results", id="view.results", show=False),
        Binding("a", "add_models", "Add", id="queue.add"),
        Binding("space", "toggle_pause", "Pause", id="queue.pause"),
        Binding("c", "cancel_job", "Cancel", id="queue.cancel"),
        Binding("plus", "priority(-1)", "Prio up", id="queue.priority_up"),
        Binding("minus", "priority(1)", "Prio down", id="queue.priority_down"),
        Binding("t", "retry_job", "Retry", id="queue.retry"),
        Binding("e", "export", "Export", id="results.export"),
        Binding("slash", "filter", "Filter", id="results.filter"),
        Binding("r", "record_power", "Record power", id="power.record", show=False),
        Binding("o", "reopen_monitors", "Reopen monitors", id="power.reopen", show=False),
        Binding(
            "left_square_bracket",
            "power_window(-1)",
            "Shorter window",
            id="power.window_down",
            show=False,
        ),
        Binding(
            "right_square_bracket",
            "power_window(1)",
            "Longer window",
            id="power.window_up",
            show=False,
        ),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    def __init__(
        self,
        lab: LabApi,
        *,
        defaults: JobSettings | None = None,
        start_dispatch: bool = True,
        poll_devices_s: float | None = 2.0,
        export_folder: Path | None = None,
        keymap: dict[str, str] | None = None,
        open_monitors: bool = True,
    ) -> None:
        super().__init__()
        self.lab = lab
        self.open_power_monitors = open_monitors
        self.defaults = defaults or JobSettings()
        self.start_dispatch = start_dispatch
        self.poll_devices_s = poll_devices_s
        self.export_folder = export_folder or Path("export")
        self.state = LabState()
        self.inbox = EventInbox()
        self._unsubscribe = None
        self._stale: set[str] = set()
        self.bindings_keymap = keymap or {}
        self._announced: dict[str, JobState] = {}  # the last state posted per job
        self._status_text = ""
        self._loaded = False  # events wait in the inbox until the first snapshot is in
        # What the operator asked for and the lab has not confirmed yet: a second key press
        # builds on the first, and one call at a time goes out, so the last wish is the one set.
        self._priority_wishes: dict[str, int] = {}
        self._pause_wish: bool | None = None
        self._priority_calls = threading.Lock()
        self._dispatch_calls = threading.Lock()

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        # the console opens on the lab itself: its devices (the status line counts the jobs)
        with TabbedContent(initial="devices", id="views"):
            with TabPane("Devices [1]", id="devices"):
                yield DevicesView(self.state, id="devices-view")
            with TabPane("Queue [2]", id="queue"):
                yield QueueView(self.state, id="queue-view")
            with TabPane("Live [3]", id="live"):
                yield LiveView(self.state, id="live-view")
            with TabPane("Power [4]", id="power"):
                yield PowerView(self.state, id="power-view")
            with TabPane("Results [5]", id="results"):
                yield ResultsView(self.state, id="results-view")
        yield Static(id="status-line")
        yield Footer()

    def on_mount(self) -> None:
        if self.bindings_keymap:
            self.set_keymap(self.bindings_keymap)
        self._unsubscribe = self.lab.subscribe(self.inbox)  # before the snapshot: no gaps
        for view in VIEWS:
            self._view(view).update_from(None)
        self._update_status()
        self.load_lab()
        if self.poll_devices_s:
            self.discover_devices()
            self.set_interval(self.poll_devices_s, self.discover_devices)
        self.set_interval(UI_TICK_S, self.pump_events)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _view(self, name: str) -> View:
        return cast(View, self.query_one(f"#{name}-view"))

    @property
    def active_view(self) -> str:
        return self.query_one(TabbedContent).active or "devices"

    # -- events from the Lab ---------------------------------------------------------------

    def pump_events(self) -> None:
        """Apply everything the Lab said since the last tick, then redraw what changed."""
        if not self.is_running or not self._loaded:  # shutting down, or no snapshot yet
            return
        events = self.inbox.drain()
        if not events:
            return
        changes = self.state.apply(events)
        if not changes:
            return
        with self.batch_update():
            self._render_changes(changes)
        self._announce_transitions(events)
        if changes.devices or changes.removed_devices:
            self.post_message(DevicesChanged(list(self.state.devices.values())))

    def _announce_transitions(self, events: list[Event]) -> None:
        """Post every state each job entered, in order, even several within one batch."""
        for event in events:
            job = getattr(event, "job", None)
            if job is None or self._announced.get(job.id) is job.state:
                continue
            self._announced[job.id] = job.state
            error = getattr(event, "error", None)
            self.post_message(JobStateChanged(job, error))
            if job.state is JobState.FAILED:
                self.notify(
                    f"{job.model.path} on {job.device_id}: {error or job.error or 'failed'}",
                    title="job failed",
                    severity="error",
                    timeout=8,
                    markup=False,
                )

    def _render_changes(self, changes: Changes) -> None:
        active = self.active_view
        for view in VIEWS:
            if view == active:
                self._view(view).update_from(changes)
            else:
                self._stale.add(view)  # hidden views do not render; they catch up when shown
        self._update_status()
        if changes.jobs:  # what check_action depends on; the footer is costly to rebuild
            self.refresh_bindings()

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        view = event.pane.id or ""
        if view in self._stale:
            self._stale.discard(view)
            self._view(view).update_from(None)
        self.refresh_bindings()

    @on(DataTable.RowHighlighted)
    def _selection_moved(self) -> None:
        if self.is_running and self.screen_stack:  # not while the app is tearing down
            self.refresh_bindings()  # cancel/retry/priority apply to the selected job

    def _update_status(self) -> None:
        counts = self.state.counts()
        parts = [
            f"{len(self.state.devices)} device(s)",
            f"{counts[JobState.QUEUED]} queued",
            f"{counts[JobState.RUNNING]} running",
            f"{counts[JobState.DONE]} done",
            f"{counts[JobState.FAILED]} failed",
        ]
        if self.lab.paused:
            parts.append("dispatch PAUSED (space resumes)")
        text = "  ·  ".join(parts)
        status = self.query_one("#status-line", Static)
        if text != self._status_text:
            self._status_text = text
            status.update(text, layout=False)
        status.set_class(self.lab.paused, "-paused")

    # -- background work -------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_lab(self) -> None:
        """The devices and jobs the lab holds now, then its dispatch starts."""
        try:
            self.post_message(LabLoaded(self.lab.devices, self.lab.rows(), self.lab.monitors()))
        finally:
            if self.start_dispatch:
                self.lab.start()
            if self.open_power_monitors:
                self.request_open_monitors()

    def on_lab_loaded(self, message: LabLoaded) -> None:
        """Draw the snapshot; what the lab said since the console subscribed waits in the
        inbox and is applied at the next tick, on top of it."""
        self.state.load(message.devices, message.rows, message.monitors)
        self._loaded = True
        for view in VIEWS:
            self._view(view).update_from(None)
        self._stale.clear()
        self._update_status()
        self.refresh_bindings()

    @work(thread=True, group="monitors", exit_on_error=False)
    def request_open_monitors(self) -> None:
        self.lab.open_monitors()  # states arrive as MonitorChanged events, samples after

    @work(thread=True, group="recording", exit_on_error=False)
    def request_recording(self, monitor_id: str, start: bool) -> None:
        if start:
            path = self.lab.start_recording(monitor_id)
        else:
            path = self.lab.stop_recording(monitor_id)
        self.post_message(RecordingChanged(monitor_id, path, start))

    def on_recording_changed(self, message: RecordingChanged) -> None:
        if message.started:
            text = f"recording {message.monitor_id} to {message.path} (r stops)"
        elif message.path is not None:
            text = f"{message.monitor_id}: recording written to {message.path}"
        else:
            text = f"{message.monitor_id}: nothing was recording"
        self.notify(text, title="power", markup=False, timeout=8)

    @work(thread=True, exclusive=True, group="discovery", exit_on_error=False)
    def discover_devices(self) -> None:
        self.lab.discover()  # changes arrive as Lab events

    @work(thread=True, group="intake", exit_on_error=False)
    def queue_models(self, request: AddRequest) -> None:
        settings = build_settings(request.values, self.defaults)
        report = queue_paths(
            self.lab, request.paths, request.device_ids, request.runtime, settings, request.priority
        )
        self.post_message(ModelsQueued(report))

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def export_results(self, request: ExportRequest) -> None:
        devices = {device.id: device for device in self.lab.devices}
        paths = write_all(request.folder, self.lab.rows(), devices, formats=request.formats)
        self.post_message(ExportFinished(paths))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """One place where background errors become a clear message, never a crash."""
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            what = event.worker.group or event.worker.name
            # a missing extra's message is the whole story (the pip install line)
            detail = str(error) if isinstance(error, MissingExtra) else None
            self.post_message(OperationFailed(what, detail or f"{type(error).__name__}: {error}"))

    def on_operation_failed(self, message: OperationFailed) -> None:
        if message.what == "load":
            self._loaded = True  # no snapshot: show jobs as their events come
        self.notify(
            f"{FAILURE_HINTS.get(message.what, message.what)}: {message.error}",
            title="error",
            severity="error",
            timeout=10,
            markup=False,
        )

    def on_models_queued(self, message: ModelsQueued) -> None:
        report = message.report
        text = f"{len(report.queued)} job(s) queued"
        if report.kept:
            text += f", {len(report.kept)} already measured (kept)"
        self.notify(text, title="queue")
        for job in report.failed:
            self.notify(
                f"{job.model.path}: {job.error}",
                title="not queued",
                severity="error",
                timeout=10,
                markup=False,
            )

    def on_export_finished(self, message: ExportFinished) -> None:
        folder = message.paths[0].parent if message.paths else self.export_folder
        self.notify(
            f"{len(message.paths)} file(s) written to {folder}", title="export", markup=False
        )

    # -- actions ---------------------------------------------------------------------------

    def action_show(self, view: str) -> None:
        self.query_one(TabbedContent).active = view
        tables = self._view(view).query(DataTable)
        if tables:
            tables.first().focus()

    def action_add_models(self) -> None:
        power = [d.id for d in self.lab.devices if self.lab.has_power_monitor(d.id)]
        screen = AddModelsScreen(self.lab.devices, self.defaults, power)
        self.push_screen(screen, self._added)

    def _added(self, request: AddRequest | None) -> None:
        if request is not None:
            self.queue_models(request)

    def action_toggle_pause(self) -> None:
        paused = self.lab.paused if self._pause_wish is None else self._pause_wish
        self._pause_wish = not paused
        self.request_dispatch()

    @work(thread=True, group="dispatch", exit_on_error=False)
    def request_dispatch(self) -> None:
        """Pause or resume as the operator last asked."""
        with self._dispatch_calls:
            paused = self._pause_wish
            if paused is None:  # an earlier call already did what was asked last
                return
            done = False
            try:
                if paused:
                    self.lab.pause()
                else:
                    self.lab.resume()
                done = True
            finally:
                self.post_message(DispatchChanged(paused, done))

    def on_dispatch_changed(self, message: DispatchChanged) -> None:
        if self._pause_wish == message.paused:
            self._pause_wish = None
        if message.done:
            if message.paused:
                text = "dispatch paused: running jobs finish, no new job starts"
            else:
                text = "dispatch resumed"
            self.notify(text, title="queue")
        self._update_status()
        self.refresh_bindings()

    def _selected_job(self) -> Job | None:
        if self.active_view != "queue":
            return None
        return self.query_one(QueueView).selected_job

    def action_cancel_job(self) -> None:
        job = self._selected_job()
        if job is not None:
            self.request_cancel(job.id)

    @work(thread=True, group="cancel", exit_on_error=False)
    def request_cancel(self, job_id: str) -> None:
        self.lab.cancel(job_id)  # the outcome arrives as a Lab event (JobCancelled)

    def action_retry_job(self) -> None:
        job = self._selected_job()
        if job is not None:
            self.request_retry(job.id)

    @work(thread=True, group="retry", exit_on_error=False)
    def request_retry(self, job_id: str) -> None:
        self.lab.retry(job_id)  # the outcome arrives as a Lab event (JobQueued)

    def action_priority(self, delta: int) -> None:
        job = self._selected_job()
        if job is not None:
            wished = self._priority_wishes.get(job.id, job.priority)
            self._priority_wishes[job.id] = wished + delta
            self.request_priority(job.id)

    @work(thread=True, group="priority", exit_on_error=False)
    def request_priority(self, job_id: str) -> None:
        """Give the job the priority the operator last asked for."""
        with self._priority_calls:
            priority = self._priority_wishes.get(job_id)
            if priority is None:  # an earlier call already set what was asked last
                return
            job = None
            try:
                job = self.lab.set_priority(job_id, priority)
            finally:
                self.post_message(PriorityApplied(job_id, priority, job))

    def on_priority_applied(self, message: PriorityApplied) -> None:
        if self._priority_wishes.get(message.job_id) == message.priority:
            del self._priority_wishes[message.job_id]
        if message.job is not None:  # shown now; the Lab's JobPriorityChanged may come later
            changes = Changes()
            self.state.set_priority(message.job_id, message.job.priority, changes)
            with self.batch_update():
                self._render_changes(changes)

    def action_export(self) -> None:
        self.push_screen(ExportScreen(self.export_folder), self._export_chosen)

    def _export_chosen(self, request: ExportRequest | None) -> None:
        if request is not None:
            self.export_results(request)

    def action_record_power(self) -> None:
        """Start recording the focused (else the first) monitor, or stop its recording."""
        monitor_id = self.query_one(PowerView).chosen_monitor()
        if monitor_id is None:
            self.notify("no power monitor to record", title="power", severity="warning")
            return
        monitor = self.state.monitors.get(monitor_id)
        recording = monitor is not None and monitor.state is MonitorState.RECORDING
        self.request_recording(monitor_id, not recording)

    def action_reopen_monitors(self) -> None:
        self.notify("opening the power monitors that are not streaming", title="power")
        self.request_open_monitors()

    def action_power_window(self, step: int) -> None:
        window = self.query_one(PowerView).cycle_window(step)
        self.notify(f"min, mean, max and the plot over the last {window:.0f} s", title="power")

    def action_filter(self) -> None:
        self.query_one(TabbedContent).active = "results"
        self.query_one(ResultsView).open_filter()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.binding_rows()))

    def binding_rows(self) -> list[tuple[str, str, str]]:
        """Every binding of the app and its views, for the help screen."""
        keymap = self.bindings_keymap
        rows = []
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            key = keymap.get(binding.id or "", binding.key)
            where = (binding.id or "app").split(".")[0]
            rows.append(
                (self.get_key_display(Binding(key, binding.action)), binding.description, where)
            )
        rows.append(("ctrl+p", "command palette", "app"))
        rows.append(("click header", "sort the results by that column", "results"))
        return rows

    # -- what applies now ------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out actions that do not apply to the current view or selection."""
        if action in {"cancel_job", "retry_job", "priority"}:
            job = self._selected_job() if self.is_mounted else None
            if job is None:
                return None
            if action == "cancel_job":
                return job.state in (JobState.QUEUED, JobState.RUNNING) or None
            if action == "retry_job":
                return job.state in (JobState.FAILED, JobState.CANCELLED) or None
            return job.state is JobState.QUEUED or None
        if action == "export":
            return bool(self.state.jobs) or None
        if action in POWER_ACTIONS:  # keys of the Power view only
            return self.is_mounted and self.active_view == "power"
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette offers each action only when it applies."""
        yield from super().get_system_commands(screen)
        for view in VIEWS:
            yield SystemCommand(
                f"Show {view}",
                f"Switch to the {view} view",
                lambda view=view: self.action_show(view),
            )
        yield SystemCommand("Add models", "Queue ONNX models on devices", self.action_add_models)
        if self.lab.paused:
            yield SystemCommand(
                "Resume dispatch", "Start queued jobs again", self.action_toggle_pause
            )
        else:
            yield SystemCommand(
                "Pause dispatch",
                "Let running jobs finish, start no new one",
                self.action_toggle_pause,
            )
        if self.check_action("cancel_job", ()):
            yield SystemCommand("Cancel job", "Cancel the selected job", self.action_cancel_job)
        if self.check_action("retry_job", ()):
            yield SystemCommand("Retry job", "Queue the selected job again", self.action_retry_job)
        if self.check_action("priority", ()):
            yield SystemCommand(
                "Raise priority", "Run the selected job sooner", lambda: self.action_priority(-1)
            )
            yield SystemCommand(
                "Lower priority", "Run the selected job later", lambda: self.action_priority(1)
            )
        if self.check_action("export", ()):
            yield SystemCommand(
                "Export results", "Write CSV, JSON or Parquet tables", self.action_export
            )
        yield SystemCommand("Filter results", "Show only matching results", self.action_filter)
        yield SystemCommand("Help", "List every key binding", self.action_help)
