"""The Textual console driven like an operator would: keys, dialogs, clicks.

Every test runs the real ``DevLabApp`` over a real ``Lab`` on a real SQLite store in
``tmp_path``; the happy path measures copies of ``assets/models`` with ONNX Runtime through the
real ``HostBackend``. Only the far end of a few devices is a test double (hot-plug, a device
that drops out mid-run), from ``support.fakes``. Assertions are on the typed messages the app posts
(captured with ``message_hook``), on the Lab's store and on the widgets. Nothing is timed:
conditions are polled with ``pilot.pause`` in a bounded loop and asserted afterwards.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from rich.console import Console
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Input,
    Label,
    ProgressBar,
    Select,
    SelectionList,
    Sparkline,
    Static,
)

from backends.core.events import PowerSamples
from backends.core.lab import Lab
from backends.core.records import Device, Job, JobSettings, JobState
from backends.core.store import Store
from backends.devices.base import (
    DeviceBackend,
)
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.models.intake import load_model
from console.tui.app import DevLabApp
from console.tui.dialogs import AddModelsScreen, ExportScreen, HelpScreen
from console.tui.messages import (
    DevicesChanged,
    ExportFinished,
    JobStateChanged,
    ModelsQueued,
    OperationFailed,
)
from console.tui.views.live import JobPanel
from console.tui.views.power import MonitorPanel
from console.tui.views.queue import QueueView
from support.fakes import BrokenBackend, PluggableBackend
from support.helpers import make_mlp, read_latency_csv, read_results_csv
from support.waiting import pilot_wait_for

MODELS_DIR = Path(__file__).resolve().parents[3] / "assets" / "models"
SIZE = (140, 40)
WAIT_S = 30.0  # upper bound of every poll; a passing test never waits this long
STEP_S = 0.1
ORDER = {JobState.QUEUED: 0, JobState.RUNNING: 1, JobState.DONE: 2}
FAST = JobSettings(warmup=2, runs=20, rounds=1, precision_pct=0)


# -- fixtures and helpers -------------------------------------------------------------------


LabFactory = Callable[..., Lab]


@pytest.fixture
def make_lab(store: Store, tmp_path: Path) -> Iterator[LabFactory]:
    """Labs on the real store of ``conftest.store``, devices discovered, shut down after."""
    labs: list[Lab] = []

    def factory(*backends: DeviceBackend) -> Lab:
        lab = Lab(store, list(backends) or [HostBackend()], log_dir=tmp_path / "logs")
        labs.append(lab)
        lab.discover()
        return lab

    yield factory
    for lab in labs:
        lab.shutdown(interrupt=True, timeout=10)


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(MODELS_DIR / "mlp.onnx", folder / "mlp.onnx"))


def custom_op_model(path: Path) -> Path:
    """A checker-valid model whose second node is an op of a domain ONNX Runtime lacks."""
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("Frobnicate", ["h"], ["y"], domain="com.devlab.test"),
    ]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.devlab.test", 1)],
        ir_version=9,
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


class Messages:
    """What the app posted, in order (``message_hook`` sees every message at every pump)."""

    def __init__(self) -> None:
        self.all: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.all.append(message)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.all if isinstance(m, kind)]

    def states(self, job_id: str) -> list[JobState]:
        return [m.job.state for m in self.of(JobStateChanged) if m.job.id == job_id]

    def changes(self, job_id: str, state: JobState) -> list[JobStateChanged]:
        return [m for m in self.of(JobStateChanged) if m.job.id == job_id and m.job.state is state]

    def notifications(self, severity: str | None = None) -> list[Any]:
        return [
            m.notification
            for m in self.of(Notify)
            if severity is None or m.notification.severity == severity
        ]


async def wait_for(pilot: Pilot, condition: Callable[[], Any], what: str) -> None:
    """Let the app run until ``condition()`` holds (bounded), then assert it."""
    await pilot_wait_for(pilot, condition, what, WAIT_S)


def rich_text(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def cell(app: DevLabApp, table_id: str, row: str, column: str) -> str:
    return str(app.query_one(table_id, DataTable).get_cell(row, column))


def has_row(app: DevLabApp, table_id: str, row: str) -> bool:
    return row in app.query_one(table_id, DataTable).rows


def status_text(app: DevLabApp) -> str:
    return str(app.query_one("#status-line", Static).content)


async def open_add_dialog(pilot: Pilot, key: str = "a") -> AddModelsScreen:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, AddModelsScreen), "add dialog")
    return pilot.app.screen  # type: ignore[return-value]


async def queue_via_dialog(
    pilot: Pilot,
    path: Path | str,
    messages: Messages,
    *,
    options: dict[str, str] | None = None,
    devices: list[str] | None = None,
) -> Any:
    """Fill the Add dialog, click Queue and return the ``QueueReport`` the app announced."""
    before = len(messages.of(ModelsQueued))
    screen = await open_add_dialog(pilot)
    screen.query_one("#add-path", Input).value = str(path)
    for name, value in (options or {}).items():
        screen.query_one(f"#add-{name}", Input).value = value
    if devices is not None:
        selection = screen.query_one("#add-devices", SelectionList)
        selection.deselect_all()
        for device_id in devices:
            selection.select(device_id)
    await pilot.pause()
    button = screen.query_one("#add-queue", Button)
    button.scroll_visible(animate=False)
    await pilot.pause()
    assert await pilot.click("#add-queue"), "the Queue button was not clicked"
    await wait_for(pilot, lambda: len(messages.of(ModelsQueued)) > before, "a ModelsQueued message")
    assert not isinstance(pilot.app.screen, AddModelsScreen), "the dialog stayed open"
    return messages.of(ModelsQueued)[-1].report


def submit(lab: Lab, path: Path, settings: JobSettings = FAST, priority: int = 0) -> Job:
    """Queue a model without the dialog (for tests about something else)."""
    return lab.submit(load_model(path), HOST_DEVICE_ID, settings=settings, priority=priority)


async def wait_state(pilot: Pilot, messages: Messages, job_id: str, state: JobState) -> None:
    await wait_for(
        pilot, lambda: messages.changes(job_id, state), f"JobStateChanged {state} for {job_id}"
    )


# -- 1. queue a model and see it measured ---------------------------------------------------


@pytest.mark.asyncio
async def test_add_dialog_queues_a_model_that_runs_to_done(make_lab: LabFactory, mlp: Path):
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        assert app.active_view == "devices"
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        report = await queue_via_dialog(pilot, mlp, messages, options={"runs": "20", "warmup": "2"})
        assert [job.model.name for job in report.queued] == ["mlp"]
        assert report.failed == [] and report.kept == []
        job = report.queued[0]
        assert job.device_id == HOST_DEVICE_ID and job.runtime == "onnxruntime"
        assert (job.settings.runs, job.settings.warmup) == (20, 2)

        await wait_state(pilot, messages, job.id, JobState.DONE)
        states = messages.states(job.id)
        # queued -> running -> done, in order; states entered within one 100 ms UI tick are
        # announced once (see the xfail test_every_state_a_job_enters_is_announced)
        assert states[-1] is JobState.DONE, states
        assert states == sorted(states, key=ORDER.__getitem__), states
        assert len(states) == len(set(states)), f"a state was announced twice: {states}"
        assert lab.store.job(job.id).state is JobState.DONE
        result = lab.store.result(job.id)
        # the default 5 rounds of at least 4 runs, each sized by time (0.2 s of a ~20 us model)
        assert result is not None and len(result.round_sizes) >= 5
        assert min(result.round_sizes) > 100
        assert result.stats.count == sum(result.round_sizes)  # (more if the gate asked)

        await wait_for(
            pilot, lambda: cell(app, "#queue-table", job.id, "state") == "done", "queue row done"
        )
        assert cell(app, "#queue-table", job.id, "model") == "mlp"
        assert "100%" in cell(app, "#queue-table", job.id, "progress")
        assert cell(app, "#queue-table", job.id, "median").endswith("us")

        await pilot.press("5")
        await wait_for(pilot, lambda: app.active_view == "results", "results view")
        await wait_for(pilot, lambda: has_row(app, "#results-table", job.id), "results row")
        median = app.query_one("#results-table", DataTable).get_cell(job.id, "median")
        assert median.value == pytest.approx(result.stats.median)
        assert str(median).endswith("us")
        assert cell(app, "#results-table", job.id, "status") == "done"
        plot = rich_text(app.query_one("#results-plot", Static).content)
        assert f"mlp @ {HOST_DEVICE_ID}" in plot
        assert "no results yet" not in plot
        assert app.is_running


# -- 2. export --------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
async def test_export_dialog_writes_the_tables(
    make_lab: LabFactory, mlp: Path, tmp_path: Path, fmt: str
):
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    folder = tmp_path / "export"
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        job = submit(lab, mlp)
        await wait_state(pilot, messages, job.id, JobState.DONE)
        await wait_for(pilot, lambda: app.check_action("export", ()), "export to be available")

        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen), "export dialog")
        app.screen.query_one("#export-folder", Input).value = str(folder)
        app.screen.query_one("#export-format", Select).value = fmt
        await pilot.pause()
        assert await pilot.click("#export-go")
        await wait_for(pilot, lambda: messages.of(ExportFinished), "ExportFinished")
        assert not isinstance(app.screen, ExportScreen)
        assert not messages.of(OperationFailed)

        paths = messages.of(ExportFinished)[0].paths
        names = {path.name for path in paths}
        assert {f"results.{fmt}", "latency_table.csv", "iterations.csv"} <= names
        assert {path.parent for path in paths} == {folder}
        assert all(path.is_file() for path in paths)
        other_formats = {"csv", "json", "parquet"} - {fmt}
        assert not any((folder / f"results.{other}").exists() for other in other_formats)

        if fmt == "json":
            records = json.loads((folder / "results.json").read_text())
        elif fmt == "csv":
            records = read_results_csv(folder)
        else:
            records = pd.read_parquet(folder / "results.parquet").to_dict("records")
        assert [r["job_id"] for r in records] == [job.id]
        assert records[0]["status"] == "done"
        assert float(records[0]["median_us"]) == pytest.approx(
            lab.store.result(job.id).stats.median
        )
        latency = read_latency_csv(folder)
        assert latency and {row[0] for row in latency} == {job.model.module_uid}
        assert any(row[2] == "Total Inference Time" for row in latency)
        assert any(n.title == "export" for n in messages.notifications())


# -- 3. failing jobs --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_file_that_is_not_a_model_fails_with_its_reason(
    make_lab: LabFactory, tmp_path: Path
):
    bad = tmp_path / "not-a-model.txt"
    bad.write_text("these are my notes, not a network\n" * 20)
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        report = await queue_via_dialog(pilot, bad, messages)
        assert report.queued == []
        assert [Path(job.model.path).name for job in report.failed] == ["not-a-model.txt"]
        job = report.failed[0]
        assert job.state is JobState.FAILED and "ONNX" in (job.error or "")

        await wait_state(pilot, messages, job.id, JobState.FAILED)
        change = messages.changes(job.id, JobState.FAILED)[0]
        assert change.error and "not an ONNX model" in change.error
        assert lab.store.job(job.id).state is JobState.FAILED

        await wait_for(
            pilot, lambda: has_row(app, "#queue-table", job.id), "the failed job's queue row"
        )
        assert cell(app, "#queue-table", job.id, "state") == "failed"
        # the whole first line of the reason, without the model path every error starts with
        assert cell(app, "#queue-table", job.id, "error") == change.error.splitlines()[0]
        errors = messages.notifications("error")
        assert any("not-a-model.txt" in n.message and "ONNX" in n.message for n in errors)
        assert app.is_running


@pytest.mark.asyncio
async def test_a_model_onnx_runtime_cannot_load_fails_with_its_reason(
    make_lab: LabFactory, tmp_path: Path
):
    model = custom_op_model(tmp_path / "custom_op.onnx")
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        report = await queue_via_dialog(pilot, model, messages, options={"runs": "5"})
        assert report.failed == [] and len(report.queued) == 1  # intake accepts it
        job = report.queued[0]

        await wait_state(pilot, messages, job.id, JobState.FAILED)
        change = messages.changes(job.id, JobState.FAILED)[0]
        assert "ONNX Runtime cannot load the model" in change.error
        assert "Frobnicate" in change.error
        await wait_for(
            pilot,
            lambda: cell(app, "#queue-table", job.id, "state") == "failed",
            "queue row failed",
        )
        # the error column shows the error's first 80 characters (here mostly the model path)
        shown = cell(app, "#queue-table", job.id, "error")
        assert shown == change.error.splitlines()[0].removeprefix(f"{job.model.path}: ")
        assert shown.startswith("ONNX Runtime cannot load the model")
        assert lab.store.job(job.id).error == change.error
        failed = [n for n in messages.notifications("error") if n.title == "job failed"]
        assert failed and "custom_op.onnx" in failed[0].message
        assert app.is_running


# -- 4. the add dialog validates --------------------------------------------------------------


@pytest.mark.asyncio
async def test_add_dialog_shows_errors_and_stays_open(
    make_lab: LabFactory, mlp: Path, tmp_path: Path
):
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        screen = await open_add_dialog(pilot)
        error = screen.query_one("#add-error", Static)
        path = screen.query_one("#add-path", Input)
        devices = screen.query_one("#add-devices", SelectionList)
        assert list(devices.selected) == [HOST_DEVICE_ID]

        async def submit_and_read() -> str:
            screen.query_one("#add-queue", Button).press()
            await pilot.pause(STEP_S)
            await pilot.pause()
            assert app.screen is screen, "the dialog closed on invalid input"
            return str(error.content)

        path.value = ""
        assert "give a model file" in await submit_and_read()

        path.value = str(tmp_path / "missing.onnx")
        assert "does not exist" in await submit_and_read()

        path.value = str(mlp)
        devices.deselect_all()
        await pilot.pause()
        text = await submit_and_read()
        assert "choose at least one device" in text and "does not exist" not in text

        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, AddModelsScreen), "closed")
        await pilot.pause(3 * STEP_S)
        assert not messages.of(ModelsQueued)
        assert lab.store.jobs() == []


# -- 5. pause and resume ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_space_pauses_and_resumes_dispatch(make_lab: LabFactory, mlp: Path):
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        assert "PAUSED" not in status_text(app)
        await pilot.press("space")
        await wait_for(pilot, lambda: "PAUSED" in status_text(app), "the status to say PAUSED")
        assert lab.paused
        assert app.query_one("#status-line").has_class("-paused")

        report = await queue_via_dialog(pilot, mlp, messages, options={"runs": "20"})
        job = report.queued[0]
        await wait_state(pilot, messages, job.id, JobState.QUEUED)
        await wait_for(pilot, lambda: "1 queued" in status_text(app), "status counts")
        await pilot.pause(1.0)  # time enough for a worker to claim it, were it allowed to
        assert lab.store.job(job.id).state is JobState.QUEUED
        assert messages.states(job.id) == [JobState.QUEUED]
        assert cell(app, "#queue-table", job.id, "state") == "queued"

        await pilot.press("space")
        await wait_for(pilot, lambda: "PAUSED" not in status_text(app), "PAUSED to go")
        assert not lab.paused
        await wait_state(pilot, messages, job.id, JobState.DONE)
        assert lab.store.job(job.id).state is JobState.DONE
        await wait_for(pilot, lambda: "1 done" in status_text(app), "status counts done")


# -- 6. cancel, priority, retry ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_priority_cancel_and_retry_act_on_the_selected_job(make_lab: LabFactory, mlp: Path):
    make_mlp(mlp.parent / "tiny.onnx", hidden=8)
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None, start_dispatch=True)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        await pilot.press("space")
        await wait_for(pilot, lambda: lab.paused, "dispatch paused")
        report = await queue_via_dialog(pilot, mlp.parent, messages, options={"runs": "10"})
        first, second = report.queued
        for job in (first, second):
            await wait_for(pilot, lambda j=job: has_row(app, "#queue-table", j.id), "rows")

        await pilot.press("2")
        queue = app.query_one(QueueView)
        assert queue.selected_job.id == first.id
        await pilot.press("down")
        assert queue.selected_job.id == second.id
        assert app.check_action("priority", ()) and app.check_action("cancel_job", ())

        await pilot.press("minus")
        await wait_for(
            pilot, lambda: cell(app, "#queue-table", second.id, "prio") == "1", "prio 1 shown"
        )
        assert lab.store.job(second.id).priority == 1
        assert lab.store.job(first.id).priority == 0
        await pilot.press("plus", "plus")  # the second press builds on the first
        await wait_for(
            pilot, lambda: cell(app, "#queue-table", second.id, "prio") == "-1", "prio -1 shown"
        )
        assert lab.store.job(second.id).priority == -1
        assert queue.selected_job.id == second.id

        await pilot.press("c")
        await wait_state(pilot, messages, second.id, JobState.CANCELLED)
        assert lab.store.job(second.id).state is JobState.CANCELLED
        assert lab.store.job(first.id).state is JobState.QUEUED
        await wait_for(
            pilot,
            lambda: cell(app, "#queue-table", second.id, "state") == "cancelled",
            "cancelled row",
        )
        assert not app.check_action("cancel_job", ())
        assert app.check_action("retry_job", ())

        await pilot.press("t")
        await wait_for(
            pilot,
            lambda: messages.states(second.id)[-1:] == [JobState.QUEUED],
            "queued again after retry",
        )
        assert messages.states(second.id)[-2:] == [JobState.CANCELLED, JobState.QUEUED]
        assert lab.store.job(second.id).state is JobState.QUEUED

        await pilot.press("space")  # resume: the raised job (priority -1) starts first
        for job in (first, second):
            await wait_state(pilot, messages, job.id, JobState.DONE)
        assert lab.store.job(second.id).started_at < lab.store.job(first.id).started_at


# -- 7. what applies now ------------------------------------------------------------------------


def command_titles(app: DevLabApp) -> set[str]:
    return {command.title for command in app.get_system_commands(app.screen)}


@pytest.mark.asyncio
async def test_actions_and_commands_follow_view_selection_and_pause(
    make_lab: LabFactory, mlp: Path, tmp_path: Path
):
    broken = custom_op_model(tmp_path / "custom_op.onnx")
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        for action in ("cancel_job", "retry_job", "priority", "export"):
            assert not app.check_action(action, ()), f"{action} applies with no job"
        titles = command_titles(app)
        assert "Pause dispatch" in titles and "Resume dispatch" not in titles
        assert not titles & {"Cancel job", "Retry job", "Raise priority", "Export results"}

        report = await queue_via_dialog(pilot, broken, messages, options={"runs": "5"})
        failed = report.queued[0]
        await wait_state(pilot, messages, failed.id, JobState.FAILED)
        await pilot.press("2")
        assert app.query_one(QueueView).selected_job.id == failed.id
        assert app.check_action("retry_job", ())
        assert not app.check_action("cancel_job", ()) and not app.check_action("priority", ())
        titles = command_titles(app)
        assert "Retry job" in titles and "Cancel job" not in titles
        assert "Export results" in titles

        await pilot.press("1")  # the Devices view: job actions do not apply there
        await wait_for(pilot, lambda: app.active_view == "devices", "devices view")
        for action in ("cancel_job", "retry_job", "priority"):
            assert not app.check_action(action, ()), f"{action} applies on the Devices view"
        assert "Retry job" not in command_titles(app)

        await pilot.press("space")
        await wait_for(pilot, lambda: lab.paused, "dispatch paused")
        await pilot.pause()
        titles = command_titles(app)
        assert "Resume dispatch" in titles and "Pause dispatch" not in titles

        await pilot.press("2")
        report = await queue_via_dialog(pilot, mlp, messages, options={"runs": "5"})
        queued = report.queued[0]
        await wait_for(pilot, lambda: has_row(app, "#queue-table", queued.id), "queued row")
        await pilot.press("2", "down")
        assert app.query_one(QueueView).selected_job.id == queued.id
        titles = command_titles(app)
        assert {"Cancel job", "Raise priority", "Lower priority"} <= titles
        assert "Retry job" not in titles
        assert not app.check_action("retry_job", ())

        await pilot.press("space")
        await wait_for(pilot, lambda: not lab.paused, "dispatch resumed")
        titles = command_titles(app)
        assert "Pause dispatch" in titles and "Resume dispatch" not in titles
        await wait_state(pilot, messages, queued.id, JobState.DONE)


# -- 8. help ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_help_lists_every_binding_and_escape_closes_it(make_lab: LabFactory):
    lab = make_lab()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help screen")
        help_screen = app.screen
        assert help_screen in app.screen_stack
        shown = rich_text(help_screen.query_one(Static).content)
        descriptions = [binding.description for binding in DevLabApp.BINDINGS]
        assert len(descriptions) == 19
        for description in descriptions:
            assert description in shown, f"help does not list {description!r}"
        assert [row[1] for row in help_screen.rows][: len(descriptions)] == descriptions

        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")
        assert not any(isinstance(screen, HelpScreen) for screen in app.screen_stack)
        assert app.is_running


# -- 9. hot-plug --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_devices_follow_hot_plug(make_lab: LabFactory):
    plug = PluggableBackend()
    lab = make_lab(HostBackend(), plug)
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=0.2)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("1")
        await wait_for(pilot, lambda: has_row(app, "#devices-table", HOST_DEVICE_ID), "host")

        plug.plug("plug:1")
        await wait_for(pilot, lambda: has_row(app, "#devices-table", "plug:1"), "plugged row")

        def added() -> list:
            return [m for m in messages.of(DevicesChanged) if "plug:1" in {d.id for d in m.devices}]

        # the table is redrawn in the tick that applies the events; the message is posted
        # then and handled a moment later
        await wait_for(pilot, added, "a DevicesChanged message naming the new device")
        assert cell(app, "#devices-table", "plug:1", "name") == "Plugged plug:1"
        assert cell(app, "#devices-table", "plug:1", "state") == "online"
        assert "2 device(s)" in status_text(app)

        seen = len(messages.of(DevicesChanged))
        plug.unplug("plug:1")
        await wait_for(
            pilot, lambda: not has_row(app, "#devices-table", "plug:1"), "unplugged row gone"
        )
        await wait_for(
            pilot,
            lambda: (
                messages.of(DevicesChanged)[seen:]
                and "plug:1" not in {d.id for d in messages.of(DevicesChanged)[-1].devices}
            ),
            "a DevicesChanged message without the unplugged device",
        )
        assert has_row(app, "#devices-table", HOST_DEVICE_ID)
        assert "1 device(s)" in status_text(app)

        calls = plug.calls
        await wait_for(pilot, lambda: plug.calls >= calls + 2, "polling goes on")
        assert app.is_running


@pytest.mark.asyncio
async def test_a_backend_whose_discovery_fails_hides_nothing(make_lab: LabFactory):
    broken = BrokenBackend()
    lab = make_lab(HostBackend(), broken)
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=0.2)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("1")
        await wait_for(pilot, lambda: broken.calls >= 4, "several discovery polls")
        table = app.query_one("#devices-table", DataTable)
        assert [key.value for key in table.rows] == [HOST_DEVICE_ID]
        assert "1 device(s)" in status_text(app)
        assert not messages.of(OperationFailed)
        assert app.is_running


# -- 10. a device that drops out mid-run --------------------------------------------------------


@pytest.mark.asyncio
async def test_a_device_failing_mid_run_fails_the_job_not_the_app(
    make_lab: LabFactory, tmp_path: Path
):
    explode = make_mlp(tmp_path / "explode.onnx", hidden=8, seed=1)
    steady = make_mlp(tmp_path / "steady.onnx", hidden=8, seed=2)
    lab = make_lab(HostBackend(), PluggableBackend("plug:7"))
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        report = await queue_via_dialog(
            pilot, explode, messages, options={"runs": "10"}, devices=["plug:7"]
        )
        job = report.queued[0]
        assert (job.device_id, job.runtime) == ("plug:7", "fake-rt")
        await wait_state(pilot, messages, job.id, JobState.FAILED)
        change = messages.changes(job.id, JobState.FAILED)[0]
        assert "went offline mid-run" in change.error
        assert lab.store.job(job.id).error == change.error
        await wait_for(
            pilot,
            lambda: any(
                n.title == "job failed" and "went offline" in n.message
                for n in messages.notifications("error")
            ),
            "an error notification",
        )
        assert app.is_running

        report = await queue_via_dialog(
            pilot, steady, messages, options={"runs": "10"}, devices=["plug:7"]
        )
        again = report.queued[0]
        await wait_state(pilot, messages, again.id, JobState.DONE)
        assert lab.store.result(again.id).stats.count == 10
        await wait_for(
            pilot,
            lambda: cell(app, "#queue-table", again.id, "state") == "done",
            "second job done in the queue",
        )
        assert cell(app, "#queue-table", job.id, "state") == "failed"
        assert app.is_running


# -- 11. keymap ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_keymap_rebinds_add(make_lab: LabFactory):
    lab = make_lab()
    app = DevLabApp(lab, poll_devices_s=None, keymap={"queue.add": "n"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await pilot.pause(2 * STEP_S)
        assert not isinstance(app.screen, AddModelsScreen), "the old key still opens the dialog"

        await open_add_dialog(pilot, key="n")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, AddModelsScreen), "closed")

        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        rows = {description: key for key, description, _ in app.screen.rows}
        assert rows["Add"] == "n"


# -- 12. live view ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_live_view_follows_a_running_job(make_lab: LabFactory, tmp_path: Path):
    model = Path(shutil.copy(MODELS_DIR / "mnv2_cifar32.onnx", tmp_path / "mnv2_cifar32.onnx"))
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: app.active_view == "live", "live view")
        assert app.query_one("#live-empty").display
        assert not app.query(JobPanel)

        # queued from the Live view itself, so the view is on screen from the first event
        report = await queue_via_dialog(
            pilot,
            model,
            messages,
            options={"runs": "", "min_seconds": "2", "warmup": "2", "precision_pct": "5"},
        )
        job = report.queued[0]
        assert job.settings.runs is None and job.settings.min_seconds == 2.0
        assert job.settings.precision_pct == 5.0  # the precision gate is in the dialog too
        assert app.active_view == "live"

        def panel() -> JobPanel | None:
            panels = [p for p in app.query(JobPanel) if p.job.id == job.id and p.is_mounted]
            return panels[0] if panels else None

        def progress() -> float:
            found = panel()
            return found.query_one(ProgressBar).progress if found else 0.0

        await wait_for(pilot, lambda: progress() > 0, "the job's progress bar moves")
        first = progress()
        assert not app.query_one("#live-empty").display
        await wait_for(pilot, lambda: progress() > first, "progress increases")
        await wait_for(
            pilot, lambda: panel() and len(panel().query_one(Sparkline).data) > 0, "sparkline"
        )
        assert all(value > 0 for value in panel().query_one(Sparkline).data)
        assert f"[{job.id}]" in str(panel().query_one(".panel-title").content)

        await wait_state(pilot, messages, job.id, JobState.DONE)
        await wait_for(pilot, lambda: not app.query(JobPanel), "the panel goes")
        await wait_for(pilot, lambda: app.query_one("#live-empty").display, "placeholder")
        assert lab.store.result(job.id).stats.count > 1


# -- 13. power view -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_power_view_shows_published_samples(make_lab: LabFactory):
    lab = make_lab()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: app.active_view == "power", "power view")
        empty = app.query_one("#power-empty", Static)
        assert empty.display and "no monitor" in str(empty.content)
        assert not app.query(MonitorPanel)

        interval = 1 / 5000
        start = time.time()
        for index in range(5):
            watts = tuple(1.4 if n % 2 else 1.6 for n in range(100))
            lab.events.publish(
                PowerSamples("monsoon:test", start + index * 100 * interval, interval, watts)
            )

        def numbers() -> str:
            panels = app.query(MonitorPanel)
            if not panels:
                return ""
            return str(panels.first().query_one(".power-numbers", Static).content)

        await wait_for(pilot, lambda: "samples 500" in numbers(), "the monitor panel numbers")
        panel = app.query_one(MonitorPanel)
        assert panel.monitor_id == "monsoon:test"
        data = list(panel.query_one(Sparkline).data)
        assert data and all(value == pytest.approx(1.5, abs=0.05) for value in data)
        mean = re.search(r"mean (\d+\.\d+) W", numbers())
        assert mean and float(mean.group(1)) == pytest.approx(1.5, abs=0.001)
        assert "max 1.600 W" in numbers()
        assert not empty.display


# -- more failure paths -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_export_into_an_unusable_folder_reports_and_keeps_running(
    make_lab: LabFactory, mlp: Path, tmp_path: Path
):
    not_a_folder = tmp_path / "occupied"
    not_a_folder.write_text("a file where the export folder should go\n")
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        job = submit(lab, mlp)
        await wait_state(pilot, messages, job.id, JobState.DONE)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen), "export dialog")
        app.screen.query_one("#export-folder", Input).value = str(not_a_folder / "export")
        assert await pilot.click("#export-go")
        await wait_for(pilot, lambda: messages.of(OperationFailed), "OperationFailed")
        failure = messages.of(OperationFailed)[0]
        assert failure.what == "export"
        assert not messages.of(ExportFinished)
        await wait_for(
            pilot,
            lambda: any("nothing was exported" in n.message for n in messages.notifications()),
            "an export error notification",
        )
        assert app.is_running


@pytest.mark.asyncio
async def test_c_cancels_a_running_job(make_lab: LabFactory, tmp_path: Path):
    endless = make_mlp(tmp_path / "endless.onnx", hidden=8, seed=3)
    lab = make_lab(PluggableBackend("plug:7"))
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        report = await queue_via_dialog(pilot, endless, messages, options={"runs": "10"})
        job = report.queued[0]
        await wait_state(pilot, messages, job.id, JobState.RUNNING)
        await pilot.press("2")
        assert app.query_one(QueueView).selected_job.id == job.id
        assert app.check_action("cancel_job", ()) and not app.check_action("priority", ())

        await pilot.press("c")
        await wait_state(pilot, messages, job.id, JobState.CANCELLED)
        assert lab.store.job(job.id).state is JobState.CANCELLED
        assert lab.store.result(job.id) is None
        await wait_for(
            pilot,
            lambda: cell(app, "#queue-table", job.id, "state") == "cancelled",
            "cancelled row",
        )
        await wait_for(pilot, lambda: "0 running" in status_text(app), "nothing running")
        assert app.is_running


# -- bugs found while writing these tests (strict xfail: they pass once fixed) ----------------


@pytest.mark.asyncio
async def test_every_state_a_job_enters_is_announced(make_lab: LabFactory, mlp: Path):
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        # two Lab events between two UI ticks (no await in between): queued, then cancelled
        job = submit(lab, mlp)
        lab.cancel(job.id)
        await wait_state(pilot, messages, job.id, JobState.CANCELLED)
        assert messages.states(job.id) == [JobState.QUEUED, JobState.CANCELLED]


@pytest.mark.asyncio
async def test_add_dialog_refuses_a_runtime_a_selected_device_lacks(
    make_lab: LabFactory, tmp_path: Path
):
    model = make_mlp(tmp_path / "small.onnx", hidden=8, seed=4)
    lab = make_lab(HostBackend(), PluggableBackend("plug:7"))
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        screen = await open_add_dialog(pilot)
        screen.query_one("#add-path", Input).value = str(model)
        devices = screen.query_one("#add-devices", SelectionList)
        devices.deselect_all()
        devices.select("plug:7")
        devices.select(HOST_DEVICE_ID)
        screen.query_one("#add-runtime", Select).value = "fake-rt"  # host:cpu lacks it
        await pilot.pause()
        screen.query_one("#add-queue", Button).press()
        await pilot.pause(3 * STEP_S)
        await pilot.pause()
        queued = [(job.device_id, job.state.value) for job in lab.store.jobs()]
        assert app.screen is screen, f"the dialog closed; jobs now in the store: {queued}"
        assert "fake-rt" in str(screen.query_one("#add-error", Static).content)
        assert queued == []


@pytest.mark.asyncio
async def test_unplugging_a_device_mid_run_shows_its_job_queued_again(
    make_lab: LabFactory, tmp_path: Path
):
    endless = make_mlp(tmp_path / "endless.onnx", hidden=8, seed=5)
    plug = PluggableBackend("plug:7")
    lab = make_lab(HostBackend(), plug)
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=0.2)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        report = await queue_via_dialog(
            pilot, endless, messages, options={"runs": "10"}, devices=["plug:7"]
        )
        job = report.queued[0]
        await wait_state(pilot, messages, job.id, JobState.RUNNING)

        plug.unplug("plug:7")
        await wait_for(
            pilot, lambda: lab.store.job(job.id).state is JobState.QUEUED, "re-queued in store"
        )
        await wait_for(pilot, lambda: "plug:7" not in app.state.devices, "device gone")
        await pilot.pause(5 * STEP_S)
        assert app.state.jobs[job.id].state is JobState.QUEUED
        assert messages.states(job.id)[-1] is JobState.QUEUED
        assert "0 running" in status_text(app)
        assert app.is_running


def test_a_drifting_device_is_marked_in_the_devices_view() -> None:
    from console.tui.views.devices import device_cells, device_detail

    drift = {"drifting": True, "ratio": 1.5, "reason": "drifting: slower, canary +50.0%"}
    device = Device(id="adb:X", kind="android", name="Phone", properties={"drift": drift})
    state = device_cells(device)[3]
    assert "online drifting x1.50" in state.plain
    steady = Device(id="adb:Y", kind="android", name="Phone")
    assert device_cells(steady)[3].plain == "online"
    detail = device_detail(device)
    assert any("canary +50.0%" in str(cell) for column in detail.columns for cell in column.cells)


# -- Lab calls from keys run off the UI thread ---------------------------------------------------


def record_threads(lab: Lab, monkeypatch: pytest.MonkeyPatch, *names: str) -> list[tuple]:
    """Wrap Lab methods so each call records (method, arguments, the thread it ran on)."""
    calls: list[tuple] = []
    for name in names:
        method = getattr(lab, name)

        def wrapper(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append((_name, args, threading.current_thread()))
            return _method(*args, **kwargs)

        monkeypatch.setattr(lab, name, wrapper)
    return calls


@pytest.mark.asyncio
async def test_lab_calls_from_keys_never_run_on_the_ui_thread(
    make_lab: LabFactory, mlp: Path, monkeypatch: pytest.MonkeyPatch
):
    """On a cluster each of these is a network round trip: the app must not freeze on them."""
    lab = make_lab()
    calls = record_threads(
        lab, monkeypatch, "rows", "pause", "resume", "set_priority", "cancel", "retry"
    )
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        await pilot.press("space")
        await wait_for(pilot, lambda: lab.paused, "dispatch paused")
        job = submit(lab, mlp)
        await wait_for(pilot, lambda: has_row(app, "#queue-table", job.id), "the job's row")
        await pilot.press("2", "minus")
        await wait_for(pilot, lambda: lab.store.job(job.id).priority == 1, "priority 1")
        await pilot.press("c")
        await wait_state(pilot, messages, job.id, JobState.CANCELLED)
        await pilot.press("t")
        await wait_for(pilot, lambda: messages.states(job.id)[-1:] == [JobState.QUEUED], "retry")
        await pilot.press("space")
        await wait_state(pilot, messages, job.id, JobState.DONE)
    assert [name for name, _, _ in calls] == [
        "rows",
        "pause",
        "set_priority",
        "cancel",
        "retry",
        "resume",
    ]
    ui_thread = threading.main_thread()  # run_test drives the app on the test's own loop
    assert all(thread is not ui_thread for _, _, thread in calls), calls


@pytest.mark.asyncio
async def test_a_lab_call_that_fails_is_a_notification_not_a_crash(
    make_lab: LabFactory, mlp: Path, monkeypatch: pytest.MonkeyPatch
):
    from backends.core.lab import LabError

    lab = make_lab()
    asked: list[int] = []

    def refuse(job_id: str, priority: int) -> Job:
        asked.append(priority)
        raise LabError(f"the dispatcher lost job {job_id}")

    monkeypatch.setattr(lab, "set_priority", refuse)
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        job = submit(lab, mlp)
        await wait_for(pilot, lambda: has_row(app, "#queue-table", job.id), "the job's row")
        await pilot.press("2", "minus")
        await wait_for(pilot, lambda: messages.of(OperationFailed), "OperationFailed")
        [failed] = messages.of(OperationFailed)
        assert failed.what == "priority" and "lost job" in failed.error
        await wait_for(pilot, lambda: messages.notifications("error"), "an error notification")
        [note] = messages.notifications("error")
        assert note.message.startswith("the job's priority did not change: LabError:")
        await pilot.press("minus")  # the failed wish is forgotten: this asks for 1 again
        await wait_for(pilot, lambda: len(messages.of(OperationFailed)) == 2, "second failure")
        assert asked == [1, 1]
        assert cell(app, "#queue-table", job.id, "prio") == "0"
        assert app.is_running


@pytest.mark.asyncio
async def test_a_priority_set_by_another_console_shows_in_the_queue(
    make_lab: LabFactory, mlp: Path
):
    """``Lab.set_priority`` publishes ``JobPriorityChanged``: every console's row follows."""
    lab = make_lab()
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await pilot.press("2")  # the console opens on Devices; these rows are in the Queue
        job = submit(lab, mlp)
        await wait_for(pilot, lambda: has_row(app, "#queue-table", job.id), "the job's row")
        lab.set_priority(job.id, 7)  # as another console on the same lab would
        await wait_for(pilot, lambda: cell(app, "#queue-table", job.id, "prio") == "7", "prio 7")
        assert app.state.jobs[job.id].priority == 7
        assert messages.states(job.id) == [JobState.QUEUED]  # a new priority, not a new state


# -- the Add dialog offers what the devices can do -------------------------------------------------


@pytest.mark.asyncio
async def test_add_dialog_greys_out_what_a_selected_device_cannot_do(make_lab: LabFactory):
    """host:cpu profiles per layer and honours threads; the plug device does neither."""
    lab = make_lab(HostBackend(), PluggableBackend("plug:7"))
    app = DevLabApp(lab, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_add_dialog(pilot)
        per_layer = screen.query_one("#add-per_layer", Checkbox)
        threads = screen.query_one("#add-threads", Input)
        devices = screen.query_one("#add-devices", SelectionList)
        assert list(devices.selected) == [HOST_DEVICE_ID]
        assert not per_layer.disabled and not threads.disabled
        per_layer.value = True
        threads.value = "4"

        devices.select("plug:7")
        await pilot.pause()
        assert per_layer.disabled and threads.disabled
        assert per_layer.value is False
        assert "not on plug:7" in str(per_layer.label)
        assert str(screen.query_one("#add-threads-label", Label).content) == "threads (n/a)"
        request = screen.request()
        assert request.values["per_layer"] is False and request.values["threads"] is None

        devices.deselect("plug:7")
        await pilot.pause()
        assert not per_layer.disabled and not threads.disabled
        assert per_layer.value is True  # the operator's tick is back
        request = screen.request()
        assert request.values["per_layer"] is True and request.values["threads"] == 4
