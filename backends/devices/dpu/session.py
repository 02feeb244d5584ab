"""A devlab job on a ``devlab agent``: the whole round plan submitted as one agent job, its
event stream followed into progress, the rounds handed back one by one.

The agent keeps jobs by a ``client_key`` derived from the devlab job, so a console that
restarts re-attaches to the job still running there, and a job the agent already finished is
never run again. Transient failures (the agent restarting, a flapping link) are retried with
backoff within a time budget; then the job fails naming the agent and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backends.core.records import Device, Job, LayerTime, Model, Stats
from backends.devices.base import (
    BenchError,
    BenchSession,
    IterationCallback,
    LayerProfile,
    SessionInfo,
    Timed,
)
from backends.devices.dpu.client import (
    AgentClient,
    AgentRefused,
    AgentUnreachable,
    with_retries,
)
from backends.measure.rounds import split_runs

log = logging.getLogger(__name__)

TERMINAL_STATES = ("done", "failed", "cancelled")


def client_key(job: Job, part: int) -> str:
    """The agent-side identity of part ``part`` of a devlab job (stable across restarts)."""
    return f"devlab.{job.id}.{job.model.sha256[:12]}.{part}"


class DpuSession(BenchSession):
    """One devlab job on an agent. The first ``run`` submits the whole round plan and returns
    round 1; later calls hand back the other rounds, and calls beyond the plan (more rounds
    asked for by a precision gate) submit one more agent job each."""

    def __init__(
        self, client: AgentClient, device: Device, job: Job, model: Model, retry_s: float
    ) -> None:
        self.client = client
        self.device = device
        self.job = job
        self.model = model
        self.retry_s = retry_s
        self.info = SessionInfo(None, None, f"devlab-agent:{job.runtime}", "")
        self._warmup = job.settings.warmup
        self._done = 0  # iterations the agent reported so far (for keep-alive progress)
        self._rounds: list[Timed] = []
        self._parts = 0
        self._agent_job: str | None = None
        self._outputs: list[np.ndarray] | None = None
        self._extras: dict[str, Any] = {}  # the agent's last result extras (layers, power)

    def warmup(self, iterations: int) -> None:
        """The agent warms up inside its own job (the model lives there, not here)."""
        self._warmup = iterations

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        if not self._rounds:
            plan = self._plan(iterations, min_seconds)
            self._rounds = self._measure(plan, min_seconds, on_iteration)
        return self._rounds.pop(0)

    def _plan(self, iterations: int | None, min_seconds: float | None) -> list[int]:
        if iterations is None:
            raise BenchError(
                f"{self.device.id}: agents run a number of iterations; use --runs, "
                "not --min-seconds"
            )
        if self._parts == 0 and self.job.settings.runs:
            planned = [n for n in split_runs(self.job.settings.runs, self.job.settings.rounds)]
            if planned and planned[0] == iterations:
                return [int(n) for n in planned if n]
        return [iterations]

    def _measure(
        self, plan: list[int], min_seconds: float | None, on_iteration: IterationCallback
    ) -> list[Timed]:
        settings: dict[str, Any] = {
            "runner": self.job.runtime,
            "warmup": self._warmup if self._parts == 0 else 0,
            "rounds": plan,
            "threads": self.job.settings.threads or 1,
            "client_key": client_key(self.job, self._parts),
        }
        if self._parts == 0 and not self.job.settings.skip_parity:
            settings["outputs"] = True  # runners that can (onnxruntime) return them for parity
        self._parts += 1
        recent: list[float] = []
        self._done = 0

        def keep_alive() -> None:  # lets a cancel or shutdown through while we wait
            on_iteration(self._done, recent)

        view = self._submit(settings, keep_alive)
        self._agent_job = view["id"]
        view = self._follow(view, settings, recent, on_iteration, keep_alive)
        if view.get("state") != "done":
            reason = view.get("error") or f"the agent's job ended {view.get('state')}"
            raise BenchError(f"{self.device.id}: {reason}")
        return self._rounds_of(view.get("result") or {})

    def _submit(self, settings: dict[str, Any], keep_alive: Callable[[], None]) -> dict:
        try:
            return with_retries(
                lambda: self.client.submit(Path(self.model.path), settings),
                self.retry_s,
                keep_alive,
            )
        except AgentRefused as error:
            raise BenchError(
                f"{self.device.id} refused {self.model.name}: {error.message}"
            ) from None
        except AgentUnreachable as error:
            raise BenchError(self._unreachable(error, "uploading the model")) from None

    def _follow(
        self,
        view: dict[str, Any],
        settings: dict[str, Any],
        recent: list[float],
        on_iteration: IterationCallback,
        keep_alive: Callable[[], None],
    ) -> dict[str, Any]:
        """Stream the job's events until it ends; reconnect (and re-submit if the agent lost
        the job) within the retry budget."""
        while view.get("state") not in TERMINAL_STATES:
            try:
                for event in self.client.events(view["id"]):
                    if event.kind == "progress":
                        recent.extend(float(x) for x in event.data.get("recent_us", []))
                        self._done = int(event.data.get("done", 0) or 0)
                        on_iteration(self._done, recent)
                    elif event.kind == "job":
                        view = event.data
                    else:
                        keep_alive()
                if view.get("state") in TERMINAL_STATES:
                    break
                view = self._refresh(view, settings, keep_alive)
            except AgentUnreachable:
                view = self._refresh(view, settings, keep_alive)
            except AgentRefused as error:
                raise BenchError(f"{self.device.id}: {error.message}") from None
        return view

    def _refresh(
        self, view: dict[str, Any], settings: dict[str, Any], keep_alive: Callable[[], None]
    ) -> dict[str, Any]:
        """The job's state after the stream broke; a job the agent forgot is submitted again."""

        def fetch() -> dict[str, Any]:
            try:
                return self.client.job(view["id"])
            except AgentRefused as error:
                if error.status != 404:
                    raise
                return self.client.submit(Path(self.model.path), settings)

        keep_alive()
        try:
            fresh = with_retries(fetch, self.retry_s, keep_alive)
        except AgentUnreachable as error:
            raise BenchError(self._unreachable(error, "running the job")) from None
        except AgentRefused as error:
            raise BenchError(f"{self.device.id}: {error.message}") from None
        if fresh.get("state") == "failed" and "restarted" in str(fresh.get("error", "")):
            fresh = with_retries(  # the agent restarted mid-job: run it again there
                lambda: self.client.submit(Path(self.model.path), settings),
                self.retry_s,
                keep_alive,
            )
        self._agent_job = fresh.get("id", self._agent_job)
        return fresh

    def _unreachable(self, error: Exception, doing: str) -> str:
        return (
            f"{self.device.id} stopped answering while {doing} ({error}); gave up after "
            f"{self.retry_s:.0f} s of retries. Results measured before are kept; retry the "
            "job when the agent is back"
        )

    def _rounds_of(self, result: dict[str, Any]) -> list[Timed]:
        self.info = SessionInfo(
            _number(result.get("load_us")),
            _number(result.get("first_inference_us")),
            str(result.get("tool") or self.info.tool),
            str(result.get("tool_version") or ""),
        )
        if result.get("outputs"):
            self._outputs = _decode_outputs(result["outputs"])
        extras = result.get("extras")
        self._extras = extras if isinstance(extras, dict) else {}
        rounds: list[Timed] = []
        for entry in result.get("rounds", []):
            latencies = [float(x) for x in entry.get("latencies_us") or []]
            summary = _stats(entry.get("summary")) if not latencies else None
            if not latencies and summary is None:
                raise BenchError(f"{self.device.id}: the agent returned a round without numbers")
            rounds.append(Timed(latencies, summary))
        if not rounds:
            raise BenchError(f"{self.device.id}: the agent returned no rounds")
        return rounds

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile | None:
        """Per-layer times the agent's runner measured in its own profiled pass (trtexec's
        ``--exportProfile``), or None when its runner has none."""
        rows = self._extras.get("layers")
        if not isinstance(rows, list) or not rows:
            return None
        try:
            layers = [
                LayerTime(str(row["name"]), str(row.get("op_type") or ""), float(row["mean_us"]))
                for row in rows
            ]
        except (KeyError, TypeError, ValueError):
            raise BenchError(
                f"{self.device.id}: the agent's per-layer times are malformed"
            ) from None
        return LayerProfile(layers=layers, forward_stats=None, layers_stats=None)

    def device_power(self) -> dict[str, Any] | None:
        """The board's rail samples over the timed rounds (a Jetson agent with tegrastats)."""
        power = self._extras.get("power")
        return power if isinstance(power, dict) else None

    def outputs(self, feeds: dict[str, Any]) -> list[np.ndarray] | None:
        """The outputs the agent computed for the parity input (the same fixed input devlab's
        parity check uses), or None when its runner returns none."""
        return self._outputs

    def cancel(self) -> None:
        """The operator cancelled: stop the agent's job too (a shutdown leaves it running)."""
        if self._agent_job is None:
            return
        try:
            self.client.cancel(self._agent_job)
        except (AgentRefused, AgentUnreachable) as error:
            log.warning("%s: cancelling agent job %s: %s", self.device.id, self._agent_job, error)


def _decode_outputs(entries: Any) -> list[np.ndarray] | None:
    """Outputs as the agent sends them (shape, dtype, flat data), or None if malformed."""
    try:
        return [
            np.asarray(e["data"], dtype=np.dtype(e["dtype"])).reshape(e["shape"]) for e in entries
        ]
    except (KeyError, TypeError, ValueError):
        log.warning("the agent's outputs are malformed; no parity check")
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _stats(data: Any) -> Stats | None:
    """A tool summary from the agent; a tool that prints only a mean gives min = max = None
    upstream, which this record cannot hold, so they fall back to the mean."""
    if not isinstance(data, dict) or _number(data.get("mean")) is None:
        return None
    mean = float(data["mean"])
    count = data.get("count")
    return Stats(
        count=int(count) if isinstance(count, int | float) and count else 1,
        min=_number(data.get("min")) or mean,
        mean=mean,
        median=_number(data.get("median")),
        p90=_number(data.get("p90")),
        p99=_number(data.get("p99")),
        max=_number(data.get("max")) or mean,
        std=_number(data.get("std")),
        cv=_number(data.get("cv")),
    )
