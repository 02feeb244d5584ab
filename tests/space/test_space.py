"""Search spaces: ModuleUIDs, unique-module enumeration, generated models, sampling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from backends.models.intake import load_model, random_inputs
from backends.space.blocks import GraphBuilder, Tensor
from backends.space.modules import (
    META_ARCH,
    META_SPACE,
    META_UID,
    META_UIDS,
    META_UIDS_OP,
    BlockModule,
    arch_module_uids,
    unique_modules,
    write_modules,
)
from backends.space.sample import build_arch, sample_archs, write_samples
from backends.space.spec import BlockChoice, SpaceError, load_space, parse_space
from backends.space.uid import format_value, module_uid

SPACES = Path(__file__).resolve().parents[2] / "assets" / "spaces"
CIFAR = SPACES / "mobilenetv2_cifar10.json"
IMAGENET = SPACES / "mobilenetv2_imagenet224.json"


# --- ModuleUID -------------------------------------------------------------------------------


def test_uid_matches_the_documented_form() -> None:
    uid = module_uid(
        "Conv",
        {"strides": [1, 1], "pads": (2, 2, 2, 2), "kernel_shape": [5, 5], "group": 192},
        [(1, 192, 16, 16)],
    )
    assert uid == "Conv[group=192,kernel_shape=[5,5],pads=[2,2,2,2],strides=[1,1]][[1,192,16,16]]"


def test_equal_modules_collapse_whatever_the_spelling() -> None:
    a = module_uid("Conv", {"group": 1, "kernel_shape": [3, 3]}, [[1, 8, 4, 4], [16, 8, 3, 3]])
    b = module_uid(
        "Conv",
        {"kernel_shape": (np.int64(3), 3), "group": np.int32(1)},  # other order and int types
        [(1, 8, 4, 4), np.array([16, 8, 3, 3])],
    )
    assert a == b
    assert " " not in a


@pytest.mark.parametrize(
    ("other_op", "other_attrs", "other_shapes"),
    [
        ("Conv", {"group": 2, "kernel_shape": [3, 3]}, [[1, 8, 4, 4]]),  # attribute value
        ("Conv", {"group": 1, "kernel_shape": [3, 3], "strides": [2, 2]}, [[1, 8, 4, 4]]),
        ("Conv", {"group": 1, "kernel_shape": [3, 3]}, [[1, 8, 8, 4]]),  # input shape
        ("Conv", {"group": 1, "kernel_shape": [3, 3]}, [[1, 8, 4, 4], [16, 8, 3, 3]]),
        ("ConvTranspose", {"group": 1, "kernel_shape": [3, 3]}, [[1, 8, 4, 4]]),  # op
    ],
)
def test_different_modules_do_not_collapse(
    other_op: str, other_attrs: dict[str, Any], other_shapes: list[list[int]]
) -> None:
    base = module_uid("Conv", {"group": 1, "kernel_shape": [3, 3]}, [[1, 8, 4, 4]])
    assert module_uid(other_op, other_attrs, other_shapes) != base


def test_uid_values_are_stable_and_short() -> None:
    assert format_value(6.0) == "6.0"
    assert format_value(np.float32(0.1)) == "0.1"  # not 0.10000000149011612
    assert format_value(1e-5) == "1e-05"
    assert format_value(6) == "6"  # an int stays distinct from the float 6.0
    assert format_value("SAME_UPPER") == "SAME_UPPER"
    assert format_value(True) == "True"
    assert format_value([[1, 2], [3]]) == "[[1,2],[3]]"
    with pytest.raises(ValueError, match="without spaces"):
        module_uid("Conv", {"auto_pad": "SAME UPPER"}, [])
    with pytest.raises(TypeError):
        format_value({"a": 1})


def test_block_modules_built_apart_share_a_uid_and_their_ops_collapse() -> None:
    one = BlockModule("block", (1, 24, 16, 16), 24, 1, choice=BlockChoice(6, 5))
    two = BlockModule("block", (1, 24, 16, 16), 24, 1, choice=BlockChoice.parse("e6k5"))
    assert (
        one.uid == two.uid == ("InvertedResidual[expand=6,kernel=5,out=24,stride=1][[1,24,16,16]]")
    )
    assert [r.uid for r in one.ops()] == [r.uid for r in two.ops()]
    other = BlockModule("block", (1, 24, 16, 16), 24, 1, choice=BlockChoice(6, 3))
    assert other.uid != one.uid
    # ReLU6 after the expand conv is the same op in both blocks; the depthwise conv is not.
    shared = {r.uid for r in one.ops()} & {r.uid for r in other.ops()}
    assert "Clip[max=6.0,min=0.0][[1,144,16,16]]" in shared
    assert not any("kernel_shape=[5,5]" in uid for uid in shared)


def test_op_uids_follow_the_onnx_nodes() -> None:
    b = GraphBuilder(seed=None)
    b.conv(Tensor("x", (1, 192, 16, 16)), 192, 5, 1, group=192)
    assert b.records[0].uid == (
        "Conv[group=192,kernel_shape=[5,5],pads=[2,2,2,2],strides=[1,1]]"
        "[[1,192,16,16],[192,1,5,5],[192]]"
    )


# --- space files -----------------------------------------------------------------------------


def derived_unique_counts(path: Path) -> tuple[int, int]:
    """Unique block and op modules worked out from the JSON alone, not with backends.space.

    A block is (input channels, size, output channels, stride, choice); an op is what the
    ONNX node computes on its input. Odd kernels padded by k // 2 keep ceil(size / stride).
    """
    doc = json.loads(path.read_text())
    channels, size, _ = doc["input"]
    stem = doc["stem"]
    blocks: set[tuple] = {("stem",), ("head",)}
    ops: set[tuple] = {
        ("conv", channels, stem["out_channels"], stem["kernel"], 1, stem["stride"], size)
    }
    channels, size = stem["out_channels"], (size - 1) // stem["stride"] + 1
    ops.add(("clip", channels, size))
    for stage in doc["stages"]:
        menu = dict(doc["choices"])
        if isinstance(stage, list):
            out, repeats, first = stage
        else:
            out, repeats, first = stage["out_channels"], stage["repeats"], stage["first_stride"]
            menu.update(stage.get("choices", {}))
        for i in range(repeats):
            stride = first if i == 0 else 1
            size_out = (size - 1) // stride + 1
            for e in menu["expand"]:
                for k in menu["kernel"]:
                    blocks.add(("ir", channels, size, out, stride, e, k))
                    hidden = channels * e
                    if e != 1:
                        ops.add(("conv", channels, hidden, 1, 1, 1, size))
                        ops.add(("clip", hidden, size))
                    ops.add(("conv", hidden, hidden, k, hidden, stride, size))
                    ops.add(("clip", hidden, size_out))
                    ops.add(("conv", hidden, out, 1, 1, 1, size_out))
                    if stride == 1 and channels == out:
                        ops.add(("add", out, size_out))
            if menu["skip"] and stride == 1 and channels == out:
                blocks.add(("skip", channels, size))
            channels, size = out, size_out
    head = doc["head"]["out_channels"]
    ops |= {
        ("conv", channels, head, 1, 1, 1, size),
        ("clip", head, size),
        ("pool", head, size),
        ("flatten", head),
        ("gemm", head, doc["classes"]),
    }
    return len(blocks), len(ops)


@pytest.mark.parametrize("path", [CIFAR, IMAGENET], ids=["cifar10", "imagenet224"])
def test_unique_module_counts_match_the_space_definition(path: Path) -> None:
    space = load_space(path)
    blocks, ops = derived_unique_counts(path)
    assert len(unique_modules(space, "block")) == blocks
    assert len(unique_modules(space, "op")) == ops


def test_cifar_space_is_the_nnabla_nas_layout() -> None:
    space = load_space(CIFAR)
    assert space.input_shape == (1, 3, 32, 32) and space.classes == 10
    assert len(space.slots) == 22  # the fixed MB1 block + 4+4+4+4+4+1
    # First block of a stage: 6 choices; the others add skip; the fixed block has 1.
    counts = [len(s.options) for s in space.slots]
    assert counts == [1, 6, 7, 7, 7, 6, 7, 7, 7, 6, 7, 7, 7, 6, 7, 7, 7, 6, 7, 7, 7, 6]
    assert space.size == 6**6 * 7**15
    assert space.head_in_shape == (1, 320, 4, 4)
    assert load_space(IMAGENET).head_in_shape == (1, 320, 7, 7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["stages"].__setitem__(2, [32, 4, 3]), "stages[2].first_stride: is 3"),
        (lambda d: d["stem"].__setitem__("kernel", 4), "stem.kernel: is 4"),
        (lambda d: d.__setitem__("heads", {}), "unknown field(s) heads"),
        (lambda d: d["choices"].__setitem__("expand", [3, 3]), "choices.expand: [3, 3]"),
        (lambda d: d.pop("classes"), "classes: is missing"),
        (lambda d: d.__setitem__("format_version", 2), "format_version: is 2"),
        (lambda d: d["stages"].__setitem__(1, [24, 4]), "stages[1]: is [24, 4]"),
    ],
)
def test_bad_space_files_name_the_file_and_field(change: Any, message: str) -> None:
    doc = json.loads(CIFAR.read_text())
    change(doc)
    with pytest.raises(SpaceError) as info:
        parse_space(doc, source="my_space.json")
    assert str(info.value).startswith("my_space.json: ")
    assert message in str(info.value)


def test_architectures_are_checked_against_each_block() -> None:
    space = load_space(CIFAR)
    arch = ["e1k3"] + ["e6k3"] * 21
    assert len(space.parse_arch(arch)) == 22
    with pytest.raises(SpaceError, match="block 1 .* cannot be skip"):
        space.parse_arch(["e1k3", "skip"] + ["e6k3"] * 20)
    with pytest.raises(SpaceError, match="has 3 block choices, the space has 22"):
        space.parse_arch(["e1k3", "e6k3", "e6k3"])
    with pytest.raises(SpaceError, match="bad block choice"):
        space.parse_arch(["e1k3", "big"] + ["e6k3"] * 20)


# --- generated models ------------------------------------------------------------------------


def _run_once(path: Path) -> list[np.ndarray]:
    model = load_model(path)  # the queue's own checks: checker, strict shape inference
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, random_inputs(model))


@pytest.mark.parametrize("granularity", ["block", "op"])
def test_module_models_load_run_and_are_indexed(tmp_path: Path, granularity: str) -> None:
    space = load_space(CIFAR)
    index_path, entries = write_modules(space, tmp_path, granularity)
    index = json.loads(index_path.read_text())
    assert index["granularity"] == granularity and index["space"] == space.name
    assert index["count"] == len(entries) == len(unique_modules(space, granularity))
    assert len({e["uid"] for e in index["modules"]}) == len(entries)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == sorted(e.file for e in entries)
    for entry in entries:
        path = tmp_path / entry.file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert props[META_UID] == entry.uid and props[META_SPACE] == space.name
        (output,) = _run_once(path)
        assert np.all(np.isfinite(output))


def test_module_files_are_reproducible(tmp_path: Path) -> None:
    space = load_space(CIFAR)
    _, first = write_modules(space, tmp_path / "a", "block")
    _, second = write_modules(space, tmp_path / "b", "block")
    assert [(e.file, e.sha256) for e in first] == [(e.file, e.sha256) for e in second]


def test_sampling_is_deterministic_with_a_seed() -> None:
    space = load_space(CIFAR)
    assert sample_archs(space, 8, seed=3) == sample_archs(space, 8, seed=3)
    assert sample_archs(space, 8, seed=3) != sample_archs(space, 8, seed=4)
    assert len(set(sample_archs(space, 8, seed=3))) == 8
    for arch in sample_archs(space, 8, seed=3):
        assert space.parse_arch([c.token for c in arch]) == arch
    with pytest.raises(SpaceError, match="at least one"):
        sample_archs(space, 0, seed=0)


def test_sampled_models_load_run_and_are_indexed(tmp_path: Path) -> None:
    space = load_space(CIFAR)
    index_path, entries = write_samples(space, tmp_path / "a", n=3, seed=7)
    _, again = write_samples(space, tmp_path / "b", n=3, seed=7)
    assert [e.sha256 for e in entries] == [e.sha256 for e in again]
    index = json.loads(index_path.read_text())
    assert index["count"] == 3 and index["seed"] == 7 and index["space"] == space.name
    for entry, listed in zip(entries, index["architectures"], strict=True):
        path = index_path.parent / entry.file
        assert listed["sha256"] == entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        arch = space.parse_arch(listed["choices"])
        assert listed["module_uids"] == arch_module_uids(space, arch, "block")
        assert listed["module_uids_op"] == arch_module_uids(space, arch, "op")
        assert len(listed["module_uids"]) == len(space.slots) + 2  # stem, blocks, head
        model = onnx.load(str(path))
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props[META_UIDS]) == listed["module_uids"]
        assert json.loads(props[META_UIDS_OP]) == listed["module_uids_op"]
        assert json.loads(props[META_ARCH]) == listed["choices"]
        # One op UID per ONNX node: the op table covers the whole graph.
        assert len(listed["module_uids_op"]) == len(model.graph.node)
        loaded = load_model(path)
        assert (listed["macs"], listed["parameters"]) == (loaded.macs, loaded.parameters)
        (logits,) = _run_once(path)
        assert logits.shape == (1, 10) and np.all(np.isfinite(logits))


def test_every_op_uid_of_an_architecture_is_in_the_op_table() -> None:
    space = load_space(IMAGENET)
    table = unique_modules(space, "op")
    for arch in sample_archs(space, 5, seed=0):
        assert set(arch_module_uids(space, arch, "op")) <= set(table)
        assert set(arch_module_uids(space, arch, "block")) <= set(unique_modules(space))


def test_skip_adds_no_node_but_keeps_its_block_module() -> None:
    space = load_space(CIFAR)
    plain = ["e1k3"] + ["e3k3"] * 21
    skipping = list(plain)
    skipping[2] = "skip"
    model_plain, blocks_plain, ops_plain = build_arch(space, space.parse_arch(plain), "a", 0)
    model_skip, blocks_skip, ops_skip = build_arch(space, space.parse_arch(skipping), "b", 0)
    assert len(blocks_plain) == len(blocks_skip)
    assert blocks_skip[3] == "Skip[][[1,24,16,16]]"
    assert len(model_skip.graph.node) == len(model_plain.graph.node) - 6  # conv/clip x2, conv, add
    assert len(ops_skip) == len(model_skip.graph.node)
