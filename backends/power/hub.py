"""The monitor hub: every configured power monitor open and streaming for as long as a console
watches, shared with the jobs that capture power.

A Monsoon's port can be opened once (exclusively), so the hub owns each open monitor: the
console's live view, an operator's recording and a job's energy capture all take the same
stream (``PowerChannel``). ``open_all`` opens every configured monitor in a background thread
(again, for one that failed) and lists the other monitors found on this machine; a job that
asks for a monitor nobody opened yet opens it then (the headless ``--run``: on first use).
Every change of a monitor's state is published as ``MonitorChanged``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from backends.core.events import Event, MonitorChanged
from backends.core.records import MonitorState, PowerMonitor
from backends.devices.base import BenchError
from backends.power.agent_rails import AgentRails, RailOpener
from backends.power.capture import MonitorLink, PowerChannel, PowerManager
from backends.power.monsoon.discovery import candidate_ports, discover_monitors, find_monitor
from backends.power.monsoon.driver import Monsoon
from backends.power.monsoon.protocol import MonsoonError
from backends.power.trace import TraceWriter

log = logging.getLogger(__name__)

JOIN_S = 10.0  # how long close() waits for an opening in progress


class MonitorError(ValueError):
    """A request about a monitor the hub cannot honour (unknown, not streaming)."""


def monitor_id_for(link: MonitorLink) -> str:
    """A configured monitor's id, known before it is opened: its serial number, else its port."""
    if link.serial_number is not None:
        return f"monsoon:{link.serial_number}"
    return f"monsoon:{link.port}"


def recording_path(folder: Path, monitor_id: str, now: float | None = None) -> Path:
    """``<folder>/<monitor>-<YYYYmmdd-HHMMSS>.csv``, the monitor id made file-name safe."""
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", monitor_id).strip("-") or "monitor"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return folder / f"{name}-{stamp}.csv"


def usb_monitor_ports() -> list[str]:
    """Serial ports whose USB id is an LVPM's (where unconfigured monitors are looked for)."""
    return [info.port for info in candidate_ports()]


@dataclasses.dataclass
class _Slot:
    """One monitor and what the hub holds of it; ``lock`` serialises opening and closing."""

    monitor: PowerMonitor
    link: MonitorLink | None = None
    channel: PowerChannel | None = None
    recorder: TraceWriter | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class MonitorHub(PowerManager):
    """Owns the open monitors; the ``PowerManager`` the Lab hands its workers."""

    def __init__(
        self,
        links: list[MonitorLink],
        publish: Callable[[Event], None],
        opener: Callable[[str], Monsoon] = Monsoon,
        ports: Callable[[], Iterable[str]] = usb_monitor_ports,
        probe_timeout: float = 0.5,
    ) -> None:
        super().__init__(links, publish, opener)
        self._ports = ports
        self._probe_timeout = probe_timeout
        self._slots: dict[str, _Slot] = {}
        for link in links:
            monitor_id = monitor_id_for(link)
            self._slots[monitor_id] = _Slot(
                PowerMonitor(
                    id=monitor_id,
                    port=link.port,
                    serial_number=link.serial_number,
                    powers=link.device_id,
                    voltage=link.voltage,
                ),
                link,
            )
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._rails: dict[str, AgentRails] = {}  # device id -> a board's own rails, live

    # -- what the front ends see ---------------------------------------------------------

    def monitors(self) -> list[PowerMonitor]:
        """Configured monitors first (config order), then the ones found."""
        with self._lock:
            return [slot.monitor for slot in self._slots.values()] + [
                rails.monitor for rails in self._rails.values()
            ]

    def streams_rails(self, device_id: str) -> bool:
        """A board's live rails are connected: its jobs' rail samples are in the view already."""
        with self._lock:
            rails = self._rails.get(device_id)
        return rails is not None and rails.monitor.state.streaming

    def open_rails(self, device_id: str, opener: RailOpener) -> None:
        """Stream a board's own rails (``tegrastats:<device>``) from now until :meth:`close`;
        again if it failed. Nothing happens for one already streaming."""
        with self._lock:
            if self._closed:
                return
            rails = self._rails.setdefault(device_id, AgentRails(device_id, opener, self._publish))
        rails.open()

    def _set(self, slot: _Slot, **changes: object) -> None:
        slot.monitor = dataclasses.replace(slot.monitor, **changes)  # type: ignore[arg-type]
        self._publish(MonitorChanged(slot.monitor))

    # -- opening -------------------------------------------------------------------------

    def open_all(self) -> None:
        """Open every configured monitor that is not streaming, then look for others, in a
        background thread; the states arrive as ``MonitorChanged`` events."""
        with self._lock:
            if self._closed:
                return
            wanted = [
                slot
                for slot in self._slots.values()
                if slot.link is not None
                and slot.channel is None
                and slot.monitor.state is not MonitorState.OPENING
            ]
            for slot in wanted:
                self._set(slot, state=MonitorState.OPENING, error=None)
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(
                target=self._open_then_look, args=(wanted,), name="power-monitors", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _open_then_look(self, slots: list[_Slot]) -> None:
        for slot in slots:
            with slot.lock:
                try:
                    self._open(slot)
                except Exception as error:  # a bug here must not leave the slot "opening"
                    log.exception("opening %s failed", slot.monitor.id)
                    self._set(slot, state=MonitorState.FAILED, error=repr(error))
        try:
            self._look_for_others()
        except Exception:  # a probe that goes wrong hides nothing configured
            log.exception("looking for power monitors failed")

    def _open(self, slot: _Slot) -> None:
        """Open ``slot``'s monitor and start its stream (caller holds ``slot.lock``); a failure
        leaves the slot FAILED with the reason."""
        if slot.channel is not None:  # open already (a job opened it meanwhile)
            if slot.monitor.state is MonitorState.OPENING:
                streaming = MonitorState.RECORDING if slot.recorder else MonitorState.CONNECTED
                self._set(slot, state=streaming)
            return
        if self._closed:
            return
        link = slot.link
        assert link is not None
        if slot.monitor.state is not MonitorState.OPENING:
            self._set(slot, state=MonitorState.OPENING, error=None)
        try:
            port = link.port or find_monitor(link.serial_number or 0).port
            monsoon = self._opener(port)
        except (MonsoonError, OSError) as error:
            self._set(slot, state=MonitorState.FAILED, error=str(error))
            return
        try:
            if link.voltage is not None:
                monsoon.set_voltage(link.voltage)
            channel = PowerChannel(slot.monitor.id, monsoon, self._publish)
            channel.start(on_error=lambda error: self._stream_failed(slot, channel, error))
        except (MonsoonError, OSError) as error:
            monsoon.close()
            self._set(slot, state=MonitorState.FAILED, error=str(error))
            return
        status = monsoon.last_status
        slot.channel = channel
        self._set(
            slot,
            state=MonitorState.CONNECTED,
            error=None,
            port=port,
            serial_number=monsoon.serial_number,
            voltage=link.voltage if link.voltage is not None else _set_voltage(status),
        )
        if self._closed:  # closed while this one was opening
            self._close_slot(slot)

    def _stream_failed(self, slot: _Slot, channel: PowerChannel, error: MonsoonError) -> None:
        """The port failed mid-run (unplugged). Called on the driver's reader thread, which a
        closing slot may be joining under ``slot.lock``: the slot is failed from a thread of
        its own."""
        with self._lock:
            if self._closed:  # the hub is closing the port itself
                return
            thread = threading.Thread(
                target=self._fail, args=(slot, channel, error), name="power-failed", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _fail(self, slot: _Slot, channel: PowerChannel, error: MonsoonError) -> None:
        """The slot fails with the reason and its recording ends (what it holds stays on
        disk); the port is released so that ``open_all`` can take it again."""
        with slot.lock:
            if slot.channel is not channel or self._closed:
                return  # closed or reopened meanwhile
            self._end_recording(slot)
            self._drop_channel(slot)
            self._set(slot, state=MonitorState.FAILED, error=str(error), recording=None)

    def _look_for_others(self) -> None:
        """List the monitors on this machine that no ``[[power.monitors]]`` names (probed,
        not opened: probing a port the hub holds is refused by its exclusive lock anyway)."""
        with self._lock:
            known = {slot.monitor.port for slot in self._slots.values() if slot.monitor.port}
        ports = [port for port in self._ports() if port not in known]
        if not ports:
            return
        for info in discover_monitors(probe=True, ports=ports, timeout=self._probe_timeout):
            with self._lock:
                if self._closed or info.id in self._slots:
                    continue
                slot = self._slots[info.id] = _Slot(
                    PowerMonitor(
                        id=info.id,
                        port=info.port,
                        serial_number=info.serial_number,
                        state=MonitorState.AVAILABLE,
                        configured=False,
                    )
                )
                self._publish(MonitorChanged(slot.monitor))

    # -- jobs ----------------------------------------------------------------------------

    def channel_for(self, device_id: str) -> PowerChannel:
        """The stream of the monitor that powers ``device_id``: the open one, shared, or opened
        now (waiting for an opening in progress); BenchError says why there is none."""
        link = self.links.get(device_id)
        if link is None:
            return super().channel_for(device_id)  # raises, naming what to configure
        slot = self._slots[monitor_id_for(link)]
        with slot.lock:
            self._open(slot)
            if slot.channel is None:
                raise BenchError(f"power monitor for {device_id}: {slot.monitor.error or 'closed'}")
            return slot.channel

    # -- recording -----------------------------------------------------------------------

    def start_recording(self, monitor_id: str, folder: Path) -> Path:
        """Record every sample of a streaming monitor into a new CSV in ``folder``, each batch
        written through as it arrives (a crash loses nothing already received)."""
        rails = self._rails_named(monitor_id)
        if rails is not None:
            if not rails.monitor.state.streaming:
                reason = rails.monitor.error or rails.monitor.state.value
                raise MonitorError(f"{monitor_id} is not streaming ({reason})")
            return rails.start_recording(recording_path(folder, monitor_id))
        slot = self._slot(monitor_id)
        with slot.lock:
            if slot.recorder is not None:
                return slot.recorder.path
            if slot.channel is None:
                reason = slot.monitor.error or slot.monitor.state.value
                raise MonitorError(f"{monitor_id} is not streaming ({reason})")
            writer = TraceWriter(recording_path(folder, monitor_id), flush_every=1)
            slot.recorder = writer
            slot.channel.add_writer(writer)
            self._set(slot, state=MonitorState.RECORDING, recording=str(writer.path))
            return writer.path

    def stop_recording(self, monitor_id: str) -> Path | None:
        """Stop the recording (the file is complete when this returns); None if none ran."""
        rails = self._rails_named(monitor_id)
        if rails is not None:
            return rails.stop_recording()
        slot = self._slot(monitor_id)
        with slot.lock:
            path = self._end_recording(slot)
            if path is not None and slot.monitor.state is MonitorState.RECORDING:
                self._set(slot, state=MonitorState.CONNECTED, recording=None)
            return path

    def _end_recording(self, slot: _Slot) -> Path | None:
        writer, slot.recorder = slot.recorder, None
        if writer is None:
            return None
        if slot.channel is not None:
            slot.channel.remove_writer(writer)
        writer.close()
        return writer.path

    def _rails_named(self, monitor_id: str) -> AgentRails | None:
        with self._lock:
            return next((r for r in self._rails.values() if r.monitor.id == monitor_id), None)

    def _slot(self, monitor_id: str) -> _Slot:
        with self._lock:
            slot = self._slots.get(monitor_id)
        if slot is None:
            known = ", ".join(self._slots) or "none"
            raise MonitorError(f"unknown power monitor {monitor_id!r} (monitors: {known})")
        return slot

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every recording and stream, join the threads and release the ports."""
        with self._lock:
            self._closed = True
            threads, slots = list(self._threads), list(self._slots.values())
            rails = list(self._rails.values())
        for board in rails:
            try:
                board.close()
            except Exception:  # one board's teardown never stops the others'
                log.exception("closing %s failed", board.monitor.id)
        for thread in threads:
            thread.join(JOIN_S)
        for slot in slots:
            with slot.lock:
                self._close_slot(slot)

    def _close_slot(self, slot: _Slot) -> None:
        try:
            self._end_recording(slot)
        except Exception:  # one file's trouble never keeps a port open
            log.exception("closing the recording of %s failed", slot.monitor.id)
        self._drop_channel(slot)
        if slot.link is not None and slot.monitor.state is not MonitorState.CLOSED:
            self._set(slot, state=MonitorState.CLOSED, recording=None)

    def _drop_channel(self, slot: _Slot) -> None:
        channel, slot.channel = slot.channel, None
        if channel is None:
            return
        try:
            channel.close()
        except Exception:  # one monitor's teardown never stops the others'
            log.exception("closing %s failed", slot.monitor.id)


def _set_voltage(status: object) -> float | None:
    """The unit's output voltage setting from its status (None when off or unknown)."""
    volts = getattr(status, "output_voltage_setting", None)
    raw = getattr(status, "output_voltage_raw", 0)
    return float(volts) if volts is not None and raw else None
