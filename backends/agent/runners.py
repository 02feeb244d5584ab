"""What a runner is (the agent's plug-in for one benchmark tool) and the ONNX Runtime runner.

A runner's ``run`` is blocking and runs in a worker thread; it reports progress through a
callback (called from that thread) and stops when the ``cancel`` event is set. Tool runners
(subprocesses) are in :mod:`backends.agent.tool_runners`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable  # typing's: a runtime alias below, on Python 3.8

from backends.agent.settings import JobSettingsIn
from backends.measure.stats import summarize

ITERATIONS = "iterations"
TOOL_SUMMARY = "tool summary"
RECENT_LIMIT = 500
PROGRESS_INTERVAL_S = 0.1


class RunnerError(Exception):
    """The benchmark failed; the message is shown to the client as the job's error."""


class RunnerCancelled(Exception):
    """The job was cancelled while the runner worked."""


@dataclass
class ProgressUpdate:
    """One progress report: ``done``/``total`` count within ``phase``; ``recent_us`` are the
    latencies measured since the previous report (at most 500), ``lines`` new tool output."""

    phase: str
    done: int = 0
    total: int | None = None
    recent_us: list[float] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass
class RoundResult:
    latencies_us: list[float]
    summary: dict[str, Any]


@dataclass
class RunnerResult:
    """A finished benchmark, as the job view's ``result`` shows it."""

    stats_source: str
    rounds: list[RoundResult]
    tool: str
    tool_version: str
    load_us: float | None = None
    first_inference_us: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] | None = None  # for the parity input, when asked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunnerResult:
        rounds = [RoundResult(**item) for item in data.get("rounds", [])]
        return cls(**{**data, "rounds": rounds})


ProgressCallback = Callable[[ProgressUpdate], None]


class Runner(ABC):
    """One way of benchmarking a model on this machine."""

    name: str = ""

    @abstractmethod
    def version(self) -> str:
        """The tool's version, or ``"unknown"``; cheap (cached), called for ``/v1/info``."""

    @abstractmethod
    def run(
        self,
        model_path: Path,
        settings: JobSettingsIn,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> RunnerResult:
        """Benchmark ``model_path``; raise RunnerError on failure, RunnerCancelled on cancel."""


MAX_OUTPUT_ELEMENTS = 1_000_000  # outputs sent back for parity; larger ones are skipped


def iteration_summary(latencies_us: list[float]) -> dict[str, Any]:
    """The Stats dict of measured iterations."""
    return summarize(latencies_us).to_dict()


class OnnxRuntimeRunner(Runner):
    """The host CPU through ONNX Runtime: load, first inference, warmup, then timed rounds."""

    name = "onnxruntime"

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def run(
        self,
        model_path: Path,
        settings: JobSettingsIn,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> RunnerResult:
        import onnxruntime as ort

        from backends.models.intake import ModelError, load_model, random_inputs
        from backends.runtimes.ort_session import session_options

        progress(ProgressUpdate("load"))
        try:
            model = load_model(model_path)
        except ModelError as error:
            raise RunnerError(
                f"the uploaded file is not a model ONNX Runtime can run: {error.reason}"
            ) from None
        clock = time.perf_counter_ns
        started = clock()
        try:
            session = ort.InferenceSession(
                str(model_path),
                session_options(settings.threads),
                providers=["CPUExecutionProvider"],
            )
            feeds = random_inputs(model)
            loaded = clock()
            session.run(None, feeds)
        except Exception as error:  # ORT raises its own exception types
            raise RunnerError(f"ONNX Runtime cannot run the model: {error}") from None
        first = clock()
        reporter = _Reporter(progress, cancel)
        reporter.phase("warmup", settings.warmup)
        for done in range(1, settings.warmup + 1):
            session.run(None, feeds)
            reporter.step(done)
        rounds = []
        for index, count in enumerate(settings.rounds, start=1):
            reporter.phase(f"round {index}/{len(settings.rounds)}", count)
            latencies = self._timed(session.run, feeds, count, reporter)
            rounds.append(RoundResult(latencies, iteration_summary(latencies)))
        reporter.flush()
        notes = (
            ["seconds does not apply to onnxruntime: rounds set the iteration counts"]
            if settings.seconds is not None
            else []
        )
        outputs = _parity_outputs(session, model, notes) if settings.outputs else None
        return RunnerResult(
            stats_source=ITERATIONS,
            rounds=rounds,
            tool="onnxruntime-python",
            tool_version=ort.__version__,
            load_us=(loaded - started) / 1e3,
            first_inference_us=(first - loaded) / 1e3,
            extras={
                "fps": None,
                "e2e_mean_us": None,
                "dpu_mean_us": None,
                "threads": settings.threads,
            },
            notes=notes,
            outputs=outputs,
        )

    @staticmethod
    def _timed(run: Callable, feeds: dict, count: int, reporter: _Reporter) -> list[float]:
        clock = time.perf_counter_ns
        latencies: list[float] = []
        for done in range(1, count + 1):
            start = clock()
            run(None, feeds)
            end = clock()
            latencies.append((end - start) / 1e3)
            reporter.step(done, latencies)
        return latencies


def _parity_outputs(session: Any, model: Any, notes: list[str]) -> list[dict[str, Any]] | None:
    """The outputs for devlab's fixed parity input, as JSON, or None (with a note) when they
    are too large to send back."""
    from backends.measure.parity import parity_inputs

    outputs = session.run(None, parity_inputs(model))
    elements = sum(int(out.size) for out in outputs)
    if elements > MAX_OUTPUT_ELEMENTS:
        notes.append(f"outputs not returned: {elements} elements (limit {MAX_OUTPUT_ELEMENTS})")
        return None
    return [
        {"shape": list(out.shape), "dtype": str(out.dtype), "data": out.ravel().tolist()}
        for out in outputs
    ]


class _Reporter:
    """Throttles progress to ~10 reports a second and checks for cancellation each step."""

    def __init__(self, progress: ProgressCallback, cancel: threading.Event) -> None:
        self.progress = progress
        self.cancel = cancel
        self.name = ""
        self.total: int | None = None
        self.done = 0
        self.sent = 0  # how many of the current latencies were already reported
        self.latencies: list[float] = []
        self.next_at = 0.0

    def phase(self, name: str, total: int | None) -> None:
        self.flush()
        self.name, self.total, self.done, self.sent, self.latencies = name, total, 0, 0, []
        self._send()

    def step(self, done: int, latencies: list[float] | None = None) -> None:
        if self.cancel.is_set():
            raise RunnerCancelled()
        self.done = done
        if latencies is not None:
            self.latencies = latencies
        if time.monotonic() >= self.next_at:
            self._send()

    def flush(self) -> None:
        if self.name and (self.sent < len(self.latencies) or self.done):
            self._send()

    def _send(self) -> None:
        recent = self.latencies[max(self.sent, len(self.latencies) - RECENT_LIMIT) :]
        self.sent = len(self.latencies)
        self.progress(ProgressUpdate(self.name, self.done, self.total, list(recent)))
        self.next_at = time.monotonic() + PROGRESS_INTERVAL_S
