"""A ``devlab agent`` child process on 127.0.0.1 with a fresh token: the virtual lab's DPU
endpoint.

A real agent process (not the in-process ``AgentThread``) so the console reaches it over HTTP
exactly as it reaches a board, and its benchmarks run outside the console's process. The
command that runs ``devlab`` is handed in by the front end: ``backends`` does not know how
the CLI is installed.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from backends.core.exits import stop_child
from backends.core.extras import ensure

# before the agent's modules, which import aiohttp as they load
ensure("aiohttp", "agent", "Virtual labs (their DPU board is a loopback devlab agent)")

from backends.agent.serve import LISTENING  # noqa: E402

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_URL = re.compile(re.escape(LISTENING) + r" (http://127\.0\.0\.1:\d+)")


class AgentStartError(RuntimeError):
    """The agent did not come up; the message holds what it printed."""


class LoopbackAgent:
    """``devlab agent --host 127.0.0.1 --port 0 --runner onnxruntime`` in ``folder``."""

    def __init__(
        self,
        devlab: Sequence[str],
        folder: Path,
        board: str = "virtual-dpu",
        runner_args: Sequence[str] = ("--runner", "onnxruntime"),
    ) -> None:
        self.devlab = list(devlab)
        self.folder = folder
        self.board = board
        self.runner_args = list(runner_args)  # the virtual Jetson: --runner trtexec …
        self.token = secrets.token_urlsafe(24)
        self.token_file = folder / "agent.token"
        self.log = folder / "agent.log"
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LoopbackAgent:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token + "\n", encoding="utf-8")
        self.token_file.chmod(0o600)
        argv = [
            *self.devlab,
            "agent",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--token-file",
            str(self.token_file),
            *self.runner_args,
            "--workdir",
            str(self.folder / "work"),
            "--board",
            self.board,
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                start_new_session=True,  # the lab stops it, in its turn
            )
        deadline = time.monotonic() + timeout_s
        while True:
            match = _URL.search(self.log.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                said = self.log.read_text(errors="replace").strip()
                self.stop()
                raise AgentStartError(f"the agent did not start: {said}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the pid we started (the agent shuts down cleanly), SIGKILL if it lingers."""
        process = self.process
        if process is None:
            return
        stop_child(process, timeout_s)
        self.process = None
