"""A whole virtual lab in one go (``devlab lab --virtual``): a private adb server, a virtual
phone attached to it, a virtual Monsoon powering that phone, a loopback agent as a DPU
endpoint, and a throwaway config naming them all.

Every piece is started by this object and stopped by it, in reverse order; the processes it
starts (the adb server, the agent) are ended by the pids it holds, never by name, so a
server on 5037 or another lab on this machine is never touched. Usage::

    with VirtualLab(devlab=[sys.executable, "-m", "console.entry"]) as lab:
        config = lab.config_path      # hand it to the console or to ``--run --config``
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.devices.android.adb_server import PrivateAdbServer
from backends.devices.android.backend import AndroidConfig
from backends.virtual import registry
from backends.virtual.attach import AttachedPhone, attach_virtual_phone
from backends.virtual.jetson import jetson_agent
from backends.virtual.loopback_agent import LoopbackAgent
from backends.virtual.monsoon import VirtualMonsoon
from backends.virtual.reaper import start_reaper

CONFIG_NAME = "devlab.toml"
PHONE_TIMEOUT_S = 15.0


class VirtualLabError(RuntimeError):
    """A piece did not start; the pieces started before it are already stopped."""


@dataclass(frozen=True)
class LabPiece:
    """One running piece, as the operator would address it."""

    name: str
    address: str  # what a config or a command names it by
    pid: int | None = None  # a process the lab started; None when it runs in this process
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "pid": self.pid, "detail": self.detail}


class VirtualLab:
    """Start with ``start()`` (returns the config path), stop with ``close()``.

    ``devlab`` is the command line that runs ``devlab`` (for the agent's process); ``folder``
    defaults to a fresh temp folder, removed at close. ``close`` is safe to call twice and
    after a failed ``start``; ``pieces`` (and ``pids``) stay readable after it, so a caller
    can check that what was started is gone.
    """

    def __init__(
        self,
        devlab: Sequence[str],
        folder: Path | None = None,
        phone_name: str | None = None,
        monsoon_serial: int = 12345,
        jetson: bool = False,
    ) -> None:
        self.devlab = list(devlab)
        self.jetson = jetson  # also a virtual Jetson: an agent with trtexec and tegrastats
        self._own_folder = folder is None
        self.folder = folder
        self.phone_name = phone_name
        self.monsoon_serial = monsoon_serial
        self.config_path: Path | None = None
        self.pieces: list[LabPiece] = []
        self._stops: list[Callable[[], None]] = []  # in start order; run in reverse
        self._reaper: subprocess.Popen[bytes] | None = None

    @property
    def pids(self) -> list[int]:
        """The processes this lab started (the adb server, the agent)."""
        return [piece.pid for piece in self.pieces if piece.pid is not None]

    def __enter__(self) -> VirtualLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Path:
        if self.config_path is not None:
            return self.config_path
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="devlab-lab-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            config_path = self._start_pieces(self.folder)
            # a SIGKILLed lab cannot stop its processes: a watcher does (backends/virtual/reaper)
            self._reaper = start_reaper(
                os.getpid(), self.pids, self.folder if self._own_folder else None
            )
            return config_path
        except BaseException as error:  # Ctrl-C half way too: stop what did start
            with contextlib.suppress(VirtualLabError):
                self.close()
            if isinstance(error, Exception):
                raise VirtualLabError(f"the virtual lab did not start: {error}") from error
            raise

    def _start_pieces(self, folder: Path) -> Path:
        server = PrivateAdbServer(folder / "adb").start()
        self._stops.append(server.stop)
        self.pieces.append(
            LabPiece("adb server", server.address, server.pid, "the adbutils wheel's adb")
        )
        android = AndroidConfig(adb_host="127.0.0.1", adb_port=server.port)
        sandbox = folder / "phone"
        phone = attach_virtual_phone(android, name=self.phone_name, sandbox=str(sandbox))
        self._stops.append(phone.detach)
        _wait_listed(phone)
        phone_id = f"adb:{phone.serial}"
        self.pieces.append(LabPiece("virtual phone", phone_id, None, phone.phone.profile.model))
        monsoon = VirtualMonsoon(
            serial_number=self.monsoon_serial, load=registry.phone_load(sandbox)
        ).start()
        self._stops.append(monsoon.stop)
        self.pieces.append(LabPiece("virtual monsoon", monsoon.port, None, f"powers {phone_id}"))
        agent = LoopbackAgent(self.devlab, folder / "agent").start()
        self._stops.append(agent.stop)
        self.pieces.append(
            LabPiece("agent", f"dpu:{agent.url}", agent.pid, f"token in {agent.token_file}")
        )
        jetson_endpoint = None
        if self.jetson:
            jetson = jetson_agent(self.devlab, folder / "jetson").start()
            self._stops.append(jetson.stop)
            self.pieces.append(
                LabPiece(
                    "virtual jetson",
                    f"dpu:{jetson.url}",
                    jetson.pid,
                    f"runner trtexec, tegrastats power; token in {jetson.token_file}",
                )
            )
            jetson_endpoint = (jetson.url, jetson.token_file)
        config_path = folder / CONFIG_NAME
        config_path.write_text(
            config_text(
                server.address, phone_id, monsoon.port, agent.url, agent.token_file, jetson_endpoint
            ),
            encoding="utf-8",
        )
        self.config_path = config_path
        return config_path

    def close(self) -> None:
        """Stop every piece, last started first; then remove the temp folder."""
        errors: list[BaseException] = []
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception as error:  # keep going: every other piece must still stop
                errors.append(error)
        self.config_path = None
        if self._own_folder and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self._stop_reaper()
        if errors:
            raise VirtualLabError(f"stopping the virtual lab: {errors[0]}") from errors[0]

    def _stop_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        reaper.terminate()
        try:
            reaper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()

    @property
    def reaper_pid(self) -> int | None:
        """The watcher that ends the lab's processes if the lab is killed (None when down)."""
        return self._reaper.pid if self._reaper is not None else None


def _wait_listed(phone: AttachedPhone, timeout_s: float = PHONE_TIMEOUT_S) -> None:
    """Until the server lists the phone as ``device``: the console then sees it at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = {item.serial: item.state for item in phone.client.list()}
        if states.get(phone.serial) == "device":
            return
        if time.monotonic() > deadline:
            raise VirtualLabError(f"the adb server lists {phone.serial} as {states}")
        time.sleep(0.05)


def config_text(
    adb_server: str,
    phone_id: str,
    monsoon_port: str,
    agent_url: str,
    token_file: Path,
    jetson: tuple[str, Path] | None = None,
) -> str:
    """The throwaway config (``backends/core/config.py`` reads it): every string is a TOML
    basic string, which JSON's quoting also is."""

    def q(value: object) -> str:
        return json.dumps(str(value))

    jetson_alias = [f"jetson = {q('dpu:' + jetson[0])}"] if jetson else []
    jetson_endpoint = (
        ["[[dpu.endpoints]]", f"url = {q(jetson[0])}", f"token_file = {q(jetson[1])}"]
        + ['name = "virtual jetson"', ""]
        if jetson
        else []
    )
    return "\n".join(
        [
            "# written by devlab lab --virtual; removed when the lab stops",
            "[aliases]",
            f"phone = {q(phone_id)}",
            f"dpu = {q('dpu:' + agent_url)}",
            *jetson_alias,
            "",
            "[android]",
            f"adb_server = {q(adb_server)}",
            "",
            "[[power.monitors]]",
            f"powers = {q(phone_id)}",
            f"port = {q(monsoon_port)}",
            "",
            "[[dpu.endpoints]]",
            f"url = {q(agent_url)}",
            f"token_file = {q(token_file)}",
            'name = "virtual agent"',
            "",
            *jetson_endpoint,
        ]
    )
