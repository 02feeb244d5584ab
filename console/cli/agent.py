"""``devlab agent``: serve this machine's benchmark runners over HTTP (see docs/agent.md).

A front end only: the options, runners and serving live in :mod:`backends.agent.cli`, which the
board zipapp (docs/agent-board.md) runs too. Imports rich but never textual.
"""

from __future__ import annotations

from rich.console import Console

from backends.agent.cli import build_agent_parser, build_config, build_runners, run_agent
from backends.core.extras import install_command

__all__ = ["build_agent_parser", "build_config", "build_runners", "run_agent_tool"]


def run_agent_tool(args: list[str], err: Console) -> int:
    """``devlab agent ARGS``: serve until Ctrl-C or SIGTERM; 0 then, 2 on usage errors."""

    def report(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    return run_agent(args, report, install_hint=install_command("agent"))
