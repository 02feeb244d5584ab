"""The ``devlab`` command: the headless CLI, which hands the Textual console the lab it opens.

``console.cli`` never imports textual (scripts and CI run without it); this module is the one
place that joins the two front ends, and it loads the TUI only when the console is asked for.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from backends.core.config import Config
from backends.core.lab_api import LabApi
from console.cli.main import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(argv, open_console=open_console)


def open_console(lab: LabApi, config: Config, folder: Path) -> int:
    from console.tui.launch import run_app

    return run_app(lab, config, folder)


if __name__ == "__main__":
    sys.exit(main())
