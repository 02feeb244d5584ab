"""The virtual phone's file system: device paths mapped into one host folder (the sandbox).

Sync requests (STAT, LIST, SEND, RECV) go through ``Sandbox``:

* a device path is normalised as if it were absolute, so a leading ``..`` cannot climb above
  ``/`` (``/../../etc/passwd`` is ``<root>/etc/passwd``), then joined under the root;
* symlinks are resolved (for a path that does not exist yet, its deepest existing ancestor is
  resolved, and a dangling link is followed to where it points) and anything that lands outside
  the root is refused with ``SandboxError``; paths with NUL bytes are refused too;
* files are written through ``PartialFile``: to a temporary name next to the target, opened with
  ``O_NOFOLLOW | O_EXCL``, and renamed over the target only on success, so a final symlink is
  replaced (never followed) and a failed or interrupted push leaves nothing behind.

Shell commands cannot be confined this way (``/bin/sh`` sees the host file system), so the
emulator rewrites device-absolute paths in the command text instead; see ``rewrite_command``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import shutil
import tempfile
from pathlib import Path

# Top-level device folders that shell command text is rewritten for (see ``rewrite_command``).
DEVICE_ROOTS = ("data", "sdcard", "sys", "system", "vendor")

# A device-absolute path starts after a character that cannot be part of a longer path or a
# variable, and its first component is one of DEVICE_ROOTS followed by "/" or the end of a word.
_DEVICE_PATH = re.compile(
    r"(?<![\w./~$}\-])/(" + "|".join(DEVICE_ROOTS) + r")(?=/|$|[\s'\"`;|&()<>,])"
)
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./+@%-]+")
PARTIAL_PREFIX = ".devlab-partial-"


class SandboxError(PermissionError):
    """A device path that would leave the sandbox (or contains a NUL byte)."""


def normalise(device_path: str) -> str:
    """``device_path`` as a clean absolute device path (``..`` cannot climb above ``/``)."""
    if "\0" in device_path:
        raise SandboxError(f"path contains a NUL byte: {device_path!r}")
    clean = posixpath.normpath("/" + device_path.lstrip("/"))
    # normpath keeps a leading "//"; lstrip above removed it, but be explicit.
    return "/" + clean.lstrip("/")


class PartialFile:
    """A file being received: written under a temporary name, published by ``commit``.

    ``discard`` (or leaving a ``with`` block with an exception) removes the temporary file; a
    committed file gets its permission bits and mtime, then atomically replaces the target.
    """

    def __init__(self, target: Path, temp: Path, fd: int) -> None:
        self.target = target
        self.temp = temp
        self._fd: int | None = fd
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            raise ValueError("partial file already closed")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self.size += written

    def commit(self, perm: int, mtime: int | None) -> None:
        if self._fd is None:
            raise ValueError("partial file already closed")
        try:
            os.fchmod(self._fd, perm & 0o7777)
            os.close(self._fd)
        finally:
            self._fd = None
        try:
            if mtime:
                os.utime(self.temp, (mtime, mtime))
            os.replace(self.temp, self.target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            raise

    def discard(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None or not self.closed:
            self.discard()


class Sandbox:
    """Maps device paths into ``root`` (created if missing) and back."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))
        self._alias_dir: str | None = None

    # -----------------------------------------------------------------------------------------
    # Mapping

    def host_path(self, device_path: str) -> Path:
        """The host path for ``device_path`` by name only (no symlink checks): for provisioning
        and for tests. Requests from the host must use ``resolve`` / ``lresolve``."""
        return self.root / normalise(device_path).lstrip("/")

    def device_path(self, host_path: str | os.PathLike[str]) -> str:
        """The device path of a host path inside the sandbox."""
        relative = Path(os.path.realpath(host_path)).relative_to(self.root)
        return "/" + relative.as_posix().removeprefix(".").lstrip("/")

    def contains(self, host_path: str | os.PathLike[str]) -> bool:
        real = os.path.realpath(host_path)
        return real == str(self.root) or real.startswith(str(self.root) + os.sep)

    def resolve(self, device_path: str) -> Path:
        """The host path with every symlink followed; refused if it ends outside the root."""
        joined = self.host_path(device_path)
        real = Path(os.path.realpath(joined))
        if not self.contains(real):
            raise SandboxError(f"{device_path}: outside the sandbox")
        return real

    def lresolve(self, device_path: str) -> Path:
        """Like ``resolve`` but a final symlink is kept (for lstat): its parent is resolved and
        checked, and the link itself must also point inside the root."""
        joined = self.host_path(device_path)
        if joined == self.root:
            return self.root
        parent = Path(os.path.realpath(joined.parent))
        if not self.contains(parent):
            raise SandboxError(f"{device_path}: outside the sandbox")
        final = parent / joined.name
        if final.is_symlink() and not self.contains(os.path.realpath(final)):
            raise SandboxError(f"{device_path}: symlink points outside the sandbox")
        return final

    def open_for_write(self, device_path: str) -> PartialFile:
        """A ``PartialFile`` for ``device_path``: missing parents are created (after checking
        that the deepest existing ancestor resolves inside the root); an existing directory at
        the target is an error; a final symlink is replaced on commit, never followed."""
        joined = self.host_path(device_path)
        if joined == self.root:
            raise IsADirectoryError(f"{device_path}: is a directory")
        parent = Path(os.path.realpath(joined.parent))
        if not self.contains(parent):
            raise SandboxError(f"{device_path}: outside the sandbox")
        target = parent / joined.name
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(f"{device_path}: is a directory")
        parent.mkdir(parents=True, exist_ok=True)
        # mkdir may have followed links created meanwhile: check again where it landed.
        if not self.contains(parent) or not parent.is_dir():
            raise SandboxError(f"{device_path}: outside the sandbox")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        for _ in range(10):
            temp = parent / f"{PARTIAL_PREFIX}{secrets.token_hex(6)}-{joined.name}"[:255]
            try:
                fd = os.open(temp, flags, 0o600)
            except FileExistsError:
                continue
            return PartialFile(target, temp, fd)
        raise FileExistsError(f"{device_path}: cannot create a temporary file")

    # -----------------------------------------------------------------------------------------
    # Shell command text

    def shell_root(self) -> str:
        """The root as the shell should see it: the real path when it needs no quoting, else a
        symlink with a plain name in the temp folder (so rewritten paths survive word splitting)."""
        if _SHELL_SAFE.fullmatch(str(self.root)):
            return str(self.root)
        if self._alias_dir is None or not os.path.islink(os.path.join(self._alias_dir, "root")):
            base = tempfile.gettempdir()
            if not _SHELL_SAFE.fullmatch(base):
                base = "/tmp"
            self._alias_dir = tempfile.mkdtemp(prefix="devlab-vp-", dir=base)
            os.symlink(self.root, os.path.join(self._alias_dir, "root"))
        return os.path.join(self._alias_dir, "root")

    def rewrite_command(self, command: str) -> str:
        """Rewrite device-absolute paths in shell command text to sandbox paths.

        A path is rewritten when it starts with ``/data``, ``/sdcard``, ``/sys``, ``/system`` or
        ``/vendor`` followed by ``/`` or the end of the word, and the ``/`` is at the start of
        the text or after a character that cannot belong to a longer path (space, quote, ``=``,
        ``:``, ``;``, ``|``, ``&``, ``(``, ``<``, ``>``, ``,`` ...). So ``cat /sdcard/a.txt`` reads
        ``<root>/sdcard/a.txt`` and ``--graph=/data/local/tmp/m.onnx`` points into the sandbox,
        while ``/usr/bin/env``, ``/proc/cpuinfo``, ``$HOME/data/x`` and ``./data/x`` are left
        alone. Other absolute paths still reach the host: the shell is a convenience, not a
        security boundary.
        """
        root = self.shell_root()
        return _DEVICE_PATH.sub(lambda m: f"{root}/{m.group(1)}", command)

    def close(self) -> None:
        """Remove the shell alias (if one was made). The sandbox folder itself is kept."""
        if self._alias_dir is not None:
            shutil.rmtree(self._alias_dir, ignore_errors=True)
            self._alias_dir = None
