"""Devices: a live table that follows hot-plug, the power monitors (configured or found) with
their state, and a pane with every property of one device."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static

from backends.core.records import STATE_HINT, Device, DeviceState, MonitorState, PowerMonitor
from console.tui.state import Changes, LabState
from console.tui.views.table import cursor_key, remove_rows, upsert_row

COLUMNS = ("id", "kind", "name", "state", "runtimes", "temp", "battery")
STATE_STYLE = {
    DeviceState.ONLINE: "green",
    DeviceState.BUSY: "yellow",
    DeviceState.OFFLINE: "red",
    DeviceState.UNAUTHORIZED: "magenta",
}


def device_cells(device: Device) -> list[str | Text]:
    props = device.properties
    temperature = props.get("temperature_c")
    battery = props.get("battery_level")
    state = Text(device.state.value, style=STATE_STYLE.get(device.state, ""))
    drift = props.get("drift")
    if isinstance(drift, dict) and drift.get("drifting"):
        ratio = drift.get("ratio")
        shown = f" drifting x{ratio:.2f}" if isinstance(ratio, int | float) else " drifting"
        state.append(shown, style="bold red")
    return [
        device.id,
        device.kind,
        device.name,
        state,
        ", ".join(device.runtimes),
        f"{temperature:.0f} °C" if isinstance(temperature, int | float) else "-",
        f"{battery}%" if battery is not None else "-",
    ]


MONITOR_COLUMNS = ("monitor", "powers", "state", "serial", "port", "voltage")
STATE_WIDTH = 60  # a long failure reason is cut here; the Power view shows it whole
MONITOR_STYLE = {
    MonitorState.CONNECTED: "green",
    MonitorState.RECORDING: "bold red",
    MonitorState.FAILED: "red",
    MonitorState.OPENING: "yellow",
}


def monitor_cells(monitor: PowerMonitor) -> list[str | Text]:
    state = Text(monitor.state.value, style=MONITOR_STYLE.get(monitor.state, "dim"))
    if monitor.state is MonitorState.FAILED and monitor.error:
        state.append(f": {monitor.error}")
    elif monitor.state is MonitorState.AVAILABLE:
        state.append(" (not in [[power.monitors]])")
    state.truncate(STATE_WIDTH, overflow="ellipsis")
    return [
        monitor.id,
        monitor.powers or "-",
        state,
        str(monitor.serial_number) if monitor.serial_number is not None else "-",
        monitor.port or "-",
        f"{monitor.voltage:.2f} V" if monitor.voltage is not None else "-",
    ]


def device_detail(device: Device | None) -> Table | Text:
    if device is None:
        return Text("no device selected", style="dim")
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("id", Text(device.id))
    table.add_row("state", device.state.value)
    if device.properties.get(STATE_HINT):
        table.add_row("", Text(str(device.properties[STATE_HINT])))
    drift = device.properties.get("drift")
    if isinstance(drift, dict) and drift.get("drifting"):
        table.add_row(Text("drift", style="bold red"), Text(str(drift.get("reason", ""))))
    table.add_row("runtimes", Text(", ".join(device.runtimes) or "-"))
    for key, value in sorted(device.properties.items()):
        if key != STATE_HINT:  # shown under the state
            table.add_row(Text(key), Text(str(value)))
    return table


class DevicesView(Vertical):
    """Every device the lab sees; the detail pane follows the cursor."""

    def __init__(self, state: LabState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state

    def compose(self) -> ComposeResult:
        yield DataTable(id="devices-table", cursor_type="row", zebra_stripes=True)
        with Vertical(id="monitors"):
            yield Label("power monitors", classes="panel-title")
            yield DataTable(id="monitors-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="device-detail", classes="detail")

    def on_mount(self) -> None:
        table = self.query_one("#devices-table", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        monitors = self.query_one("#monitors-table", DataTable)
        for column in MONITOR_COLUMNS:
            monitors.add_column(column, key=column)
        self.query_one("#monitors").display = False

    def update_from(self, changes: Changes | None) -> None:
        """Apply changed rows (all rows when ``changes`` is None)."""
        state = self.state
        if changes is None or changes.monitors:
            self._show_monitors()
        table = self.query_one("#devices-table", DataTable)
        if changes is None:
            remove_rows(table, [k.value for k in table.rows if k.value not in state.devices])
            ids = list(state.devices)
        else:
            remove_rows(table, changes.removed_devices)
            ids = [i for i in changes.devices if i in state.devices]
        for device_id in ids:
            upsert_row(table, device_id, device_cells(state.devices[device_id]))
        self._show_detail()

    def _show_monitors(self) -> None:
        table = self.query_one("#monitors-table", DataTable)
        for monitor in self.state.monitors.values():
            # a monitor's state grows ("opening" -> "connected", a failure's reason)
            upsert_row(table, monitor.id, monitor_cells(monitor), update_width=True)
        self.query_one("#monitors").display = bool(self.state.monitors)

    def _show_detail(self) -> None:
        key = cursor_key(self.query_one("#devices-table", DataTable))
        self.query_one("#device-detail", Static).update(
            device_detail(self.state.devices.get(key) if key else None)
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "devices-table":
            self._show_detail()
