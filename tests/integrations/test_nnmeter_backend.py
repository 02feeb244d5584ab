"""devlab's nn-Meter backend driven the way nn-Meter registers, builds and calls a backend.

Real tiny ONNX models, real ONNX Runtime on host:cpu, a real devlab store; the latency the
backend hands back is checked against that store. The steps re-implement nn-Meter's own code
(github:microsoft/nn-Meter), in its order and with its arguments:

1. ``nn-meter register --backend assets/nn_meter/devlab_backend.yaml``:
   ``nn_meter/utils/nn_meter_cli/registry.py`` ``register_module("backends", meta_file)`` (load
   the meta with FullLoader, pop ``builtin_name``, import ``class_module`` from
   ``package_location``, check ``defaultConfigFile`` is a file);
2. ``nn-meter create --customized-workspace W --backend devlab``:
   ``nn_meter/builder/config_manager.py`` ``copy_to_workspace("customized", W, defaultConfigFile)``;
   the user then edits ``W/configs/backend_config.yaml``;
3. ``connect_backend("devlab")`` (``nn_meter/builder/backends/interface.py``): the class built
   with the workspace's backend config (``load_config_file``); ``nn-meter connect`` calls
   ``backend.test_connection()`` (``nn_meter/utils/nn_meter_cli/builder.py``);
4. ``nn_meter/builder/nn_meter_builder.py``: ``profile_models`` calls
   ``backend.profile_model_file(model['model'], dirname, input_shape=model['shapes'],
   metrics=['latency'])``; with ``have_converted`` after ``convert_models``, it calls
   ``backend.convert_model(model['model'], dirname, input_shape=model['shapes'])`` then
   ``backend.profile(model['converted_model'], ['latency'], input_shape=model['shapes'])``;
   each model keeps ``result['latency']``;
5. ``save_profiled_results`` / ``read_profiled_results`` and ``Latency``
   (``nn_meter/builder/backend_meta/utils.py``): the latency goes to JSON as ``"avg +- std"`` and
   comes back parsed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from backends.core.records import JobState
from backends.core.store import STORE_FILE, Store
from backends.integrations import nnmeter
from backends.integrations.nnmeter import DevlabBackend, NnMeterBackendError
from support.helpers import REPO_ROOT, make_mlp

META_FILE = REPO_ROOT / "assets" / "nn_meter" / "devlab_backend.yaml"
TINY = {
    "warmup": 1,
    "runs": 5,
    "rounds": 1,
    "min_round_s": 0.0,
    "skip_canary": True,
    "precision_pct": 0.0,
    "skip_parity": True,
}


# --- nn-Meter's steps, re-implemented -------------------------------------------------------


def register_module(meta_file: Path) -> tuple[str, dict, type]:
    """registry.register_module for a backend: the class it imports and the meta it records."""
    with open(meta_file) as fp:
        meta_data = yaml.load(fp, yaml.FullLoader)
    builtin_name = meta_data.pop("builtin_name")
    sys.path.append(meta_data["package_location"])
    try:
        module = importlib.import_module(meta_data["class_module"])
    finally:
        sys.path.remove(meta_data["package_location"])  # nn-Meter keeps it; a test may not
    backend_cls = getattr(module, meta_data["class_name"])
    config_file = meta_data["defaultConfigFile"]
    if config_file is not None and not os.path.isfile(config_file):
        raise ValueError(f"The default config file {config_file} does not exist")
    return builtin_name, meta_data, backend_cls


def copy_to_workspace(workspace: Path, backend_config_file: str) -> Path:
    """config_manager.copy_to_workspace("customized", ...): the backend config's copy."""
    os.makedirs(workspace / "configs", exist_ok=True)
    target = workspace / "configs" / "backend_config.yaml"
    shutil.copyfile(backend_config_file, target)
    return target


def connect_backend(backend_cls: type, workspace: Path):
    """interface.connect_backend: the class built with the workspace's backend config."""
    with open(workspace / "configs" / "backend_config.yaml") as fp:
        configs = yaml.load(fp, yaml.FullLoader)
    return backend_cls(configs)


def profile_models(backend, models: dict, have_converted: bool = False) -> dict:
    """nn_meter_builder.profile_models (and convert_models first when ``have_converted``)."""
    for module in models.values():
        for model in module.values():
            if have_converted:
                model["converted_model"] = backend.convert_model(
                    model["model"], os.path.dirname(model["model"]), input_shape=model["shapes"]
                )
                res = backend.profile(
                    model["converted_model"], ["latency"], input_shape=model["shapes"]
                )
            else:
                res = backend.profile_model_file(
                    model["model"],
                    os.path.dirname(model["model"]),
                    input_shape=model["shapes"],
                    metrics=["latency"],
                )
            model["latency"] = res["latency"]
    return models


def saved_and_read_back(models: dict) -> dict:
    """dump_profiled_results (``str(latency)``) then read_profiled_results (``Latency(str)``)."""
    dumped = {
        module_key: {mid: {"latency": str(m["latency"])} for mid, m in module.items()}
        for module_key, module in models.items()
    }
    text = json.dumps(dumped)
    read = json.loads(text)
    for module in read.values():
        for model in module.values():
            avg, std = model["latency"].split("+-")
            model["latency"] = (float(avg), float(std))
    return read


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An nn-Meter workspace made from the shipped meta file, edited for a quick host run; no
    user devlab config or canary history (XDG dirs in tmp_path)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(REPO_ROOT)  # the meta file's paths are relative to the repository
    name, meta, backend_cls = register_module(META_FILE)
    assert (name, backend_cls) == ("devlab", DevlabBackend)
    config_path = copy_to_workspace(tmp_path / "workspace", meta["defaultConfigFile"])
    config = yaml.safe_load(config_path.read_text())
    config.update({"LAB_FOLDER": str(tmp_path / "lab"), "DEVICE": "host:cpu", "SETTINGS": TINY})
    config_path.write_text(yaml.safe_dump(config))
    return tmp_path / "workspace"


def stored_rows(lab_folder: Path) -> list:
    store = Store(lab_folder / STORE_FILE)
    try:
        return store.rows()
    finally:
        store.close()


# --- tests ----------------------------------------------------------------------------------


def test_the_backend_subclasses_nn_meters_base_when_it_is_installed() -> None:
    base = DevlabBackend.__mro__[1]
    if importlib.util.find_spec("nn_meter") is not None:
        assert base.__module__ == "nn_meter.builder.backends.interface"
    else:
        assert base.__module__ == "backends.integrations.nnmeter_base"
    assert base.__name__ == "BaseBackend"


def test_builder_profiles_kernels_through_a_devlab_lab(workspace: Path, tmp_path: Path) -> None:
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    static = make_mlp(kernels / "fc_static.onnx", 16, seed=1)
    dynamic = make_mlp(kernels / "fc_dynamic.onnx", 32, batch="N", seed=2)  # batch left open
    models = {
        "fc": {
            "A1": {"model": str(static), "shapes": [[64]], "config": {"CIN": 64, "COUT": 10}},
            "B2": {"model": str(dynamic), "shapes": [[64]], "config": {"CIN": 64, "COUT": 10}},
        }
    }
    backend = connect_backend(DevlabBackend, workspace)
    try:
        backend.test_connection()
        profiled = profile_models(backend, models)
    finally:
        backend.close()

    rows = stored_rows(tmp_path / "lab")
    assert [JobState(job.state) for job, _ in rows] == [JobState.DONE, JobState.DONE]
    by_path = {job.model.path: (job, result) for job, result in rows}
    read_back = saved_and_read_back(profiled)
    for model_id, path in (("A1", static), ("B2", dynamic)):
        job, result = by_path[str(path.resolve())]
        latency = profiled["fc"][model_id]["latency"]
        assert latency.avg == result.headline_us / 1000  # ms, devlab's headline
        assert latency.std == result.stats.std / 1000
        assert read_back["fc"][model_id]["latency"] == (latency.avg, latency.std)
        assert job.settings.runs == 5 and job.settings.rounds == 1
    assert by_path[str(dynamic.resolve())][0].model.inputs[0].shape == [1, 64]


def test_converted_models_profile_the_same_and_a_kernel_is_measured_once(
    workspace: Path, tmp_path: Path
) -> None:
    model = make_mlp(tmp_path / "conv_k3.onnx", 8)
    first = {"conv": {"K3": {"model": str(model), "shapes": [[64]]}}}
    again = {"conv": {"K3": {"model": str(model), "shapes": [[64]]}}}
    backend = connect_backend(DevlabBackend, workspace)
    try:
        profile_models(backend, first, have_converted=True)
        profile_models(backend, again)
    finally:
        backend.close()

    assert first["conv"]["K3"]["converted_model"] == str(model)  # ONNX is profiled as it is
    ((job, result),) = stored_rows(tmp_path / "lab")  # one job: the second call reused it
    for models in (first, again):
        assert models["conv"]["K3"]["latency"].avg == result.headline_us / 1000
    assert backend.parser.job_id == job.id


def test_the_mean_statistic_and_a_failed_model(workspace: Path, tmp_path: Path) -> None:
    config_path = workspace / "configs" / "backend_config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**config, "LATENCY_STAT": "mean"}))
    model = make_mlp(tmp_path / "dw.onnx", 8)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    backend = connect_backend(DevlabBackend, workspace)
    try:
        res = backend.profile_model_file(str(model), str(tmp_path), input_shape=[[64]])
        with pytest.raises(NnMeterBackendError, match="broken.onnx"):
            backend.profile_model_file(str(broken), str(tmp_path), input_shape=[[64]])
    finally:
        backend.close()

    ((_, result),) = stored_rows(tmp_path / "lab")
    assert res["latency"].avg == result.stats.mean / 1000


def test_tensorflow_models_need_tf2onnx(workspace: Path, tmp_path: Path) -> None:
    saved_model = tmp_path / "keras_kernel"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    backend = connect_backend(DevlabBackend, workspace)
    with pytest.raises(NnMeterBackendError, match="tf2onnx"):
        backend.convert_model(str(saved_model), str(tmp_path), input_shape=[[8, 8, 3]])
    with pytest.raises(NnMeterBackendError, match="devlab measures ONNX"):
        backend.convert_model(str(tmp_path / "kernel.pb"), str(tmp_path))
    with pytest.raises(ValueError, match="LATENCY_STAT"):
        nnmeter.backend_settings({"LATENCY_STAT": "p99"})
