"""Model files by sha256: the dispatcher's copy of every submitted model, a worker's cache.

A console's paths mean nothing on a lab host, so the console uploads each model's bytes to
the dispatcher once, and each worker fetches them once and keeps them by sha256. The file
keeps its original name (some tools name their outputs after it).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path


class ModelFileError(ValueError):
    """Bytes that do not match the sha256 they were sent under, or a bad file name."""


class ModelFiles:
    """``<root>/<sha256>/<file name>``, written atomically and verified on the way in."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def find(self, sha256: str) -> Path | None:
        folder = self.root / _checked_sha(sha256)
        files = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith("."))
        return files[0] if files else None

    def put(self, sha256: str, name: str, data: bytes) -> Path:
        """Keep ``data`` as ``name`` under its sha256 (verified); returns the file."""
        if hashlib.sha256(data).hexdigest() != _checked_sha(sha256):
            raise ModelFileError(f"model {name}: the bytes received do not match sha256 {sha256}")
        if not name or Path(name).name != name or name.startswith("."):
            raise ModelFileError(f"model file name {name!r} is not a plain file name")
        folder = self.root / sha256
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        partial = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.part"
        partial.write_bytes(data)
        os.replace(partial, target)
        return target

    def ensure(self, sha256: str, name: str, fetch: Callable[[str], bytes]) -> Path:
        """The local file for ``sha256``, fetched once (concurrent callers wait for it)."""
        found = self.find(sha256)
        if found is not None:
            return found
        with self._guard:
            lock = self._locks.setdefault(sha256, threading.Lock())
        with lock:
            return self.find(sha256) or self.put(sha256, name, fetch(sha256))


def _checked_sha(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ModelFileError(f"{sha256!r} is not a sha256 hex digest")
    return sha256
