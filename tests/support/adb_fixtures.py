"""Pytest fixtures: a private real adb server and virtual phones attached to it.

Use them from any test file with::

    from support.adb_fixtures import adb_server, virtual_phone  # noqa: F401

* ``adb_server`` (module scope) starts the ``adb`` binary of the adbutils wheel as a child
  process ``adb -P <free port> server nodaemon`` with HOME and TMPDIR in a temp folder and
  ADB_MDNS=0 ADB_USB=0 ADB_EMU=0, sets ANDROID_ADB_SERVER_PORT for this test process (so an
  adbutils fallback never starts a server on 5037), waits until ``server_version()`` answers and
  yields ``(client, port)`` with ``client = adbutils.AdbClient("127.0.0.1", port)``. Teardown
  ends only that child, by its pid. Skips when the adb binary is missing.
* ``virtual_phone`` starts a ``VirtualPhone`` on a free port with a temp sandbox, connects it
  (``client.connect("127.0.0.1:PORT")``), waits for state ``device`` and yields the phone; at
  teardown it disconnects and stops it. Override ``virtual_phone_profile`` to change the
  profile.
* ``virtual_device`` yields the adbutils ``AdbDevice`` for ``virtual_phone``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import adbutils
import pytest

from backends.virtual import PhoneProfile, VirtualPhone
from support.waiting import wait_until

SERVER_START_TIMEOUT = 20.0
STATE_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def device_state(client: adbutils.AdbClient, serial: str) -> str | None:
    """The state the server lists ``serial`` in (``device``, ``offline``...), None if absent."""
    for item in client.list():
        if item.serial == serial:
            return item.state
    return None


def adb_binary() -> str | None:
    try:
        path = adbutils.adb_path()
    except Exception:
        return None
    return path if path and os.access(path, os.X_OK) else None


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def private_adb_server(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[adbutils.AdbClient, int, subprocess.Popen[bytes]]]:
    """A private ``adb server nodaemon`` on a free port; yields (client, port, process).

    ANDROID_ADB_SERVER_PORT is set (through ``monkeypatch``) *before* the first adbutils call:
    adbutils runs ``adb start-server`` when it cannot reach a server, and without the variable
    that would start a server on the default port 5037. Readiness is polled with plain TCP
    connects for the same reason.
    """
    adb = adb_binary()
    if adb is None:
        pytest.skip("no adb binary in the adbutils wheel")
    home = Path(tempfile.mkdtemp(prefix="devlab-adb-"))
    (home / "tmp").mkdir()
    port = free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "ADB_MDNS": "0",
        "ADB_USB": "0",
        "ADB_EMU": "0",
        "ANDROID_ADB_SERVER_PORT": str(port),
        "LANG": "C.UTF-8",
    }
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [adb, "-P", str(port), "server", "nodaemon"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=home,
    )
    client = adbutils.AdbClient(host="127.0.0.1", port=port, socket_timeout=10)
    try:
        wait_until(
            lambda: process.poll() is not None or port_accepts(port),
            SERVER_START_TIMEOUT,
            what="the adb server to listen",
        )
        if process.poll() is not None:
            output = (home / "server.log").read_text(errors="replace")
            pytest.fail(f"adb server exited with {process.returncode}:\n{output}")
        client.server_version()
        yield client, port, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def adb_server() -> Iterator[tuple[adbutils.AdbClient, int]]:
    """``(client, port)`` of a private real adb server (see the module docstring)."""
    with pytest.MonkeyPatch.context() as patch, private_adb_server(patch) as (client, port, _):
        yield client, port


@pytest.fixture
def virtual_phone_profile() -> PhoneProfile:
    """The profile ``virtual_phone`` uses; override this fixture to change it."""
    return PhoneProfile()


def connect_phone(client: adbutils.AdbClient, phone: VirtualPhone) -> None:
    """``adb connect`` the phone and wait (bounded) until the server lists it as device."""
    output = client.connect(phone.serial, timeout=10)
    if "connected to" not in output:
        raise AssertionError(f"adb connect {phone.serial}: {output}")
    try:
        wait_until(
            lambda: device_state(client, phone.serial) == "device",
            timeout=STATE_TIMEOUT,
            what=f"{phone.serial} to be listed as 'device'",
        )
    except AssertionError as error:
        state = device_state(client, phone.serial)
        raise AssertionError(f"{phone.serial} is {state!r}, not 'device'") from error


@pytest.fixture
def virtual_phone(
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone_profile: PhoneProfile,
    tmp_path: Path,
) -> Iterator[VirtualPhone]:
    """A running, connected ``VirtualPhone`` (sandbox in ``tmp_path / "phone"``)."""
    client, _ = adb_server
    phone = VirtualPhone(tmp_path / "phone", virtual_phone_profile)
    phone.start()
    try:
        connect_phone(client, phone)
        yield phone
    finally:
        with contextlib.suppress(Exception):
            client.disconnect(phone.serial)
        phone.stop()


@pytest.fixture
def virtual_device(
    adb_server: tuple[adbutils.AdbClient, int], virtual_phone: VirtualPhone
) -> adbutils.AdbDevice:
    """The adbutils device of ``virtual_phone``."""
    client, _ = adb_server
    return client.device(serial=virtual_phone.serial)
