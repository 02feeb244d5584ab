"""DPU boards (and any box) running ``devlab agent``, reached over HTTP: the ``dpu:<url>`` devices.

Agents come from the config file (``[[dpu.endpoints]]``) and, when asked, from zeroconf
browsing. A job becomes one job on the agent: the session uploads the model with the whole
round plan and a ``client_key`` derived from the devlab job, follows the agent's event stream
into progress callbacks, and hands the rounds back one by one. Because the agent keeps jobs by
that key, a console that restarts re-attaches to the job still running there, and a job the
agent already finished is never run again. Transient failures (the agent restarting, a
flapping link) are retried with backoff within a time budget; then the job fails naming the
agent and the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.core.records import Device, DeviceState, Job, Model, Stats
from backends.core.worker import split_runs
from backends.devices.base import (
    BenchError,
    BenchSession,
    Capabilities,
    DeviceBackend,
    IterationCallback,
    SessionInfo,
    Timed,
)
from backends.devices.dpu.client import (
    AgentClient,
    AgentRefused,
    AgentUnreachable,
    normalise_url,
    with_retries,
)

log = logging.getLogger(__name__)

DEVICE_PREFIX = "dpu:"
TERMINAL_STATES = ("done", "failed", "cancelled")


@dataclass
class Endpoint:
    """One agent: where it is and the token it wants."""

    url: str
    token: str | None
    name: str | None = None
    source: str = "config"  # or "zeroconf"

    @property
    def device_id(self) -> str:
        return DEVICE_PREFIX + self.url


@dataclass
class DpuConfig:
    """``[dpu]`` settings; every one has a default."""

    endpoints: list[Endpoint] = field(default_factory=list)
    browse: bool = False  # also list agents announced with zeroconf (_devlab._tcp)
    browse_interfaces: list[str] = field(default_factory=list)  # IPv4 addresses; [] = all
    browse_wait_s: float = 2.0  # how long the first discovery waits for announcements
    token: str | None = None  # token for agents found by browsing
    info_timeout_s: float = 2.0  # how long discovery waits for /v1/info
    retry_s: float = 30.0  # how long a job keeps retrying an agent that stopped answering
    poll_s: float = 3.0  # how often the watch thread checks the agents
    offline_timeout_s: float | None = 300.0  # queued jobs of an offline agent fail after this

    @classmethod
    def from_raw(cls, raw: dict[str, Any], base_dir: Path | None = None) -> DpuConfig:
        """Read ``[dpu]`` and ``[[dpu.endpoints]]``; ValueError names the bad entry."""
        if not isinstance(raw, dict):
            raise ValueError("[dpu] must be a table")
        endpoints = []
        for index, entry in enumerate(raw.get("endpoints", [])):
            where = f"[[dpu.endpoints]] #{index + 1}"
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise ValueError(f'{where}: needs url = "http://HOST:PORT"')
            try:
                url = normalise_url(entry["url"])
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            token = _token(entry, where, base_dir)
            endpoints.append(Endpoint(url, token, entry.get("name")))
        numbers: dict[str, Any] = {}
        for key in ("info_timeout_s", "retry_s", "poll_s", "offline_timeout_s", "browse_wait_s"):
            if key in raw:
                value = raw[key]
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"[dpu] {key} must be a number of seconds >= 0")
                numbers[key] = float(value)
        interfaces = raw.get("browse_interfaces", [])
        if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
            raise ValueError('[dpu] browse_interfaces: a list of addresses, e.g. ["10.0.0.5"]')
        return cls(
            endpoints=endpoints,
            browse=bool(raw.get("browse", False)),
            browse_interfaces=list(interfaces),
            token=_token(raw, "[dpu]", base_dir)
            if ("token" in raw or "token_file" in raw)
            else None,
            **numbers,
        )


def _token(entry: dict[str, Any], where: str, base_dir: Path | None) -> str | None:
    if isinstance(entry.get("token"), str) and entry["token"]:
        return entry["token"]
    if "token_file" in entry:
        path = Path(str(entry["token_file"])).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"{where}: cannot read token_file {path}: {error.strerror}") from None
        if not token:
            raise ValueError(f"{where}: token_file {path} is empty")
        return token
    return None


class DpuBackend(DeviceBackend):
    """Every configured or announced agent is a device; unreachable ones show offline."""

    kind = "dpu"
    supports_canary = False  # each canary run would be a whole upload and agent job
    interleave_rounds = False  # the agent runs a job's rounds as one job of its own

    def __init__(self, config: DpuConfig | None = None) -> None:
        self.config = config or DpuConfig()
        self.offline_timeout_s = self.config.offline_timeout_s
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._browser: Any = None  # an AgentBrowser; False when it could not start
        self._last_states: dict[str, DeviceState] = {}
        self._last_online: dict[str, Device] = {}  # runners stay known while an agent is away

    # -- discovery --------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        """Configured agents, then those announced with zeroconf (when browsing)."""
        configured = {e.url for e in self.config.endpoints}
        announced = [e for e in self._announced_endpoints() if e.url not in configured]
        return self.config.endpoints + announced

    def endpoint(self, device_id: str) -> Endpoint:
        for endpoint in self.endpoints():
            if endpoint.device_id == device_id:
                return endpoint
        raise BenchError(f"{device_id}: no such agent in the config ([[dpu.endpoints]])")

    def discover(self) -> list[Device]:
        self._browse()
        endpoints = self.endpoints()
        if not endpoints:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(endpoints))) as pool:
            probed = list(pool.map(self._probe, endpoints))
        devices = []
        for device in probed:
            known = self._last_online.get(device.id)
            if device.state is DeviceState.ONLINE:
                self._last_online[device.id] = device
            elif known is not None:  # keep what it offered, so jobs can wait for it
                device = Device(
                    device.id,
                    device.kind,
                    known.name,
                    device.state,
                    list(known.runtimes),
                    {**known.properties, **device.properties},
                )
            devices.append(device)
        self._last_states = {d.id: d.state for d in devices}
        return devices

    def _probe(self, endpoint: Endpoint) -> Device:
        """The device an endpoint is now: its /v1/info, or why it is not reachable."""
        name = endpoint.name or endpoint.url
        base = {"url": endpoint.url, "source": endpoint.source}
        if not endpoint.token:
            return Device(
                endpoint.device_id,
                self.kind,
                name,
                DeviceState.UNAUTHORIZED,
                [],
                {
                    **base,
                    "offline_reason": "no token configured for this agent "
                    "(add token or token_file to its [[dpu.endpoints]] entry, or [dpu] token)",
                },
            )
        client = AgentClient(endpoint.url, endpoint.token, self.config.info_timeout_s)
        try:
            info = client.info()
        except AgentRefused as error:
            state = DeviceState.UNAUTHORIZED if error.status == 401 else DeviceState.OFFLINE
            return Device(
                endpoint.device_id,
                self.kind,
                name,
                state,
                [],
                {**base, "offline_reason": f"the agent refused: {error}"},
            )
        except AgentUnreachable as error:
            return Device(
                endpoint.device_id,
                self.kind,
                name,
                DeviceState.OFFLINE,
                [],
                {**base, "offline_reason": str(error)},
            )
        runners = [str(r) for r in info.get("runners", [])]
        default = info.get("default_runner")
        if default in runners:
            runners.remove(default)
            runners.insert(0, default)
        versions = info.get("versions") if isinstance(info.get("versions"), dict) else {}
        properties = {
            **base,
            "board": info.get("board"),
            "agent_kind": info.get("kind"),
            "api": info.get("api"),
            "max_upload_bytes": info.get("max_upload_bytes"),
            **{f"version_{k}": v for k, v in versions.items()},
        }
        return Device(
            endpoint.device_id,
            self.kind,
            endpoint.name or str(info.get("board") or endpoint.url),
            DeviceState.ONLINE,
            runners,
            properties,
        )

    def capabilities(self, device: Device) -> Capabilities:
        return Capabilities(threads=True)

    # -- hot-plug ---------------------------------------------------------------------------

    def watch(self, on_change: Callable[[], None]) -> None:
        """Poll the agents (and browse zeroconf when asked); call back when one comes or goes."""
        if self._watcher is not None:
            return
        if not self.config.endpoints and not self.config.browse:
            return

        def poll() -> None:
            while not self._stop.wait(self.config.poll_s):
                before = dict(self._last_states)
                try:
                    now = {d.id: d.state for d in self.discover()}
                except Exception:
                    log.exception("polling the DPU agents failed")
                    continue
                if now != before:
                    on_change()

        self._watcher = threading.Thread(target=poll, name="devlab-dpu-watch", daemon=True)
        self._watcher.start()

    def _browse(self) -> None:
        """Start zeroconf browsing once ([dpu] browse); the first time, give announcements a
        moment to arrive so a one-shot ``devlab devices`` or ``--run`` sees them."""
        if not self.config.browse or self._browser is not None:
            return
        try:
            from backends.agent.discovery import AgentBrowser

            self._browser = AgentBrowser(self.config.browse_interfaces or None).start()
        except Exception:  # zeroconf missing or no multicast: configured agents still work
            log.exception("zeroconf browsing could not start; configured agents still work")
            self._browser = False
            return
        deadline = time.monotonic() + self.config.browse_wait_s
        while time.monotonic() < deadline and not self._browser.endpoints():
            time.sleep(0.1)

    def _announced_endpoints(self) -> list[Endpoint]:
        if not self._browser:
            return []
        found = []
        for announcement in self._browser.endpoints():
            try:
                url = normalise_url(announcement.url)
            except ValueError:
                continue
            found.append(Endpoint(url, self.config.token, announcement.board or None, "zeroconf"))
        return found

    def close(self) -> None:
        self._stop.set()
        if self._browser:
            self._browser.stop()

    # -- sessions ---------------------------------------------------------------------------

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        endpoint = self.endpoint(device.id)
        if not endpoint.token:
            raise BenchError(f"{device.id}: no token configured for this agent")
        if job.runtime not in device.runtimes:
            raise BenchError(
                f"{device.id} has no runner {job.runtime!r} "
                f"(it offers: {', '.join(device.runtimes) or 'none'})"
            )
        client = AgentClient(endpoint.url, endpoint.token)
        return DpuSession(client, device, job, model, self.config.retry_s)


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
