"""The OpenAPI 3.2 description of the agent's API (v1), served at ``GET /v1/openapi.json``.

Kept next to the handlers and held to them by the tests: every response the tests see must match
it, and schemathesis (tests/agent/test_agent_contract.py) sends what it allows and checks what
comes back. 3.2 because it is the version that can say what an event stream carries
(``itemSchema``: each event's name and its JSON data's schema).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from backends.agent import openapi_examples as ex
from backends.agent.live import RECENT_LIMIT
from backends.agent.power_stream import PENDING_LIMIT
from backends.agent.settings import (
    MAX_ROUND_ITERATIONS,
    MAX_ROUNDS,
    MAX_SECONDS,
    MAX_THREADS,
    MAX_WARMUP,
)

OPENAPI_VERSION = "3.2.0"
STATES = ["queued", "running", "done", "failed", "cancelled"]
JOB_ID_PATTERN = "^[0-9a-f]{16}$"


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (JSON Schema 2020-12: a type list, or anyOf for a reference)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **extra,
    }


NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _settings_schema(runners: Sequence[str] | None) -> dict[str, Any]:
    runner: dict[str, Any] = {
        "type": "string",
        "description": "one of /v1/info `runners` (default: the agent's default runner)",
    }
    if runners is not None:
        runner["enum"] = list(runners)
    return _obj(
        {
            "runner": runner,
            "warmup": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_WARMUP,
                "default": 10,
                "description": "untimed runs (onnxruntime, `{warmup}`)",
            },
            "rounds": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ROUNDS,
                "default": [50],
                "items": {"type": "integer", "minimum": 1, "maximum": MAX_ROUND_ITERATIONS},
                "description": "timed runs per round (onnxruntime; `{runs}` = their sum)",
            },
            "threads": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_THREADS,
                "default": 1,
                "description": "ORT intra-op threads; xdputil / test_performance threads",
            },
            "seconds": nullable(
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": MAX_SECONDS,
                    "description": "run time of time-based tools (vitis-test-performance)",
                }
            ),
            "outputs": {
                "type": "boolean",
                "default": False,
                "description": "also return the model's outputs for devlab's fixed parity "
                "input (onnxruntime runner; up to 1,000,000 elements) as `result.outputs`, so "
                "the console can compare them with its own",
            },
            "client_key": nullable(
                {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9._:@-]{1,128}$",
                    "description": "idempotency key: a queued, running or done job with the same "
                    "key is returned instead of starting a new one",
                }
            ),
        },
        required=[],
        additionalProperties=False,
    )


def _schemas(runners: Sequence[str] | None) -> dict[str, Any]:
    return {
        "Error": _obj(
            {"error": {"type": "string", "description": "what went wrong, for a person"}},
            additionalProperties=False,
        ),
        "Info": _obj(
            {
                "api": {"type": "integer", "enum": [1]},
                "board": STRING,
                "kind": STRING,
                "runners": {"type": "array", "items": STRING},
                "default_runner": STRING,
                "versions": {
                    "type": "object",
                    "additionalProperties": STRING,
                    "required": ["devlab", "python"],
                },
                "queue": _obj({"running": nullable(STRING), "waiting": INTEGER}),
                "max_upload_bytes": INTEGER,
                "power": nullable(
                    _obj(
                        {
                            "source": {"type": "string", "enum": ["tegrastats"]},
                            "interval_ms": INTEGER,
                            "stream": {"type": "string", "const": "/v1/power/stream"},
                        },
                        description="the board's own power rails (an agent started with "
                        "--tegrastats); null: it measures none",
                    )
                ),
            }
        ),
        "Settings": _settings_schema(runners),
        "Summary": _obj(
            {
                "count": nullable(INTEGER),
                "min": nullable(NUMBER),
                "mean": nullable(NUMBER),
                "median": nullable(NUMBER),
                "p90": nullable(NUMBER),
                "p99": nullable(NUMBER),
                "max": nullable(NUMBER),
                "std": nullable(NUMBER),
                "cv": nullable(NUMBER),
            }
        ),
        "Round": _obj(
            {"latencies_us": {"type": "array", "items": NUMBER}, "summary": _ref("Summary")}
        ),
        "Result": _obj(
            {
                "stats_source": {"type": "string", "enum": ["iterations", "tool summary"]},
                "rounds": {"type": "array", "items": _ref("Round")},
                "load_us": nullable(NUMBER),
                "first_inference_us": nullable(NUMBER),
                "tool": STRING,
                "tool_version": STRING,
                "extras": {
                    "type": "object",
                    "properties": {
                        "fps": nullable(NUMBER),
                        "e2e_mean_us": nullable(NUMBER),
                        "dpu_mean_us": nullable(NUMBER),
                        "threads": nullable(INTEGER),
                        "layers": {
                            "type": "array",
                            "items": _ref("Layer"),
                            "description": "trtexec: each layer's mean time over a separate "
                            "profiled pass (--exportProfile), in execution order",
                        },
                        "power": _ref("RailSamples"),
                    },
                    "required": ["fps", "e2e_mean_us", "dpu_mean_us", "threads"],
                },
                "notes": {"type": "array", "items": STRING},
                "outputs": nullable(
                    {
                        "type": "array",
                        "items": _obj(
                            {
                                "shape": {"type": "array", "items": INTEGER},
                                "dtype": STRING,
                                "data": {"type": "array", "items": NUMBER},
                            }
                        ),
                    }
                ),
            },
            required=[
                "stats_source",
                "rounds",
                "load_us",
                "first_inference_us",
                "tool",
                "tool_version",
                "extras",
                "notes",
            ],
        ),
        "Layer": _obj({"name": STRING, "op_type": STRING, "mean_us": NUMBER}),
        "RailSamples": _obj(
            {
                "source": {"type": "string", "enum": ["tegrastats"]},
                "interval_ms": INTEGER,
                "rail": {
                    "type": "string",
                    "description": "the board rail `mw` holds: VDD_IN, POM_5V_IN or 'sum of "
                    "rails'; empty when tegrastats printed none",
                },
                "t": {
                    "type": "array",
                    "items": NUMBER,
                    "description": "each sample's arrival, epoch seconds on the board's clock",
                },
                "mw": {"type": "array", "items": NUMBER, "description": "board power (mW)"},
                "rails": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": NUMBER},
                    "description": "every rail's mW per sample, by name",
                },
                "warnings": {"type": "array", "items": STRING},
                "baseline_window": {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2},
                "timed_windows": {
                    "type": "array",
                    "items": {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2},
                },
                "iterations": INTEGER,
            },
            description="The rails a trtexec job sampled (agent started with --tegrastats) over "
            "an idle baseline and the timed rounds; the console turns them into energy per "
            "inference",
        ),
        "RailSample": _obj(
            {
                "t": NUMBER,
                "rail": STRING,
                "mw": NUMBER,
                "rails": {"type": "object", "additionalProperties": NUMBER},
            }
        ),
        "RailBatch": _obj(
            {
                "interval_ms": INTEGER,
                "dropped": {
                    "type": "integer",
                    "description": "samples this client was too slow for, since the last batch",
                },
                "samples": {
                    "type": "array",
                    "items": _ref("RailSample"),
                    "maxItems": PENDING_LIMIT,
                },
            }
        ),
        "RailEnd": _obj({"reason": STRING}),
        "Progress": _obj(
            {
                "phase": {
                    "type": "string",
                    "description": "queued, load, warmup, 'round i/n', running, or the final state",
                },
                "done": INTEGER,
                "total": nullable(INTEGER),
            }
        ),
        "Job": _obj(
            {
                "id": {"type": "string", "pattern": JOB_ID_PATTERN},
                "state": {"type": "string", "enum": STATES},
                "runner": STRING,
                "client_key": nullable(STRING),
                "settings": _ref("Settings"),
                "model": _obj({"name": STRING, "sha256": STRING, "bytes": INTEGER}),
                "progress": _ref("Progress"),
                "position": nullable(
                    {
                        "type": "integer",
                        "minimum": 1,
                        "description": "place in the waiting line (1 = next)",
                    }
                ),
                "result": nullable(_ref("Result")),
                "error": nullable(STRING),
                "created_at": NUMBER,
                "started_at": nullable(NUMBER),
                "finished_at": nullable(NUMBER),
            }
        ),
        "SubmittedJob": {
            "allOf": [_ref("Job"), _obj({"reused": {"type": "boolean"}})],
        },
        "JobList": _obj({"jobs": {"type": "array", "items": _ref("Job")}}),
        "ProgressEvent": _obj(
            {
                "phase": STRING,
                "done": INTEGER,
                "total": nullable(INTEGER),
                "recent_us": {
                    "type": "array",
                    "items": NUMBER,
                    "maxItems": RECENT_LIMIT,
                    "description": "latencies measured since the previous progress event",
                },
            }
        ),
        "LogEvent": _obj(
            {"line": {"type": "string", "description": "one line of the tool's output"}}
        ),
    }


def _json(schema: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(schema)}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _error(description: str, status: str, **headers: Any) -> dict[str, Any]:
    response = {
        "description": description,
        "content": _json("Error", {"error": ex.ERRORS[status]}),
    }
    if headers:
        response["headers"] = headers
    return response


def _job_id() -> dict[str, Any]:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "the id POST /v1/jobs answered with",
        "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
        "examples": {"job": ex.named(ex.JOB_ID, "a job id")},
    }


def _event(name: str, schema: str, description: str) -> dict[str, Any]:
    """One kind of Server-Sent Event: its ``event:`` name and the JSON in its ``data:`` line."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _ref(schema),
            },
        },
        "required": ["event", "data"],
    }


EVENTS = {
    "oneOf": [
        _event("job", "Job", "the job view: first, and last once the job is finished"),
        _event(
            "progress",
            "ProgressEvent",
            "at most ~5 per second while the job runs",
        ),
        _event("log", "LogEvent", "a line of tool output (rate-limited)"),
    ]
}

RAIL_EVENTS = {
    "oneOf": [
        _event(
            "samples", "RailBatch", "the samples since the previous batch, at most ~5 per second"
        ),
        _event("end", "RailEnd", "tegrastats stopped: the stream closes after it"),
    ]
}

UNAUTHORIZED = _error(
    "missing or wrong bearer token",
    "401",
    **{
        "WWW-Authenticate": {
            "description": '`Bearer`, or `Bearer error="invalid_token"` for a wrong token',
            "required": True,
            "schema": {"type": "string", "pattern": "^Bearer"},
        }
    },
)
NOT_FOUND = _error("no job with this id (also: an id that is not 16 lowercase hex digits)", "404")
JOB_LINKS = {
    "GetJob": {"operationId": "getJob", "parameters": {"id": "$response.body#/id"}},
    "CancelJob": {"operationId": "cancelJob", "parameters": {"id": "$response.body#/id"}},
    "JobEvents": {"operationId": "jobEvents", "parameters": {"id": "$response.body#/id"}},
}
MULTIPART_BODY = {
    "type": "object",
    "properties": {
        "model": {
            "type": "string",
            "format": "binary",  # any bytes: no value of it is invalid, only an empty one
            "contentMediaType": "application/octet-stream",
            "minLength": 1,
            "description": "the model file (.onnx, .xmodel, ...); any file name, which is "
            "shown back but never used as a path",
        },
        "settings": {
            **_ref("Settings"),
            "description": "the job's settings as JSON (optional; left out: every default)",
        },
    },
    "required": ["model"],
    "additionalProperties": False,
}


def _paths() -> dict[str, Any]:
    return {
        "/v1/info": {
            "get": {
                "operationId": "getInfo",
                "summary": "The agent: board, runners, tool versions, queue, upload limit",
                "responses": {
                    "200": {"description": "agent info", "content": _json("Info", ex.INFO)},
                    "401": UNAUTHORIZED,
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.2 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": UNAUTHORIZED,
                },
            }
        },
        "/v1/jobs": {
            "get": {
                "operationId": "listJobs",
                "summary": "Every job the agent knows (also those finished before a restart)",
                "responses": {
                    "200": {
                        "description": "jobs, oldest first",
                        "content": _json("JobList", {"jobs": [ex.DONE_JOB, ex.TRTEXEC_JOB]}),
                    },
                    "401": UNAUTHORIZED,
                },
            },
            "post": {
                "operationId": "submitJob",
                "summary": "Upload a model and queue a benchmark job",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": MULTIPART_BODY,
                            "encoding": {
                                "model": {"contentType": "application/octet-stream"},
                                "settings": {"contentType": "application/json"},
                            },
                            "examples": {
                                "settings": ex.named(
                                    {"model": "<the model file>", "settings": ex.SETTINGS},
                                    "a model and settings",
                                ),
                                "defaults": ex.named(
                                    {"model": "<the model file>"}, "a model, every default"
                                ),
                            },
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "queued (reused: false)",
                        "content": _json("SubmittedJob", {**ex.QUEUED_JOB, "reused": False}),
                        "links": JOB_LINKS,
                    },
                    "200": {
                        "description": "a queued, running or done job with the same "
                        "client_key (reused: true); the upload is discarded",
                        "content": _json("SubmittedJob", {**ex.DONE_JOB, "reused": True}),
                        "links": JOB_LINKS,
                    },
                    "400": _error(
                        "bad settings (the message names the field), settings that are not a "
                        "JSON object, a missing or empty model part, an unknown or repeated "
                        "part, a malformed multipart body",
                        "400",
                    ),
                    "401": UNAUTHORIZED,
                    "413": _error("the model is larger than max_upload_bytes", "413"),
                    "415": _error("the body is not multipart/form-data", "415"),
                    "503": _error("the agent is stopping", "503"),
                },
            },
        },
        "/v1/jobs/{id}": {
            "parameters": [_job_id()],
            "get": {
                "operationId": "getJob",
                "summary": "One job: state, progress, result or error",
                "responses": {
                    "200": {"description": "the job", "content": _json("Job", ex.DONE_JOB)},
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                },
            },
            "delete": {
                "operationId": "cancelJob",
                "summary": "Cancel a queued or running job (a running tool is killed)",
                "description": "The job stays: GET /v1/jobs/{id} shows it as cancelled.",
                "responses": {
                    "200": {
                        "description": "the cancelled job",
                        "content": _json("Job", ex.CANCELLED_JOB),
                    },
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                    "409": _error("the job is already done, failed or cancelled", "409"),
                },
            },
        },
        "/v1/jobs/{id}/events": {
            "parameters": [_job_id()],
            "get": {
                "operationId": "jobEvents",
                "summary": "Server-Sent Events: job, progress, log, and a final job event",
                "description": (
                    "First 'event: job' with the job view; then 'event: progress' "
                    "{phase, done, total, recent_us} at most ~5 per second (recent_us: latencies "
                    "since the previous progress event, at most 500), 'event: log' {line} for "
                    "tool output; ': ping' comments every second while nothing else is sent; "
                    "a final 'event: job' with the terminal view, then the stream closes. "
                    "Each data line is one-line JSON."
                ),
                "responses": {
                    "200": {
                        "description": "event stream",
                        "content": {"text/event-stream": {"itemSchema": EVENTS}},
                    },
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                },
            },
        },
        "/v1/power/stream": {
            "get": {
                "operationId": "powerStream",
                "summary": "Server-Sent Events: the board's power rails, live, job or no job",
                "description": (
                    "Only on an agent started with --tegrastats (/v1/info `power`). One "
                    "tegrastats runs while any client reads this stream and stops when the last "
                    "leaves (a job samples with its own). 'event: samples' {interval_ms, dropped, "
                    "samples: [{t, rail, mw, rails}]} at most ~5 per second; ': ping' comments "
                    "every second while none come; 'event: end' {reason} if tegrastats stops. "
                    "The stream ends when the client leaves or the agent stops."
                ),
                "responses": {
                    "200": {
                        "description": "event stream",
                        "content": {"text/event-stream": {"itemSchema": RAIL_EVENTS}},
                    },
                    "401": UNAUTHORIZED,
                    "404": _error("this agent measures no power (no --tegrastats)", "404 power"),
                    "503": _error("tegrastats could not be started", "503 power"),
                },
            },
        },
    }


def _with_defaults(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation also documents the catch-all error (500 ``internal error``)."""
    for item in paths.values():
        for key, operation in item.items():
            if key != "parameters":
                operation["responses"]["default"] = _error(
                    'any other error, e.g. 500 {"error": "internal error"} (logged on the agent, '
                    "no details sent)",
                    "default",
                )
    return paths


def openapi_spec(runners: Sequence[str] | None = None) -> dict[str, Any]:
    """A fresh copy of the document (callers may modify it). An agent passes its ``runners``,
    so its document names the only values ``settings.runner`` may take."""
    return copy.deepcopy(
        {
            "openapi": OPENAPI_VERSION,
            "info": {"title": "devlab agent", "version": "1"},
            "components": {
                "schemas": _schemas(runners),
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
            "paths": _with_defaults(_paths()),
        }
    )
