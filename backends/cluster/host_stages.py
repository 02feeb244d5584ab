"""A pipeline's host-only stages (quantize) on a Dask cluster's lab hosts.

A host-only stage needs no device, so its task carries no ``device:<id>`` resource and may
run on any worker. Lab hosts that advertise no device at all (``devlab worker --no-devices``:
the cluster's resources say which) are preferred, so the device hosts stay free for the
stages that need them; any other worker takes it when none is there (Dask's loose worker
restriction). A host that dies under the stage errs its task with ``KilledWorker`` (devlab's
scheduler allows no silent re-runs); the stage is then submitted again under a new key and
runs elsewhere. The task itself is idempotent (``backends.pipeline.artifacts``): a re-run
finds a finished output or makes it whole, so nothing is lost and no partial file is left.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from distributed import Client, KilledWorker, get_worker

from backends.cluster.model_files import ModelFiles
from backends.cluster.remote import LabHostPlugin
from backends.cluster.resources import RESOURCE_PREFIX
from backends.cluster.wire import PLUGIN_NAME
from backends.core.records import Model
from backends.pipeline.artifacts import keep_bytes, quantize_once
from backends.pipeline.plan import PipelineRequest
from backends.pipeline.run import HostOutcome, StageError
from backends.quantize.tool import QuantizeError

MAX_ATTEMPTS = 4  # hosts dying under one stage this often: give up with the last reason
INLINE_MODEL_BYTES = 256 << 20  # the float model travels with its task
STAGE_KEY_PREFIX = "devlab-stage-"


def stage_key(stage_id: str, attempt: int) -> str:
    """A Dask key for one attempt of a host-only stage, never reused."""
    return f"{STAGE_KEY_PREFIX}{stage_id}-{attempt}-{uuid.uuid4().hex[:8]}"


def device_less_workers(workers: dict[str, dict[str, Any]]) -> list[str]:
    """The addresses of workers that offer no device (``scheduler_info()["workers"]``)."""
    return [
        address
        for address, info in workers.items()
        if not any(
            name.startswith(RESOURCE_PREFIX) and amount > 0
            for name, amount in (info.get("resources") or {}).items()
        )
    ]


class ClusterHostStages:
    """``HostStages`` on the cluster at ``address``; outputs are kept here under ``cache``."""

    def __init__(self, address: str, cache: Path, security: Any = None) -> None:
        self.cache = Path(cache)
        self._client = Client(address, security=security, set_as_default=False, timeout=10)

    def close(self) -> None:
        self._client.close()

    def quantize(self, model: Model, request: PipelineRequest, stage_id: str) -> HostOutcome:
        data = _model_bytes(model)
        payload = {
            "model_sha256": model.sha256,
            "model_name": Path(model.path).name,
            "calibration": request.calibration,
            "scheme": request.scheme,
            "bits": request.bits,
        }
        notes: list[str] = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            targets = device_less_workers(self._client.scheduler_info()["workers"])
            future = self._client.submit(
                run_quantize_stage,
                payload,
                data,
                key=stage_key(stage_id, attempt),
                workers=targets or None,
                allow_other_workers=bool(targets),  # Dask refuses it without workers=
                pure=False,
                retries=0,
                priority=-request.priority,  # devlab: lower first; Dask: higher first
            )
            try:
                answer = future.result()
            except KilledWorker as error:
                host = getattr(error.last_worker, "name", None) or "a lab host"
                notes.append(f"attempt {attempt}: lab host {host} died while running it")
                continue
            except Exception as error:  # the task broke (not the quantizer's refusal)
                raise StageError(f"{type(error).__name__}: {error}") from None
            finally:
                future.release()
            if answer["state"] != "done":
                raise StageError(str(answer["error"]))
            path = keep_bytes(answer["data"], answer["name"], answer["key"], self.cache)
            return HostOutcome(path, str(answer["host"]), attempt, notes)
        raise StageError(f"gave up after {MAX_ATTEMPTS} attempts: {notes[-1]}")


def run_quantize_stage(payload: dict[str, Any], model_bytes: bytes) -> dict[str, Any]:
    """The task, on a lab host: quantize into the host's content-addressed cache and hand
    back the file. ``{"state": "done", "host", "name", "key", "data"}`` or ``{"state":
    "failed", "error"}`` when the model or the set cannot be quantized."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if isinstance(plugin, LabHostPlugin):
        host, work_dir = plugin.host.name, plugin.host.work_dir
    else:  # a plain Dask worker: its own scratch folder
        host, work_dir = str(worker.name), Path(worker.local_directory)
    sha = payload["model_sha256"]
    try:
        path = ModelFiles(work_dir / "models").ensure(
            sha, payload["model_name"], lambda _: model_bytes
        )
        made = quantize_once(
            path, sha, payload["calibration"], payload["scheme"], payload["bits"],
            work_dir / "quantized",
        )  # fmt: skip
    except (QuantizeError, ValueError) as error:  # ModelFileError is a ValueError
        return {"state": "failed", "error": f"on lab host {host}: {error}"}
    return {
        "state": "done",
        "host": host,
        "name": made.path.name,
        "key": made.key,
        "data": made.path.read_bytes(),
    }


def _model_bytes(model: Model) -> bytes:
    try:
        size = Path(model.path).stat().st_size
        if size > INLINE_MODEL_BYTES:
            raise StageError(
                f"{model.path}: {size >> 20} MiB is more than a host-only stage carries "
                f"({INLINE_MODEL_BYTES >> 20} MiB); quantize it with devlab quantize on a lab host"
            )
        return Path(model.path).read_bytes()
    except OSError as error:
        raise StageError(f"{model.path}: cannot read the model: {error}") from None
