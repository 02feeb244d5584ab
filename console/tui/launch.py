"""Run the Textual console on an open lab (imported only when ``devlab`` runs without ``--run``)."""

from __future__ import annotations

from pathlib import Path

from backends.core.config import Config
from backends.core.lab_api import LabApi
from console.tui.app import DevLabApp


def run_app(lab: LabApi, config: Config, folder: Path) -> int:
    """The app until the operator quits; the caller owns (and closes) the lab."""
    keymap = config.raw.get("keymap", {})
    app = DevLabApp(
        lab,
        defaults=config.defaults,
        export_folder=folder / "export",
        keymap={str(k): str(v) for k, v in keymap.items()},
    )
    app.run()
    return 0
