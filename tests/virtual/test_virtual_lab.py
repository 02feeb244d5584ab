"""The virtual lab (``backends/virtual/lab.py``) with its real pieces: the wheel's adb server,
the virtual phone behind it, the virtual Monsoon on a pty, a ``devlab agent`` process. Each
test starts one lab, checks it from outside as the console would, closes it and checks that
every process it started is gone.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from backends.core.config import load_config
from backends.devices.android.adb import DevlabAdbClient, server_reachable
from backends.devices.android.adb_server import DEFAULT_ADB_PORT
from backends.devices.android.backend import AndroidConfig
from backends.devices.dpu.config import DpuConfig
from backends.power.capture import links_from_config
from backends.power.monsoon.driver import Monsoon
from backends.virtual import registry
from backends.virtual.lab import VirtualLab, VirtualLabError
from support.adb_fixtures import adb_binary

DEVLAB = [sys.executable, "-m", "console.entry"]

pytestmark = pytest.mark.skipif(adb_binary() is None, reason="no adb in the adbutils wheel")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The phone registry (and the agent's caches) in tmp, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def gone(pid: int) -> bool:
    """The process ended and was reaped (a zombie would still answer kill 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def get(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_lab_starts_every_piece_and_close_stops_them_all() -> None:
    lab = VirtualLab(DEVLAB, phone_name="Lab-Phone")
    try:
        config_path = lab.start()
        pieces = {piece.name: piece for piece in lab.pieces}
        assert set(pieces) == {"adb server", "virtual phone", "virtual monsoon", "agent"}
        folder = config_path.parent

        # the private adb server, on a port of its own, lists the phone as a device
        host, _, port_text = pieces["adb server"].address.rpartition(":")
        adb_port = int(port_text)
        assert host == "127.0.0.1" and adb_port != DEFAULT_ADB_PORT
        client = DevlabAdbClient(host, adb_port)  # never starts a server of its own
        phone_id = pieces["virtual phone"].address
        serial = phone_id.removeprefix("adb:")
        assert (serial, "device") in {(item.serial, item.state) for item in client.list()}
        assert "Lab-Phone" in client.device(serial).shell("getprop ro.product.model")

        # the Monsoon's pty is there and answers the driver's probe
        monsoon_port = pieces["virtual monsoon"].address
        assert Path(monsoon_port).exists()
        with Monsoon(monsoon_port) as monsoon:
            assert monsoon.serial_number == lab.monsoon_serial

        # the agent answers on loopback, with the token only
        agent_url = pieces["agent"].address.removeprefix("dpu:")
        assert agent_url.startswith("http://127.0.0.1:")
        token = (folder / "agent" / "agent.token").read_text().strip()
        assert get(agent_url + "/v1/info", token) == 200
        assert get(agent_url + "/v1/info", None) == 401

        # the config names them all, and devlab's own readers accept it
        config = load_config(config_path)
        android = AndroidConfig.from_raw(config.raw["android"])
        assert (android.adb_host, android.adb_port) == ("127.0.0.1", adb_port)
        [link] = links_from_config(config.raw)
        assert (link.device_id, link.port) == (phone_id, monsoon_port)
        dpu = DpuConfig.from_raw(config.raw["dpu"], config_path.parent)
        [endpoint] = dpu.endpoints
        assert (endpoint.url, endpoint.token) == (agent_url, token)
        assert config.resolve_device("phone") == phone_id

        pids = lab.pids
        assert pids == [pieces["adb server"].pid, pieces["agent"].pid]
        assert all(not gone(pid) for pid in pids)
        reaper = lab.reaper_pid  # the watcher for a lab killed without a chance to stop
        assert reaper is not None and not gone(reaper)
        assert registry.lookup(phone_id) is not None
    finally:
        lab.close()
    assert all(gone(pid) for pid in pids)
    assert gone(reaper) and lab.reaper_pid is None
    assert not server_reachable("127.0.0.1", adb_port)
    assert not Path(folder).exists()
    assert registry.lookup(phone_id) is None
    lab.close()  # twice is fine


def test_a_piece_that_fails_stops_the_pieces_started_before_it() -> None:
    failing_devlab = [sys.executable, "-c", "import sys; print('no agent today'); sys.exit(3)"]
    lab = VirtualLab(failing_devlab)
    with pytest.raises(VirtualLabError, match="no agent today"):
        lab.start()
    pieces = {piece.name: piece for piece in lab.pieces}
    assert set(pieces) == {"adb server", "virtual phone", "virtual monsoon"}
    server_pid = pieces["adb server"].pid
    assert server_pid is not None and gone(server_pid)
    port = int(pieces["adb server"].address.rpartition(":")[2])
    assert not server_reachable("127.0.0.1", port)
    assert registry.lookup(pieces["virtual phone"].address) is None
    assert lab.folder is None and lab.config_path is None
