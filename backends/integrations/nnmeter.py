"""nn-Meter's builder profiling its kernels through a devlab lab, on any device devlab sees.

nn-Meter (github:microsoft/nn-Meter) builds latency predictors from thousands of small kernel
models it generates and profiles on a *backend*: ``nn-meter register --backend <meta file>``
records a class by ``class_module`` / ``class_name`` (assets/nn_meter/devlab_backend.yaml) and
``connect_backend`` builds it with the workspace's ``configs/backend_config.yaml``. The builder
then calls ``convert_model(model_path, save_path, input_shape=...)`` and
``profile(converted, metrics, input_shape=...)``, or ``profile_model_file`` for both, and keeps
``result["latency"]``: a ``Latency`` in milliseconds with ``avg`` and ``std``.

``DevlabBackend`` answers those calls with a devlab ``Lab`` (built like ``devlab --run`` builds
it: devlab's config, the device registry, the shared canary history): each model becomes a job
on the configured device, measured with devlab's rounds and gates and kept in devlab's store, so
a kernel nn-Meter asks for twice is measured once. ``avg`` is devlab's headline (by default;
``LATENCY_STAT`` may pick the plain mean or median), ``std`` the timed runs' deviation.

Models: ONNX files are profiled as they are; nn-Meter writes ONNX when its ``IMPLEMENT`` is
``torch``. TensorFlow models (a Keras SavedModel folder, ``.h5`` or ``.keras``, nn-Meter's
``tensorflow`` implement) are converted with ``python -m tf2onnx.convert`` when tf2onnx is
installed; otherwise ``convert_model`` says to install it or to use ``IMPLEMENT: torch``.

The class subclasses nn-Meter's ``BaseBackend`` when ``nn_meter`` is importable, else the
equivalent stand-ins of ``backends.integrations.nnmeter_base``.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import json
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import platformdirs

from backends.core.config import load_config
from backends.core.events import Event, JobCancelled, JobFailed, JobFinished
from backends.core.lab import Lab
from backends.core.options import BENCH_OPTIONS, build_settings
from backends.core.records import Job, JobSettings, JobState, Model, Result
from backends.core.store import STORE_FILE, Store
from backends.devices.registry import default_backends
from backends.measure.canary_store import CanaryStore
from backends.models.intake import ModelError, load_model
from backends.power.capture import links_from_config

try:  # nn-Meter's own classes when it is installed, so its builder sees one of its backends
    from nn_meter.builder.backend_meta.utils import Latency, ProfiledResults
    from nn_meter.builder.backends import BaseBackend, BaseParser, BaseProfiler
except ImportError:  # the same calls without nn-Meter (see nnmeter_base)
    from backends.integrations.nnmeter_base import (
        BaseBackend,
        BaseParser,
        BaseProfiler,
        Latency,
        ProfiledResults,
    )

log = logging.getLogger("nn-Meter")

LATENCY_STATS = ("headline", "median", "mean")
DEFAULT_TIMEOUT_S = 600.0


class NnMeterBackendError(RuntimeError):
    """A model devlab could not take or measure; nn-Meter logs it and profiles the next one."""


@dataclass(frozen=True)
class BackendSettings:
    """The backend's part of an nn-Meter workspace (``configs/backend_config.yaml``)."""

    lab_folder: Path  # devlab's store (and logs) for nn-Meter's jobs
    device: str = "host:cpu"
    runtime: str | None = None  # None: the device's first
    devlab_config: str | None = None  # devlab's TOML config; None: devlab's default location
    job: JobSettings = dataclasses.field(default_factory=JobSettings)
    latency_stat: str = "headline"
    timeout_s: float = DEFAULT_TIMEOUT_S


def backend_settings(configs: dict[str, Any] | None) -> BackendSettings:
    """Read the workspace's backend config (None when the workspace has none: all defaults).

    Keys: ``LAB_FOLDER``, ``DEVICE``, ``RUNTIME``, ``DEVLAB_CONFIG``, ``LATENCY_STAT``,
    ``TIMEOUT_S`` and ``SETTINGS``, a table of devlab's measurement options by field name
    (``warmup``, ``runs``, ``rounds``, ``min_round_s``, ``skip_canary``...) over the devlab
    config's ``[defaults]``. ValueError names a bad value.
    """
    configs = dict(configs or {})
    folder = configs.get("LAB_FOLDER") or Path(platformdirs.user_data_dir("devlab")) / "nn-meter"
    config = load_config(configs.get("DEVLAB_CONFIG"))
    values = dict(configs.get("SETTINGS") or {})
    unknown = sorted(set(values) - {option.field for option in BENCH_OPTIONS})
    if unknown:
        known = ", ".join(sorted(option.field for option in BENCH_OPTIONS))
        raise ValueError(f"SETTINGS: unknown option(s) {', '.join(unknown)} (known: {known})")
    job = build_settings(values, config.defaults)
    stat = str(configs.get("LATENCY_STAT") or "headline")
    if stat not in LATENCY_STATS:
        raise ValueError(f"LATENCY_STAT must be one of {', '.join(LATENCY_STATS)}, got {stat!r}")
    return BackendSettings(
        lab_folder=Path(folder).expanduser(),
        device=config.resolve_device(str(configs.get("DEVICE") or "host:cpu")),
        runtime=configs.get("RUNTIME") or None,
        devlab_config=configs.get("DEVLAB_CONFIG") or None,
        job=job,
        latency_stat=stat,
        timeout_s=float(configs.get("TIMEOUT_S") or DEFAULT_TIMEOUT_S),
    )


class DevlabProfiler(BaseProfiler):
    """Submits each model to a devlab Lab and waits for its job; opens the Lab on first use."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._lab: Lab | None = None
        self._store: Store | None = None
        self._opening = threading.Lock()

    def profile(
        self, model_path: str, input_shape: list[list[int]] | None = None, **kwargs: Any
    ) -> str:
        """Measure one model; returns the finished job and its stored result as JSON (the
        "device output" the parser reads). Other keyword arguments are the builder's and
        tflite's (``taskset``...), which a devlab job does not use."""
        model = intake(model_path, input_shape)
        lab = self.open()
        job, result = self._measure(lab, model)
        return json.dumps({"job": job.to_dict(), "result": result.to_dict()})

    def open(self) -> Lab:
        """The started Lab (devlab's config, registry backends and canary history)."""
        with self._opening:
            if self._lab is None:
                config = load_config(self.settings.devlab_config)
                store = Store(self.settings.lab_folder / STORE_FILE)
                lab = Lab(
                    store,
                    default_backends(config),
                    power_links=links_from_config(config.raw),
                    canaries=CanaryStore(),
                )
                lab.discover()
                lab.start()
                self._lab, self._store = lab, store
                atexit.register(self.close)
            return self._lab

    def close(self) -> None:
        """Stop the Lab and release the store (nn-Meter has no hook; atexit calls this)."""
        with self._opening:
            lab, store, self._lab, self._store = self._lab, self._store, None, None
        if lab is not None:
            lab.shutdown(interrupt=True)
        if store is not None:
            store.close()

    def _measure(self, lab: Lab, model: Model) -> tuple[Job, Result]:
        done = threading.Event()
        job_id: list[str] = []

        def on_event(event: Event) -> None:
            finished = isinstance(event, JobFinished | JobFailed | JobCancelled)
            if finished and job_id and event.job.id == job_id[0]:
                done.set()

        unsubscribe = lab.subscribe(on_event)
        try:
            submitted = lab.submit(
                model, self.settings.device, self.settings.runtime, self.settings.job
            )
            job_id.append(submitted.id)
            finished = JobState(lab.store.job(submitted.id).state).finished
            if not finished and not done.wait(self.settings.timeout_s):
                lab.cancel(submitted.id)
                raise NnMeterBackendError(
                    f"{model.path}: not measured within {self.settings.timeout_s:g} s "
                    f"on {self.settings.device} (TIMEOUT_S)"
                )
        finally:
            unsubscribe()
        job = lab.store.job(submitted.id)
        result = lab.store.result(job.id)
        if JobState(job.state) is not JobState.DONE or result is None:
            raise NnMeterBackendError(f"{model.path}: {job.state} on {job.device_id}: {job.error}")
        return job, result


class DevlabParser(BaseParser):
    """Reads the profiler's JSON into nn-Meter's ``Latency`` (ms): avg and std."""

    def __init__(self, latency_stat: str = "headline") -> None:
        self.latency_stat = latency_stat
        self.latency = Latency()
        self.job_id: str | None = None

    def parse(self, content: str) -> DevlabParser:
        document = json.loads(content)
        result = Result.from_dict(document["result"])
        self.job_id = document["job"]["id"]
        self.latency = Latency(
            latency_us(result, self.latency_stat) / 1000.0, (result.stats.std or 0.0) / 1000.0
        )
        return self

    @property
    def results(self) -> ProfiledResults:
        return ProfiledResults({"latency": self.latency})


class DevlabBackend(BaseBackend):
    """The backend nn-Meter registers: its kernels measured as devlab jobs (see the module)."""

    profiler_class = DevlabProfiler
    parser_class = DevlabParser

    def update_configs(self) -> None:
        super().update_configs()
        self.settings = backend_settings(self.configs)
        self.profiler_kwargs.update({"settings": self.settings})
        self.parser_kwargs.update({"latency_stat": self.settings.latency_stat})

    def convert_model(
        self, model_path: str, save_path: str, input_shape: list[list[int]] | None = None
    ) -> str:
        """An ONNX file as it is; a TensorFlow model exported to ``<save_path>/<name>.onnx``."""
        path = Path(model_path)
        if path.is_file() and path.suffix.lower() == ".onnx":
            return str(path)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            return _tf2onnx(["--saved-model", str(path)], path, Path(save_path))
        if path.is_file() and path.suffix.lower() in (".h5", ".keras"):
            return _tf2onnx(["--keras", str(path)], path, Path(save_path))
        raise NnMeterBackendError(
            f"{model_path}: not an ONNX file nor a TensorFlow/Keras model; devlab measures ONNX"
        )

    def test_connection(self) -> None:
        """Open the lab and check the configured device is there (``nn-meter connect``)."""
        lab = self.profiler.open()
        device = lab.device(self.settings.device)
        log.info("devlab: %s (%s) is %s", device.id, device.name, device.state.value)

    def close(self) -> None:
        """Stop the Lab now rather than at exit."""
        self.profiler.close()


def latency_us(result: Result, stat: str = "headline") -> float:
    """The figure reported as ``avg``: devlab's headline (else the median, else the mean),
    or the runs' median or mean."""
    stats = result.stats
    if stat == "mean":
        return stats.mean
    if stat == "median":
        return stats.median if stats.median is not None else stats.mean
    if result.headline_us is not None:
        return result.headline_us
    return stats.median if stats.median is not None else stats.mean


def intake(model_path: str, input_shape: list[list[int]] | None = None) -> Model:
    """Load an ONNX model; nn-Meter's ``input_shape`` (per input, batch left out) fixes the
    dynamic dimensions of a model that has them (batch 1). NnMeterBackendError if unusable."""
    try:
        return load_model(model_path)
    except ModelError as error:
        first = error
    if not input_shape:
        raise NnMeterBackendError(str(first)) from None
    try:
        shapes = _input_shapes(model_path, input_shape)
    except Exception:  # not an ONNX graph at all (protobuf's DecodeError...): say why first
        raise NnMeterBackendError(str(first)) from None
    try:
        return load_model(model_path, shapes)
    except ModelError as error:
        raise NnMeterBackendError(str(error)) from None


def _input_shapes(model_path: str, input_shape: list[list[int]]) -> dict[str, list[int]]:
    """Graph inputs (initializers left out) paired with nn-Meter's shapes, batch 1 prepended
    where the shape has one dimension less than the input."""
    proto = onnx.load(model_path, load_external_data=False)
    weights = {tensor.name for tensor in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in weights]
    shapes: dict[str, list[int]] = {}
    for value_info, shape in zip(inputs, input_shape, strict=False):
        rank = len(value_info.type.tensor_type.shape.dim)
        dims = [int(d) for d in shape]
        shapes[value_info.name] = [1, *dims] if len(dims) == rank - 1 else dims
    return shapes


def _tf2onnx(source: list[str], model: Path, save_path: Path) -> str:
    """Export a TensorFlow model with tf2onnx's command line (in its own process)."""
    if importlib.util.find_spec("tf2onnx") is None:
        raise NnMeterBackendError(
            f"{model}: a TensorFlow model needs tf2onnx to become ONNX (pip install tf2onnx), "
            "or set IMPLEMENT: torch in the workspace's configs so nn-Meter writes ONNX"
        )
    save_path.mkdir(parents=True, exist_ok=True)
    output = save_path / f"{model.stem if model.is_file() else model.name}.onnx"
    command = [sys.executable, "-m", "tf2onnx.convert", *source, "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not output.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise NnMeterBackendError(f"{model}: tf2onnx failed: {tail[0]}")
    return str(output)
