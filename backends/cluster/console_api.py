"""The consoles' requests to the dispatcher: scheduler handlers a ``ClusterLab`` calls as
``client.scheduler.devlab_<name>(...)``.

Records travel as JSON text (msgpack would turn their lists into tuples); a request the Lab
refuses comes back as ``{"error": text}``, which the console raises as ``LabError``.

The dispatcher registers these handlers; they see it only as a ``Dispatching`` (the few things
they ask of it), so this module never imports the dispatcher.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from backends.cluster.model_files import ModelFileError, ModelFiles
from backends.core.lab import Lab, LabError
from backends.core.records import JobSettings, JobState, Model
from backends.core.store import Store


class Dispatching(Protocol):
    """What the handlers ask of the dispatcher (``backends.cluster.dispatcher.Dispatcher``)."""

    lab: Lab  # the cluster's devices and queue, over the dispatcher's store
    store: Store
    models: ModelFiles  # model files consoles uploaded
    paused: bool

    async def cancel(self, job_id: str) -> None:
        """Cancel a queued job at once, a handed-out one at its next check."""
        ...

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the whole cluster's dispatch."""
        ...


def console_handlers(dispatcher: Dispatching) -> dict[str, Callable[..., Any]]:
    """``devlab_*`` handler name -> handler, answered from ``dispatcher``'s Lab and store."""
    lab, models = dispatcher.lab, dispatcher.models

    def devices() -> str:
        return json.dumps(
            {"devices": [d.to_dict() for d in lab.devices], "paused": dispatcher.paused}
        )

    def submit(request: str) -> str:
        def action(r: dict[str, Any]) -> dict[str, Any]:
            if models.find(r["model"]["sha256"]) is None:
                raise LabError(f"model {r['model']['name']}: its bytes were not uploaded")
            model, settings = _model_and_settings(r)
            job = lab.submit(model, r["device_id"], r.get("runtime"), settings, r["priority"])
            return {"job": job.to_dict()}

        return _answer(action, request)

    def record_failure(request: str) -> str:
        def action(r: dict[str, Any]) -> dict[str, Any]:
            model, settings = _model_and_settings(r)
            job = lab.record_failure(
                model, r["device_id"], r["error"], r.get("runtime"), settings, r["priority"]
            )
            return {"job": job.to_dict()}

        return _answer(action, request)

    async def cancel(job_id: str) -> str:
        await dispatcher.cancel(job_id)
        return "{}"

    def retry(job_id: str) -> str:
        def action(r: dict[str, Any]) -> dict[str, Any]:
            state = dispatcher.store.job(job_id).state
            if state not in (JobState.FAILED, JobState.CANCELLED):
                raise LabError(f"job {job_id} is {state}; only failed or cancelled jobs retry")
            return {"job": lab.retry(job_id).to_dict()}

        return _answer(action, "{}")

    def set_priority(job_id: str, priority: int) -> str:
        return _answer(lambda r: {"job": lab.set_priority(job_id, priority).to_dict()}, "{}")

    def pause(paused: bool) -> str:
        dispatcher.set_paused(bool(paused))
        return json.dumps({"paused": dispatcher.paused})

    def jobs(states: list[str] | None = None) -> str:
        wanted = [JobState(s) for s in states] if states is not None else None
        return json.dumps([job.to_dict() for job in lab.jobs(wanted)])

    def pending() -> str:
        return json.dumps([job.to_dict() for job in lab.pending()])

    def rows() -> str:
        return json.dumps(
            [[job.to_dict(), result.to_dict() if result else None] for job, result in lab.rows()]
        )

    def result(job_id: str) -> str:
        found = dispatcher.store.result(job_id)
        return json.dumps(found.to_dict() if found else None)

    def has_model(sha256: str) -> bool:
        try:
            return models.find(sha256) is not None
        except ModelFileError:
            return False

    def put_model(sha256: str, name: str, data: bytes) -> str:
        return _answer(lambda r: {"path": str(models.put(sha256, name, data))}, "{}")

    def model(sha256: str) -> bytes:
        path = models.find(sha256)
        if path is None:
            raise ModelFileError(f"the dispatcher has no model with sha256 {sha256}")
        return path.read_bytes()

    handlers = {
        "devices": devices,
        "submit": submit,
        "record_failure": record_failure,
        "cancel": cancel,
        "retry": retry,
        "set_priority": set_priority,
        "pause": pause,
        "jobs": jobs,
        "pending": pending,
        "rows": rows,
        "result": result,
        "has_model": has_model,
        "put_model": put_model,
        "model": model,
    }
    return {f"devlab_{name}": handler for name, handler in handlers.items()}


def _model_and_settings(request: dict[str, Any]) -> tuple[Model, JobSettings | None]:
    settings = request.get("settings")
    return Model.from_dict(request["model"]), JobSettings.from_dict(settings) if settings else None


def _answer(action: Callable[[dict[str, Any]], dict[str, Any] | None], request: str) -> str:
    """Run a request; an error the console should show comes back as ``{"error": text}``."""
    try:
        return json.dumps(action(json.loads(request)) or {})
    except (LabError, ValueError, KeyError) as error:
        return json.dumps({"error": str(error.args[0] if error.args else error)})
