"""A real terminal for end-to-end tests of the console: one tmux server on a private socket
(``tmux -L devlab-test-<uuid>``) running one command, driven by keystrokes and read back with
``capture-pane``.

The server has no user configuration (a one-line tmux config of its own, HOME inside the test's
``tmp_path``); ``kill`` stops it and removes its socket. Every wait is a bounded poll of the
screen; a failure shows the last screen captured (and the exit status, if the command exited).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
POLL_S = 0.2


def devlab_in_terminal(home: Path, *args: str) -> list[str]:
    """``devlab ARGS`` with a terminal type and no user configuration (HOME and the XDG
    folders inside ``home``), as ``Terminal.start`` takes it."""
    env = {
        "TERM": "xterm-256color",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "PYTHONUNBUFFERED": "1",
    }
    # env -u: nothing from the caller's terminal or Python setup changes what is drawn
    unset = ["COLUMNS", "LINES", "PYTHONPATH", "NO_COLOR", "TEXTUAL", "TEXTUAL_DRIVER"]
    return [
        "env",
        *(arg for name in unset for arg in ("-u", name)),
        *(f"{key}={value}" for key, value in env.items()),
        sys.executable,
        "-m",
        "console.entry",
        *args,
    ]


def poll(condition: Callable[[], bool], timeout: float) -> bool:
    """True as soon as ``condition()`` holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


class Terminal:
    """One tmux server on a private socket with one session running one command."""

    def __init__(self, tmp_path: Path, width: int = 160, height: int = 45) -> None:
        self.width, self.height = width, height
        self.socket = f"devlab-test-{uuid.uuid4().hex[:12]}"
        self.session = "devlab"
        self.last_screen = ""
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text("set -g status off\n", encoding="utf-8")  # the app gets all rows
        # The command's exit status, written by a shell around it. tmux's own
        # #{pane_dead_status} is not dependable: tmux 3.3a here sometimes never reaps the
        # exited process (a zombie, pane_dead=1 but no status), so the status comes from sh.
        self.exit_file = tmp_path / "devlab.exit"
        self.socket_path: Path | None = None
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path / "home"),
            "LANG": "C.UTF-8",
        }

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-L", self.socket, "-f", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def start(self, command: list[str], cwd: Path) -> None:
        exit_file = shlex.quote(str(self.exit_file))
        wrapper = f'"$@"; echo $? > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}'
        self.tmux(
            "new-session",
            "-d",
            "-s",
            self.session,
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            "-c",
            str(cwd),
            "/bin/sh",
            "-c",
            wrapper,
            "sh",
            *command,
        )
        socket_path = self.tmux("display-message", "-p", "#{socket_path}").stdout.strip()
        self.socket_path = Path(socket_path) if socket_path else None

    def pane_pid(self) -> int:
        """The pid of the shell around the command (the command is its child)."""
        return int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").stdout)

    def exit_status(self) -> str | None:
        """The command's exit status once it has exited, else None."""
        try:
            return self.exit_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None

    def session_alive(self) -> bool:
        return self.tmux("has-session", "-t", self.session, check=False).returncode == 0

    def kill(self) -> None:
        """Stop this test's tmux server and remove its socket (tmux leaves it behind)."""
        self.tmux("kill-server", check=False)
        if self.socket_path is not None and self.socket_path.name == self.socket:
            self.socket_path.unlink(missing_ok=True)

    def capture(self) -> str:
        """The visible screen as plain text (kept for failure messages)."""
        done = self.tmux("capture-pane", "-p", "-t", self.session, check=False)
        if done.returncode == 0:
            self.last_screen = done.stdout
        return self.last_screen

    def keys(self, *keys: str) -> None:
        """Named keys (``Enter``, ``Tab``, ``C-q``) or single characters."""
        self.tmux("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        """Literal text, as typed (never interpreted as key names)."""
        self.tmux("send-keys", "-t", self.session, "-l", text)

    def wait_for(self, what: str, predicate: Callable[[str], bool], timeout: float) -> str:
        """Poll the screen until ``predicate(screen)`` holds; fail with the last screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture()
            if predicate(screen):
                return screen
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.report()}")
            time.sleep(POLL_S)

    def wait_for_text(self, text: str, timeout: float) -> str:
        return self.wait_for(repr(text), lambda screen: text in screen, timeout)

    def report(self) -> str:
        status = self.exit_status()
        exited = "" if status is None else f"devlab has exited with status {status}\n"
        return (
            f"{exited}--- last screen ({self.width}x{self.height}) ---\n{self.last_screen}\n"
            "--- end of screen ---"
        )
