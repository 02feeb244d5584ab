"""Where a job lives on disk: ``<workdir>/jobs/<id>/`` (mode 0o700) with ``job.json`` written
atomically on every state change, so a restart finds every job as it last was."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOB_ID = re.compile(r"[0-9a-f]{16}")
JOB_FILE = "job.json"
log = logging.getLogger(__name__)


def jobs_root(workdir: Path) -> Path:
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = workdir / "jobs"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def new_job_dir(root: Path) -> tuple[str, Path]:
    """A fresh random job id and its folder (created, mode 0o700)."""
    while True:
        job_id = secrets.token_hex(8)
        folder = root / job_id
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return job_id, folder


def write_job(folder: Path, record: dict[str, Any]) -> None:
    """Replace ``job.json`` atomically (temp file, fsync, rename)."""
    target = folder / JOB_FILE
    temp = folder / f".{JOB_FILE}.tmp"
    data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, target)


def read_jobs(root: Path) -> Iterator[dict[str, Any]]:
    """Every readable job record under ``root``; folders of interrupted uploads are removed."""
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.is_symlink() or not JOB_ID.fullmatch(folder.name):
            continue
        path = folder / JOB_FILE
        if not path.exists():
            remove_folder(folder)  # an upload that never became a job
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            log.warning("skipping unreadable job record %s: %s", path, error)
            continue
        if isinstance(record, dict) and record.get("id") == folder.name:
            yield record
        else:
            log.warning("skipping job record %s: it does not describe job %s", path, folder.name)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
