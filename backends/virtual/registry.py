"""Where attached virtual phones keep their sandbox, so other virtual devices on this machine
(a virtual Monsoon powering a phone) can see what the phone is doing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import platformdirs

from backends.virtual.tools._common import LOAD_DIR


def registry_dir() -> Path:
    return Path(platformdirs.user_cache_dir("devlab")) / "virtual-phones"


def _entry(serial: str) -> Path:
    return registry_dir() / (serial.replace(":", "_").replace("/", "_") + ".json")


def register(serial: str, sandbox: Path) -> None:
    registry_dir().mkdir(parents=True, exist_ok=True)
    _entry(serial).write_text(json.dumps({"serial": serial, "sandbox": str(sandbox)}))


def unregister(serial: str) -> None:
    _entry(serial).unlink(missing_ok=True)


def lookup(serial: str) -> Path | None:
    """The sandbox of the attached virtual phone ``serial`` (``adb:`` prefix optional)."""
    entry = _entry(serial.removeprefix("adb:"))
    if not entry.is_file():
        return None
    return Path(json.loads(entry.read_text())["sandbox"])


def phone_load(sandbox: Path) -> Callable[[], float]:
    """1.0 while any benchmark tool runs on the phone with this sandbox, else 0.0."""
    folder = sandbox / LOAD_DIR

    def load() -> float:
        try:
            return 1.0 if any(folder.iterdir()) else 0.0
        except OSError:
            return 0.0

    return load
