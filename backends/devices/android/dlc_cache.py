"""SNPE's host side: a model converted to a DLC (and quantized for the DSP), cached on disk.

``snpe-onnx-to-dlc`` makes the DLC (with ``--quantization_overrides`` when MQBench clip ranges
are given), cached by model sha256 + clip-range hash + SDK; ``snpe-dlc-quantize`` quantizes it
for the DSP on a small list of random float32 calibration inputs (``--override_params
--bias_bitwidth 32`` with clip ranges, as MQBench deploys), cached by DLC content + options.
A conversion runs once per output file at a time in this process; files appear atomically.
The random raw inputs are made here too, for calibration and for the phone's input lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from backends.core.records import Model
from backends.devices.android.snpe_config import CONVERTER, QUANTIZER, SnpeConfig
from backends.devices.base import BenchError
from backends.runtimes.snpe import (
    ClipRangesError,
    build_onnx_to_dlc_command,
    build_quantize_command,
    load_clip_ranges,
)

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_DIGESTS: dict[tuple[str, int, int], str] = {}


@contextlib.contextmanager
def _locked(key: Path) -> Iterator[None]:
    """One conversion per output file at a time in this process (other workers wait)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(key), threading.Lock())
    with lock:
        yield


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so SDK libraries hash once."""
    info = os.stat(path)
    key = (os.fspath(path), info.st_size, info.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def check_clip_ranges(path: str | os.PathLike[str] | None) -> Path | None:
    """``path`` checked with :func:`load_clip_ranges`; BenchError naming the file otherwise."""
    if path is None or path == "":
        return None
    where = Path(path).expanduser()
    if not where.is_file():
        raise BenchError(f"clip-range JSON {str(where)!r}: no such file")
    try:
        load_clip_ranges(where)
    except ClipRangesError as error:
        raise BenchError(f"bad clip-range JSON (--quantization_overrides): {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise BenchError(f"clip-range JSON {str(where)!r}: unreadable ({error})") from error
    return where


def _digest_of(path: Path | None) -> str:
    return file_sha256(path)[:16] if path is not None else "noclip"


def _partial(target: Path) -> Path:
    """A unique temporary name next to ``target`` that keeps its suffix (tools check it)."""
    return target.with_name(f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def _run_host(argv: Sequence[str], label: str, timeout_s: float) -> subprocess.CompletedProcess:
    """Run a host tool; BenchError (quoting its last lines) when it cannot run or fails."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(
            f"{label}: {Path(argv[0]).name} did not finish within {timeout_s:g} s "
            "([snpe] command_timeout_s)"
        ) from error
    except OSError as error:
        raise BenchError(f"{label}: {argv[0]} could not run: {error}") from error
    if done.returncode != 0:
        lines = [line for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
        raise BenchError(
            f"{label}: {Path(argv[0]).name} failed (exit {done.returncode}): "
            + " | ".join(lines[-4:])
        )
    return done


def input_specs(model: Model) -> list[tuple[str, list[int]]]:
    """``(name, shape)`` of each model input (dynamic dimensions are 1): from the Model record,
    or read from the ONNX file when the record has none."""
    if model.inputs:
        return [(i.name, [d if d and d > 0 else 1 for d in i.shape]) for i in model.inputs]
    import onnx

    try:
        graph = onnx.load(model.path, load_external_data=False).graph
    except Exception as error:
        raise BenchError(f"{model.path}: cannot read the model's inputs: {error}") from error
    params = {tensor.name for tensor in graph.initializer}
    return [
        (
            value.name,
            [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim],
        )
        for value in graph.input
        if value.name not in params
    ]


def random_raw(shape: Sequence[int], seed: int) -> bytes:
    """float32 random normal values in SNPE's raw format (the bytes of the array)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(int(np.prod(shape)) if shape else 1).astype(np.float32).tobytes()


def input_list_line(paths: Mapping[str, str]) -> str:
    """One input-list line: the path for one input, ``name:=path …`` for several."""
    if len(paths) == 1:
        return next(iter(paths.values()))
    return " ".join(f"{name}:={path}" for name, path in paths.items())


def input_seed(model: Model, index: int) -> int:
    return (int(model.sha256[:8], 16) if model.sha256 else 0) + index


def convert_to_dlc(
    config: SnpeConfig, model: Model, overrides: str | os.PathLike[str] | None = None
) -> Path:
    """The model as a DLC, made with ``snpe-onnx-to-dlc`` on the host (with
    ``--quantization_overrides`` when clip ranges are given, checked first); cached in
    ``<cache_dir>/dlc`` by model sha256 + clip-range hash + SDK."""
    tool = config.host_tool(CONVERTER)
    clip = check_clip_ranges(overrides)
    if not Path(model.path).is_file():
        raise BenchError(f"{model.path}: no such model file")
    folder = config.cache_folder("dlc")
    target = folder / f"{model.sha256}-{_digest_of(clip)}-{config.sdk_tag}.dlc"
    with _locked(target):
        if target.is_file() and target.stat().st_size > 0:
            return target
        partial = _partial(target)
        argv = build_onnx_to_dlc_command(
            tool.parent, model.path, partial, clip, check_overrides=False
        )
        try:
            _run_host(argv, f"{model.path}: conversion to DLC", config.command_timeout_s)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise BenchError(f"{model.path}: {CONVERTER} wrote no DLC at {partial}")
            os.replace(partial, target)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
    return target


def calibration_list(config: SnpeConfig, model: Model) -> Path:
    """``config.calibration_inputs`` random float32 raw inputs for the model and their input
    list (host paths), in ``<cache_dir>/calibration/``; made once per model."""
    count = config.calibration_inputs
    folder = config.cache_folder("calibration") / f"{model.sha256[:16]}-{count}"
    listing = folder / "input_list.txt"
    if listing.is_file():
        return listing
    folder.mkdir(parents=True, exist_ok=True)
    specs = input_specs(model)
    lines = []
    for index in range(count):
        paths = {}
        for position, (name, shape) in enumerate(specs):
            raw = folder / f"input_{index}_{position}.raw"
            raw.write_bytes(random_raw(shape, input_seed(model, 1000 + index * 64 + position)))
            paths[name] = str(raw.resolve())
        lines.append(input_list_line(paths))
    partial = _partial(listing)
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, listing)
    return listing


def quantize_dlc(
    config: SnpeConfig,
    dlc: str | os.PathLike[str],
    model: Model,
    overrides: str | os.PathLike[str] | None = None,
) -> Path:
    """A quantized DLC for the DSP runtime, made with ``snpe-dlc-quantize`` on the host from a
    small random calibration list; with clip ranges (checked first) ``--override_params`` keeps
    the encodings given to the converter. Cached by DLC content + clip ranges + options."""
    tool = config.host_tool(QUANTIZER)
    clip = check_clip_ranges(overrides)
    source = Path(dlc)
    if not source.is_file():
        raise BenchError(f"{source}: no such DLC to quantize")
    options = f"{file_sha256(source)}|{_digest_of(clip)}|{config.calibration_inputs}|bias32"
    key = hashlib.sha256(options.encode()).hexdigest()[:16]
    target = config.cache_folder("dlc") / f"{model.sha256}-q{key}.dlc"
    with _locked(target):
        if target.is_file() and target.stat().st_size > 0:
            return target
        listing = calibration_list(config, model)
        partial = _partial(target)
        argv = build_quantize_command(
            tool.parent,
            source,
            listing,
            partial,
            override_params=clip is not None,
            bias_bitwidth=32,
        )
        try:
            _run_host(argv, f"{model.path}: DLC quantization", config.command_timeout_s)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise BenchError(f"{model.path}: {QUANTIZER} wrote no DLC at {partial}")
            os.replace(partial, target)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
    return target
