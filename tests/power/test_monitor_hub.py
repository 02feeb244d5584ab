"""The monitor hub over virtual Monsoons on real pseudo-terminals: it opens every configured
monitor in the background and streams it with no job, says why one failed and opens it again on
request, lists the monitors nobody configured, records every sample to CSV, shares the open
port with a job's capture, and releases the ports when it closes.

Every wait is bounded polling (``wait_until``); nothing asserts on elapsed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.core.events import Event, MonitorChanged, PowerSamples
from backends.core.records import MonitorState
from backends.devices.base import BenchError
from backends.power.capture import MonitorLink
from backends.power.hub import MonitorError, MonitorHub, recording_path
from backends.power.monsoon.driver import Monsoon
from backends.power.monsoon.protocol import MonsoonError
from backends.power.trace import read_trace
from backends.virtual.monsoon import VirtualMonsoon
from support.waiting import wait_until

WAIT_S = 15.0
RATE_HZ = 5000


class Recorder:
    """The hub's events, from any thread."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def samples(self, monitor_id: str) -> list[PowerSamples]:
        with self._lock:
            return [
                e for e in self.events if isinstance(e, PowerSamples) and e.monitor_id == monitor_id
            ]

    def states(self, monitor_id: str) -> list[MonitorState]:
        with self._lock:
            return [
                e.monitor.state
                for e in self.events
                if isinstance(e, MonitorChanged) and e.monitor.id == monitor_id
            ]


@pytest.fixture
def sim() -> Iterator[VirtualMonsoon]:
    with VirtualMonsoon(serial_number=4242, baseline_w=0.8, noise_w=0.005) as device:
        yield device


def state_of(hub: MonitorHub, monitor_id: str) -> MonitorState:
    return next(m.state for m in hub.monitors() if m.id == monitor_id)


def port_is_free(port: str) -> bool:
    """The driver opens ports exclusively: a port someone holds cannot be opened again."""
    try:
        Monsoon(port).close()
    except MonsoonError:
        return False
    return True


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("monsoon-", "power-"))]


def test_configured_monitors_open_in_the_background_and_stream_without_a_job(
    sim: VirtualMonsoon,
) -> None:
    events = Recorder()
    link = MonitorLink("adb:phone", port=sim.port, voltage=3.9)
    hub = MonitorHub([link], events, ports=list)
    try:
        [listed] = hub.monitors()
        assert listed.id == f"monsoon:{sim.port}" and listed.state is MonitorState.CLOSED
        assert listed.powers == "adb:phone" and listed.configured
        hub.open_all()
        wait_until(lambda: state_of(hub, listed.id) is MonitorState.CONNECTED, WAIT_S, "open")
        [monitor] = hub.monitors()
        assert monitor.serial_number == 4242 and monitor.voltage == 3.9
        assert monitor.port == sim.port and monitor.error is None
        assert events.states(listed.id)[:2] == [MonitorState.OPENING, MonitorState.CONNECTED]
        wait_until(lambda: len(events.samples(listed.id)) >= 5, WAIT_S, "samples")
        batch = events.samples(listed.id)[-1]
        assert batch.watts and batch.volts == pytest.approx(3.9, abs=0.05)
        assert batch.amps == pytest.approx(0.8 / 3.9, rel=0.05)
        assert not port_is_free(sim.port), "the hub holds the port"
        hub.open_all()  # opening again leaves a streaming monitor alone
        time.sleep(0.2)
        assert state_of(hub, listed.id) is MonitorState.CONNECTED
    finally:
        hub.close()
    assert state_of(hub, listed.id) is MonitorState.CLOSED
    assert port_is_free(sim.port), "closing released the port"
    assert not reader_threads(), "closing joined the threads"


def test_a_monitor_that_fails_says_why_and_opens_again_on_request(tmp_path: Path) -> None:
    port = tmp_path / "ttyMONSOON"  # nothing there yet
    events = Recorder()
    hub = MonitorHub([MonitorLink("adb:phone", port=str(port))], events, ports=list)
    monitor_id = f"monsoon:{port}"
    try:
        hub.open_all()
        wait_until(lambda: state_of(hub, monitor_id) is MonitorState.FAILED, WAIT_S, "failure")
        [failed] = hub.monitors()
        assert "cannot open the port" in (failed.error or "") and str(port) in failed.error
        with pytest.raises(MonitorError, match="not streaming"):
            hub.start_recording(monitor_id, tmp_path)
        with VirtualMonsoon(serial_number=7, link=port) as sim:
            hub.open_all()
            wait_until(
                lambda: state_of(hub, monitor_id) is MonitorState.CONNECTED, WAIT_S, "reopen"
            )
            assert hub.monitors()[0].error is None
            wait_until(lambda: events.samples(monitor_id), WAIT_S, "samples after the reopen")
            sim.stop()  # unplugged mid-stream
            wait_until(lambda: state_of(hub, monitor_id) is MonitorState.FAILED, WAIT_S, "unplug")
            assert "sample stream failed" in (hub.monitors()[0].error or "")
        with VirtualMonsoon(serial_number=7, link=port):
            hub.open_all()
            wait_until(lambda: state_of(hub, monitor_id) is MonitorState.CONNECTED, WAIT_S, "again")
    finally:
        hub.close()
    assert not reader_threads()


def test_monitors_nobody_configured_are_listed_not_opened(sim: VirtualMonsoon) -> None:
    with VirtualMonsoon(serial_number=99) as other:
        events = Recorder()
        hub = MonitorHub(
            [MonitorLink("adb:phone", port=sim.port)], events, ports=lambda: [sim.port, other.port]
        )
        try:
            hub.open_all()
            wait_until(lambda: len(hub.monitors()) == 2, WAIT_S, "the other monitor listed")
            configured, found = hub.monitors()
            assert configured.configured and found.id == "monsoon:99"
            assert not found.configured and found.state is MonitorState.AVAILABLE
            assert found.port == other.port and found.powers is None
            assert port_is_free(other.port), "a found monitor is probed, not held"
            assert not events.samples("monsoon:99")
        finally:
            hub.close()


def test_recording_writes_every_sample_to_csv_as_it_arrives(
    sim: VirtualMonsoon, tmp_path: Path
) -> None:
    events = Recorder()
    hub = MonitorHub([MonitorLink("adb:phone", port=sim.port)], events, ports=list)
    monitor_id = f"monsoon:{sim.port}"
    try:
        hub.open_all()
        wait_until(lambda: state_of(hub, monitor_id) is MonitorState.CONNECTED, WAIT_S, "open")
        path = hub.start_recording(monitor_id, tmp_path / "power")
        assert path.parent == tmp_path / "power" and path.name.startswith("monsoon-dev-pts-")
        assert hub.start_recording(monitor_id, tmp_path) == path  # one recording at a time
        [monitor] = hub.monitors()
        assert monitor.state is MonitorState.RECORDING and monitor.recording == str(path)
        # written through: rows are on disk while the recording runs
        wait_until(lambda: len(path.read_text().splitlines()) > 1000, WAIT_S, "rows on disk")
        time.sleep(1.0)
        assert hub.stop_recording(monitor_id) == path
        assert hub.stop_recording(monitor_id) is None
        assert state_of(hub, monitor_id) is MonitorState.CONNECTED
    finally:
        hub.close()
    trace = read_trace(path)
    seconds = trace["t_s"].iloc[-1] - trace["t_s"].iloc[0]
    assert seconds > 1.0
    assert len(trace) / seconds >= 0.9 * RATE_HZ
    assert trace["watts"].mean() == pytest.approx(0.8, rel=0.05)
    assert (trace["t_s"].diff().dropna() > 0).all()


def test_a_job_shares_the_open_monitor_and_its_recording(
    sim: VirtualMonsoon, tmp_path: Path
) -> None:
    events = Recorder()
    hub = MonitorHub([MonitorLink("adb:phone", port=sim.port)], events, ports=list)
    monitor_id = f"monsoon:{sim.port}"
    try:
        hub.open_all()
        channel = hub.channel_for("adb:phone")  # waits for the opening in progress
        assert state_of(hub, monitor_id) is MonitorState.CONNECTED
        assert hub.channel_for("adb:phone") is channel  # the port is opened once
        recording = hub.start_recording(monitor_id, tmp_path)
        with channel.capture(tmp_path / "job" / "power.csv") as job_trace:
            wait_until(lambda: job_trace.stat().st_size > 50_000, WAIT_S, "the job's trace")
        hub.stop_recording(monitor_id)
        job = read_trace(job_trace)
        whole = read_trace(recording)
        assert len(job) > 1000 and set(job["t_s"]) <= set(whole["t_s"])
        with pytest.raises(BenchError, match="no monitor powers it"):
            hub.channel_for("adb:other")
    finally:
        hub.close()


def test_a_job_opens_a_monitor_nobody_opened_on_first_use(sim: VirtualMonsoon) -> None:
    hub = MonitorHub([MonitorLink("adb:phone", port=sim.port)], Recorder(), ports=list)
    try:
        channel = hub.channel_for("adb:phone")
        assert state_of(hub, f"monsoon:{sim.port}") is MonitorState.CONNECTED
        wait_until(lambda: channel.monsoon.counts.received > 0, WAIT_S, "samples")
    finally:
        hub.close()
    assert port_is_free(sim.port)


def test_a_job_on_a_failed_monitor_gets_the_reason(tmp_path: Path) -> None:
    port = tmp_path / "missing"
    hub = MonitorHub([MonitorLink("adb:phone", port=str(port))], Recorder(), ports=list)
    try:
        with pytest.raises(BenchError, match="power monitor for adb:phone: .*cannot open"):
            hub.channel_for("adb:phone")
    finally:
        hub.close()


def test_recording_paths_are_file_name_safe(tmp_path: Path) -> None:
    path = recording_path(tmp_path, "monsoon:/dev/ttyACM0", now=0.0)
    assert path.parent == tmp_path and path.suffix == ".csv"
    assert path.name.startswith("monsoon-dev-ttyACM0-") and "/" not in path.name
