"""Accuracy in the console: the Add dialog's accuracy field reaches the job as ``--accuracy``
does, the Results view shows top-1 (and energy per inference) beside latency, and ``w`` turns it
to the "fast but wrong" table pairing the float model with its ``devlab quantize`` twin.

Real ``DevLabApp`` over a real ``Lab`` and store; the digits classifier and its QDQ copy are
measured and scored with ONNX Runtime through the real ``HostBackend``.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Static

from backends.core.lab import Lab
from backends.core.records import JobState
from backends.core.store import Store
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.quantize.tool import quantize_model
from console.tui.app import DevLabApp
from console.tui.dialogs import AddModelsScreen
from console.tui.messages import JobStateChanged, ModelsQueued
from console.tui.views.results import accuracy_cell, energy_cell
from support.helpers import REPO_ROOT
from support.waiting import pilot_wait_for

ASSETS = REPO_ROOT / "assets" / "accuracy"
SIZE = (160, 44)
WAIT_S = 60.0
QUICK = {"runs": "20", "warmup": "2", "rounds": "1", "precision_pct": "0"}


class Messages:
    def __init__(self) -> None:
        self.all: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.all.append(message)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.all if isinstance(m, kind)]

    def done(self, job_id: str) -> bool:
        return any(
            m.job.id == job_id and m.job.state is JobState.DONE for m in self.of(JobStateChanged)
        )


@pytest.fixture
def lab(store: Store, tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(store, [HostBackend()], log_dir=tmp_path / "logs")
    lab.discover()
    yield lab
    lab.shutdown(interrupt=True, timeout=10)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A folder with digits.onnx and its int8 QDQ twin, as devlab quantize names it."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ASSETS / "digits.onnx", folder / "digits.onnx")
    quantize_model(folder / "digits.onnx", ASSETS / "digits-calib", "ort-qdq", folder)
    return folder


async def wait_for(pilot: Pilot, condition: Callable[[], Any], what: str) -> None:
    await pilot_wait_for(pilot, condition, what, WAIT_S)


async def fill_add_dialog(pilot: Pilot, path: Path, fields: dict[str, str]) -> AddModelsScreen:
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, AddModelsScreen), "add dialog")
    screen: AddModelsScreen = pilot.app.screen  # type: ignore[assignment]
    screen.query_one("#add-path", Input).value = str(path)
    for name, value in fields.items():
        screen.query_one(f"#add-{name}", Input).value = value
    await pilot.pause()
    screen.query_one("#add-queue", Button).scroll_visible(animate=False)
    await pilot.pause()
    assert await pilot.click("#add-queue"), "the Queue button was not clicked"
    return screen


def cell(app: DevLabApp, table: str, row: str, column: str) -> Any:
    return app.query_one(table, DataTable).get_cell(row, column)


@pytest.mark.asyncio
async def test_a_job_queued_with_an_accuracy_set_shows_its_scores(lab: Lab, models: Path) -> None:
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    test_set = ASSETS / "digits-test"
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        await fill_add_dialog(pilot, models, {**QUICK, "accuracy_set": str(test_set)})
        await wait_for(pilot, lambda: messages.of(ModelsQueued), "ModelsQueued")
        report = messages.of(ModelsQueued)[-1].report
        jobs = {job.model.name: job for job in report.queued}
        assert set(jobs) == {"digits", "digits.int8-qdq"}
        for job in jobs.values():  # the field reaches the job as --accuracy does: resolved
            assert job.settings.accuracy_set == str(test_set.resolve())
            assert job.settings.runs == 20
        for job in jobs.values():
            await wait_for(pilot, lambda job=job: messages.done(job.id), f"{job.id} done")

        await pilot.press("5")
        results = {name: lab.store.result(job.id) for name, job in jobs.items()}
        for name, job in jobs.items():
            await wait_for(
                pilot,
                lambda job=job: job.id in app.query_one("#results-table", DataTable).rows,
                "results row",
            )
            result = results[name]
            assert result is not None and result.accuracy is not None
            top1 = cell(app, "#results-table", job.id, "top-1")
            assert top1.value == pytest.approx(result.accuracy["top1"])
            assert str(top1) == f"{result.accuracy['top1'] * 100:.2f}%"
            assert str(cell(app, "#results-table", job.id, "energy/inf")) == "-"  # no power
        fp32 = results["digits"].accuracy["top1"]  # type: ignore[union-attr]
        int8 = results["digits.int8-qdq"].accuracy["top1"]  # type: ignore[union-attr]
        assert fp32 > 0.9 and abs(fp32 - int8) <= 0.02

        view = app.query_one("#results-view")
        await pilot.press("w")
        await wait_for(pilot, lambda: view.showing_fast_wrong, "fast but wrong table")  # type: ignore[attr-defined]
        table = app.query_one("#fast-wrong-table", DataTable)
        assert table.display and not app.query_one("#results-table").display
        key = f"digits|{HOST_DEVICE_ID}|onnxruntime"
        assert list(r.value for r in table.rows) == [key]
        assert cell(app, "#fast-wrong-table", key, "top-1 fp32").value == pytest.approx(fp32)
        assert cell(app, "#fast-wrong-table", key, "top-1 int").value == pytest.approx(int8)
        drop = cell(app, "#fast-wrong-table", key, "drop").value
        assert drop == pytest.approx((fp32 - int8) * 100)
        assert str(cell(app, "#fast-wrong-table", key, "flag")) == "ok"
        fp32_us = results["digits"].headline_us or results["digits"].stats.median  # type: ignore[union-attr]
        assert cell(app, "#fast-wrong-table", key, "fp32").value == pytest.approx(fp32_us)
        title = str(app.query_one("#fast-wrong-title", Static).content)
        assert "1 quantized run(s)" in title and "0 losing more than 2 points" in title

        await pilot.press("w")
        await wait_for(pilot, lambda: not view.showing_fast_wrong, "back to results")  # type: ignore[attr-defined]
        assert app.query_one("#results-table").display

    energy = energy_cell(
        dataclasses.replace(results["digits"], power={"energy_per_inference_mj": 0.25})
    )  # type: ignore[arg-type]
    assert (energy.value, str(energy)) == (0.25, "0.250 mJ")
    assert str(accuracy_cell(None)) == "-"


@pytest.mark.asyncio
async def test_a_bad_accuracy_set_is_named_in_the_dialog_and_nothing_is_queued(
    lab: Lab, models: Path, tmp_path: Path
) -> None:
    messages = Messages()
    app = DevLabApp(lab, poll_devices_s=None)
    missing = tmp_path / "no-such-set"
    async with app.run_test(size=SIZE, message_hook=messages) as pilot:
        screen = await fill_add_dialog(pilot, models, {**QUICK, "accuracy_set": str(missing)})
        await pilot.pause()
        assert isinstance(app.screen, AddModelsScreen)  # still open, saying why
        error = str(screen.query_one("#add-error", Static).content)
        assert "accuracy:" in error and str(missing) in error and "labels.csv" in error
        assert not messages.of(ModelsQueued) and not lab.store.jobs()
