"""Shared pieces of devlab's **stand-in** SNPE tools (not Qualcomm software, no SNPE code).

The stand-in SDK (``backends.virtual.snpe_sdk``) lets demos and tests drive the SNPE workflow
(convert, quantize, ``snpe-net-run`` on a phone, ``snpe-diagview`` on the host) without the
real SDK. Two file formats are invented here and are *not* compatible with real SNPE:

* the stand-in **DLC container**: a zip holding ``model.onnx`` (the ONNX model, copied as is),
  ``meta.json`` (converter and quantizer options) and a notice file. A real DLC holds a
  converted SNPE graph; this one is run with ONNX Runtime by the stand-in ``snpe-net-run``.
* the stand-in **SNPEDiag log**: a magic line then JSON (the real log is a binary flatbuffer),
  read by the stand-in ``snpe-diagview`` only.

Input lists follow SNPE's text format: one inference per line, either one raw file path or
``name:=path`` pairs separated by spaces; lines starting with ``#`` are skipped. Raw files are
float32, as ``snpe-net-run`` reads them by default.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import shlex
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STANDIN_VERSION = "2.37.0.devlab_standin"
NOTICE = (
    "devlab stand-in: NOT a real SNPE DLC. This zip holds the original ONNX model "
    "(model.onnx) and the options of the stand-in converter/quantizer (meta.json); only "
    "devlab's stand-in snpe-net-run can run it (with ONNX Runtime).\n"
)
NOTICE_NAME = "DEVLAB_STANDIN_NOT_A_REAL_DLC.txt"
LOG_MAGIC = b"DEVLAB-STANDIN-SNPEDIAG 1\n"

# Same names as backends.virtual.provision / tools._common (kept local: no import cycle).
SANDBOX_ENV = "DEVLAB_VIRTUAL_SANDBOX"
SHELL_ROOT_ENV = "DEVLAB_VIRTUAL_SHELL_ROOT"
DEVICE_ROOTS = ("data", "sdcard", "sys", "system", "vendor")


class StandinError(Exception):
    """A failure the stand-in tool reports (``error:`` line on stderr, exit status 1)."""


# --------------------------------------------------------------------------- container


def write_container(path: str | os.PathLike[str], onnx_bytes: bytes, meta: dict[str, Any]) -> None:
    """Write a stand-in DLC (zip) to ``path`` through a temporary name."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    body = {"standin": True, "notice": NOTICE.strip(), **meta}
    with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(NOTICE_NAME, NOTICE)
        archive.writestr("meta.json", json.dumps(body, indent=2, sort_keys=True))
        archive.writestr("model.onnx", onnx_bytes)
    os.replace(temp, target)


def read_container(path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """``(onnx bytes, meta)`` of a stand-in DLC; StandinError for anything else."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise StandinError(f"cannot read container {path}: {error.strerror or error}") from error
    return open_container(data, path)


def open_container(data: bytes, path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """``(onnx bytes, meta)`` of stand-in DLC bytes read from ``path``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            meta = json.loads(archive.read("meta.json"))
            model = archive.read("model.onnx")
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise StandinError(
            f"{path} is not a devlab stand-in DLC (the stand-in SDK cannot read real DLCs): {error}"
        ) from error
    if not isinstance(meta, dict) or not meta.get("standin"):
        raise StandinError(f"{path} is not a devlab stand-in DLC (no stand-in marker)")
    return model, meta


# --------------------------------------------------------------------------- diag log


def write_log(output_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write the stand-in diag log as ``SNPEDiag_<n>.log`` (the first free n) in the folder."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    while (folder / f"SNPEDiag_{index}.log").exists():
        index += 1
    path = folder / f"SNPEDiag_{index}.log"
    path.write_bytes(LOG_MAGIC + json.dumps(record).encode("utf-8"))
    return path


def read_log(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise StandinError(f"cannot open log file {path}: {error.strerror or error}") from error
    if not data.startswith(LOG_MAGIC):
        raise StandinError(
            f"{path} is not a devlab stand-in SNPEDiag log (a real SNPE log needs the real "
            "snpe-diagview)"
        )
    try:
        record = json.loads(data[len(LOG_MAGIC) :])
    except ValueError as error:
        raise StandinError(f"{path}: damaged stand-in log ({error})") from error
    if not isinstance(record, dict):
        raise StandinError(f"{path}: damaged stand-in log")
    return record


# --------------------------------------------------------------------------- paths and inputs


def host_path(path: str) -> str:
    """A path read from a file on the virtual phone (an input list line), as the host sees it.

    The phone's shell rewrites device paths in the *command line* only; paths inside files
    still say ``/data/...`` and are mapped into the sandbox here. Outside a virtual phone, or
    for paths that are already host paths, ``path`` is returned unchanged.
    """
    root = os.environ.get(SANDBOX_ENV)
    if not root or not path.startswith("/"):
        return path
    for prefix in (os.environ.get(SHELL_ROOT_ENV), root):
        if prefix and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
            return path
    first = path.lstrip("/").split("/", 1)[0]
    if first in DEVICE_ROOTS:
        return root.rstrip("/") + "/" + path.lstrip("/")
    return path


def parse_input_list(text: str, input_names: Sequence[str]) -> list[dict[str, str]]:
    """Lines of an SNPE input list → one ``{input name: path}`` per inference.

    A line is either one path (single-input models) or ``name:=path`` items separated by
    spaces. ``#`` lines (output tensor selection in SNPE) and blank lines are skipped.
    """
    runs: list[dict[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        items = line.split()
        if any(":=" in item for item in items):
            feed: dict[str, str] = {}
            for item in items:
                name, sep, path = item.partition(":=")
                if not sep or name not in input_names:
                    raise StandinError(
                        f"input list line {number}: {item!r} does not name a model input "
                        f"(inputs: {', '.join(input_names)})"
                    )
                feed[name] = path
            missing = [name for name in input_names if name not in feed]
            if missing:
                raise StandinError(f"input list line {number}: no file for {', '.join(missing)}")
        else:
            if len(input_names) != 1 or len(items) != 1:
                raise StandinError(
                    f"input list line {number}: the model has {len(input_names)} inputs; "
                    "use name:=path items"
                )
            feed = {input_names[0]: items[0]}
        runs.append(feed)
    return runs


def element_count(shape: Sequence[Any]) -> int:
    count = 1
    for dim in shape:
        count *= dim if isinstance(dim, int) and dim > 0 else 1
    return count


def onnx_inputs(onnx_bytes: bytes) -> list[tuple[str, list[int]]]:
    """``(name, shape)`` of the model's real inputs (initializers excluded; dynamic dims → 1)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    initializers = {tensor.name for tensor in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
        found.append((value.name, dims))
    return found


def record_call(calls_log: str | None, tool: str, argv: Sequence[str]) -> None:
    """Append ``<time> <tool> <argv>`` to the stand-in SDK's call log (host tools only)."""
    if not calls_log:
        return
    stamp = _dt.datetime.now().isoformat(timespec="milliseconds")
    try:
        with open(calls_log, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {tool} {shlex.join(argv)}\n")
    except OSError:
        pass


class StandinArgumentParser(argparse.ArgumentParser):
    """argparse that raises StandinError (the tools print it their own way) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise StandinError(f"argument error: {message}")


def standin_main(
    tool: str,
    run: Callable[[list[str]], int],
    argv: Sequence[str] | None,
    calls_log: str | None,
    error_prefix: str,
) -> int:
    """The shared entry point of the host-side stand-in tools: record the call, run it, and
    print an error the way the real tool does (``error_prefix``) with exit code 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    record_call(calls_log, tool, args)
    try:
        return run(args)
    except StandinError as error:
        print(f"{error_prefix}{error}", file=sys.stderr)
        return 1
