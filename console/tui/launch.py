"""Start the Textual console (imported only when ``devlab`` runs without ``--run``)."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from backends.core.config import Config
from backends.core.lab import Lab, default_backends
from backends.core.store import STORE_FILE, Store
from backends.measure.canary_store import CanaryStore
from backends.power.capture import links_from_config
from console.tui.app import DevLabApp


def default_lab_folder() -> Path:
    """Where the console keeps its store when no ``--out`` is given."""
    return Path(platformdirs.user_data_dir("devlab"))


def run_tui(out: str | None, config: Config) -> int:
    folder = Path(out) if out else default_lab_folder()
    store = Store(folder / STORE_FILE)
    lab = Lab(
        store,
        default_backends(config),
        power_links=links_from_config(config.raw),
        canaries=CanaryStore(),
    )
    keymap = config.raw.get("keymap", {})
    app = DevLabApp(
        lab,
        defaults=config.defaults,
        export_folder=folder / "export",
        keymap={str(k): str(v) for k, v in keymap.items()},
    )
    try:
        app.run()
    finally:
        lab.shutdown(interrupt=True)
        store.close()
    return 0
