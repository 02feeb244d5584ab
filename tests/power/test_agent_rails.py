"""A Jetson's rails live in the console: a real agent on 127.0.0.1 (the virtual Jetson, with the
stand-in tegrastats) streams ``GET /v1/power/stream``; the hub's source reads it through the
console's agent client and publishes ``PowerSamples`` as ``tegrastats:<device>``, with no job
running. A wrong token is refused; the agent's tegrastats ends when the last reader leaves."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.core.events import Event, MonitorChanged, PowerSamples
from backends.core.lab import Lab
from backends.core.records import MonitorState
from backends.core.store import STORE_FILE, Store
from backends.devices.dpu.backend import DpuBackend
from backends.devices.dpu.client import AgentClient, AgentRefused
from backends.devices.dpu.config import DpuConfig, Endpoint
from backends.power.agent_rails import AgentRails
from backends.power.hub import MonitorHub
from backends.power.trace import read_trace
from backends.virtual.jetson import jetson_agent
from backends.virtual.loopback_agent import LoopbackAgent
from support.waiting import wait_until

IDLE_W = 4.8  # the stand-in board's VDD_IN at rest (backends/virtual/tools/tegrastats.py)


@pytest.fixture(scope="module")
def jetson(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackAgent]:
    devlab = [sys.executable, "-m", "console.entry"]
    folder = tmp_path_factory.mktemp("rails") / "vj"
    agent = jetson_agent(devlab, folder, interval_ms=100).start()
    try:
        yield agent
    finally:
        agent.stop()  # the pid we started, SIGTERM then SIGKILL


def _token(agent: LoopbackAgent) -> str:
    return agent.token_file.read_text().strip()


def _tegrastats_pids(agent: LoopbackAgent) -> list[int]:
    """The agent's tegrastats processes (stand-ins in their own sessions): found by the
    wrapper path in their command line, among processes whose parent is the agent."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == agent.pid and "tegrastats" in cmdline:
            found.append(int(entry.name))
    return found


def test_agent_info_names_its_power_source(jetson: LoopbackAgent) -> None:
    info = AgentClient(jetson.url, _token(jetson)).info()
    assert info["power"] == {
        "source": "tegrastats",
        "interval_ms": 100,
        "stream": "/v1/power/stream",
    }


def test_hub_streams_the_board_rail_with_no_job_running(jetson: LoopbackAgent) -> None:
    backend = DpuBackend(DpuConfig(endpoints=[Endpoint(jetson.url, _token(jetson))]))
    [device] = backend.discover()
    assert device.properties["power_source"] == "tegrastats"
    assert backend.capabilities(device, "trtexec").power_capture
    opener = backend.rail_stream(device)
    assert opener is not None
    events: list[Event] = []
    hub = MonitorHub([], events.append, ports=lambda: [])
    hub.open_rails(device.id, opener)
    monitor_id = f"tegrastats:{device.id}"
    try:
        batches = wait_until(
            lambda: [e for e in events if isinstance(e, PowerSamples)][2:],
            10,
            what="three batches of live rail samples",
        )
        assert {b.monitor_id for b in batches} == {monitor_id}
        watts = [w for b in batches for w in b.watts]
        assert all(IDLE_W - 0.3 < w < IDLE_W + 0.3 for w in watts), watts
        assert batches[0].interval_s == pytest.approx(0.1)
        assert batches[0].volts is None and batches[0].amps is None  # tegrastats gives mW only
        [listed] = hub.monitors()
        assert listed.id == monitor_id and listed.state is MonitorState.CONNECTED
        assert listed.powers == device.id and hub.streams_rails(device.id)
        assert len(_tegrastats_pids(jetson)) == 1
    finally:
        hub.close()
    states = [e.monitor.state for e in events if isinstance(e, MonitorChanged)]
    assert states[0] is MonitorState.OPENING and states[-1] is MonitorState.CLOSED
    assert MonitorState.CONNECTED in states
    wait_until(lambda: not _tegrastats_pids(jetson), 10, what="tegrastats to end")


def test_recording_the_live_rails_writes_the_board_samples(
    jetson: LoopbackAgent, tmp_path: Path
) -> None:
    backend = DpuBackend(DpuConfig(endpoints=[Endpoint(jetson.url, _token(jetson))]))
    [device] = backend.discover()
    opener = backend.rail_stream(device)
    assert opener is not None
    events: list[Event] = []
    hub = MonitorHub([], events.append, ports=lambda: [])
    monitor_id = f"tegrastats:{device.id}"
    hub.open_rails(device.id, opener)
    try:
        wait_until(lambda: hub.streams_rails(device.id), 10, what="the stream")
        path = hub.start_recording(monitor_id, tmp_path / "power")
        assert hub.monitors()[0].state is MonitorState.RECORDING
        assert hub.monitors()[0].recording == str(path)
        wait_until(lambda: len(read_trace(path)) >= 5, 10, what="five recorded samples")
        assert hub.stop_recording(monitor_id) == path
        assert hub.monitors()[0].state is MonitorState.CONNECTED
    finally:
        hub.close()
    trace = read_trace(path)
    assert trace["t_s"].is_monotonic_increasing
    assert trace["watts"].between(IDLE_W - 0.3, IDLE_W + 0.3).all()
    assert trace["amps"].isna().all() and trace["volts"].isna().all()


def test_two_readers_share_one_tegrastats(jetson: LoopbackAgent) -> None:
    client = AgentClient(jetson.url, _token(jetson))
    first, second = client.power_stream(), client.power_stream()
    try:
        assert next(e for e in first if e.kind == "samples").data["samples"]
        assert next(e for e in second if e.kind == "samples").data["samples"]
        assert len(_tegrastats_pids(jetson)) == 1
    finally:
        first.close()
        second.close()
    wait_until(lambda: not _tegrastats_pids(jetson), 10, what="tegrastats to end")


def test_wrong_token_is_refused_and_the_source_says_why(jetson: LoopbackAgent) -> None:
    with pytest.raises(AgentRefused) as refused:
        next(AgentClient(jetson.url, "not-the-token").power_stream())
    assert refused.value.status == 401
    events: list[Event] = []
    rails = AgentRails(
        "dpu:x", lambda: AgentClient(jetson.url, "wrong").power_stream(), events.append
    )
    rails.open()
    try:
        failed = wait_until(
            lambda: [
                e.monitor
                for e in events
                if isinstance(e, MonitorChanged) and e.monitor.state is MonitorState.FAILED
            ],
            10,
            what="the source to fail",
        )
        assert "401" in (failed[0].error or "")
        assert not [e for e in events if isinstance(e, PowerSamples)]
    finally:
        rails.close()


def test_the_lab_opens_the_rails_of_a_jetson_with_the_monitors(
    jetson: LoopbackAgent, tmp_path: Path
) -> None:
    """What the console does at start: discover, then open_monitors; quitting closes it."""
    backend = DpuBackend(DpuConfig(endpoints=[Endpoint(jetson.url, _token(jetson))]))
    lab = Lab(Store(tmp_path / STORE_FILE), [backend], monitor_ports=lambda: [])
    events: list[Event] = []
    lab.subscribe(events.append)
    lab.discover()
    device_id = f"dpu:{jetson.url}"
    assert lab.device(device_id).capabilities_for("trtexec").power_capture
    lab.open_monitors()
    try:
        wait_until(
            lambda: any(
                isinstance(e, PowerSamples) and e.monitor_id == f"tegrastats:{device_id}"
                for e in events
            ),
            10,
            what="live samples through the lab",
        )
        assert [m.id for m in lab.monitors()] == [f"tegrastats:{device_id}"]
    finally:
        lab.shutdown()
    assert lab.monitors()[0].state is MonitorState.CLOSED
    wait_until(lambda: not _tegrastats_pids(jetson), 10, what="tegrastats to end")


def test_no_power_stream_on_an_agent_without_tegrastats(tmp_path: Path) -> None:
    agent = LoopbackAgent(
        [sys.executable, "-m", "console.entry"], tmp_path / "plain", "plain"
    ).start()
    try:
        client = AgentClient(agent.url, agent.token_file.read_text().strip())
        assert client.info()["power"] is None
        with pytest.raises(AgentRefused) as refused:
            next(client.power_stream())
        assert refused.value.status == 404 and "--tegrastats" in refused.value.message
    finally:
        agent.stop()
