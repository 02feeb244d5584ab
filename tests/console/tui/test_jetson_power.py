"""A Jetson in the console (issue 20, point 4): a real virtual Jetson agent on 127.0.0.1 (the
stand-in tegrastats) behind a real ``Lab`` with the DPU backend, driven with Pilot. Its rails
stream into the Power view while no job runs, the Devices view lists the source with its state,
and the Add dialog offers power for it (the board measures its own) but not for the host CPU
(no monitor powers it)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Checkbox, DataTable, Select, SelectionList, Static

from backends.core.lab import Lab
from backends.core.records import JobSettings
from backends.core.store import STORE_FILE, Store
from backends.devices.dpu.backend import DpuBackend
from backends.devices.dpu.config import DpuConfig, Endpoint
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.virtual.jetson import jetson_agent
from backends.virtual.loopback_agent import LoopbackAgent
from console.tui.app import DevLabApp
from console.tui.dialogs import AddModelsScreen
from console.tui.views.power import MonitorPanel
from support.waiting import pilot_wait_for

SIZE = (160, 48)
WAIT_S = 15.0
FAST = JobSettings(warmup=1, runs=5, rounds=1, precision_pct=0)


@pytest.fixture(scope="module")
def jetson(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackAgent]:
    devlab = [sys.executable, "-m", "console.entry"]
    agent = jetson_agent(devlab, tmp_path_factory.mktemp("tui-jetson") / "vj").start()
    try:
        yield agent
    finally:
        agent.stop()  # the pid we started


@pytest.fixture
def lab(jetson: LoopbackAgent, tmp_path: Path) -> Iterator[Lab]:
    token = jetson.token_file.read_text().strip()
    backend = DpuBackend(DpuConfig(endpoints=[Endpoint(jetson.url, token)]))
    lab = Lab(
        Store(tmp_path / STORE_FILE),
        [HostBackend(), backend],
        log_dir=tmp_path / "logs",
        monitor_ports=lambda: [],
    )
    lab.discover()
    yield lab
    lab.shutdown(interrupt=True, timeout=10)


def jetson_id(agent: LoopbackAgent) -> str:
    return f"dpu:{agent.url}"


@pytest.mark.asyncio
async def test_power_view_shows_the_jetson_rails_live_and_devices_list_the_source(
    lab: Lab, jetson: LoopbackAgent
) -> None:
    source = f"tegrastats:{jetson_id(jetson)}"
    app = DevLabApp(lab, defaults=FAST, poll_devices_s=None, start_dispatch=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")

        def numbers() -> str:
            for panel in app.query(MonitorPanel):
                if panel.monitor_id == source:
                    return str(panel.query_one(".power-numbers", Static).content)
            return ""

        await pilot_wait_for(
            pilot, lambda: re.search(r"samples [1-9]\d", numbers()), "live rail samples", WAIT_S
        )
        mean = re.search(r"mean (\d+\.\d+) W", numbers())
        assert mean and 4.5 < float(mean.group(1)) < 5.1, numbers()  # the idle board's VDD_IN
        panel = next(p for p in app.query(MonitorPanel) if p.monitor_id == source)
        state = str(panel.query_one(".monitor-state", Static).content)
        assert state.startswith("connected"), state
        assert not lab.store.rows()  # no job ran: the samples are the board at rest

        await pilot.press("1")
        table = app.query_one("#monitors-table", DataTable)
        await pilot_wait_for(pilot, lambda: table.row_count == 1, "the monitors table", WAIT_S)
        row = [str(cell) for cell in table.get_row_at(0)]
        assert row[0] == source and row[1] == jetson_id(jetson)
        assert row[2].startswith("connected")
    lab.shutdown(interrupt=True, timeout=10)
    assert {m.id: m.state.value for m in lab.monitors()} == {source: "closed"}


@pytest.mark.asyncio
async def test_add_dialog_offers_power_on_the_jetson_not_on_the_host(
    lab: Lab, jetson: LoopbackAgent
) -> None:
    board = jetson_id(jetson)
    app = DevLabApp(
        lab, defaults=FAST, poll_devices_s=None, start_dispatch=False, open_monitors=False
    )
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await pilot_wait_for(
            pilot, lambda: isinstance(app.screen, AddModelsScreen), "add dialog", WAIT_S
        )
        await pilot.pause()
        screen: AddModelsScreen = app.screen  # type: ignore[assignment]
        power = screen.query_one("#add-power", Checkbox)
        note = screen.query_one("#add-unavailable", Static)
        # no monitor anywhere, yet power is offered: the Jetson measures its own
        assert power.display
        assert power.disabled and "not on host:cpu" in str(power.label)  # host selected
        devices = screen.query_one("#add-devices", SelectionList)
        values = [devices.get_option_at_index(i).value for i in range(devices.option_count)]
        prompt = str(devices.get_option_at_index(values.index(board)).prompt)
        assert "power" in prompt and "per-layer" in prompt

        devices.deselect(HOST_DEVICE_ID)
        devices.select(board)
        await pilot.pause()
        assert not power.disabled and "power" not in str(note.content)
        power.value = True
        runtime = screen.query_one("#add-runtime", Select)
        runtime.value = "onnxruntime"  # the host's runtime: the Jetson has no power with it
        await pilot.pause()
        assert power.disabled and f"not on {board}" in str(power.label)
        runtime.value = "trtexec"
        await pilot.pause()
        assert not power.disabled and power.value  # the choice comes back with the runtime
        request = screen.request()
        assert request.device_ids == [board] and request.values["power"] is True
