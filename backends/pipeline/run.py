"""Running a pipeline's stages against a Lab: host-only stages through a ``HostStages``
(this machine, or a cluster's lab hosts), device stages as ordinary Lab jobs.

A stage starts once every stage it needs is done, at the priority ``plan.stage_priority``
gives it then. A failed stage fails everything downstream of it with ``upstream stage
<label> failed: <reason>``; downstream device stages are recorded in the Lab as failed jobs, so
the result tables show them with that reason next to what was measured. Device jobs keep the
Lab's semantics: queueing the same job again keeps a done result, so a pipeline run again
measures only what is missing.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from backends.core.events import Event, JobCancelled, JobFailed, JobFinished
from backends.core.lab import LabError
from backends.core.lab_api import LabApi
from backends.core.records import Job, JobSettings, JobState, Model, Result
from backends.models.intake import ModelError, load_model
from backends.pipeline.artifacts import quantize_once
from backends.pipeline.plan import (
    ACCURACY,
    FP32,
    PipelineRequest,
    Stage,
    StageState,
    accuracy_settings,
    bench_settings,
    build_stages,
    dependants,
    stage_priority,
)
from backends.quantize.tool import QuantizeError

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often a job's state is read back when no event arrived
HOST_STAGE_THREADS = 2


class StageError(Exception):
    """A stage could not be done; the message is its reason."""


@dataclass
class HostOutcome:
    """What a host-only stage left: the model it wrote (on this machine) and where it ran."""

    path: Path
    host: str
    attempts: int = 1
    notes: list[str] = field(default_factory=list)


class HostStages(Protocol):
    """Runs host-only stages (quantize) somewhere; raises StageError with the reason."""

    def quantize(self, model: Model, request: PipelineRequest, stage_id: str) -> HostOutcome: ...


class LocalHostStages:
    """Host-only stages on this machine, their outputs under ``cache``."""

    def __init__(self, cache: Path, host: str | None = None) -> None:
        self.cache = Path(cache)
        self.host = host or platform.node() or "this machine"

    def quantize(self, model: Model, request: PipelineRequest, stage_id: str) -> HostOutcome:
        try:
            made = quantize_once(
                model.path, model.sha256, request.calibration, request.scheme, request.bits,
                self.cache,
            )  # fmt: skip
        except QuantizeError as error:
            raise StageError(str(error)) from None
        return HostOutcome(made.path, self.host)


@dataclass
class PipelineReport:
    """The stages as they ended and the Lab's rows of their jobs."""

    stages: list[Stage]
    rows: list[tuple[Job, Result | None]]

    @property
    def failed(self) -> list[Stage]:
        return [s for s in self.stages if s.state is not StageState.DONE]

    def result_of(self, stage: Stage) -> Result | None:
        return next((r for j, r in self.rows if j.id == stage.job_id), None)


class PipelineRun:
    """One request's stages, driven to the end against ``lab``."""

    def __init__(
        self,
        lab: LabApi,
        request: PipelineRequest,
        host_stages: HostStages,
        on_stage: Callable[[Stage], None] | None = None,
    ) -> None:
        self.lab = lab
        self.request = request
        self.host_stages = host_stages
        self.on_stage = on_stage or (lambda stage: None)
        self.stages = build_stages(request)
        self._by_id = {stage.id: stage for stage in self.stages}
        self._models = {model.name: model for model in request.models}
        self._int8: dict[str, Model] = {}  # model name -> its quantized model
        self._results: dict[str, Result | None] = {}  # stage id -> its job's result
        self._waiting: dict[str, Stage] = {}  # job id -> device stage
        self._inbox: queue.Queue[tuple[str, str, object]] = queue.Queue()
        self._pool = ThreadPoolExecutor(HOST_STAGE_THREADS, thread_name_prefix="devlab-stage")
        self._lock = threading.Lock()

    # -- driving ---------------------------------------------------------------------------

    def run(self, timeout: float | None = None) -> PipelineReport:
        """Start what is ready, follow it, repeat; returns when every stage has ended.
        TimeoutError when ``timeout`` seconds pass first (jobs keep their queue places)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unsubscribe = self.lab.subscribe(self._on_event)
        try:
            self.lab.discover()
            self.lab.start()
            while True:
                self._start_ready()
                if all(stage.state.finished for stage in self.stages):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the pipeline did not end within {timeout:.0f} s")
                try:
                    kind, key, payload = self._inbox.get(timeout=POLL_S)
                except queue.Empty:
                    self._read_back()
                    continue
                self._handle(kind, key, payload)
        finally:
            unsubscribe()
            self._pool.shutdown(wait=False, cancel_futures=True)
        return PipelineReport(self.stages, self._own_rows())

    def _start_ready(self) -> None:
        for stage in self.stages:
            if stage.state is not StageState.PENDING:
                continue
            needs = [self._by_id[n] for n in stage.needs]
            if any(n.state is not StageState.DONE for n in needs):
                continue
            upstream = {n.id: self._results.get(n.id) for n in needs}
            stage.priority = stage_priority(stage, upstream, self.request)
            stage.state = StageState.RUNNING
            self.on_stage(stage)
            if stage.host_only:
                self._pool.submit(self._host_stage, stage)
            else:
                self._device_stage(stage)

    def _handle(self, kind: str, key: str, payload: object) -> None:
        if kind == "host":
            stage = self._by_id[key]
            if isinstance(payload, HostOutcome):
                self._host_done(stage, payload)
            else:
                self._fail(stage, str(payload))
        elif kind == "job":
            stage = self._waiting.pop(key, None)
            if stage is not None:
                assert isinstance(payload, Job)
                self._job_ended(stage, payload)

    # -- host-only stages ------------------------------------------------------------------

    def _host_stage(self, stage: Stage) -> None:
        """On a pool thread: the stage's outcome (or its reason) goes to the inbox."""
        model = self._models[stage.model]
        try:
            outcome: object = self.host_stages.quantize(model, self.request, stage.id)
        except StageError as error:
            outcome = str(error)
        except Exception as error:  # a broken host stage must still end the stage
            log.exception("host stage %s broke", stage.id)
            outcome = f"{type(error).__name__}: {error}"
        self._inbox.put(("host", stage.id, outcome))

    def _host_done(self, stage: Stage, outcome: HostOutcome) -> None:
        stage.host, stage.attempts = outcome.host, outcome.attempts
        stage.notes += outcome.notes
        stage.artifact = str(outcome.path)
        try:
            self._int8[stage.model] = load_model(outcome.path)
        except ModelError as error:
            self._fail(stage, f"the quantized model cannot be read: {error}")
            return
        self._finish(stage, StageState.DONE)

    # -- device stages ---------------------------------------------------------------------

    def _device_stage(self, stage: Stage) -> None:
        model = self._model_for(stage)
        settings = self._settings_for(stage)
        try:
            job = self.lab.submit(
                model, self.request.device_id, self.request.runtime, settings, stage.priority
            )
        except LabError as error:  # ModelRefused too: that stage only
            self._fail(stage, str(error))
            return
        stage.job_id, stage.attempts = job.id, max(1, job.attempts)
        if job.state.finished:  # measured before: the store kept it
            self._job_ended(stage, job)
            return
        with self._lock:
            self._waiting[job.id] = stage

    def _on_event(self, event: Event) -> None:
        """Any thread: a job ended; the driving loop takes it from the inbox."""
        if isinstance(event, JobFinished | JobFailed | JobCancelled):
            self._inbox.put(("job", event.job.id, event.job))

    def _read_back(self) -> None:
        """No event for a while: ask the Lab which waited-on jobs are no longer pending (an
        event can be missed by a console that reconnected)."""
        with self._lock:
            waiting = dict(self._waiting)
        if not waiting:
            return
        pending = {job.id for job in self.lab.pending()}
        ended = [job_id for job_id in waiting if job_id not in pending]
        if not ended:
            return
        jobs = {job.id: job for job, _ in self.lab.rows() if job.id in ended}
        for job_id in ended:
            if job_id in jobs and jobs[job_id].state.finished:
                self._inbox.put(("job", job_id, jobs[job_id]))

    def _job_ended(self, stage: Stage, job: Job) -> None:
        stage.attempts = max(stage.attempts, job.attempts)
        if job.state is JobState.DONE:
            result = self._result(job.id)
            self._results[stage.id] = result
            if result is not None:  # a lab host's name on a cluster, else the device's id
                stage.host = result.device_properties.get("lab_host") or job.device_id
            if stage.kind == ACCURACY and (result is None or not result.accuracy):
                warnings = "; ".join(result.warnings) if result is not None else "no result"
                self._fail(stage, f"accuracy not evaluated: {warnings}")
                return
            self._finish(stage, StageState.DONE)
        elif job.state is JobState.CANCELLED:
            self._fail(stage, "cancelled")
        else:
            self._fail(stage, job.error or "failed")

    def _result(self, job_id: str) -> Result | None:
        return next((r for j, r in self.lab.rows() if j.id == job_id), None)

    # -- endings ---------------------------------------------------------------------------

    def _finish(self, stage: Stage, state: StageState, error: str | None = None) -> None:
        stage.state, stage.error = state, error
        self.on_stage(stage)

    def _fail(self, stage: Stage, reason: str) -> None:
        """Fail ``stage`` and everything downstream of it, naming it as the cause."""
        self._finish(stage, StageState.FAILED, reason)
        cause = f"upstream stage {stage.label} failed: {reason}"
        for waiting in dependants(self.stages, stage.id):
            if waiting.state.finished:
                continue
            if not waiting.host_only:
                self._record_failure(waiting, cause)
            self._finish(waiting, StageState.FAILED, cause)

    def _record_failure(self, stage: Stage, reason: str) -> None:
        """Put a device stage that cannot run in the Lab's tables with its reason."""
        try:
            job = self.lab.record_failure(
                self._model_for(stage),
                self.request.device_id,
                reason,
                self.request.runtime,
                self._settings_for(stage),
                stage.priority,
            )
            stage.job_id = job.id
        except LabError as error:
            log.warning("could not record %s as failed: %s", stage.id, error)

    # -- helpers ---------------------------------------------------------------------------

    def _model_for(self, stage: Stage) -> Model:
        model = self._models[stage.model]
        if stage.variant == FP32:
            return model
        return self._int8.get(stage.model) or _stand_in(model, stage)

    def _settings_for(self, stage: Stage) -> JobSettings:
        if stage.kind == ACCURACY:
            return accuracy_settings(self.request)
        return bench_settings(self.request)

    def _own_rows(self) -> list[tuple[Job, Result | None]]:
        ids = {stage.job_id for stage in self.stages if stage.job_id}
        return [(job, result) for job, result in self.lab.rows() if job.id in ids]


def _stand_in(model: Model, stage: Stage) -> Model:
    """A record for an int8 model that was never made (its quantize stage failed): named
    after it, keyed apart from the float model's jobs."""
    tag = f"{stage.variant}:{stage.kind}"
    digest = hashlib.sha256(f"pipeline:{tag}:{model.sha256}".encode()).hexdigest()
    return Model(path=f"{model.path}#{tag}", name=f"{model.name}.{stage.variant}", sha256=digest)
