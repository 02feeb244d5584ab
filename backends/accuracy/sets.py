"""Evaluation sets on disk: a labelled folder, or an ONNX test-data folder.

A labelled set (``SET/labels.csv``, one row per sample, a ``label`` column)::

    SET/labels.csv   label[,input]   input: a file in SET (.npy, .raw or an image);
                                     without it, the samples are stacked in SET/inputs.npy
    SET/set.json     optional: {"name": ..., "preprocess": {mean, std, dtype, layout,
                                resize, color, raw_dtype}}   (``recipe.Recipe``)

An ONNX test-data folder (the layout of the ONNX model zoo and ``onnx/backend/test``)::

    SET/test_data_set_0/input_0.pb [input_1.pb ...] [output_0.pb ...]   (TensorProto files)

Opening a set checks its files, so a typo fails before anything is measured; ``check`` says
whether a model can take its samples, naming the file and the fix when it cannot.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.accuracy.recipe import Recipe, RecipeError
from backends.core.records import Model, ModelInput

LABELS_FILE = "labels.csv"
SET_FILE = "set.json"
STACKED_FILE = "inputs.npy"
TEST_DATA_PREFIX = "test_data_set_"
DOCS = "docs/accuracy.md"
LABELLED = "labelled"
TEST_DATA = "onnx-test-data"
_NUMBERED = re.compile(r"^(input|output)_(\d+)\.pb$")


class SetError(ValueError):
    """An evaluation set cannot be read, or does not fit a model; the message names the file
    and what to do about it."""


@dataclass
class Sample:
    """One evaluation sample: the model's feeds, and its label or expected outputs."""

    feeds: dict[str, np.ndarray]
    label: int | None = None
    expected: list[np.ndarray] | None = None


@dataclass
class EvalSet:
    """An evaluation set as opened: its name (``set.json``'s, else the folder's) and size."""

    path: Path
    name: str
    kind: str  # LABELLED or TEST_DATA
    size: int
    recipe: Recipe = field(default_factory=Recipe)
    labels: list[int] = field(default_factory=list)
    files: list[Path] | None = None  # a labelled set's per-sample files (None: stacked)
    folders: list[Path] = field(default_factory=list)  # a test-data set's test_data_set_N

    def samples(self, model: Model) -> Iterator[Sample]:
        """The samples as ``model`` takes them (after ``check``: raises SetError otherwise)."""
        if self.kind == TEST_DATA:
            for folder in self.folders:
                yield self._test_data_sample(folder, model)
            return
        spec = self._single_input(model)
        stacked = None if self.files is not None else self._stacked()
        for index, label in enumerate(self.labels):
            source = self.files[index] if self.files is not None else self.path / STACKED_FILE
            raw = self._read(source) if stacked is None else stacked[index]
            yield Sample({spec.name: self._shaped(raw, source, spec, model)}, label=label)

    def check(self, model: Model) -> None:
        """Raise SetError, naming the file and the fix, unless ``model`` can take the samples
        (reads the first one)."""
        next(self.samples(model), None)

    # -- labelled sets -----------------------------------------------------------------------

    def _single_input(self, model: Model) -> ModelInput:
        if len(model.inputs) != 1:
            names = ", ".join(i.name for i in model.inputs)
            raise SetError(
                f"{self.path}: a labelled set feeds one input, but {model.path} has "
                f"{len(model.inputs)} ({names}); give this model an ONNX test-data set "
                f"(test_data_set_N/input_K.pb), see {DOCS}"
            )
        return model.inputs[0]

    def _stacked(self) -> np.ndarray:
        return self._read(self.path / STACKED_FILE)

    def _read(self, source: Path) -> np.ndarray:
        try:
            return self.recipe.load(source)
        except RecipeError as error:
            raise SetError(str(error)) from error
        except (OSError, ValueError) as error:
            raise SetError(f"{source}: cannot read the sample: {error}") from error

    def _shaped(self, raw: np.ndarray, source: Path, spec: ModelInput, model: Model) -> np.ndarray:
        wanted = int(np.prod(spec.shape)) if spec.shape else 1
        if raw.size != wanted:
            raise SetError(
                f"{source}: a sample holds {raw.size} values (shape {list(raw.shape)}), but "
                f"{model.path} input '{spec.name}' takes {spec.shape} ({wanted} values): "
                f"evaluate this model on a set made for its input, or make the set fit it "
                f"({SET_FILE} 'resize' for images; {DOCS})"
            )
        try:
            return self.recipe.apply(raw, spec.shape)
        except RecipeError as error:
            raise SetError(f"{self.path / SET_FILE}: {error}") from error

    # -- ONNX test data ----------------------------------------------------------------------

    def _test_data_sample(self, folder: Path, model: Model) -> Sample:
        inputs = _numbered(folder, "input")
        if len(inputs) != len(model.inputs):
            raise SetError(
                f"{folder}: {len(inputs)} input file(s), but {model.path} has "
                f"{len(model.inputs)} input(s): use test data made for this model ({DOCS})"
            )
        by_name = {spec.name: spec for spec in model.inputs}
        feeds: dict[str, np.ndarray] = {}
        for index, file in enumerate(inputs):
            name, array = _read_tensor(file)
            spec = by_name.get(name) or model.inputs[index]
            if list(array.shape) != list(spec.shape):
                if array.size != int(np.prod(spec.shape)):
                    raise SetError(
                        f"{file}: shape {list(array.shape)}, but {model.path} input "
                        f"'{spec.name}' takes {spec.shape}: use test data made for this "
                        f"model, or fix its shape with --input-shape ({DOCS})"
                    )
                array = array.reshape(spec.shape)
            feeds[spec.name] = array
        outputs = [_read_tensor(file)[1] for file in _numbered(folder, "output")]
        return Sample(feeds, expected=outputs or None)


def open_set(path: str | Path) -> EvalSet:
    """The evaluation set at ``path``, its files checked; SetError says what is wrong."""
    root = Path(path)
    if not root.exists():
        raise SetError(
            f"{root}: no such evaluation set; give a folder holding {LABELS_FILE} and its "
            f"inputs, or ONNX test data ({TEST_DATA_PREFIX}0/input_0.pb); see {DOCS}"
        )
    if not root.is_dir():
        raise SetError(f"{root}: an evaluation set is a folder, not a file; see {DOCS}")
    folders = sorted(
        (p for p in root.glob(f"{TEST_DATA_PREFIX}*") if p.is_dir()), key=_folder_number
    )
    if folders:
        for folder in folders:
            if not _numbered(folder, "input"):
                raise SetError(f"{folder}: no input_0.pb; each test data folder needs its inputs")
        return EvalSet(root, root.name, TEST_DATA, len(folders), folders=folders)
    return _labelled(root)


def _labelled(root: Path) -> EvalSet:
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise SetError(
            f"{labels_path}: not found; a labelled set needs {LABELS_FILE} with a 'label' column "
            f"(and an 'input' column naming each sample's file, or the samples stacked in "
            f"{STACKED_FILE}); ONNX test data goes in {TEST_DATA_PREFIX}N/ folders; see {DOCS}"
        )
    name, recipe = _set_file(root)
    labels, inputs = _read_labels(labels_path)
    files = None
    if inputs is not None:
        files = [root / item for item in inputs]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SetError(
                f"{labels_path}: {len(missing)} input file(s) not found, first {missing[0]}; "
                "the 'input' column names files inside the set's folder"
            )
    else:
        stacked = root / STACKED_FILE
        if not stacked.is_file():
            raise SetError(
                f"{labels_path}: no 'input' column and no {STACKED_FILE} beside it; name each "
                f"sample's file in an 'input' column or stack the samples in {stacked}"
            )
        try:
            count = np.load(stacked, mmap_mode="r", allow_pickle=False).shape[0]
        except (OSError, ValueError, IndexError) as error:
            raise SetError(f"{stacked}: not a stacked .npy array: {error}") from error
        if count != len(labels):
            raise SetError(
                f"{stacked}: {count} samples, but {labels_path} has {len(labels)} labels; "
                "row i of labels.csv labels sample i"
            )
    return EvalSet(root, name, LABELLED, len(labels), recipe, labels, files)


def _set_file(root: Path) -> tuple[str, Recipe]:
    path = root / SET_FILE
    if not path.is_file():
        return root.name, Recipe()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SetError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise SetError(f"{path}: expected a JSON object with 'name' and 'preprocess'")
    try:
        recipe = Recipe.from_json(data.get("preprocess"), str(path))
    except RecipeError as error:
        raise SetError(str(error)) from error
    return str(data.get("name") or root.name), recipe


def _read_labels(path: Path) -> tuple[list[int], list[str] | None]:
    """(labels, the 'input' column or None) of labels.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SetError(f"{path}: cannot read: {error}") from error
    if not rows or "label" not in rows[0]:
        raise SetError(
            f"{path}: needs a header row with a 'label' column (and optionally 'input') and "
            "one row per sample"
        )
    labels = []
    for number, row in enumerate(rows, start=2):
        text = (row.get("label") or "").strip()
        if not text.isdigit():
            raise SetError(f"{path}, line {number}: label {text!r} is not a class index (0, 1...)")
        labels.append(int(text))
    inputs = [(row.get("input") or "").strip() for row in rows] if "input" in rows[0] else None
    return labels, inputs


def _numbered(folder: Path, kind: str) -> list[Path]:
    """input_0.pb, input_1.pb ... (or output_*) in index order."""
    found = []
    for file in folder.iterdir():
        match = _NUMBERED.match(file.name)
        if match and match.group(1) == kind:
            found.append((int(match.group(2)), file))
    return [file for _, file in sorted(found)]


def _folder_number(folder: Path) -> tuple[int, str]:
    suffix = folder.name.removeprefix(TEST_DATA_PREFIX)
    return (int(suffix) if suffix.isdigit() else 1 << 30, folder.name)


def _read_tensor(file: Path) -> tuple[str, np.ndarray]:
    from onnx import TensorProto, numpy_helper

    tensor = TensorProto()
    try:
        tensor.ParseFromString(file.read_bytes())
        return tensor.name, numpy_helper.to_array(tensor)
    except Exception as error:  # protobuf raises its own DecodeError
        raise SetError(f"{file}: not a TensorProto file: {error}") from error
