"""Model intake: turn ONNX files into ``Model`` records, or into errors a person can act on.

Every later stage (queue, device workers, tables) trusts a ``Model``: its inputs have concrete
shapes, its identity is the sha256 of the file bytes, and it passed the ONNX checker and strict
shape inference. Anything that fails here becomes a ``ModelError`` that names the file and,
where there is one, the fix -- so a bad file is reported once, up front, not on every device.

A dimension is dynamic when the file names it, leaves it empty, or stores -1 or 0 (what older
exporters write); the shapes the user gives (``backends.models.input_shapes``) fill them.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper, shape_inference

from backends.core.records import Model, ModelInput
from backends.models.input_shapes import GivenShape, InputShapes, InputShapesError
from backends.models.macs import DEFAULT_DOMAINS, count_macs
from backends.models.uids import declared_uid

_EXPORT_HINT = "export it to ONNX (e.g. torch.onnx.export) and pass the .onnx file"


class ModelError(Exception):
    """A model that cannot be benchmarked; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ModelError], tuple[str, str]]:
        # Keep (path, reason) intact when the error crosses a process boundary.
        return (ModelError, (self.path, self.reason))


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


# --input-shape values, or all of them (typing's spelling: this runs on Python 3.8 in the agent)
ShapesArg = typing.Union[typing.Mapping[str, typing.List[int]], InputShapes, None]


def load_model(path: str | Path, input_shapes: ShapesArg = None) -> Model:
    """Read, validate and describe one ONNX file; ``input_shapes`` fixes dynamic dimensions.

    Raises ``ModelError`` (naming the file) for anything that would fail later on a device.
    """
    return _load(Path(path), _as_input_shapes(input_shapes), set())


def _load(path: Path, shapes: InputShapes, inputs_seen: set[str]) -> Model:
    """``load_model``; adds the names of the model's inputs to ``inputs_seen`` once read."""
    data = _read_bytes(path)
    proto = _decode(path, data)
    _validate(path, proto)
    inputs = _resolve_inputs(path, proto, shapes, inputs_seen)
    fixed = _infer_fixed(path, proto, inputs)
    return Model(
        path=str(path.resolve()),
        name=path.stem,
        sha256=hashlib.sha256(data).hexdigest(),
        inputs=inputs,
        opset=_default_opset(proto),
        parameters=_count_parameters(proto.graph),
        macs=count_macs(fixed.graph),
        size_bytes=len(data),
        uid=declared_uid(path, _metadata(proto), ModelError),
    )


def _as_input_shapes(given: ShapesArg) -> InputShapes:
    if isinstance(given, InputShapes):
        return given
    return InputShapes().with_command_line(given or {})


MODULE_UID_KEY = "devlab.module_uid"  # set by `devlab space modules` on each module model


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in proto.metadata_props}


def collect_models(
    paths: Sequence[str | Path], input_shapes: ShapesArg = None
) -> list[Model | ModelError]:
    """Load every model the user named: files as given, folders searched recursively.

    Errors are returned in place rather than raised, so one bad file does not hide the rest.
    Output follows input order; a file reached twice (same resolved path) appears once.
    An ``--input-shapes`` file naming a model or a ``"*"`` input that none of them has is a
    mistake in the file, not in a model: ``InputShapesError`` is raised.
    """
    shapes = _as_input_shapes(input_shapes)
    items: list[_Item] = []
    seen: set[Path] = set()
    for raw in paths:
        for item in _expand(Path(raw)):
            key = item.path.resolve()
            if key not in seen:
                seen.add(key)
                items.append(item)
    files = [item.path for item in items if item.error is None]
    _check_models_named(shapes, files)
    inputs_seen: set[str] = set()
    results = [item.error or _load_or_error(item.path, shapes, inputs_seen) for item in items]
    _check_inputs_named(shapes, inputs_seen)
    return results


def _check_models_named(shapes: InputShapes, files: list[Path]) -> None:
    unmatched = shapes.unmatched_models(files)
    if not unmatched:
        return
    names = ", ".join(f'"{key}"' for key in unmatched)
    found = sorted({path.name for path in files})
    listed = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    raise InputShapesError(
        f"{shapes.file}: names model {names}, but no model given has that file name or stem "
        f"(models: {listed or 'none'})"
    )


def _check_inputs_named(shapes: InputShapes, inputs_seen: set[str]) -> None:
    """A ``"*"`` input that no model has is a typo; skipped when no model could be read."""
    unused = [name for name in shapes.every_model if name not in inputs_seen]
    if unused and inputs_seen:
        names = ", ".join(f'"{name}"' for name in unused)
        raise InputShapesError(
            f'{shapes.file}: "*" names input {names}, but no model has such an input '
            f"(their inputs: {', '.join(sorted(inputs_seen))})"
        )


def random_inputs(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random feeds for ``model``: floats ~ N(0, 1), ints in [0, 10), bools."""
    rng = np.random.default_rng(seed)
    return {i.name: _random_array(rng, i) for i in model.inputs}


def parse_shape(text: str) -> list[int]:
    """``"1x3x224x224"`` (or ``"1,3,224,224"``, ``"[1,3,224,224]"``) -> ``[1, 3, 224, 224]``."""
    body = text.strip().removeprefix("[").removesuffix("]").strip()
    if not body:
        raise ValueError(f"empty shape {text!r}; expected dimensions like 1x3x224x224")
    dims: list[int] = []
    for part in re.split(r"[xX,]", body):
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or int(part) < 1:
            raise ValueError(
                f"bad shape {text!r}: {part!r} is not a positive integer; "
                "expected dimensions like 1x3x224x224"
            )
        dims.append(int(part))
    return dims


def parse_input_shape_arg(text: str) -> tuple[str, list[int]]:
    """``"input=1x3x224x224"`` -> ``("input", [1, 3, 224, 224])`` (the ``--input-shape`` value)."""
    name, sep, shape = text.rpartition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"bad input shape {text!r}; expected NAME=DIMS, e.g. input=1x3x224x224")
    return name, parse_shape(shape)


# ---------------------------------------------------------------------------------------------
# Reading and validating
# ---------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ModelError(path, "is a folder, not a model file; pass a .onnx file inside it")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(path, "no such file; check the path") from None
    except OSError as exc:
        raise ModelError(path, f"cannot read file: {exc.strerror or exc}") from None


def _decode(path: Path, data: bytes) -> onnx.ModelProto:
    """Parse the protobuf, telling "not ONNX at all" apart from "ONNX but damaged"."""
    if not data:
        raise ModelError(path, f"not an ONNX model: the file is empty; {_EXPORT_HINT}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        if _looks_like_onnx(data):
            raise ModelError(path, f"truncated or corrupt ONNX file: {exc}") from None
        raise ModelError(path, f"not an ONNX model (cannot decode it); {_EXPORT_HINT}") from None
    # Arbitrary bytes can decode "successfully" into a message made only of unknown fields.
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise ModelError(path, f"not an ONNX model (no IR version or graph); {_EXPORT_HINT}")
    if not proto.graph.node:
        raise ModelError(path, "the ONNX graph has no nodes; there is nothing to benchmark")
    return proto


def _looks_like_onnx(data: bytes) -> bool:
    """ONNX writers emit ``ir_version`` (field 1, varint: tag byte 0x08) first."""
    return len(data) >= 2 and data[0] == 0x08 and 1 <= data[1] < 0x80


def _validate(path: Path, proto: onnx.ModelProto) -> None:
    try:
        if _uses_external_data(proto):
            onnx.checker.check_model(str(path))  # lets the checker find the external files
        else:
            onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelError(path, f"invalid ONNX model: {_first_line(exc)}") from None
    try:
        _strict_inference(_placeholders_cleared(proto))
    except (shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ModelError(path, f"shape inference failed: {_first_line(exc)}") from None


def _strict_inference(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference that fails on type or shape conflicts instead of skipping them."""
    return shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)


def _placeholders_cleared(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its -1 and 0 dims (older exporters' dynamic ones) made unknown dims, so
    that inference does not compute sizes from them; ``proto`` itself when it has none."""
    if not any(_placeholder_dims(vi) for vi in _value_infos(proto.graph)):
        return proto
    cleared = onnx.ModelProto()
    cleared.CopyFrom(proto)
    for vi in _value_infos(cleared.graph):
        for dim in _placeholder_dims(vi):
            dim.ClearField("dim_value")
    return cleared


def _value_infos(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return [*graph.input, *graph.output, *graph.value_info]


def _placeholder_dims(vi: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    if vi.type.WhichOneof("value") != "tensor_type":
        return []
    dims = vi.type.tensor_type.shape.dim
    return [d for d in dims if d.WhichOneof("value") == "dim_value" and d.dim_value <= 0]


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    return any(external_data_helper.uses_external_data(t) for t in proto.graph.initializer)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _default_opset(proto: onnx.ModelProto) -> int | None:
    for opset in proto.opset_import:
        if opset.domain in DEFAULT_DOMAINS:
            return int(opset.version)
    return None


# ---------------------------------------------------------------------------------------------
# Inputs and their shapes
# ---------------------------------------------------------------------------------------------


@dataclass
class _Dim:
    """One dimension as the file declares it: a size, or dynamic (named or not)."""

    size: int | None  # None: dynamic
    param: str = ""  # the dim_param name of a dynamic dimension
    stored: int | None = None  # the placeholder an older exporter wrote instead (-1 or 0)

    def label(self) -> str:
        """How a shape shows it: ``224``, ``batch`` or ``?``."""
        return str(self.size) if self.size is not None else (self.param or "?")

    def placeholder(self) -> str:
        """Its place in the example flag: the size, ``<name>`` or ``?`` -- never a guessed size."""
        if self.size is not None:
            return str(self.size)
        return f"<{self.param}>" if self.param else "?"

    def describe(self, position: int) -> str:
        if self.param:
            return f"{position} ({self.param})"
        if self.stored is not None:
            return f"{position} (unnamed, stored as {self.stored})"
        return f"{position} (unnamed)"


def _dim(dim: onnx.TensorShapeProto.Dimension) -> _Dim:
    """-1 and 0 are how older exporters wrote a dynamic dimension: dynamic, like a named one."""
    kind = dim.WhichOneof("value")
    if kind == "dim_value" and dim.dim_value > 0:
        return _Dim(int(dim.dim_value))
    if kind == "dim_value":
        return _Dim(None, stored=int(dim.dim_value))
    return _Dim(None, param=dim.dim_param if kind == "dim_param" else "")


@dataclass
class _DeclaredInput:
    """A graph input as the file declares it."""

    name: str
    dtype: str
    dims: list[_Dim] | None  # None: the rank itself is unknown

    @property
    def sizes(self) -> list[int | None] | None:
        return None if self.dims is None else [d.size for d in self.dims]

    def shown(self) -> str:
        if self.dims is None:
            return "[?]"
        return "[" + ",".join(d.label() for d in self.dims) + "]"

    def problem(self) -> str:
        if self.dims is None:
            return f"input '{self.name}' declares no shape (its rank is unknown)"
        dynamic = [d.describe(i) for i, d in enumerate(self.dims) if d.size is None]
        plural = "s" if len(dynamic) > 1 else ""
        listed = ", ".join(dynamic)
        return f"input '{self.name}' {self.shown()} has dynamic dimension{plural} {listed}"

    def example(self) -> str:
        """``1x3x<height>x<width>``: the static sizes, and a placeholder for each dynamic one."""
        if self.dims is None:
            return "<all its dimensions>"
        return "x".join(d.placeholder() for d in self.dims)


def _declared_inputs(path: Path, graph: onnx.GraphProto) -> list[_DeclaredInput]:
    """Graph inputs that the caller must feed (initializers are weights, not inputs)."""
    weights = {t.name for t in graph.initializer}
    return [_declare(path, vi) for vi in graph.input if vi.name not in weights]


def _declare(path: Path, vi: onnx.ValueInfoProto) -> _DeclaredInput:
    if vi.type.WhichOneof("value") != "tensor_type":
        kind = vi.type.WhichOneof("value") or "untyped value"
        raise ModelError(path, f"input '{vi.name}' is a {kind}; devlab feeds tensor inputs only")
    tensor = vi.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    if not tensor.HasField("shape"):
        return _DeclaredInput(vi.name, dtype, None)
    return _DeclaredInput(vi.name, dtype, [_dim(d) for d in tensor.shape.dim])


def _resolve_inputs(
    path: Path, proto: onnx.ModelProto, shapes: InputShapes, inputs_seen: set[str]
) -> list[ModelInput]:
    """Concrete input shapes: the file's static dims, filled or confirmed by the given shapes."""
    declared = _declared_inputs(path, proto.graph)
    inputs_seen.update(d.name for d in declared)
    given = _given_shapes(path, declared, shapes)
    inputs: list[ModelInput] = []
    unresolved: list[_DeclaredInput] = []
    for decl in declared:
        shape = _apply_given(path, decl, given.get(decl.name))
        if shape is None:
            unresolved.append(decl)
        else:
            inputs.append(ModelInput(name=decl.name, shape=shape, dtype=decl.dtype))
    if unresolved:
        raise ModelError(path, _dynamic_message(unresolved))
    return inputs


def _given_shapes(
    path: Path, declared: list[_DeclaredInput], shapes: InputShapes
) -> dict[str, GivenShape]:
    """Each input's given shape, the strongest layer winning.

    A layer that must name only this model's inputs (the command line, the model's own entry)
    and names another is an error; ``"*"`` fills only inputs with something dynamic to fill.
    """
    names = [d.name for d in declared]
    fillable = {d.name for d in declared if d.sizes is None or None in d.sizes}
    given: dict[str, GivenShape] = {}
    for layer in shapes.layers(path):
        unknown = sorted(set(layer.shapes) - set(names))
        if unknown and layer.strict:
            listed = ", ".join(repr(n) for n in unknown)
            known = ", ".join(names) or "(none)"
            raise ModelError(
                path,
                f"{layer.source} names {listed}, but the model has no such input; "
                f"its inputs: {known}",
            )
        for name, dims in layer.shapes.items():
            if name in fillable or (layer.strict and name in names):
                given[name] = GivenShape(list(dims), layer.source)
    return given


def _apply_given(path: Path, decl: _DeclaredInput, given: GivenShape | None) -> list[int] | None:
    """The input's final shape, or None when dynamic dims are left without a given shape.

    A given shape fills every dynamic dimension and must repeat every static one.
    """
    sizes = decl.sizes
    if given is None:
        if sizes is None or any(s is None for s in sizes):
            return None
        return [int(s) for s in sizes if s is not None]
    dims = [int(d) for d in given.dims]
    if any(d < 1 for d in dims):
        raise ModelError(path, f"{given.describe(decl.name)}: dimensions must be >= 1")
    if sizes is None:
        return dims
    if len(dims) != len(sizes):
        raise ModelError(
            path,
            f"input '{decl.name}' has rank {len(sizes)} {decl.shown()}, but "
            f"{given.describe(decl.name)} has rank {len(dims)}",
        )
    for axis, (want, got) in enumerate(zip(sizes, dims, strict=True)):
        if want is not None and want != got:
            raise ModelError(
                path,
                f"input '{decl.name}' has shape {decl.shown()}, but {given.describe(decl.name)} "
                f"sets dimension {axis} to {got} instead of {want} (static in the model)",
            )
    return dims


def _dynamic_message(unresolved: list[_DeclaredInput]) -> str:
    """What is dynamic, by name and position, and the flag to pass with placeholders to fill."""
    described = "; ".join(d.problem() for d in unresolved)
    flags = " ".join(f"--input-shape {d.name}={d.example()}" for d in unresolved)
    marks = [mark for mark in ("<", "?") if any(mark in d.example() for d in unresolved)]
    shown = " and ".join({"<": "<...>", "?": "?"}[mark] for mark in marks)
    return (
        f"{described}; give the sizes to measure with {flags} (each {shown} replaced by a "
        "size), or in an --input-shapes file"
    )


def _infer_fixed(path: Path, proto: onnx.ModelProto, inputs: list[ModelInput]) -> onnx.ModelProto:
    """A copy of the model with the resolved input shapes baked in, shapes inferred throughout.

    Stale value_info and declared output shapes are dropped so inference recomputes them for
    the chosen shapes (exporters often leave the traced batch size in them).
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    graph = fixed.graph
    graph.ClearField("value_info")
    by_name = {i.name: i.shape for i in inputs}
    for vi in graph.input:
        if vi.name in by_name:
            _set_shape(vi, by_name[vi.name])
    for vi in graph.output:
        if vi.type.WhichOneof("value") == "tensor_type":
            vi.type.tensor_type.ClearField("shape")
    try:
        return _strict_inference(fixed)
    except (shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        chosen = " ".join(f"{i.name}={'x'.join(map(str, i.shape))}" for i in inputs)
        raise ModelError(
            path, f"the input shapes {chosen} do not fit the model: {_first_line(exc)}"
        ) from None


def _set_shape(vi: onnx.ValueInfoProto, shape: list[int]) -> None:
    tensor_shape = vi.type.tensor_type.shape
    tensor_shape.ClearField("dim")
    for size in shape:
        tensor_shape.dim.add().dim_value = size


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


def _count_parameters(graph: onnx.GraphProto) -> int:
    """Elements of the weights: initializers plus tensors held by ``Constant`` nodes."""
    total = sum(math.prod(t.dims) for t in graph.initializer)
    total += sum(math.prod(s.values.dims) for s in graph.sparse_initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
            total += sum(_attribute_elements(a) for a in node.attribute)
    return total


def _attribute_elements(attr: onnx.AttributeProto) -> int:
    if attr.name == "value":
        return math.prod(attr.t.dims)
    if attr.name == "sparse_value":
        return math.prod(attr.sparse_tensor.values.dims)
    if attr.name in ("value_floats", "value_ints"):
        return len(attr.floats) + len(attr.ints)
    return 1 if attr.name in ("value_float", "value_int") else 0


# ---------------------------------------------------------------------------------------------
# Folders and random data
# ---------------------------------------------------------------------------------------------


@dataclass
class _Item:
    path: Path
    error: ModelError | None = None


def _expand(path: Path) -> list[_Item]:
    """What one user-given path stands for: itself, its .onnx files, or an error."""
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".onnx" and p.is_file())
        if not found:
            reason = "folder contains no .onnx files (searched subfolders too)"
            return [_Item(path, ModelError(path, reason))]
        return [_Item(p) for p in found]
    if not path.exists():
        return [_Item(path, ModelError(path, "no such file or folder; check the path"))]
    return [_Item(path)]


def _load_or_error(path: Path, shapes: InputShapes, inputs_seen: set[str]) -> Model | ModelError:
    try:
        return _load(path, shapes, inputs_seen)
    except ModelError as err:
        return err


def _random_array(rng: np.random.Generator, spec: ModelInput) -> np.ndarray:
    dtype = _numpy_dtype(spec.dtype)
    shape = tuple(spec.shape)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape, dtype=dtype)
    if np.issubdtype(dtype, np.complexfloating):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if np.issubdtype(dtype, np.floating) or "float" in spec.dtype:
        return rng.standard_normal(shape).astype(dtype)
    if "int" in spec.dtype:  # 4-bit ints from ml_dtypes: stay inside their range
        return rng.integers(0, 8, size=shape).astype(dtype)
    raise ValueError(f"cannot make random data for input '{spec.name}' of dtype {spec.dtype}")


def _numpy_dtype(name: str) -> np.dtype:
    """numpy dtype for a name, including ONNX's ml_dtypes ones (bfloat16, float8_*, int4)."""
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # installed with onnx

        return np.dtype(getattr(ml_dtypes, name))


def ort_model_source(path: str | os.PathLike[str]) -> str | bytes:
    """What ONNX Runtime should load for the model file at ``path``: the path, or -- when an
    input stores 0 for a dynamic dimension, which ONNX Runtime holds every feed to -- the
    model's bytes with its -1 and 0 dimensions made unknown. Reads the file (once per file
    version in a process): call it outside timed code."""
    path = os.fspath(path)
    try:
        stat = os.stat(path)
        if not _stores_zero_dims(path, stat.st_mtime_ns, stat.st_size):
            return path
        proto = onnx.load(path, load_external_data=False)
    except (OSError, DecodeError):  # ONNX Runtime reports an unreadable file in its own words
        return path
    if _uses_external_data(proto):  # the bytes could not find their weights: let ORT say why
        return path
    return _placeholders_cleared(proto).SerializeToString()


@functools.lru_cache(maxsize=256)
def _stores_zero_dims(path: str, mtime_ns: int, size: int) -> bool:
    graph = onnx.load(path, load_external_data=False).graph
    return any(d.dim_value == 0 for vi in graph.input for d in _placeholder_dims(vi))


def graph_output_specs(model: Model) -> list[tuple[str, list[int] | None]]:
    """``(name, shape)`` of each graph output in graph order (shape None when not static),
    for sessions that read a device's outputs back from files named after them."""
    from backends.devices.base import BenchError

    try:
        graph = onnx.load(model.path, load_external_data=False).graph
    except Exception as error:
        raise BenchError(f"{model.path}: cannot read the model's outputs: {error}") from error
    specs: list[tuple[str, list[int] | None]] = []
    for value in graph.output:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        specs.append((value.name, dims if dims and all(d > 0 for d in dims) else None))
    return specs
