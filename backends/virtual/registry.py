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
    """The load of the phone with this sandbox, 0..1: the highest level any running tool marks
    (a marker holds its level; an empty or unreadable one is a full load), 0.0 when none runs."""
    folder = sandbox / LOAD_DIR

    def load() -> float:
        try:
            markers = list(folder.iterdir())
        except OSError:
            return 0.0
        return max((_marked_level(marker) for marker in markers), default=0.0)

    return load


def _marked_level(marker: Path) -> float:
    try:
        text = marker.read_text().strip()
    except FileNotFoundError:  # the tool just ended
        return 0.0
    except OSError:
        return 1.0
    try:
        return min(1.0, max(0.0, float(text))) if text else 1.0
    except ValueError:
        return 1.0
