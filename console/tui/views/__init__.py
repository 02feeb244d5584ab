"""The console's views. Each renders from ``LabState`` and updates by keyed rows."""

from console.tui.views.devices import DevicesView
from console.tui.views.live import LiveView
from console.tui.views.power import PowerView
from console.tui.views.queue import QueueView
from console.tui.views.results import ResultsView

__all__ = ["DevicesView", "LiveView", "PowerView", "QueueView", "ResultsView"]
