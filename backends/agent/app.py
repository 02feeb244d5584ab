"""The agent's HTTP API (v1) on aiohttp: routes, bearer-token check, JSON errors.

Every route needs ``Authorization: Bearer <token>``. Every error is ``{"error": "..."}``; bad
input is a 4xx with a message that names the problem, and an unexpected exception becomes a
500 ``{"error": "internal error"}`` (logged here, never shown to the client).
"""

from __future__ import annotations

import hmac
import logging
import platform
import time
from importlib import metadata
from typing import Awaitable, Callable, Optional  # typing's: runtime aliases, Python 3.8

from aiohttp import web

from backends.agent import jobfiles
from backends.agent.config import API_VERSION, AgentConfig
from backends.agent.events import stream_events
from backends.agent.jobs import Job, JobFinished, JobNotFound, JobQueue, ModelInfo
from backends.agent.openapi import openapi_spec
from backends.agent.power_stream import RailStream, stream_rails
from backends.agent.settings import SettingsError, parse_settings
from backends.agent.upload import UploadError, read_upload
from backends.power.tegrastats import interval_argv

QUEUE_KEY = web.AppKey("queue", JobQueue)
CONFIG_KEY = web.AppKey("config", AgentConfig)
RAILS_KEY = web.AppKey("rails", Optional[RailStream])  # None: the board measures no power
REQUEST_BODY_LIMIT = 1024 * 1024  # for request.read()/post(); uploads are streamed instead
log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: AgentConfig) -> web.Application:
    """The agent's application; its job queue starts with the app and stops with it."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=REQUEST_BODY_LIMIT
    )
    app[CONFIG_KEY] = config
    app[QUEUE_KEY] = JobQueue(config)
    app[RAILS_KEY] = rail_stream(config)
    app.on_startup.append(_start_queue)
    app.on_shutdown.append(_close_streams)
    app.on_cleanup.append(_stop_queue)
    # No implicit HEAD routes: a HEAD on the event stream would hold a handler open for nothing.
    app.router.add_get("/v1/info", info, allow_head=False)
    app.router.add_get("/v1/openapi.json", openapi, allow_head=False)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs", list_jobs, allow_head=False)
    app.router.add_get("/v1/jobs/{id}", get_job, allow_head=False)
    app.router.add_delete("/v1/jobs/{id}", cancel_job)
    app.router.add_get("/v1/jobs/{id}/events", job_events, allow_head=False)
    app.router.add_get("/v1/power/stream", power_stream, allow_head=False)
    return app


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        message = exc.reason or "error"
        if exc.status in (404, 405):
            message += f": {request.method} {request.rel_url.path[:200]} (routes: /v1/openapi.json)"
        return error(exc.status, message, **headers)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.rel_url.path)
        return error(500, "internal error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONFIG_KEY].token.encode()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return error(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            **{"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"), token):
        return error(401, "wrong token", **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return await handler(request)


async def info(request: web.Request) -> web.Response:
    config, queue = request.app[CONFIG_KEY], request.app[QUEUE_KEY]
    versions = {"devlab": _devlab_version(), "python": platform.python_version()}
    for name, runner in config.runners.items():
        try:
            versions[name] = runner.version() or "unknown"
        except Exception:
            log.exception("version of runner %s", name)
            versions[name] = "unknown"
    return web.json_response(
        {
            "api": API_VERSION,
            "board": config.board,
            "kind": config.kind,
            "runners": list(config.runners),
            "default_runner": config.default_runner,
            "versions": versions,
            "queue": {
                "running": queue.running.id if queue.running else None,
                "waiting": len(queue.waiting),
            },
            "max_upload_bytes": config.max_upload_bytes,
            "power": _power_info(request.app[RAILS_KEY]),
        }
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec(list(request.app[CONFIG_KEY].runners)))


async def submit_job(request: web.Request) -> web.Response:
    config, queue = request.app[CONFIG_KEY], request.app[QUEUE_KEY]
    if queue.closing:
        return error(503, "the agent is stopping")
    job_id, folder = queue.new_folder()
    try:
        upload = await read_upload(request, folder, config.max_upload_bytes)
        settings = parse_settings(
            upload.settings_text, list(config.runners), config.default_runner or ""
        )
    except UploadError as failure:
        jobfiles.remove_folder(folder)
        return error(failure.status, str(failure))
    except SettingsError as failure:
        jobfiles.remove_folder(folder)
        return error(400, str(failure))
    except BaseException:
        jobfiles.remove_folder(folder)
        raise
    existing = queue.reusable(settings.client_key)
    if existing is not None:
        jobfiles.remove_folder(folder)
        return web.json_response({**queue.view(existing), "reused": True}, status=200)
    job = Job(
        id=job_id,
        settings=settings,
        model=ModelInfo(upload.display_name, upload.sha256, upload.size),
        model_file=upload.file_name,
        folder=folder,
        created_at=time.time(),
    )
    queue.submit(job)
    return web.json_response({**queue.view(job), "reused": False}, status=201)


async def list_jobs(request: web.Request) -> web.Response:
    queue = request.app[QUEUE_KEY]
    return web.json_response({"jobs": [queue.view(job) for job in queue.jobs.values()]})


async def get_job(request: web.Request) -> web.Response:
    queue = request.app[QUEUE_KEY]
    try:
        job = queue.get(request.match_info["id"])
    except JobNotFound:
        return _unknown_job()
    return web.json_response(queue.view(job))


async def cancel_job(request: web.Request) -> web.Response:
    queue = request.app[QUEUE_KEY]
    try:
        job = queue.cancel(request.match_info["id"])
    except JobNotFound:
        return _unknown_job()
    except JobFinished as finished:
        return error(409, f"the job is already {finished}; nothing to cancel")
    return web.json_response(queue.view(job))


async def job_events(request: web.Request) -> web.StreamResponse:
    queue = request.app[QUEUE_KEY]
    try:
        job = queue.get(request.match_info["id"])
    except JobNotFound:
        return _unknown_job()
    return await stream_events(request, queue, job)


async def power_stream(request: web.Request) -> web.StreamResponse:
    rails = request.app[RAILS_KEY]
    if rails is None:
        return error(404, "this agent measures no power: start it with --tegrastats PATH")
    queue = request.app[QUEUE_KEY]
    return await stream_rails(request, rails, lambda: queue.closing)


def rail_stream(config: AgentConfig) -> RailStream | None:
    """The live rails of a board whose runner samples tegrastats (``--tegrastats``), else None."""
    for runner in config.runners.values():
        program = getattr(runner, "tegrastats", None)
        if isinstance(program, str):
            interval_ms = int(getattr(runner, "interval_ms", 100))
            return RailStream(interval_argv(program, interval_ms), interval_ms)
    return None


def _power_info(rails: RailStream | None) -> dict | None:
    """What ``/v1/info`` says of the board's own power: None where it measures none."""
    if rails is None:
        return None
    return {"source": "tegrastats", "interval_ms": rails.interval_ms, "stream": "/v1/power/stream"}


def _unknown_job() -> web.Response:
    return error(404, "no such job on this agent")


def _devlab_version() -> str:
    try:
        return metadata.version("devlab")
    except metadata.PackageNotFoundError:
        return "unknown"


async def _start_queue(app: web.Application) -> None:
    await app[QUEUE_KEY].start()


async def _close_streams(app: web.Application) -> None:
    """Let open event streams end, so shutdown does not wait for them."""
    app[QUEUE_KEY].closing = True
    app[QUEUE_KEY].notify_all()
    if app[RAILS_KEY] is not None:
        await app[RAILS_KEY].stop()


async def _stop_queue(app: web.Application) -> None:
    await app[QUEUE_KEY].stop()
