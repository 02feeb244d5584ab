"""Power: one live plot per monitor with current, mean and peak watts and the job's energy.

Any source that publishes ``PowerSamples`` events feeds it (the Monsoon driver, the virtual
Monsoon, a test); the view only ever sees 100 ms buckets from ``PowerTrace``.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from console.tui.state import POWER_WINDOW_S, Changes, LabState, PowerTrace


def _watts(value: float | None) -> str:
    return f"{value:.3f} W" if value is not None else "-"


def power_numbers(trace: PowerTrace) -> Text:
    energy = trace.energy_j
    return Text.assemble(
        ("now ", "dim"),
        _watts(trace.current_w),
        ("   mean ", "dim"),
        _watts(trace.mean_w),
        ("   peak ", "dim"),
        _watts(trace.peak_w),
        ("   job energy ", "dim"),
        f"{energy:.3f} J" if energy is not None else "-",
        ("   samples ", "dim"),
        f"{trace.samples}",
        ("   dropped ", "dim"),
        f"{trace.dropped}",
    )


class MonitorPanel(Vertical):
    def __init__(self, monitor_id: str, **kwargs: object) -> None:
        super().__init__(classes="monitor-panel", **kwargs)  # type: ignore[arg-type]
        self.monitor_id = monitor_id

    def compose(self) -> ComposeResult:
        yield Label(
            Text(f"{self.monitor_id}: watts over the last {POWER_WINDOW_S:.0f} s"),
            classes="panel-title",
        )
        yield Sparkline([], classes="power-plot")
        yield Static(classes="power-numbers")

    def show(self, trace: PowerTrace) -> None:
        if not self.query(Sparkline):  # mounted but not composed yet: the next tick draws
            return
        self.query_one(Sparkline).data = trace.series
        self.query_one(".power-numbers", Static).update(power_numbers(trace), layout=False)


class PowerView(VerticalScroll):
    def __init__(self, state: LabState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state

    def compose(self) -> ComposeResult:
        yield Static(
            "no monitor: connect a Monsoon power monitor (or start the virtual one)",
            id="power-empty",
            classes="placeholder",
        )

    def update_from(self, changes: Changes | None) -> None:
        if changes is not None and not changes.power:
            return
        panels = {panel.monitor_id: panel for panel in self.query(MonitorPanel)}
        for monitor_id in self.state.power:
            if monitor_id not in panels:
                panels[monitor_id] = MonitorPanel(monitor_id)
                self.mount(panels[monitor_id])
        self.query_one("#power-empty").display = not self.state.power
        for monitor_id, trace in self.state.power.items():
            panel = panels[monitor_id]
            if panel.is_mounted:
                panel.show(trace)
            else:
                panel.call_after_refresh(panel.show, trace)
