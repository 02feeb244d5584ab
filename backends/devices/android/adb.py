"""adb plumbing for phones: a client that never starts a server, what ``adb devices`` states
mean, and pushing host files to a phone once.

Every shell command devlab sends is an argv list joined with ``shlex.join``: nothing from the
operator reaches the phone's shell unquoted.
"""

from __future__ import annotations

import os
import shlex
import socket

from adbutils import AdbClient, AdbConnection, AdbDevice, AdbError

from backends.core.records import STATE_HINT, Device, DeviceState

#: Where devlab keeps its files on a phone (tools, models, SNPE bundles, profiles).
WORKDIR = "/data/local/tmp/devlab"
DEVICE_PREFIX = "adb:"
ADB_STATES = {
    "device": DeviceState.ONLINE,
    "offline": DeviceState.OFFLINE,
    "unauthorized": DeviceState.UNAUTHORIZED,
}
UNAUTHORIZED_HINT = "accept the 'Allow USB debugging' prompt on the phone, then it appears"
VANISHED = (AdbError, OSError)  # adbutils raises BrokenPipeError (an OSError) mid-transfer


class _NoAutostartConnection(AdbConnection):
    """adbutils runs ``adb start-server`` when it cannot connect; devlab never starts a server
    the operator did not, so a missing server is an error here."""

    def _safe_connect(self) -> socket.socket:
        return self._create_socket()


class DevlabAdbClient(AdbClient):
    """An AdbClient whose connections fail instead of starting an adb server."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        self._address = (host, port)

    def make_connection(self, timeout: float | None = None) -> AdbConnection:
        connection = _NoAutostartConnection(*self._address)
        if timeout:
            connection.conn.settimeout(timeout)
        return connection


def server_reachable(host: str, port: int) -> bool:
    """Whether an adb server answers at ``host:port``."""
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


def serial_of(device_id: str) -> str:
    """``adb:<serial>`` -> ``<serial>``."""
    return device_id.removeprefix(DEVICE_PREFIX)


def listed_device(serial: str, adb_state: str, kind: str, runtimes: list[str]) -> Device:
    """The device one ``adb devices`` line stands for, before anything is asked of it (an
    unauthorized phone says what to do in its ``STATE_HINT``)."""
    state = ADB_STATES.get(adb_state, DeviceState.OFFLINE)
    device = Device(
        id=f"{DEVICE_PREFIX}{serial}",
        kind=kind,
        name=serial,
        state=state,
        properties={"adb_state": adb_state},
        runtimes=list(runtimes),
    )
    if state is DeviceState.UNAUTHORIZED:
        device.properties[STATE_HINT] = UNAUTHORIZED_HINT
    return device


class PushedFiles:
    """Host files already on the phones, so each is pushed once per (phone, remote path):
    a file the phone already holds at the same size is not sent again."""

    def __init__(self) -> None:
        self._done: set[tuple[str, str]] = set()

    def push(self, adb: AdbDevice, local: str, remote: str, mode: int = 0o644) -> None:
        key = (adb.serial, remote)
        if key in self._done:
            return
        size = os.path.getsize(local)
        try:
            existing = adb.sync.stat(remote)
        except AdbError:
            existing = None
        if existing is None or existing.size != size:
            adb.shell(shlex.join(["mkdir", "-p", remote.rsplit("/", 1)[0]]), timeout=30)
            adb.sync.push(local, remote, mode=mode)
        self._done.add(key)
