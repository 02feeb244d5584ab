"""Power: one live panel per monitor: its state, V, I and P, a plot and min/mean/max over a
window the operator picks, the sample rate, dropped samples and the running job's energy.

Configured monitors get a panel as soon as the lab lists them (a failed one shows why); any
other source that publishes ``PowerSamples`` events gets one with its first batch (a cluster's
lab hosts, a test). The view only ever sees 100 ms buckets from ``PowerTrace``.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from backends.core.records import MonitorState, PowerMonitor
from console.tui.state import Changes, LabState, PowerTrace

WINDOWS_S = (5.0, 10.0, 30.0, 60.0)  # what [ and ] cycle through
DEFAULT_WINDOW_S = 10.0
STATE_STYLE = {
    MonitorState.CONNECTED: "green",
    MonitorState.RECORDING: "bold red",
    MonitorState.FAILED: "red",
    MonitorState.OPENING: "yellow",
}


def _watts(value: float | None) -> str:
    return f"{value:.3f} W" if value is not None else "-"


def _value(value: float | None, unit: str, digits: int = 3) -> str:
    return f"{value:.{digits}f} {unit}" if value is not None else "-"


def power_numbers(trace: PowerTrace | None, window_s: float) -> Text:
    """Two lines: V, I, P, rate and drops; then min/mean/max over the window, energy, count."""
    if trace is None:
        return Text("no samples yet", style="dim")
    low, mean, high = trace.window(window_s)
    energy = trace.energy_j
    rate = trace.rate_hz
    return Text.assemble(
        ("V ", "dim"),
        _value(trace.volts, "V"),
        ("   I ", "dim"),
        _value(trace.amps, "A", 4),
        ("   P ", "dim"),
        _watts(trace.current_w),
        ("   rate ", "dim"),
        f"{rate:.0f} samples/s" if rate is not None else "-",
        ("   dropped ", "dim"),
        f"{trace.dropped}",
        "\n",
        (f"last {window_s:.0f} s: min ", "dim"),
        _watts(low),
        ("   mean ", "dim"),
        _watts(mean),
        ("   max ", "dim"),
        _watts(high),
        ("   job energy ", "dim"),
        f"{energy:.3f} J" if energy is not None else "-",
        ("   samples ", "dim"),
        f"{trace.samples}",
    )


def monitor_state_line(monitor: PowerMonitor) -> Text:
    """What the monitor is doing, and the key that changes it."""
    text = Text(monitor.state.value, style=STATE_STYLE.get(monitor.state, "dim"))
    if monitor.state is MonitorState.FAILED:
        text.append(f": {monitor.error or 'unknown error'}", style="red")
        text.append("   (o reopens)", style="dim")
    elif monitor.state is MonitorState.RECORDING:
        text.append(f" to {monitor.recording}")
        text.append("   (r stops)", style="dim")
    elif monitor.state is MonitorState.CONNECTED:
        text.append(f" on {monitor.port}" if monitor.port else "")
        text.append("   (r records)", style="dim")
    elif monitor.state is MonitorState.CLOSED:
        text.append("   (o opens)", style="dim")
    return text


def keys_hint(window_s: float) -> Text:
    return Text.assemble(
        ("r", "bold"),
        " record / stop   ",
        ("o", "bold"),
        " reopen monitors   ",
        ("[ ]", "bold"),
        f" window ({window_s:.0f} s)   ",
        ("tab", "bold"),
        " choose a monitor",
    )


class MonitorPanel(Vertical, can_focus=True):
    """One monitor; focus it (tab, click) to choose what ``r`` records."""

    def __init__(self, monitor_id: str, **kwargs: object) -> None:
        super().__init__(classes="monitor-panel", **kwargs)  # type: ignore[arg-type]
        self.monitor_id = monitor_id
        # what to draw once mounted: a failed monitor sends no samples to draw it later
        self.pending: tuple[PowerTrace | None, PowerMonitor | None, float] | None = None

    def compose(self) -> ComposeResult:
        yield Label(Text(self.monitor_id), classes="panel-title")
        yield Static(classes="monitor-state")
        yield Sparkline([], classes="power-plot")
        yield Static(classes="power-numbers")

    def on_mount(self) -> None:
        if self.pending is not None:
            self.show(*self.pending)

    def show(self, trace: PowerTrace | None, monitor: PowerMonitor | None, window_s: float) -> None:
        if not self.query(Sparkline):  # not composed yet: on_mount draws
            self.pending = (trace, monitor, window_s)
            return
        self.pending = None
        title = Text(f"{self.monitor_id}: watts over the last {window_s:.0f} s")
        if monitor is not None and monitor.powers:
            title.append(f"   powers {monitor.powers}", style="not bold")
        self.query_one(".panel-title", Label).update(title)
        state = self.query_one(".monitor-state", Static)
        state.display = monitor is not None
        if monitor is not None:
            state.update(monitor_state_line(monitor), layout=False)
        plot = self.query_one(Sparkline)
        plot.display = trace is not None  # a monitor that never streamed has nothing to plot
        plot.data = trace.series_over(window_s) if trace else []
        numbers = power_numbers(trace, window_s)
        self.query_one(".power-numbers", Static).update(numbers, layout=False)


class PowerView(VerticalScroll):
    def __init__(self, state: LabState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state
        self.window_s = DEFAULT_WINDOW_S
        self._keys_window: float | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="power-keys", classes="keys-hint")
        yield Static(
            "no monitor: connect a Monsoon power monitor (or start the virtual one)",
            id="power-empty",
            classes="placeholder",
        )

    def monitor_ids(self) -> list[str]:
        """Configured monitors (config order), then any other source of samples."""
        shown = [m.id for m in self.state.monitors.values() if m.configured]
        shown += [m for m in self.state.power if m not in shown]
        return shown

    def cycle_window(self, step: int) -> float:
        """The next (step 1) or previous (-1) plot and statistics window; redraws."""
        index = WINDOWS_S.index(self.window_s) if self.window_s in WINDOWS_S else 1
        self.window_s = WINDOWS_S[(index + step) % len(WINDOWS_S)]
        self.update_from(None)
        return self.window_s

    def chosen_monitor(self) -> str | None:
        """The focused panel's monitor, else the first one the lab can record."""
        focused = self.screen.focused if self.is_mounted else None
        if isinstance(focused, MonitorPanel) and focused.parent is self:
            return focused.monitor_id
        ids = self.monitor_ids()
        monitors = self.state.monitors
        streaming = [i for i in ids if i in monitors and monitors[i].state.streaming]
        return (streaming or ids or [None])[0]

    def update_from(self, changes: Changes | None) -> None:
        if changes is not None and not changes.power:
            return
        panels = {panel.monitor_id: panel for panel in self.query(MonitorPanel)}
        ids = self.monitor_ids()
        for monitor_id in ids:
            if monitor_id not in panels:
                panels[monitor_id] = MonitorPanel(monitor_id)
                self.mount(panels[monitor_id])
        self.query_one("#power-empty").display = not ids
        keys = self.query_one("#power-keys", Static)
        keys.display = bool(ids)
        if self._keys_window != self.window_s:  # a layout pass only when the text changes
            self._keys_window = self.window_s
            keys.update(keys_hint(self.window_s))
        for monitor_id in ids:
            panel = panels[monitor_id]
            trace = self.state.power.get(monitor_id)
            monitor = self.state.monitors.get(monitor_id)
            panel.show(trace, monitor, self.window_s)
