"""The console's views. Each renders from ``LabState`` and updates by keyed rows."""

from console.views.devices import DevicesView
from console.views.live import LiveView
from console.views.power import PowerView
from console.views.queue import QueueView
from console.views.results import ResultsView

__all__ = ["DevicesView", "LiveView", "PowerView", "QueueView", "ResultsView"]
