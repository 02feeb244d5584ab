"""The modules a latency table needs: every candidate of a space in its context, deduplicated.

Two granularities. ``block`` (the default): one module per searchable block -- the stem, each
inverted residual with its residual add, skip, the head -- which measured best on ONNX Runtime
CPU because each module pays its call overhead once, like the block it stands for. ``op``: one
module per ONNX op in context, the nnabla-nas style. Either way a module is named by its
ModuleUID and written as one ONNX model, listed in ``index.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from backends.space.blocks import (
    GraphBuilder,
    OpRecord,
    Shape,
    Tensor,
    emit_block,
    emit_head,
    emit_stem,
    seed_for,
)
from backends.space.spec import BlockChoice, Space, SpaceError
from backends.space.uid import module_uid

GRANULARITIES: tuple[str, ...] = ("block", "op")
INDEX_FILE = "index.json"
INDEX_VERSION = 1

# Metadata keys devlab puts into every generated model (read back by the estimator).
META_UID = "devlab.module_uid"
META_UIDS = "devlab.module_uids"
META_UIDS_OP = "devlab.module_uids.op"
META_SPACE = "devlab.space"
META_ARCH = "devlab.arch"
META_GRANULARITY = "devlab.granularity"


@dataclass(frozen=True)
class BlockModule:
    """A block-granularity module: stem, one block choice (or skip) in context, or head."""

    kind: str  # "stem", "block" or "head"
    in_shape: Shape
    out_channels: int
    stride: int = 1
    kernel: int = 0  # the stem's kernel
    choice: BlockChoice | None = None  # blocks only
    classes: int = 0  # head only

    @property
    def uid(self) -> str:
        shapes = [self.in_shape]
        if self.kind == "stem":
            attrs = {"kernel": self.kernel, "out": self.out_channels, "stride": self.stride}
            return module_uid("Stem", attrs, shapes)
        if self.kind == "head":
            return module_uid("Head", {"classes": self.classes, "out": self.out_channels}, shapes)
        assert self.choice is not None
        if self.choice.skip:
            return module_uid("Skip", {}, shapes)
        attrs = {
            "expand": self.choice.expand,
            "kernel": self.choice.kernel,
            "out": self.out_channels,
            "stride": self.stride,
        }
        return module_uid("InvertedResidual", attrs, shapes)

    def emit(self, b: GraphBuilder, x: Tensor) -> Tensor:
        if self.kind == "stem":
            return emit_stem(b, x, self.out_channels, self.kernel, self.stride)
        if self.kind == "head":
            return emit_head(b, x, self.out_channels, self.classes)
        assert self.choice is not None
        return emit_block(b, x, self.out_channels, self.stride, self.choice)

    def ops(self) -> list[OpRecord]:
        """The ONNX ops this module adds to an architecture (none for skip)."""
        b = GraphBuilder(seed=None)
        self.emit(b, Tensor("x", self.in_shape))
        return b.records


@dataclass
class IndexEntry:
    """One module file: its ModuleUID, file name (relative to the index) and sha256."""

    uid: str
    file: str
    sha256: str
    op: str
    input_shapes: list[list[int]]


# --- enumeration -----------------------------------------------------------------------------


def arch_blocks(space: Space, arch: Sequence[BlockChoice]) -> list[BlockModule]:
    """The block modules of one architecture, in order: stem, every block, head."""
    stem = space.stem
    modules = [
        BlockModule("stem", space.input_shape, stem.out_channels, stem.stride, kernel=stem.kernel)
    ]
    for slot, choice in zip(space.slots, arch, strict=True):
        modules.append(
            BlockModule("block", slot.in_shape, slot.out_channels, slot.stride, choice=choice)
        )
    modules.append(
        BlockModule("head", space.head_in_shape, space.head.out_channels, classes=space.classes)
    )
    return modules


def arch_module_uids(space: Space, arch: Sequence[BlockChoice], granularity: str) -> list[str]:
    """The ModuleUIDs whose latencies add up to this architecture's, repeats included."""
    check_granularity(granularity)
    blocks = arch_blocks(space, arch)
    if granularity == "block":
        return [m.uid for m in blocks]
    return [record.uid for m in blocks for record in m.ops()]


def unique_modules(space: Space, granularity: str = "block") -> dict[str, BlockModule | OpRecord]:
    """Every module any architecture of the space can contain, once per ModuleUID."""
    check_granularity(granularity)
    stem = space.stem
    blocks: dict[str, BlockModule] = {}
    first = BlockModule(
        "stem", space.input_shape, stem.out_channels, stem.stride, kernel=stem.kernel
    )
    blocks[first.uid] = first
    for slot in space.slots:
        for choice in slot.options:
            module = BlockModule(
                "block", slot.in_shape, slot.out_channels, slot.stride, choice=choice
            )
            blocks.setdefault(module.uid, module)
    last = BlockModule("head", space.head_in_shape, space.head.out_channels, classes=space.classes)
    blocks[last.uid] = last
    if granularity == "block":
        return dict(blocks)
    ops: dict[str, BlockModule | OpRecord] = {}
    for module in blocks.values():
        for record in module.ops():
            ops.setdefault(record.uid, record)
    return ops


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise SpaceError(
            f"unknown granularity {granularity!r}; choose {' or '.join(GRANULARITIES)}"
        )


# --- models ----------------------------------------------------------------------------------


def module_model(module: BlockModule | OpRecord, space_name: str) -> onnx.ModelProto:
    """One module as a standalone ONNX model with random weights and its UID as metadata."""
    uid = module.uid
    b = GraphBuilder(seed=seed_for(uid))
    metadata = {META_UID: uid, META_SPACE: space_name}
    if isinstance(module, BlockModule):
        x = Tensor("input", module.in_shape)
        y = module.emit(b, x)
        if y is x:  # skip: a model needs a node; ONNX Runtime's cost of Identity is the call
            y = b.identity(x)
        metadata[META_GRANULARITY] = "block"
        return b.model(_slug(uid), [x], y, metadata)
    inputs = [Tensor(f"input{i}" if i else "input", s) for i, s in enumerate(module.data_shapes)]
    y = b.apply(module, inputs)
    metadata[META_GRANULARITY] = "op"
    return b.model(_slug(uid), inputs, y, metadata)


def write_modules(
    space: Space, out_dir: str | Path, granularity: str = "block"
) -> tuple[Path, list[IndexEntry]]:
    """Write one ONNX file per unique module and ``index.json`` (ModuleUID -> file)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[IndexEntry] = []
    for number, (uid, module) in enumerate(unique_modules(space, granularity).items()):
        data = module_model(module, space.name).SerializeToString()
        name = f"{number:03d}_{_slug(uid)}.onnx"
        (out / name).write_bytes(data)
        op = module.op if isinstance(module, OpRecord) else uid.split("[", 1)[0]
        shapes = module.data_shapes if isinstance(module, OpRecord) else [module.in_shape]
        entries.append(
            IndexEntry(uid, name, hashlib.sha256(data).hexdigest(), op, [list(s) for s in shapes])
        )
    index = {
        "format_version": INDEX_VERSION,
        "kind": "modules",
        "space": space.name,
        "space_file": space.source,
        "granularity": granularity,
        "count": len(entries),
        "modules": [asdict(e) for e in entries],
    }
    path = out / INDEX_FILE
    path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return path, entries


def _slug(uid: str, limit: int = 90) -> str:
    """A file-name-safe short form of a UID (the index maps it back to the exact UID)."""
    text = re.sub(r"[^A-Za-z0-9]+", "_", uid).strip("_")
    if len(text) > limit:
        text = text[:limit].rstrip("_") + "_" + hashlib.sha256(uid.encode()).hexdigest()[:8]
    return text
