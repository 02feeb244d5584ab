"""Shapes for models' dynamic inputs: ``--input-shape`` values and an ``--input-shapes`` file.

A folder of exported models often needs a different shape per model. The file gives them once,
by model file name or stem, with ``"*"`` for every model; the command line still wins. This
module only reads and layers the shapes; ``backends.models.intake`` applies them to a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from backends.core.records import Model

COMMAND_LINE = "--input-shape"
EVERY_MODEL = "*"
EXAMPLE = '{"*": {"x": [1, 3, 224, 224]}, "ocr.onnx": {"x": [1, 3, 48, 192]}}'


class InputShapesError(ValueError):
    """An ``--input-shapes`` file that cannot be used as written; ``str()`` names the file."""


@dataclass
class GivenShape:
    """One input's shape as the user gave it, and where: messages point back to that place."""

    dims: list[int]
    source: str  # COMMAND_LINE, or '--input-shapes FILE "KEY"'

    def describe(self, name: str) -> str:
        shown = "x".join(str(d) for d in self.dims)
        if self.source == COMMAND_LINE:
            return f"{COMMAND_LINE} {name}={shown}"
        return f"{name}={shown} from {self.source}"


@dataclass
class ShapeLayer:
    """Shapes from one place. ``strict``: each name must be an input of the model, and static
    inputs are confirmed too; otherwise (``"*"``) only inputs with dynamic dims are filled."""

    shapes: dict[str, list[int]]
    source: str
    strict: bool


@dataclass
class InputShapes:
    """Every shape the user gave, layered per model: command line > the model's entry > ``*``.

    Command-line names must be inputs of every model (as ever) and the file's per-model entries
    inputs of the model they name; both confirm static inputs too. The file's ``"*"`` fills the
    inputs of that name that have a dynamic dimension, in the models that have one.
    """

    command_line: dict[str, list[int]] = field(default_factory=dict)
    every_model: dict[str, list[int]] = field(default_factory=dict)
    per_model: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    file: str | None = None

    def with_command_line(self, shapes: Mapping[str, list[int]]) -> InputShapes:
        return replace(self, command_line={k: list(v) for k, v in shapes.items()})

    def entry_for(self, path: Path) -> str | None:
        """The file's key for the model at ``path``: its file name, else its stem."""
        for key in (path.name, path.stem):
            if key in self.per_model:
                return key
        return None

    def layers(self, path: Path) -> list[ShapeLayer]:
        """The shapes that apply to the model at ``path``, weakest first."""
        layers: list[ShapeLayer] = []
        if self.every_model:
            layers.append(ShapeLayer(self.every_model, self._source(EVERY_MODEL), strict=False))
        key = self.entry_for(path)
        if key is not None:
            layers.append(ShapeLayer(self.per_model[key], self._source(key), strict=True))
        if self.command_line:
            layers.append(ShapeLayer(self.command_line, COMMAND_LINE, strict=True))
        return layers

    def applied_to(self, model: Model) -> dict[str, list[int]]:
        """The shapes given for ``model``'s inputs: part of its job's identity (its settings)."""
        named = {name for layer in self.layers(Path(model.path)) for name in layer.shapes}
        return {i.name: list(i.shape) for i in model.inputs if i.name in named}

    def unmatched_models(self, paths: Iterable[Path]) -> list[str]:
        """The file's model keys that name none of ``paths``."""
        matched = {self.entry_for(path) for path in paths}
        return [key for key in self.per_model if key not in matched]

    def _source(self, key: str) -> str:
        return f'--input-shapes {self.file} "{key}"'


def read_input_shapes(path: str | Path) -> InputShapes:
    """Read an ``--input-shapes`` JSON file: ``{"<model name or stem>" | "*": {input: dims}}``.

    Raises ``InputShapesError`` naming the file and what to write instead.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputShapesError(f"{path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputShapesError(f"{path}: cannot read the file: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputShapesError(
            f"{path}: not JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); "
            f"expected e.g. {EXAMPLE}"
        ) from None
    if not isinstance(data, dict) or not data:
        raise InputShapesError(
            f"{path}: expected a JSON object of models and their input shapes, e.g. {EXAMPLE}"
        )
    every: dict[str, list[int]] = {}
    per_model: dict[str, dict[str, list[int]]] = {}
    for key, entry in data.items():
        if not key.strip():
            raise InputShapesError(f'{path}: empty model name ""; use a file name, stem or "*"')
        shapes = _entry(path, key, entry)
        if key == EVERY_MODEL:
            every = shapes
        else:
            per_model[key] = shapes
    _check_no_model_twice(path, per_model)
    return InputShapes(every_model=every, per_model=per_model, file=str(path))


def _entry(path: Path, key: str, entry: object) -> dict[str, list[int]]:
    if not isinstance(entry, dict) or not entry:
        raise InputShapesError(
            f'{path}: "{key}" must map input names to shapes, e.g. {{"x": [1, 3, 224, 224]}}'
        )
    shapes: dict[str, list[int]] = {}
    for name, dims in entry.items():
        valid = isinstance(dims, list) and dims and all(_positive_int(d) for d in dims)
        if not valid:
            raise InputShapesError(
                f'{path}: "{key}" input "{name}": {json.dumps(dims)} is not a shape; '
                "expected a list of positive integers, e.g. [1, 3, 224, 224]"
            )
        shapes[name] = [int(d) for d in dims]
    return shapes


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_no_model_twice(path: Path, per_model: Mapping[str, object]) -> None:
    """``"m"`` and ``"m.onnx"`` would both name m.onnx; which one wins is not obvious."""
    for key in per_model:
        if key.lower().endswith(".onnx") and key[: -len(".onnx")] in per_model:
            raise InputShapesError(
                f'{path}: "{key[: -len(".onnx")]}" and "{key}" name the same model; keep one'
            )
