"""Shared helpers: a real SQLite store in tmp_path and small record factories."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.records import Job, JobSettings, Model, Result
from backends.stats import summarize
from backends.store import Store

MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


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


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "out" / "devlab.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    opened = Store(store_path)
    yield opened
    opened.close()
