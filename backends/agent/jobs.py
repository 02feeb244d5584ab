"""The agent's job queue: one job runs at a time, the rest wait first in, first out.

Runs happen in a single worker thread so the event loop (HTTP, event streams) stays
responsive; progress comes back with ``call_soon_threadsafe``. Every state change is written
to the job's ``job.json``; at start the records are read back: finished jobs stay available,
jobs that were queued or running become failed (they are never run again behind the client's
back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.agent import jobfiles
from backends.agent.config import AgentConfig
from backends.agent.live import Subscriber
from backends.agent.runners import ProgressUpdate, RunnerCancelled, RunnerError, RunnerResult
from backends.agent.settings import JobSettingsIn

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
REUSABLE = (QUEUED, RUNNING, DONE)
MODEL_FILES = ("model.onnx", "model.xmodel", "model.bin")
RESTART_ERROR = "the agent restarted while this job was {state}; submit it again"
log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    name: str
    sha256: str
    bytes: int


@dataclass
class Job:
    """One benchmark request. ``model_file`` is the file name inside the job's folder."""

    id: str
    settings: JobSettingsIn
    model: ModelInfo
    model_file: str
    folder: Path
    state: str = QUEUED
    progress: dict[str, Any] = field(
        default_factory=lambda: {"phase": "queued", "done": 0, "total": None}
    )
    result: RunnerResult | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    subscribers: set[Subscriber] = field(default_factory=set, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def model_path(self) -> Path:
        return self.folder / self.model_file

    def record(self) -> dict[str, Any]:
        """What ``job.json`` holds (the view without the queue position)."""
        return {
            "id": self.id,
            "state": self.state,
            "runner": self.settings.runner,
            "client_key": self.settings.client_key,
            "settings": self.settings.to_dict(),
            "model": {
                "name": self.model.name,
                "sha256": self.model.sha256,
                "bytes": self.model.bytes,
            },
            "model_file": self.model_file,
            "progress": dict(self.progress),
            "result": self.result.to_dict() if self.result else None,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def view(self, position: int | None) -> dict[str, Any]:
        """The API's job view."""
        view = self.record()
        del view["model_file"]
        view["position"] = position
        return view

    @classmethod
    def from_record(cls, data: dict[str, Any], folder: Path) -> Job:
        result = data.get("result")
        return cls(
            id=data["id"],
            settings=JobSettingsIn.from_dict(data["settings"]),
            model=ModelInfo(**data["model"]),
            model_file=_model_file(data["model_file"]),
            folder=folder,
            state=data["state"],
            progress=data.get("progress") or {"phase": data["state"], "done": 0, "total": None},
            result=RunnerResult.from_dict(result) if result else None,
            error=data.get("error"),
            created_at=float(data["created_at"]),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
        )


def _model_file(name: str) -> str:
    """The stored model's file name, as the agent wrote it (never a path)."""
    if name not in MODEL_FILES:
        raise ValueError(f"unexpected model file name {name!r}")
    return name


class JobNotFound(KeyError):
    pass


class JobFinished(Exception):
    """The job is already done, failed or cancelled."""


class JobQueue:
    """Jobs by id, the waiting line and the single worker. Use on the event loop only."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.root = jobfiles.jobs_root(config.workdir)
        self.jobs: dict[str, Job] = {}
        self.waiting: deque[str] = deque()
        self.running: Job | None = None
        self.closing = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devlab-agent-run")

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._load()
        self._task = asyncio.create_task(self._worker(), name="devlab-agent-queue")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the worker; a running job is killed and left as running on disk, so the next
        start reports it as failed by the restart."""
        self.closing = True
        if self.running is not None:
            self.running.cancel.set()
        self._wake.set()
        self.notify_all()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                log.warning("the running job did not stop within %s s", timeout_s)
        if sys.version_info >= (3, 9):
            self._executor.shutdown(wait=False, cancel_futures=True)
        else:  # Python 3.8 (boards): no cancel_futures; the queue holds no pending work here
            self._executor.shutdown(wait=False)

    def _load(self) -> None:
        records = [(record, self.root / record["id"]) for record in jobfiles.read_jobs(self.root)]
        jobs = []
        for record, folder in records:
            try:
                jobs.append(Job.from_record(record, folder))
            except (KeyError, TypeError, ValueError) as error:
                log.warning("skipping job %s: malformed record (%s)", folder.name, error)
        for job in sorted(jobs, key=lambda j: j.created_at):
            if not job.finished:
                job.error = RESTART_ERROR.format(state=job.state)
                job.state = FAILED
                job.finished_at = time.time()
                job.progress = {**job.progress, "phase": FAILED}
                if not self.config.keep_models:
                    jobfiles.remove_file(job.model_path)
                self._persist(job)
            self.jobs[job.id] = job

    # ---------------------------------------------------------------- requests

    def new_folder(self) -> tuple[str, Path]:
        return jobfiles.new_job_dir(self.root)

    def reusable(self, client_key: str | None) -> Job | None:
        """The newest queued, running or done job submitted with ``client_key``."""
        if client_key is None:
            return None
        for job in reversed(self.jobs.values()):
            if job.settings.client_key == client_key and job.state in REUSABLE:
                return job
        return None

    def submit(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.waiting.append(job.id)
        self._persist(job)
        self._wake.set()

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id) if jobfiles.JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise JobNotFound(job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.finished:
            raise JobFinished(job.state)
        job.cancel.set()
        if job.state == QUEUED:
            self.waiting.remove(job.id)
        self._finish(job, CANCELLED, None)
        return job

    def position(self, job: Job) -> int | None:
        if job.state != QUEUED:
            return None
        try:
            return self.waiting.index(job.id) + 1
        except ValueError:
            return None

    def view(self, job: Job) -> dict[str, Any]:
        return job.view(self.position(job))

    def notify_all(self) -> None:
        for job in self.jobs.values():
            for subscriber in job.subscribers:
                subscriber.wake.set()

    # ---------------------------------------------------------------- worker

    async def _worker(self) -> None:
        while not self.closing:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self.jobs[self.waiting.popleft()]
            if job.state != QUEUED:
                continue
            try:
                await self._run(job)
            except Exception:  # never let one job stop the queue
                log.exception("job %s", job.id)
                if not job.finished:
                    self._finish(job, FAILED, "the agent failed to run this job (see its log)")

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        runner = self.config.runners[job.settings.runner]
        self.running = job
        job.state, job.started_at = RUNNING, time.time()
        job.progress = {"phase": "load", "done": 0, "total": None}
        self._persist(job)
        self._notify(job)

        def progress(update: ProgressUpdate) -> None:  # called from the runner's thread
            with contextlib.suppress(RuntimeError):  # a closed loop: the agent is stopping
                loop.call_soon_threadsafe(self._on_progress, job, update)

        state, result, error = DONE, None, None
        try:
            result = await loop.run_in_executor(
                self._executor, runner.run, job.model_path, job.settings, progress, job.cancel
            )
        except RunnerCancelled:
            state = CANCELLED
        except RunnerError as failure:  # the agent's own folders stay out of the message
            state, error = FAILED, str(failure).replace(str(job.folder), "<job folder>")
        except Exception as failure:  # a bug in a runner must not stop the queue
            log.exception("runner %s crashed on job %s", runner.name, job.id)
            state = FAILED
            error = f"the {runner.name} runner failed unexpectedly: {type(failure).__name__}"
        finally:
            self.running = None
        if self.closing and state == CANCELLED:
            return  # left as running on disk: the next start reports the restart
        if job.state == RUNNING:  # not cancelled by a request meanwhile
            job.result = result
            self._finish(job, state, error)

    def _on_progress(self, job: Job, update: ProgressUpdate) -> None:
        if job.state != RUNNING:
            return
        job.progress = {"phase": update.phase, "done": update.done, "total": update.total}
        for subscriber in job.subscribers:
            subscriber.add_progress(update.recent_us, update.lines)

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        job.state, job.error, job.finished_at = state, error, time.time()
        job.progress = {**job.progress, "phase": state}
        if not self.config.keep_models:
            jobfiles.remove_file(job.model_path)
        self._persist(job)
        self._notify(job)

    def _notify(self, job: Job) -> None:
        for subscriber in job.subscribers:
            subscriber.wake.set()

    def _persist(self, job: Job) -> None:
        try:
            jobfiles.write_job(job.folder, job.record())
        except OSError as error:  # a full disk must not take the agent down
            log.error("cannot save job %s: %s", job.id, error)
