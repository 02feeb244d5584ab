"""Whole architectures of a space: sampled with a seed, built as ONNX, listed in an index.

The sampled set is what the estimator is fitted and checked on: each model carries the
ModuleUIDs of its modules (both granularities) in its metadata and in ``index.json``, so the
measured whole-model latency can be paired with the sum of its modules' table latencies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from backends.models.intake import load_model
from backends.space.blocks import GraphBuilder, Tensor, seed_for
from backends.space.modules import (
    INDEX_FILE,
    INDEX_VERSION,
    META_ARCH,
    META_SPACE,
    META_UIDS,
    META_UIDS_OP,
    arch_blocks,
)
from backends.space.spec import BlockChoice, Space, SpaceError


@dataclass
class SampledArch:
    """One sampled architecture as listed in the index."""

    name: str
    file: str
    sha256: str
    choices: list[str]
    module_uids: list[str]  # block granularity
    module_uids_op: list[str]
    macs: int | None
    parameters: int | None


def sample_archs(space: Space, n: int, seed: int) -> list[tuple[BlockChoice, ...]]:
    """``n`` distinct architectures, each block's choice drawn uniformly (reproducible)."""
    if n < 1:
        raise SpaceError(f"--n is {n}; sample at least one architecture")
    if n > space.size:
        raise SpaceError(f"{space.name} has only {space.size} architectures; --n is {n}")
    rng = np.random.default_rng(seed)
    seen: set[tuple[BlockChoice, ...]] = set()
    archs: list[tuple[BlockChoice, ...]] = []
    while len(archs) < n:
        arch = tuple(slot.options[int(rng.integers(len(slot.options)))] for slot in space.slots)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def build_arch(
    space: Space, arch: Sequence[BlockChoice], name: str, seed: int
) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """The architecture as one model, plus its block- and op-granularity ModuleUIDs."""
    blocks = arch_blocks(space, arch)
    b = GraphBuilder(seed=seed)
    x = Tensor("input", space.input_shape)
    y = x
    for module in blocks:
        y = module.emit(b, y)
    block_uids = [m.uid for m in blocks]
    op_uids = [record.uid for record in b.records]
    metadata = {
        META_UIDS: json.dumps(block_uids, separators=(",", ":")),
        META_UIDS_OP: json.dumps(op_uids, separators=(",", ":")),
        META_SPACE: space.name,
        META_ARCH: json.dumps([c.token for c in arch]),
    }
    return b.model(name, [x], y, metadata, output_name="logits"), block_uids, op_uids


def write_samples(
    space: Space, out_dir: str | Path, n: int, seed: int
) -> tuple[Path, list[SampledArch]]:
    """Sample, build and write ``n`` architectures plus ``index.json``; each is load-checked."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[SampledArch] = []
    for number, arch in enumerate(sample_archs(space, n, seed)):
        name = f"arch_{number:03d}"
        model, block_uids, op_uids = build_arch(
            space, arch, name, seed_for(f"{space.name}:{seed}:{number}")
        )
        data = model.SerializeToString()
        path = out / f"{name}.onnx"
        path.write_bytes(data)
        loaded = load_model(path)  # validates it exactly as the queue will, and counts MACs
        entries.append(
            SampledArch(
                name,
                path.name,
                hashlib.sha256(data).hexdigest(),
                [c.token for c in arch],
                block_uids,
                op_uids,
                loaded.macs,
                loaded.parameters,
            )
        )
    index = {
        "format_version": INDEX_VERSION,
        "kind": "sampled",
        "space": space.name,
        "space_file": space.source,
        "seed": seed,
        "count": len(entries),
        "architectures": [asdict(e) for e in entries],
    }
    path = out / INDEX_FILE
    path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return path, entries
