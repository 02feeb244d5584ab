"""Which ModuleUID keys a model: the user's uids.json, then its metadata, then its file name.

Real ONNX files through the real intake (``load_model`` / ``collect_models``); a broken manifest
fails the models of its folder up front, naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from backends.models.intake import ModelError, collect_models, load_model
from backends.models.uids import (
    DEVLAB_METADATA_KEY,
    MANIFEST_FILE,
    USER_METADATA_KEY,
    UidManifestError,
    declared_uid,
    read_manifest,
)
from backends.space.modules import META_UID
from support.helpers import make_mlp

CONV_UID = (
    "Conv[in_channels=3,out_channels=16,kernel=[3,3],stride=[1,1],pad=[1,1],dilation=None,"
    "base_axis=1,group=1,with_bias=False,fix_parameters=False,channel_last=False][[1,3,32,32]]"
)
RELU_UID = "ReLU[inplace=False][[1,16,32,32]]"


def with_metadata(path: Path, **props: str) -> Path:
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def write_manifest(folder: Path, mapping: dict[str, str] | str) -> Path:
    path = folder / MANIFEST_FILE
    text = mapping if isinstance(mapping, str) else json.dumps(mapping)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    folder = tmp_path / "modules"
    folder.mkdir()
    for index, hidden in enumerate((4, 8, 16)):
        make_mlp(folder / f"{index:04d}.onnx", hidden, in_features=8, out_features=4)
    return folder


def test_manifest_keys_the_models_it_names(modules: Path) -> None:
    write_manifest(modules, {CONV_UID: "0000.onnx", RELU_UID: "0001.onnx"})
    assert load_model(modules / "0000.onnx").module_uid == CONV_UID
    assert load_model(modules / "0001.onnx").module_uid == RELU_UID
    # not named: the file name with its input shapes, as before
    assert load_model(modules / "0002.onnx").module_uid == "0002[[1,8]]"


def test_manifest_wins_over_metadata_and_user_key_over_devlab_key(modules: Path) -> None:
    with_metadata(modules / "0000.onnx", **{USER_METADATA_KEY: "from-metadata"})
    with_metadata(
        modules / "0001.onnx", **{USER_METADATA_KEY: "user", DEVLAB_METADATA_KEY: "devlab"}
    )
    with_metadata(modules / "0002.onnx", **{DEVLAB_METADATA_KEY: "devlab-only"})
    assert load_model(modules / "0000.onnx").module_uid == "from-metadata"
    assert load_model(modules / "0001.onnx").module_uid == "user"
    assert load_model(modules / "0002.onnx").module_uid == "devlab-only"

    write_manifest(modules, {CONV_UID: "0000.onnx"})
    assert load_model(modules / "0000.onnx").module_uid == CONV_UID
    assert load_model(modules / "0001.onnx").module_uid == "user"


def test_devlab_key_is_the_one_devlab_space_writes() -> None:
    assert DEVLAB_METADATA_KEY == META_UID


def test_manifest_reread_when_it_changes(modules: Path) -> None:
    manifest = write_manifest(modules, {CONV_UID: "0000.onnx"})
    assert read_manifest(manifest) == {"0000.onnx": CONV_UID}
    write_manifest(modules, {RELU_UID: "0000.onnx", CONV_UID: "0001.onnx"})
    assert read_manifest(manifest) == {"0000.onnx": RELU_UID, "0001.onnx": CONV_UID}
    assert load_model(modules / "0000.onnx").module_uid == RELU_UID


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('["0000.onnx"]', "must be a JSON object"),
        (json.dumps({"": "0000.onnx"}), "an empty UID"),
        (json.dumps({CONV_UID: 3}), "not a file name"),
        (json.dumps({CONV_UID: "sub/0000.onnx"}), "not the name of an .onnx file beside"),
        (json.dumps({CONV_UID: "0000.nnp"}), "not the name of an .onnx file beside"),
        (json.dumps({CONV_UID: "0009.onnx"}), "names 0009.onnx, which is not in"),
        (json.dumps({CONV_UID: "0000.onnx", RELU_UID: "0000.onnx"}), "given two UIDs"),
        (f'{{"{RELU_UID}": "0000.onnx", "{RELU_UID}": "0001.onnx"}}', "given twice"),
    ],
)
def test_broken_manifest_fails_its_models_naming_it(modules: Path, text: str, reason: str) -> None:
    manifest = write_manifest(modules, text)
    with pytest.raises(ModelError, match=reason) as caught:
        load_model(modules / "0002.onnx")
    assert caught.value.path == str(manifest.resolve())

    items = collect_models([modules])
    assert len(items) == 3 and all(isinstance(item, ModelError) for item in items)
    assert all(MANIFEST_FILE in str(item) for item in items)


def test_declared_uid_raises_its_own_error_by_default(modules: Path) -> None:
    write_manifest(modules, "{not json")
    with pytest.raises(UidManifestError, match=f"{MANIFEST_FILE}: not valid JSON"):
        declared_uid(modules / "0000.onnx", {})
    assert declared_uid(Path("/nowhere/m.onnx"), {USER_METADATA_KEY: " spaced "}) == "spaced"
    assert declared_uid(Path("/nowhere/m.onnx"), {USER_METADATA_KEY: ""}) is None
