"""Small record factories shared by the tests (jobs, models and results that need no device)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from backends.core.records import Job, JobSettings, Model, Result
from backends.measure.stats import summarize

MODELS_DIR = Path(__file__).resolve().parents[2] / "assets" / "models"


def fake_model(name: str) -> Model:
    """A Model record for a file that only a test backend "loads"; its name is its identity."""
    return Model(
        path=f"/nonexistent/{name}.onnx",
        name=name,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
    )


def make_job(
    name: str,
    device_id: str = "dev:a",
    priority: int = 0,
    settings: JobSettings | None = None,
) -> Job:
    return Job(
        id=f"job-{name}",
        model=fake_model(name),
        device_id=device_id,
        runtime="rt",
        settings=settings or JobSettings(),
        priority=priority,
    )


def make_result(job_id: str, latencies: list[float] | None = None) -> Result:
    latencies = latencies or [100.0, 110.0, 120.0]
    return Result(
        job_id=job_id,
        latencies_us=latencies,
        stats=summarize(latencies),
        round_sizes=[len(latencies)],
        round_medians_us=[summarize(latencies).median],
        tool="test",
    )
