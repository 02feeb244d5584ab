"""Reading ``POST /v1/jobs``: the multipart body streamed to disk with a byte limit, and the
client's file name reduced to a display name (it is never used as a path)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from backends.agent.settings import MAX_SETTINGS_BYTES

CHUNK = 256 * 1024
MAX_PARTS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MODEL_EXTENSIONS = (".onnx", ".xmodel")
MAX_NAME = 100
MAX_EXTENSION = 20
# What aiohttp's multipart reader raises on a body that does not parse.
_MALFORMED = (ValueError, AssertionError, KeyError, LookupError, HttpProcessingError)


class UploadError(Exception):
    """A bad upload; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    settings_text: str | None
    display_name: str
    file_name: str  # model.onnx / model.xmodel / model.bin, inside the job folder
    sha256: str
    size: int


def display_name(filename: str | None) -> str:
    """The basename with only ``[A-Za-z0-9._-]``, at most 100 characters, no leading dot.

    A longer name loses the end of its stem, never its extension (up to 20 characters): the
    extension decides how the model is stored and run.
    """
    base = re.split(r"[\\/]", filename or "")[-1]
    cleaned = _UNSAFE.sub("_", base).lstrip(".")
    if len(cleaned) > MAX_NAME:
        stem, dot, extension = cleaned.rpartition(".")
        if dot and stem and len(extension) < MAX_EXTENSION:
            cleaned = stem[: MAX_NAME - len(extension) - 1] + "." + extension
        else:
            cleaned = cleaned[:MAX_NAME]
    return cleaned or "model"


def stored_name(name: str) -> str:
    lowered = name.lower()
    for extension in MODEL_EXTENSIONS:
        if lowered.endswith(extension):
            return "model" + extension
    return "model.bin"


async def read_upload(request: web.Request, folder: Path, max_bytes: int) -> Upload:
    """Stream the ``model`` part into ``folder`` and read the ``settings`` part.

    Raises UploadError (400, 413 or 415); the caller removes ``folder`` on error.
    """
    if request.content_type != "multipart/form-data":
        raise UploadError(
            415,
            "POST /v1/jobs takes multipart/form-data with the parts "
            "'model' (the file) and 'settings' (JSON)",
        )
    if request.content_length is not None and request.content_length > max_bytes + (1 << 20):
        raise UploadError(413, _too_large(max_bytes))
    try:
        reader = await request.multipart()
    except _MALFORMED as error:
        raise UploadError(400, f"malformed multipart body: {_first_line(error)}") from None
    settings: str | None = None
    saved: tuple[str, str, str, int] | None = None
    try:
        for _ in range(MAX_PARTS + 1):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise UploadError(400, "nested multipart parts are not accepted")
            if part.name == "model":
                if saved is not None:
                    raise UploadError(400, "send exactly one 'model' part")
                saved = await _save_model(part, folder, max_bytes)
            elif part.name == "settings":
                if settings is not None:
                    raise UploadError(400, "send at most one 'settings' part")
                settings = await _read_settings(part)
            else:
                raise UploadError(
                    400,
                    f"unknown part {str(part.name)[:40]!r}: send 'model' and optionally 'settings'",
                )
        else:
            raise UploadError(400, f"too many parts (at most {MAX_PARTS})")
    except _MALFORMED as error:
        raise UploadError(400, f"malformed multipart body: {_first_line(error)}") from None
    if saved is None:
        raise UploadError(400, "the 'model' part (the model file) is missing")
    name, file_name, digest, size = saved
    return Upload(settings, name, file_name, digest, size)


async def _save_model(part: BodyPartReader, folder: Path, max_bytes: int) -> tuple:
    name = display_name(part.filename)
    file_name = stored_name(name)
    partial = folder / "model.part"
    digest, size = hashlib.sha256(), 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadError(413, _too_large(max_bytes))
                digest.update(chunk)
                handle.write(chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if size == 0:
        partial.unlink(missing_ok=True)
        raise UploadError(400, "the 'model' part is empty")
    os.replace(partial, folder / file_name)
    return name, file_name, digest.hexdigest(), size


async def _read_settings(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(8192):
        data += chunk
        if len(data) > MAX_SETTINGS_BYTES:
            raise UploadError(400, f"the 'settings' part is larger than {MAX_SETTINGS_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(400, "the 'settings' part is not UTF-8 text") from None


def _too_large(max_bytes: int) -> str:
    return f"the upload is larger than this agent's limit of {max_bytes} bytes"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:200]
