"""A board's own rails, live, as a monitor of the hub: ``tegrastats:<device id>``.

A Jetson's agent streams its tegrastats samples (``GET /v1/power/stream``); the device backend
opens that stream (``DeviceBackend.rail_stream``) and this source publishes each batch as
``PowerSamples`` in watts of the board rail (``VDD_IN``; tegrastats gives no volts or amps), so
the Power view shows the board whether a job runs or not. A broken link is retried with backoff
while the source is open; its state is a ``PowerMonitor`` published as ``MonitorChanged``. A
recording writes every sample with the board's stamp to a trace file (volts and amps NaN).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from backends.core.events import Event, MonitorChanged, PowerSamples
from backends.core.records import MonitorState, PowerMonitor
from backends.power.rails import rail_monitor_id
from backends.power.trace import TraceWriter

log = logging.getLogger(__name__)

RailOpener = Callable[[], Iterator[dict[str, Any]]]
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
JOIN_S = 3.0  # the stream pings every second, so the reader sees a close within that


class AgentRails:
    """One board's live rails: :meth:`open` starts the reader thread, :meth:`close` ends it."""

    def __init__(
        self, device_id: str, opener: RailOpener, publish: Callable[[Event], None]
    ) -> None:
        self.device_id = device_id
        self._opener = opener
        self._publish = publish
        self.monitor = PowerMonitor(
            id=rail_monitor_id(device_id), port="tegrastats", powers=device_id, configured=False
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._recorder: TraceWriter | None = None  # guarded by _lock

    def open(self) -> None:
        """Start streaming (again, after a close or a failure that gave up)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._set(state=MonitorState.OPENING, error=None)
            self._thread = threading.Thread(
                target=self._run, name=f"rails-{self.device_id}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the reader and wait for it; the monitor shows closed."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(JOIN_S)
        self.stop_recording()
        self._set(state=MonitorState.CLOSED, error=None, recording=None)

    def start_recording(self, path: Path) -> Path:
        """Write every sample from now on to the trace ``path`` (each batch written through);
        the one already recording if there is one."""
        with self._lock:
            if self._recorder is None:
                self._recorder = TraceWriter(path, flush_every=1)
            path = self._recorder.path
        self._set(state=self._streaming_state(), recording=str(path))
        return path

    def stop_recording(self) -> Path | None:
        """End the recording (its file is complete when this returns); None if none ran."""
        with self._lock:
            writer, self._recorder = self._recorder, None
            if writer is None:
                return None
            writer.close()
        if self.monitor.state is MonitorState.RECORDING:
            self._set(state=MonitorState.CONNECTED, recording=None)
        return writer.path

    def _streaming_state(self) -> MonitorState:
        return MonitorState.RECORDING if self._recorder is not None else MonitorState.CONNECTED

    def _set(self, **changes: Any) -> None:
        self.monitor = dataclasses.replace(self.monitor, **changes)
        self._publish(MonitorChanged(self.monitor))

    def _record(self, batch: dict[str, Any]) -> None:
        times, watts = batch_arrays(batch)
        with self._lock:
            if self._recorder is not None and times:
                nan = np.full(len(times), np.nan)
                self._recorder.write_arrays(np.asarray(times), nan, nan, np.asarray(watts))

    def _run(self) -> None:
        delay = FIRST_RETRY_S
        while not self._stop.is_set():
            try:
                for batch in self._opener():
                    if self._stop.is_set():
                        return
                    if not self.monitor.state.streaming:
                        self._set(state=self._streaming_state(), error=None)
                        delay = FIRST_RETRY_S
                    published = batch_samples(self.monitor.id, batch)
                    if published is not None:
                        self._record(batch)
                        self._publish(published)
                reason = "the agent ended the stream"
            except ConnectionError as error:
                reason = str(error)
            except Exception as error:  # refused (a bad token): say why, retry slowly
                reason = str(error) or type(error).__name__
                delay = MAX_RETRY_S
            if self._stop.is_set():
                return
            self._set(state=MonitorState.FAILED, error=reason)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, MAX_RETRY_S)
            self._set(state=MonitorState.OPENING)


def batch_samples(monitor_id: str, batch: dict[str, Any]) -> PowerSamples | None:
    """One stream batch as ``PowerSamples`` (watts of the board rail), None when it holds no
    usable sample. The samples are evenly spaced at the batch's interval from the first one's
    stamp (the board's clock), as a Monsoon's are."""
    times, watts = batch_arrays(batch)
    interval_ms = batch.get("interval_ms")
    if not times or not _number(interval_ms) or interval_ms <= 0:
        return None
    dropped = batch.get("dropped")
    return PowerSamples(
        monitor_id=monitor_id,
        t0=times[0],
        interval_s=float(interval_ms) / 1000.0,
        watts=tuple(watts),
        dropped=dropped if isinstance(dropped, int) and dropped > 0 else 0,
    )


def batch_arrays(batch: Any) -> tuple[list[float], list[float]]:
    """The usable samples of one stream batch: their stamps (board clock, s) and watts."""
    samples = batch.get("samples") if isinstance(batch, dict) else None
    times: list[float] = []
    watts: list[float] = []
    for sample in samples if isinstance(samples, list) else []:
        if not isinstance(sample, dict):
            continue
        t, mw = sample.get("t"), sample.get("mw")
        if _number(t) and _number(mw) and mw >= 0:
            times.append(float(t))
            watts.append(float(mw) / 1000.0)
    return times, watts


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
