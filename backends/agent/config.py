"""The agent's configuration, fixed at start by the operator (``devlab agent`` options)."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

from backends.agent.runners import Runner

API_VERSION = 1
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024
DEFAULT_PORT = 8055


@dataclass
class AgentConfig:
    """``runners`` maps a runner name to the runner; the first is the default unless
    ``default_runner`` says otherwise. ``keep_models`` keeps uploaded models after their job
    finished (by default they are deleted then; the job record stays)."""

    token: str
    workdir: Path = Path("devlab-agent")
    board: str = field(default_factory=platform.node)
    kind: str = "host"
    runners: dict[str, Runner] = field(default_factory=dict)
    default_runner: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    advertise: bool = False
    keep_models: bool = False

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the agent needs a token: every request must carry it")
        if not self.runners:
            raise ValueError("the agent needs at least one runner")
        if self.default_runner is None:
            self.default_runner = next(iter(self.runners))
        if self.default_runner not in self.runners:
            raise ValueError(f"default runner {self.default_runner!r} is not one of the runners")
        if self.max_upload_bytes < 1:
            raise ValueError("max_upload_bytes must be positive")
        self.workdir = Path(self.workdir).absolute()
