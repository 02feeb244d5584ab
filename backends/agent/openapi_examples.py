"""Examples for the agent's OpenAPI document: real values of every request and response.

They are part of the contract: the tests validate each one against its schema, and schemathesis
sends the request examples as its first test cases.
"""

from __future__ import annotations

from typing import Any

JOB_ID = "4e4ff0764ec3cdd2"

SETTINGS = {"rounds": [3, 3], "warmup": 2, "client_key": "nightly-42"}

QUEUED_JOB: dict[str, Any] = {
    "id": JOB_ID,
    "state": "queued",
    "runner": "onnxruntime",
    "client_key": "nightly-42",
    "settings": {
        "runner": "onnxruntime",
        "warmup": 2,
        "rounds": [3, 3],
        "threads": 1,
        "seconds": None,
        "client_key": "nightly-42",
        "outputs": False,
    },
    "model": {"name": "mlp.onnx", "sha256": "3abd2063" + "0" * 56, "bytes": 1062541},
    "progress": {"phase": "queued", "done": 0, "total": None},
    "position": 1,
    "result": None,
    "error": None,
    "created_at": 1795456887.52,
    "started_at": None,
    "finished_at": None,
}

RESULT: dict[str, Any] = {
    "stats_source": "iterations",
    "rounds": [
        {
            "latencies_us": [131.6, 59.6, 40.7],
            "summary": {
                "count": 3,
                "min": 40.7,
                "mean": 77.3,
                "median": 59.6,
                "p90": 117.2,
                "p99": 130.2,
                "max": 131.6,
                "std": 39.2,
                "cv": 0.51,
            },
        }
    ],
    "load_us": 12011.1,
    "first_inference_us": 511.3,
    "tool": "onnxruntime-python",
    "tool_version": "1.32.0",
    "extras": {"fps": None, "e2e_mean_us": None, "dpu_mean_us": None, "threads": 1},
    "notes": [],
    "outputs": None,
}

DONE_JOB: dict[str, Any] = {
    **QUEUED_JOB,
    "state": "done",
    "progress": {"phase": "done", "done": 3, "total": 3},
    "position": None,
    "result": RESULT,
    "started_at": 1795456887.61,
    "finished_at": 1795456888.02,
}

TRTEXEC_RESULT: dict[str, Any] = {
    **RESULT,
    "rounds": [
        {
            "latencies_us": [412.0, 405.3, 409.8],
            "summary": {
                "count": 3,
                "min": 405.3,
                "mean": 409.0,
                "median": 409.8,
                "p90": 411.6,
                "p99": 412.0,
                "max": 412.0,
                "std": 2.8,
                "cv": 0.007,
            },
        }
    ],
    "load_us": None,
    "first_inference_us": None,
    "tool": "trtexec",
    "tool_version": "8.6.2",
    "extras": {
        "fps": 2431.5,
        "gpu_compute_mean_us": 398.1,
        "e2e_mean_us": None,
        "dpu_mean_us": None,
        "threads": 1,
        "precision": "fp16",
        "engine": "3f9a0c1b2d4e5f60.engine",
        "engine_built": False,
        "layers": [
            {"name": "/conv1/Conv + /relu1/Relu", "op_type": "Conv", "mean_us": 121.4},
            {"name": "/fc/Gemm", "op_type": "Gemm", "mean_us": 35.2},
        ],
        "profile_runs": 10,
        "power": {
            "source": "tegrastats",
            "interval_ms": 100,
            "rail": "VDD_IN",
            "t": [1795456887.70, 1795456887.80, 1795456887.90, 1795456888.00],
            "mw": [4811.0, 4795.0, 7402.0, 7388.0],
            "rails": {
                "VDD_IN": [4811.0, 4795.0, 7402.0, 7388.0],
                "VDD_CPU_GPU_CV": [652.0, 648.0, 2750.0, 2761.0],
            },
            "warnings": [],
            "baseline_window": [1795456887.70, 1795456887.85],
            "timed_windows": [[1795456887.86, 1795456888.02]],
            "iterations": 3,
        },
    },
    "notes": [],
}

TRTEXEC_JOB: dict[str, Any] = {
    **QUEUED_JOB,
    "id": "9b1d2e3f4a5b6c7d",
    "runner": "trtexec",
    "client_key": None,
    "settings": {**QUEUED_JOB["settings"], "runner": "trtexec", "rounds": [3], "client_key": None},
    "model": {"name": "mnv2.onnx", "sha256": "5e0c11aa" + "0" * 56, "bytes": 9012644},
    "state": "done",
    "progress": {"phase": "done", "done": 3, "total": 3},
    "position": None,
    "result": TRTEXEC_RESULT,
    "started_at": 1795456887.61,
    "finished_at": 1795456888.40,
}

CANCELLED_JOB: dict[str, Any] = {
    **QUEUED_JOB,
    "state": "cancelled",
    "progress": {"phase": "cancelled", "done": 0, "total": None},
    "position": None,
    "finished_at": 1795456888.02,
}

INFO: dict[str, Any] = {
    "api": 1,
    "board": "zcu104-a",
    "kind": "dpu",
    "runners": ["xdputil", "onnxruntime"],
    "default_runner": "xdputil",
    "versions": {
        "devlab": "0.1.0",
        "python": "3.11.7",
        "xdputil": "unknown",
        "onnxruntime": "1.32.0",
    },
    "queue": {"running": None, "waiting": 0},
    "max_upload_bytes": 536870912,
    "power": None,
}

PROGRESS_EVENT = {"phase": "round 1/2", "done": 3, "total": 3, "recent_us": [131.6, 59.6, 40.7]}
LOG_EVENT = {"line": "I0617 10:35:56.799910  1962 performance_test.hpp:76] 10% ..."}

ERRORS: dict[str, str] = {
    "400": "settings.warmup must be between 0 and 100000, got -1",
    "401": "missing bearer token: send 'Authorization: Bearer <token>'",
    "404": "no such job on this agent",
    "409": "the job is already done; nothing to cancel",
    "413": "the upload is larger than this agent's limit of 536870912 bytes",
    "415": "POST /v1/jobs takes multipart/form-data with the parts 'model' (the file) and "
    "'settings' (JSON)",
    "503": "the agent is stopping",
    "404 power": "this agent measures no power: start it with --tegrastats PATH",
    "503 power": "cannot start /usr/bin/tegrastats: Permission denied",
    "default": "internal error",
}


def named(value: Any, summary: str) -> dict[str, Any]:
    """One entry of an ``examples`` map."""
    return {"summary": summary, "value": value}
