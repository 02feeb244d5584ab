"""The adb server of the adbutils wheel, started only when asked (``devlab adb start``,
``devlab lab --virtual``).

devlab never starts an adb server by itself (see :mod:`.adb`): these helpers are for an
operator who has no Android SDK, or wants a server of their own beside the one on 5037.
``PrivateAdbServer`` is a child process whose pid we hold (``adb server nodaemon``), so it
can be ended without touching anyone else's server; ``start_daemon`` / ``kill_server`` are
the ordinary ``adb start-server`` / ``kill-server`` on a port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

from backends.core.exits import stop_child
from backends.devices.android.adb import server_reachable

DEFAULT_ADB_PORT = 5037
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
#: What to tell someone whose command needs an adb server and finds none.
START_HINT = (
    "devlab adb start (an adb server from the adbutils wheel), or devlab lab --virtual "
    "(a whole virtual lab with its own server)"
)
#: A private server must not reach for USB phones or announce itself with mDNS.
QUIET_ENV = {"ADB_MDNS": "0", "ADB_USB": "0", "ADB_EMU": "0"}


class AdbServerError(RuntimeError):
    """The server could not be started or stopped; the message says why."""


def adb_binary() -> str:
    """The ``adb`` the adbutils wheel bundles; AdbServerError when it has none."""
    try:
        import adbutils

        path = adbutils.adb_path()
    except Exception as error:  # adbutils raises its own error types for a missing binary
        raise AdbServerError(f"the adbutils wheel has no adb binary: {error}") from None
    if not path or not os.access(path, os.X_OK):
        raise AdbServerError(f"the adbutils wheel's adb ({path}) is not executable")
    return str(path)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` a moment ago, never adb's default 5037."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != DEFAULT_ADB_PORT:
            return port


def _adb_env(port: int, home: Path | None = None, quiet: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["ANDROID_ADB_SERVER_PORT"] = str(port)
    if home is not None:  # its own keys and logs, away from the operator's ~/.android
        env["HOME"] = str(home)
        env["TMPDIR"] = str(home / "tmp")
    if quiet:
        env.update(QUIET_ENV)
    return env


def start_daemon(port: int, timeout_s: float = START_TIMEOUT_S) -> str:
    """``adb -P PORT start-server``: a server that outlives this process; returns adb's words.

    Refuses a port that already answers, so the server reported is really ours."""
    if server_reachable(LOOPBACK, port):
        raise AdbServerError(f"something already listens on {LOOPBACK}:{port}")
    try:
        done = subprocess.run(
            [adb_binary(), "-P", str(port), "start-server"],
            env=_adb_env(port),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise AdbServerError(f"adb start-server on port {port} did not finish in time") from None
    said = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or not server_reachable(LOOPBACK, port):
        raise AdbServerError(f"adb start-server on port {port} failed: {said}")
    return said


def kill_server(port: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """``adb -P PORT kill-server``, then wait until the port is closed.

    Only a server that answers is asked: adb would otherwise print an error, and adbutils-style
    clients would start one."""
    if not server_reachable(LOOPBACK, port):
        raise AdbServerError(f"no adb server at {LOOPBACK}:{port}")
    subprocess.run(
        [adb_binary(), "-P", str(port), "kill-server"],
        env=_adb_env(port),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout_s,
    )
    deadline = time.monotonic() + timeout_s
    while server_reachable(LOOPBACK, port):
        if time.monotonic() > deadline:
            raise AdbServerError(f"the adb server on port {port} did not stop")
        time.sleep(0.05)


class PrivateAdbServer:
    """``adb -P PORT server nodaemon`` as our child, with its own HOME, no USB and no mDNS.

    ``stop`` asks it to ``kill-server`` and then ends the pid it started if it lingers;
    it never touches another server."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        if self.port == DEFAULT_ADB_PORT:
            raise AdbServerError("a private adb server never takes the default port 5037")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> PrivateAdbServer:
        if server_reachable(LOOPBACK, self.port):
            raise AdbServerError(f"something already listens on {self.address}")
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        log_path = self.home / "server.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [adb_binary(), "-P", str(self.port), "server", "nodaemon"],
                env=_adb_env(self.port, self.home, quiet=True),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not it
            )
        deadline = time.monotonic() + timeout_s
        while not server_reachable(LOOPBACK, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                said = log_path.read_text(errors="replace").strip()
                self.stop()
                raise AdbServerError(f"the adb server on {self.address} did not start: {said}")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Safe to call twice; ends only the process this object started."""
        process = self.process
        if process is None:
            return
        if process.poll() is None and server_reachable(LOOPBACK, self.port):
            with contextlib.suppress(subprocess.TimeoutExpired, AdbServerError, OSError):
                subprocess.run(
                    [adb_binary(), "-P", str(self.port), "kill-server"],
                    env=_adb_env(self.port, self.home, quiet=True),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=timeout_s,
                )
        stop_child(process, timeout_s, asked=True)
        self.process = None
