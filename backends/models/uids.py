"""Which ModuleUID keys a model's rows in the latency table, so a NAS tool finds its modules.

A NAS tool looks each module up by its own UID text (nnabla-nas: ``Conv[...][[1,192,16,16]]``),
so the user must be able to say which UID a file stands for. In this order:

1. ``uids.json`` beside the model: ``{"<UID>": "<file>.onnx", ...}`` (file names in that folder);
2. the model's ONNX metadata: ``module_uid`` (the user's), else ``devlab.module_uid`` (what
   ``devlab space`` writes on the modules it generates);
3. neither: ``None``, and ``Model.module_uid`` falls back to the file name with its input
   shapes (``mlp[[1,256]]``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Callable  # typing's: the alias below runs on Python 3.8 (the agent)

MANIFEST_FILE = "uids.json"
USER_METADATA_KEY = "module_uid"
DEVLAB_METADATA_KEY = "devlab.module_uid"  # backends/space/modules.py META_UID
METADATA_KEYS: tuple[str, ...] = (USER_METADATA_KEY, DEVLAB_METADATA_KEY)

ErrorFactory = Callable[[str, str], Exception]  # (path, reason) -> the error to raise
_SHAPE_HINT = 'expected {"<UID>": "<file>.onnx", ...}'


class UidManifestError(ValueError):
    """A ``uids.json`` that cannot be trusted; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def declared_uid(
    path: str | Path, metadata: Mapping[str, str], error: ErrorFactory = UidManifestError
) -> str | None:
    """The UID the user declared for the model at ``path`` (manifest, then metadata), or None.

    A broken manifest raises ``error(manifest path, reason)``: intake passes its ModelError, so
    the model fails up front with the fix instead of landing in the table under a wrong key.
    """
    path = Path(path)
    manifest = path.parent / MANIFEST_FILE
    if manifest.is_file():
        try:
            by_file = read_manifest(manifest)
        except UidManifestError as problem:
            raise error(problem.path, problem.reason) from None
        if path.name in by_file:
            return by_file[path.name]
    for key in METADATA_KEYS:
        value = metadata.get(key, "").strip()
        if value:
            return value
    return None


def read_manifest(manifest: Path) -> dict[str, str]:
    """``uids.json`` as file name -> UID; ``UidManifestError`` names what is wrong in it.

    Read again only when the file changes, so a folder of a thousand modules parses it once.
    """
    try:
        stat = manifest.stat()
    except OSError as problem:
        raise UidManifestError(str(manifest), f"cannot read it: {problem.strerror}") from None
    return dict(_parse_manifest(str(manifest.resolve()), stat.st_mtime_ns, stat.st_size))


class _Pairs(list):
    """A JSON object's (key, value) pairs in file order, so a UID given twice is seen."""


@functools.lru_cache(maxsize=64)
def _parse_manifest(manifest: str, _mtime_ns: int, _size: int) -> tuple[tuple[str, str], ...]:
    """The checked (file name, UID) pairs; cached on the file's identity and version."""
    path = Path(manifest)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        raise UidManifestError(manifest, f"cannot read it: {problem}") from None
    try:
        pairs = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as problem:
        raise UidManifestError(
            manifest, f"not valid JSON ({problem.msg} at line {problem.lineno}); {_SHAPE_HINT}"
        ) from None
    if not isinstance(pairs, _Pairs):
        raise UidManifestError(manifest, f"must be a JSON object; {_SHAPE_HINT}")
    by_file: dict[str, str] = {}
    seen_uids: set[str] = set()
    for uid, file in pairs:
        _check_entry(path, uid, file)
        if uid in seen_uids:
            raise UidManifestError(manifest, f"the UID {uid!r} is given twice")
        if file in by_file:
            raise UidManifestError(
                manifest, f"{file} is given two UIDs, {by_file[file]!r} and {uid!r}; keep one"
            )
        seen_uids.add(uid)
        by_file[file] = uid
    return tuple(by_file.items())


def _check_entry(manifest: Path, uid: object, file: object) -> None:
    """A UID is non-empty text; a file is the name of an .onnx file beside the manifest."""
    where = str(manifest)
    if not isinstance(uid, str) or not uid.strip():
        raise UidManifestError(where, f"an empty UID; {_SHAPE_HINT}")
    if not isinstance(file, str):
        raise UidManifestError(where, f"the UID {uid!r} maps to {file!r}, not a file name")
    if Path(file).name != file or not file.lower().endswith(".onnx"):
        raise UidManifestError(
            where, f"{file!r} is not the name of an .onnx file beside {MANIFEST_FILE}"
        )
    if not (manifest.parent / file).is_file():
        raise UidManifestError(where, f"names {file}, which is not in {manifest.parent}")
