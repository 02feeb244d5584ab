"""Model conversion through an operator-configured command (e.g. ONNX -> .tflite).

The command is an argv template with ``{input}`` and ``{output}`` placeholders, run without a
shell; outputs are cached by the model's sha256 so a model converts once.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import platformdirs

from backends.core.records import Model
from backends.devices.base import BenchError


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("devlab")) / "converted"


def run_converter(
    template: Sequence[str],
    model: Model,
    suffix: str,
    folder: Path | None = None,
    timeout_s: float = 1800.0,
) -> str:
    """Convert ``model`` with the command ``template``; returns the converted file's path."""
    if not any("{input}" in arg for arg in template) or not any(
        "{output}" in arg for arg in template
    ):
        raise BenchError(f"converter command {list(template)} needs {{input}} and {{output}}")
    folder = folder or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    output = folder / f"{model.sha256}{suffix}"
    if output.is_file() and output.stat().st_size > 0:
        return str(output)
    partial = output.with_name(output.name + ".partial")
    argv = [
        arg.replace("{input}", model.path).replace("{output}", str(partial)) for arg in template
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BenchError(f"{model.path}: converter {argv[0]!r} could not run: {error}") from error
    if done.returncode != 0 or not partial.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BenchError(
            f"{model.path}: conversion failed (exit {done.returncode}): " + " | ".join(tail)
        )
    partial.replace(output)
    return str(output)
