"""A real ``devlab agent`` process on 127.0.0.1 for the DPU tests, and a config naming it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.helpers import REPO_ROOT, devlab_cmd, devlab_env
from support.waiting import wait_until

LISTENING = re.compile(r"devlab agent listening on (http://127\.0\.0\.1:\d+)")
TOKEN = "test-token-0123456789abcdef"


@dataclass
class AgentProcess:
    """One agent process we started; ``stop``/``kill`` only ever touch this pid."""

    proc: subprocess.Popen
    url: str
    workdir: Path
    token_file: Path
    log: Path
    extra: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def request(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def jobs(self) -> list[dict[str, Any]]:
        return self.request("/v1/jobs")["jobs"]

    def kill(self) -> None:
        """kill -9: the agent dies mid-whatever, as a board losing power would."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_agent(
    home: Path,
    workdir: Path | None = None,
    port: int = 0,
    extra: list[str] | None = None,
    startup_s: float = 60.0,
) -> AgentProcess:
    """Start ``devlab agent`` with the onnxruntime runner and wait for its listening line."""
    home.mkdir(parents=True, exist_ok=True)
    token_file = home / "agent.token"
    token_file.write_text(TOKEN + "\n")
    workdir = workdir or home / "agent-work"
    log = home / f"agent-{time.monotonic_ns()}.log"
    args = [
        "agent",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--token-file",
        token_file,
        "--runner",
        "onnxruntime",
        "--workdir",
        workdir,
        "--board",
        "test-board",
        *(extra or []),
    ]
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            devlab_cmd(*args),
            cwd=REPO_ROOT,
            env=devlab_env(home),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def listening() -> re.Match[str] | None:
        match = LISTENING.search(log.read_text())
        if not match and proc.poll() is not None:
            raise RuntimeError(f"the agent exited at start:\n{log.read_text()}")
        return match

    try:
        match = wait_until(listening, startup_s, what="the agent's listening line", interval=0.05)
    except AssertionError:
        proc.kill()
        raise RuntimeError(f"the agent did not start:\n{log.read_text()}") from None
    return AgentProcess(proc, match.group(1), workdir, token_file, log, extra or [])


def restart_agent(agent: AgentProcess, home: Path) -> AgentProcess:
    """A new agent process on the same port and workdir (what a board reboot looks like)."""
    return start_agent(home, agent.workdir, agent.port, agent.extra)


def write_config(path: Path, agents: list[tuple[str, Path | None]], **dpu: Any) -> Path:
    """A devlab config with ``[dpu]`` settings and one ``[[dpu.endpoints]]`` per agent."""
    lines = ["[dpu]"] + [f"{key} = {json.dumps(value)}" for key, value in dpu.items()]
    for url, token_file in agents:
        lines += ["", "[[dpu.endpoints]]", f'url = "{url}"']
        if token_file is not None:
            lines.append(f'token_file = "{token_file}"')
    path.write_text("\n".join(lines) + "\n")
    return path
