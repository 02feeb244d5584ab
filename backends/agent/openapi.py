"""The OpenAPI 3.0 description of the agent's API (v1), served at ``GET /v1/openapi.json``.

Kept next to the handlers and checked by the tests: every response they see must match it.
"""

from __future__ import annotations

import copy
from typing import Any

from backends.agent.settings import (
    MAX_ROUND_ITERATIONS,
    MAX_ROUNDS,
    MAX_SECONDS,
    MAX_THREADS,
    MAX_WARMUP,
)

STATES = ["queued", "running", "done", "failed", "cancelled"]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


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

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STRING}),
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
            "queue": _obj({"running": _nullable(STRING), "waiting": INTEGER}),
            "max_upload_bytes": INTEGER,
        }
    ),
    "Settings": _obj(
        {
            "runner": {"type": "string", "description": "one of the agent's runners"},
            "warmup": {"type": "integer", "minimum": 0, "maximum": MAX_WARMUP, "default": 10},
            "rounds": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ROUNDS,
                "default": [50],
                "items": {"type": "integer", "minimum": 1, "maximum": MAX_ROUND_ITERATIONS},
            },
            "threads": {"type": "integer", "minimum": 1, "maximum": MAX_THREADS, "default": 1},
            "seconds": _nullable(
                {
                    "type": "number",
                    "exclusiveMinimum": True,
                    "minimum": 0,
                    "maximum": MAX_SECONDS,
                    "description": "run time of time-based tools (vitis-test-performance)",
                }
            ),
            "outputs": {
                "type": "boolean",
                "default": False,
                "description": "also return the model's outputs for devlab's fixed parity "
                "input (onnxruntime runner), so the console can compare them with its own",
            },
            "client_key": _nullable(
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
    ),
    "Summary": _obj(
        {
            "count": _nullable(INTEGER),
            "min": _nullable(NUMBER),
            "mean": _nullable(NUMBER),
            "median": _nullable(NUMBER),
            "p90": _nullable(NUMBER),
            "p99": _nullable(NUMBER),
            "max": _nullable(NUMBER),
            "std": _nullable(NUMBER),
            "cv": _nullable(NUMBER),
        }
    ),
    "Round": _obj(
        {
            "latencies_us": {"type": "array", "items": NUMBER},
            "summary": {"$ref": REF + "Summary"},
        }
    ),
    "Result": _obj(
        {
            "stats_source": {"type": "string", "enum": ["iterations", "tool summary"]},
            "rounds": {"type": "array", "items": {"$ref": REF + "Round"}},
            "load_us": _nullable(NUMBER),
            "first_inference_us": _nullable(NUMBER),
            "tool": STRING,
            "tool_version": STRING,
            "extras": {
                "type": "object",
                "properties": {
                    "fps": _nullable(NUMBER),
                    "e2e_mean_us": _nullable(NUMBER),
                    "dpu_mean_us": _nullable(NUMBER),
                    "threads": _nullable(INTEGER),
                },
                "required": ["fps", "e2e_mean_us", "dpu_mean_us", "threads"],
            },
            "notes": {"type": "array", "items": STRING},
            "outputs": _nullable(
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "shape": {"type": "array", "items": INTEGER},
                            "dtype": STRING,
                            "data": {"type": "array", "items": NUMBER},
                        },
                        "required": ["shape", "dtype", "data"],
                    },
                }
            ),
        }
    ),
    "Progress": _obj(
        {
            "phase": {
                "type": "string",
                "description": "queued, load, warmup, 'round i/n', running, or the final state",
            },
            "done": INTEGER,
            "total": _nullable(INTEGER),
        }
    ),
    "Job": _obj(
        {
            "id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "state": {"type": "string", "enum": STATES},
            "runner": STRING,
            "client_key": _nullable(STRING),
            "settings": {"$ref": REF + "Settings"},
            "model": _obj({"name": STRING, "sha256": STRING, "bytes": INTEGER}),
            "progress": {"$ref": REF + "Progress"},
            "position": _nullable(
                {
                    "type": "integer",
                    "minimum": 1,
                    "description": "place in the waiting line (1 = next)",
                }
            ),
            "result": {"nullable": True, "allOf": [{"$ref": REF + "Result"}]},
            "error": _nullable(STRING),
            "created_at": NUMBER,
            "started_at": _nullable(NUMBER),
            "finished_at": _nullable(NUMBER),
        }
    ),
    "SubmittedJob": {
        "allOf": [
            {"$ref": REF + "Job"},
            _obj({"reused": {"type": "boolean"}}),
        ]
    },
    "JobList": _obj({"jobs": {"type": "array", "items": {"$ref": REF + "Job"}}}),
}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF + schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


def _job_id() -> dict[str, Any]:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
    }


UNAUTHORIZED = _error("missing or wrong bearer token (with WWW-Authenticate: Bearer)")
NOT_FOUND = _error("no job with this id")

PATHS: dict[str, Any] = {
    "/v1/info": {
        "get": {
            "summary": "The agent: board, runners, tool versions, queue, upload limit",
            "responses": {
                "200": {"description": "agent info", "content": _json("Info")},
                "401": UNAUTHORIZED,
            },
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.0 document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "401": UNAUTHORIZED,
            },
        }
    },
    "/v1/jobs": {
        "get": {
            "summary": "Every job the agent knows (also those finished before a restart)",
            "responses": {
                "200": {"description": "jobs, oldest first", "content": _json("JobList")},
                "401": UNAUTHORIZED,
            },
        },
        "post": {
            "summary": "Upload a model and queue a benchmark job",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "model": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "the model file (.onnx, .xmodel, ...)",
                                },
                                "settings": {
                                    "type": "string",
                                    "description": "JSON text of a Settings object (optional)",
                                },
                            },
                            "required": ["model"],
                        }
                    }
                },
            },
            "responses": {
                "201": {"description": "queued (reused: false)", "content": _json("SubmittedJob")},
                "200": {
                    "description": "a queued, running or done job with the same "
                    "client_key (reused: true)",
                    "content": _json("SubmittedJob"),
                },
                "400": _error("bad settings, missing or empty model part, malformed body"),
                "401": UNAUTHORIZED,
                "413": _error("the model is larger than max_upload_bytes"),
                "415": _error("the body is not multipart/form-data"),
                "503": _error("the agent is stopping"),
            },
        },
    },
    "/v1/jobs/{id}": {
        "parameters": [_job_id()],
        "get": {
            "summary": "One job: state, progress, result or error",
            "responses": {
                "200": {"description": "the job", "content": _json("Job")},
                "401": UNAUTHORIZED,
                "404": NOT_FOUND,
            },
        },
        "delete": {
            "summary": "Cancel a queued or running job (a running tool is killed)",
            "responses": {
                "200": {"description": "the cancelled job", "content": _json("Job")},
                "401": UNAUTHORIZED,
                "404": NOT_FOUND,
                "409": _error("the job is already finished"),
            },
        },
    },
    "/v1/jobs/{id}/events": {
        "parameters": [_job_id()],
        "get": {
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
                    "content": {"text/event-stream": {"schema": STRING}},
                },
                "401": UNAUTHORIZED,
                "404": NOT_FOUND,
            },
        },
    },
}


def _with_defaults(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation also documents the catch-all error (500 ``internal error``)."""
    paths = copy.deepcopy(paths)
    for item in paths.values():
        for key, operation in item.items():
            if key != "parameters":
                operation["responses"]["default"] = _error(
                    'any other error, e.g. 500 {"error": "internal error"} (logged on the agent, '
                    "no details sent)"
                )
    return paths


def openapi_spec() -> dict[str, Any]:
    """A fresh copy of the document (callers may modify it)."""
    return copy.deepcopy(
        {
            "openapi": "3.0.3",
            "info": {"title": "devlab agent", "version": "1"},
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
            "paths": _with_defaults(PATHS),
        }
    )
