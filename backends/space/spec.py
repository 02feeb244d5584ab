"""Search-space files: read, validate and lay out a MobileNetV2-style space.

A space file is small JSON (documented in docs/space.md): the input, the stem, stages of blocks
given as ``[out_channels, repeats, first_stride]``, the choices every block offers, and the
head. Everything downstream (module tables, sampled architectures, estimates) derives from the
``Space`` this module returns, so a bad file fails here once, naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

FORMAT_VERSION = 1
_TOP_KEYS = {
    "format_version",
    "name",
    "description",
    "input",
    "classes",
    "stem",
    "choices",
    "stages",
    "head",
}
_TOKEN = re.compile(r"^e(\d+)k(\d+)$")


class SpaceError(ValueError):
    """A space file (or an architecture for it) that cannot be used; names the bad field."""


@dataclass(frozen=True)
class BlockChoice:
    """What one block does: an inverted residual (expansion, depthwise kernel) or skip."""

    expand: int = 0
    kernel: int = 0
    skip: bool = False

    @property
    def token(self) -> str:
        """Compact text for indexes and ``--arch`` files: ``e6k5`` or ``skip``."""
        return "skip" if self.skip else f"e{self.expand}k{self.kernel}"

    @classmethod
    def parse(cls, value: Any) -> BlockChoice:
        """``"e6k5"``, ``"skip"`` or ``{"expand": 6, "kernel": 5}`` (``{"skip": true}``)."""
        if isinstance(value, str):
            if value == "skip":
                return SKIP
            match = _TOKEN.match(value)
            if match:
                return cls(int(match[1]), int(match[2]))
        elif isinstance(value, Mapping):
            if value.get("skip") is True and set(value) <= {"skip"}:
                return SKIP
            expand, kernel = value.get("expand"), value.get("kernel")
            if _is_int(expand) and _is_int(kernel) and set(value) <= {"expand", "kernel", "skip"}:
                return cls(int(expand), int(kernel))
        raise SpaceError(
            f"bad block choice {value!r}: expected 'e<expand>k<kernel>' (e.g. 'e6k5'), 'skip', "
            'or {"expand": 6, "kernel": 5}'
        )


SKIP = BlockChoice(skip=True)


@dataclass(frozen=True)
class Choices:
    """The options of a block: every expand x kernel pair, plus skip where shapes allow it."""

    expand: tuple[int, ...]
    kernel: tuple[int, ...]
    skip: bool


@dataclass(frozen=True)
class Stem:
    out_channels: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class Stage:
    out_channels: int
    repeats: int
    first_stride: int
    choices: Choices


@dataclass(frozen=True)
class Head:
    """1x1 conv + ReLU6 to ``out_channels``, global average pool, fully connected layer."""

    out_channels: int


@dataclass(frozen=True)
class BlockSlot:
    """One searchable block in its context: where it sits, what it sees, what it may be."""

    index: int
    stage: int
    in_shape: tuple[int, ...]  # [1, C, H, W]
    out_channels: int
    stride: int
    options: tuple[BlockChoice, ...]

    @property
    def out_shape(self) -> tuple[int, ...]:
        # Every choice keeps the same output shape (the kernel's padding is kernel // 2).
        _, _, h, w = self.in_shape
        return (1, self.out_channels, conv_out(h, 3, self.stride), conv_out(w, 3, self.stride))


@dataclass(frozen=True)
class Space:
    """A validated search space; ``slots`` lays its blocks out with their input shapes."""

    name: str
    input: tuple[int, int, int]  # C, H, W (batch is always 1)
    classes: int
    stem: Stem
    stages: tuple[Stage, ...]
    head: Head
    description: str = ""
    format_version: int = FORMAT_VERSION
    source: str = field(default="<space>", compare=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, *self.input)

    @property
    def stem_out_shape(self) -> tuple[int, ...]:
        _, h, w = self.input
        s = self.stem
        return (1, s.out_channels, conv_out(h, s.kernel, s.stride), conv_out(w, s.kernel, s.stride))

    @cached_property
    def slots(self) -> tuple[BlockSlot, ...]:
        return tuple(_layout(self))

    @property
    def head_in_shape(self) -> tuple[int, ...]:
        return self.slots[-1].out_shape if self.slots else self.stem_out_shape

    @property
    def size(self) -> int:
        """Number of distinct architectures: the product of every block's option count."""
        return math.prod(len(slot.options) for slot in self.slots)

    def parse_arch(self, value: Any) -> tuple[BlockChoice, ...]:
        """An architecture: one choice per block, checked against what each block offers.

        Accepts a list of choices or an object with a ``choices`` list (an index entry).
        """
        if isinstance(value, Mapping) and "choices" in value:
            value = value["choices"]
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise SpaceError(
                f"{self.name}: an architecture is a list of {len(self.slots)} block choices "
                f"such as ['e6k3', 'skip', ...], not {type(value).__name__}"
            )
        if len(value) != len(self.slots):
            raise SpaceError(
                f"{self.name}: the architecture has {len(value)} block choices, the space has "
                f"{len(self.slots)} blocks (one choice per block, fixed blocks included)"
            )
        arch: list[BlockChoice] = []
        for slot, raw in zip(self.slots, value, strict=True):
            choice = BlockChoice.parse(raw)
            if choice not in slot.options:
                allowed = ", ".join(o.token for o in slot.options)
                raise SpaceError(
                    f"{self.name}: block {slot.index} (stage {slot.stage}) cannot be "
                    f"{choice.token}; its choices: {allowed}"
                )
            arch.append(choice)
        return tuple(arch)


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a convolution padded by ``kernel // 2`` on each side."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def load_space(path: str | Path) -> Space:
    """Read and validate a space file; ``SpaceError`` names the file and the bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such space file; see assets/spaces/ for examples") from None
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpaceError(f"{path}: not valid JSON: {exc}") from None
    return parse_space(data, source=str(path))


def parse_space(data: Any, source: str = "<space>") -> Space:
    """Validate an already-decoded space document (see ``load_space``)."""
    r = _Reader(source)
    top = r.mapping(data, "", _TOP_KEYS)
    version = r.integer(top, "format_version", minimum=1)
    if version != FORMAT_VERSION:
        r.fail("format_version", f"is {version}; this devlab reads format_version 1")
    name = r.string(top, "name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        r.fail("name", f"{name!r} must be letters, digits, '_', '.' or '-' (no spaces)")
    input_ = tuple(r.int_list(top, "input", minimum=1))
    if len(input_) != 3:
        r.fail("input", f"is {list(input_)}; expected [channels, height, width]")
    classes = r.integer(top, "classes", minimum=1)
    stem_raw = r.mapping(r.need(top, "stem"), "stem", {"out_channels", "kernel", "stride"})
    stem = Stem(
        r.integer(stem_raw, "out_channels", minimum=1, where="stem"),
        r.kernel(stem_raw, "kernel", where="stem"),
        r.stride(stem_raw, "stride", where="stem"),
    )
    default = r.choices(r.need(top, "choices"), "choices", None)
    stages = tuple(r.stage(raw, f"stages[{i}]", default) for i, raw in enumerate(r.stages(top)))
    head_raw = r.mapping(r.need(top, "head"), "head", {"out_channels"})
    head = Head(r.integer(head_raw, "out_channels", minimum=1, where="head"))
    description = top.get("description", "")
    if not isinstance(description, str):
        r.fail("description", "must be text")
    space = Space(name, (input_[0], input_[1], input_[2]), classes, stem, stages, head)
    space = dataclasses.replace(space, description=description, source=source)
    for slot in space.slots:
        if min(slot.out_shape[2:]) < 1:
            r.fail(f"stages[{slot.stage}]", "the strides shrink the feature map below 1x1")
    return space


def _layout(space: Space) -> Iterator[BlockSlot]:
    shape = space.stem_out_shape
    index = 0
    for stage_no, stage in enumerate(space.stages):
        for repeat in range(stage.repeats):
            stride = stage.first_stride if repeat == 0 else 1
            menu = stage.choices
            options = [BlockChoice(e, k) for e in menu.expand for k in menu.kernel]
            # Skip (identity) only where it keeps the shape: the nnabla-nas rule.
            if stage.choices.skip and stride == 1 and shape[1] == stage.out_channels:
                options.append(SKIP)
            slot = BlockSlot(index, stage_no, shape, stage.out_channels, stride, tuple(options))
            yield slot
            shape = slot.out_shape
            index += 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Reader:
    """Field access with errors of the form ``<file>: <field>: <problem>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, reason: str) -> NoReturn:
        raise SpaceError(f"{self.source}: {where or 'top level'}: {reason}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, f"expected an object, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            self.fail(
                where,
                f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}",
            )
        return value

    def need(self, obj: Mapping[str, Any], key: str, where: str = "") -> Any:
        if key not in obj:
            self.fail(_join(where, key), "is missing")
        return obj[key]

    def integer(
        self, obj: Mapping[str, Any], key: str, minimum: int | None = None, where: str = ""
    ) -> int:
        value = self.need(obj, key, where)
        return self.check_int(value, _join(where, key), minimum)

    def check_int(self, value: Any, where: str, minimum: int | None) -> int:
        if not _is_int(value):
            self.fail(where, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(where, f"is {value}; must be >= {minimum}")
        return int(value)

    def string(self, obj: Mapping[str, Any], key: str) -> str:
        value = self.need(obj, key)
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected non-empty text, got {value!r}")
        return value

    def int_list(
        self, obj: Mapping[str, Any], key: str, minimum: int, where: str = "", unique: bool = False
    ) -> list[int]:
        value = self.need(obj, key, where)
        name = _join(where, key)
        if not isinstance(value, list) or not value:
            self.fail(name, f"expected a non-empty list of integers, got {value!r}")
        items = [self.check_int(v, f"{name}[{i}]", minimum) for i, v in enumerate(value)]
        if unique and len(set(items)) != len(items):
            self.fail(name, f"{items} lists a value twice")
        return items

    def kernel(self, obj: Mapping[str, Any], key: str, where: str) -> int:
        value = self.integer(obj, key, minimum=1, where=where)
        if value % 2 == 0:
            self.fail(_join(where, key), f"is {value}; kernels must be odd (padding kernel // 2)")
        return value

    def stride(self, obj: Mapping[str, Any], key: str, where: str) -> int:
        value = self.integer(obj, key, minimum=1, where=where)
        if value not in (1, 2):
            self.fail(_join(where, key), f"is {value}; strides must be 1 or 2")
        return value

    def choices(self, value: Any, where: str, base: Choices | None) -> Choices:
        raw = self.mapping(value, where, {"expand", "kernel", "skip"})
        if base is None:
            for key in ("expand", "kernel", "skip"):
                self.need(raw, key, where)
        fallback = base or Choices((), (), False)  # base None: every key is present
        expand = (
            tuple(self.int_list(raw, "expand", 1, where, unique=True)) if "expand" in raw else ()
        )
        kernel = (
            tuple(self.int_list(raw, "kernel", 1, where, unique=True)) if "kernel" in raw else ()
        )
        expand = expand or fallback.expand
        kernel = kernel or fallback.kernel
        for i, k in enumerate(kernel):
            if k % 2 == 0:
                self.fail(f"{where}.kernel[{i}]", f"is {k}; kernels must be odd")
        skip = raw.get("skip", fallback.skip)
        if not isinstance(skip, bool):
            self.fail(f"{where}.skip", f"expected true or false, got {skip!r}")
        return Choices(expand, kernel, skip)

    def stages(self, top: Mapping[str, Any]) -> list[Any]:
        value = self.need(top, "stages")
        if not isinstance(value, list) or not value:
            self.fail("stages", "expected a non-empty list of [out_channels, repeats, stride]")
        return value

    def stage(self, raw: Any, where: str, default: Choices) -> Stage:
        if isinstance(raw, list):
            if len(raw) != 3:
                self.fail(where, f"is {raw}; expected [out_channels, repeats, first_stride]")
            raw = dict(zip(("out_channels", "repeats", "first_stride"), raw, strict=True))
        obj = self.mapping(raw, where, {"out_channels", "repeats", "first_stride", "choices"})
        choices = default
        if "choices" in obj:
            choices = self.choices(obj["choices"], f"{where}.choices", default)
        return Stage(
            self.integer(obj, "out_channels", minimum=1, where=where),
            self.integer(obj, "repeats", minimum=1, where=where),
            self.stride(obj, "first_stride", where=where),
            choices,
        )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
