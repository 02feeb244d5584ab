"""The console's first screen and the Add dialog driven by keys alone (issue 18, points 3 and 4).

A real ``DevLabApp`` over a real ``Lab`` with the host device, on a real SQLite store in
``tmp_path``; a second device (``support.fakes.PluggableBackend``) is there only so that one
device is selected and one is not. Dispatch is not started: a queued job stays queued, so
nothing is measured and each test takes a second or two. Which devices are selected is read
from the text the device list renders, with colour dropped, as a monochrome terminal or a
screen capture shows it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, SelectionList, Static

from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState
from backends.core.store import Store
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.power.capture import MonitorLink
from console.tui.app import DevLabApp
from console.tui.checklist import SELECTED_MARK, UNSELECTED_MARK
from console.tui.dialogs import AddModelsScreen
from console.tui.messages import ModelsQueued
from support.fakes import PluggableBackend
from support.waiting import pilot_wait_for

MODELS_DIR = Path(__file__).resolve().parents[3] / "assets" / "models"
SIZE = (140, 40)
WAIT_S = 15.0  # upper bound of every poll; a passing test never waits this long
FAST = JobSettings(warmup=1, runs=5, rounds=1, precision_pct=0)
PLUG = "plug:7"  # reports no per-layer profile and no thread count (Capabilities defaults)


@pytest.fixture
def lab(store: Store, tmp_path: Path) -> Iterator[Lab]:
    """The host CPU and one plugged device; a power monitor is configured for the plugged one
    (never opened: no job here captures power)."""
    monitor = MonitorLink(device_id=PLUG, port=str(tmp_path / "no-monsoon-here"))
    lab = Lab(
        store,
        [HostBackend(), PluggableBackend(PLUG)],
        log_dir=tmp_path / "logs",
        power_links=[monitor],
    )
    lab.discover()
    yield lab
    lab.shutdown(interrupt=True, timeout=10)


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return Path(shutil.copy(MODELS_DIR / "mlp.onnx", folder / "mlp.onnx"))


async def wait_for(pilot: Pilot, condition: Callable[[], Any], what: str) -> None:
    """Let the app run until ``condition()`` holds (bounded), then assert it."""
    await pilot_wait_for(pilot, condition, what, WAIT_S)


async def open_add_dialog(pilot: Pilot) -> AddModelsScreen:
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, AddModelsScreen), "add dialog")
    await pilot.pause()
    return pilot.app.screen  # type: ignore[return-value]


def marks(screen: AddModelsScreen) -> dict[str, str]:
    """Each device line's mark as the list renders it, colour dropped: device id -> mark."""
    devices = screen.query_one("#add-devices", SelectionList)
    shown = {}
    for y in range(devices.option_count):
        line = devices.render_line(y).text
        shown[line[4:].split()[0]] = line[:3]  # "[x] host:cpu  Host CPU ..."
    return shown


def note(screen: AddModelsScreen) -> str:
    return str(screen.query_one("#add-unavailable", Static).content)


async def toggle_device(pilot: Pilot, screen: AddModelsScreen, device_id: str) -> None:
    """Move the list's highlight to ``device_id`` (home, then down) and press space."""
    devices = screen.query_one("#add-devices", SelectionList)
    assert screen.focused is devices, f"the device list has no focus: {screen.focused}"
    values = [devices.get_option_at_index(i).value for i in range(devices.option_count)]
    target = values.index(device_id)
    await pilot.press("home", *["down"] * target)
    assert devices.highlighted == target
    await pilot.press("space")


@pytest.mark.asyncio
async def test_opens_on_devices_and_enter_in_another_field_queues(lab: Lab, mlp: Path) -> None:
    messages: list[Message] = []
    app = DevLabApp(lab, defaults=FAST, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        # the first screen shows the lab: its devices, listed; the status line keeps counting
        assert app.active_view == "devices"
        table = app.query_one("#devices-table", DataTable)
        await wait_for(pilot, lambda: HOST_DEVICE_ID in table.rows, "host:cpu listed")
        assert PLUG in table.rows
        status = app.query_one("#status-line", Static)
        assert "2 device(s)" in str(status.content) and "0 queued" in str(status.content)

        screen = await open_add_dialog(pilot)
        path = screen.query_one("#add-path", Input)
        await wait_for(pilot, lambda: screen.focused is path, "focus in the path field")

        await pilot.press(*str(mlp))  # typed, key by key, into whatever has focus
        assert path.value == str(mlp)

        for _ in range(10):  # tab on: the device list, the runtime, then the number fields
            await pilot.press("tab")
            if isinstance(screen.focused, Input) and screen.focused is not path:
                break
        field = screen.focused
        assert isinstance(field, Input) and field is not path, f"focus is on {field}"
        await pilot.press("enter")

        await wait_for(
            pilot, lambda: [m for m in messages if isinstance(m, ModelsQueued)], "ModelsQueued"
        )
        assert not isinstance(app.screen, AddModelsScreen), "the dialog stayed open"
        jobs = lab.store.jobs()
        assert [(job.model.path, job.device_id, job.state) for job in jobs] == [
            (str(mlp.resolve()), HOST_DEVICE_ID, JobState.QUEUED)
        ]
        assert app.active_view == "devices"
        await wait_for(pilot, lambda: "1 queued" in str(status.content), "the status counts it")


@pytest.mark.asyncio
async def test_selected_devices_are_marked_in_text_and_options_follow_capabilities(
    lab: Lab,
) -> None:
    app = DevLabApp(lab, defaults=FAST, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_add_dialog(pilot)
        assert marks(screen) == {HOST_DEVICE_ID: SELECTED_MARK, PLUG: UNSELECTED_MARK}
        assert SELECTED_MARK != UNSELECTED_MARK
        per_layer = screen.query_one("#add-per_layer", Checkbox)
        threads = screen.query_one("#add-threads", Input)
        power = screen.query_one("#add-power", Checkbox)
        # power is offered (a monitor powers plug:7) but not for host:cpu, and says so
        assert power.display and power.disabled
        assert "not on host:cpu" in str(power.label)
        assert "power: not on host:cpu (no power monitor powers it and" in note(screen)
        assert not per_layer.disabled and not threads.disabled

        await pilot.press("tab")  # from the path field to the device list
        await toggle_device(pilot, screen, PLUG)
        await pilot.pause()
        assert marks(screen) == {HOST_DEVICE_ID: SELECTED_MARK, PLUG: SELECTED_MARK}
        assert per_layer.disabled and threads.disabled
        assert f"threads: not on {PLUG} (its runtime ignores a thread count)" in note(screen)
        assert f"per-layer: not on {PLUG}" in note(screen)

        await toggle_device(pilot, screen, HOST_DEVICE_ID)
        await pilot.pause()
        assert marks(screen) == {HOST_DEVICE_ID: UNSELECTED_MARK, PLUG: SELECTED_MARK}
        assert not power.disabled  # every selected device has a monitor now
        assert "power" not in note(screen)
        request = screen.request()
        assert request.device_ids == [PLUG]
        assert request.values["per_layer"] is False and request.values["threads"] is None
