"""The quantize stage made idempotent: its output lives at a content-addressed path and
appears there whole or not at all.

The address is a hash of everything the output depends on (the model's bytes, the
calibration set's files, the scheme and bitwidth), so a stage run again (its host died, or
the pipeline was restarted) finds the finished file and returns it, and two models never
share one. Work happens in a scratch folder beside the target and the file is moved into
place with ``os.replace``; a lock file serialises runs of one address on one host, and a
run that holds it sweeps away the scratch folders a killed run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backends.quantize.tool import output_name, quantize_model

SCRATCH_PREFIX = ".partial-"
LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class Artifact:
    """A quantized model kept under its address."""

    path: Path
    key: str  # the content address (hex)
    sha256: str  # the file's own digest
    reused: bool  # found finished: this run quantized nothing
    calibration_samples: int | None = None


def set_digest(folder: str | Path) -> str:
    """A digest of every file under an evaluation set's folder (names and bytes), so an edited
    set gets a new address."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def artifact_key(model_sha256: str, calibration: str | Path, scheme: str, bits: int) -> str:
    """The content address of a quantize stage's output."""
    text = f"{model_sha256}\n{set_digest(calibration)}\n{scheme}\n{bits}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def quantize_once(
    model_path: str | Path,
    model_sha256: str,
    calibration: str | Path,
    scheme: str,
    bits: int,
    cache: str | Path,
) -> Artifact:
    """The quantized model for these inputs under ``cache``: the one already there, or made
    now and moved into place whole. Raises ``QuantizeError`` (the model, set or scheme is bad)."""
    key = artifact_key(model_sha256, calibration, scheme, bits)
    folder = Path(cache) / key
    target = folder / output_name(Path(model_path), scheme, bits)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{key}{LOCK_SUFFIX}"):
        if target.is_file():
            return Artifact(target, key, file_sha256(target), reused=True)
        _sweep(folder.parent, key)
        scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{key}-", dir=folder.parent))
        try:
            made = quantize_model(model_path, calibration, scheme, scratch, bits)
            folder.mkdir(exist_ok=True)
            os.replace(made.path, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return Artifact(target, key, file_sha256(target), False, made.calibration_samples)


def keep_bytes(data: bytes, name: str, key: str, cache: str | Path) -> Path:
    """Keep an artifact made elsewhere (a lab host's) under the same address here, atomically;
    the bytes already there are kept when they match."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"artifact name {name!r} is not a plain file name")
    if len(key) != 32 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"artifact key {key!r} is not a content address")
    folder = Path(cache) / key
    target = folder / name
    if target.is_file() and target.read_bytes() == data:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=SCRATCH_PREFIX, dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def leftovers(cache: str | Path) -> list[Path]:
    """Scratch files and folders under ``cache`` (none once every run ended or was swept)."""
    root = Path(cache)
    if not root.exists():
        return []
    return sorted(p for p in root.rglob(f"{SCRATCH_PREFIX}*"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (released by the kernel if this process dies)."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep(parent: Path, key: str) -> None:
    """Remove the scratch folders of ``key`` a killed run left (we hold its lock: none is live)."""
    for stale in parent.glob(f"{SCRATCH_PREFIX}{key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
