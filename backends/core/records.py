"""The records every part of devlab exchanges: devices, models, jobs, results.

They are plain dataclasses that round-trip through JSON (``to_dict`` / ``from_dict``), so the
store, the tables, the CLI, the TUI and (later) remote workers all speak the same shapes.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

try:
    from enum import StrEnum
except ImportError:  # Python < 3.11: the board agent (docs/agent-board.md) imports this module

    class StrEnum(str, enum.Enum):
        """What devlab relies on of enum.StrEnum: members are strings, str() is the value."""

        def __str__(self) -> str:
            return str(self.value)


class DeviceState(StrEnum):
    ONLINE = "online"
    BUSY = "busy"
    OFFLINE = "offline"
    UNAUTHORIZED = "unauthorized"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class MonitorState(StrEnum):
    OPENING = "opening"
    CONNECTED = "connected"
    RECORDING = "recording"
    FAILED = "failed"
    AVAILABLE = "available"  # found on this machine, not configured: not opened
    CLOSED = "closed"

    @property
    def streaming(self) -> bool:
        return self in (MonitorState.CONNECTED, MonitorState.RECORDING)


#: A ``Device.properties`` key: advice for the device's state, filled by its backend ("accept the
#: prompt on the phone"); front ends show it as it is.
STATE_HINT = "state_hint"


@dataclass
class Capabilities:
    """What a job on one device, with one runtime, may ask for: the front ends offer only that
    (the Add dialog greys out per-layer profiling or a thread count that would be ignored).

    ``per_layer``: the session has a profiled pass (``BenchSession.profile_layers``, in
    ``backends.devices.base``). ``threads``: the runtime honours ``JobSettings.threads``. The
    runtimes themselves are ``Device.runtimes``. ``power_capture``: the device measures its own
    power with the runtime (a Jetson agent's trtexec with tegrastats); a Monsoon wired to a
    device is the power config's to say, not the device's. ``extras`` is free-form and read by
    nobody.
    A backend answers with ``DeviceBackend.capabilities``; the Lab keeps the answers on the
    ``Device`` record, so they travel with it (to a console, across a cluster).
    """

    per_layer: bool = False
    power_capture: bool = False
    threads: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Device:
    """A benchmark target. ``id`` is stable across restarts (``host:cpu``, ``adb:<serial>``).

    ``capabilities`` maps each of its runtimes to what a job with that runtime may ask for,
    as its backend said when the Lab discovered it; a runtime missing there is unknown (a
    record from before devlab carried them), and nothing is refused on its account.
    """

    id: str
    kind: str
    name: str
    state: DeviceState = DeviceState.ONLINE
    runtimes: list[str] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Capabilities] = field(default_factory=dict)

    def capabilities_for(self, runtime: str | None = None) -> Capabilities | None:
        """What a job with ``runtime`` (None: the device's default, its first) may ask for;
        None when unknown."""
        if runtime is None:
            runtime = self.runtimes[0] if self.runtimes else None
        return self.capabilities.get(runtime) if runtime is not None else None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Device:
        capabilities = {
            runtime: Capabilities(**caps) for runtime, caps in data.get("capabilities", {}).items()
        }
        return cls(
            **{
                **data,
                "state": DeviceState(data.get("state", "online")),
                "capabilities": capabilities,
            }
        )


@dataclass(frozen=True)
class PowerMonitor:
    """A power monitor as the front ends list it: one ``[[power.monitors]]`` entry
    (``configured``) or one found on this machine. ``id`` never changes once shown (it names the
    ``PowerSamples`` batches); ``error`` says why a failed monitor is not streaming and
    ``recording`` is the trace file being recorded, if any."""

    id: str
    port: str | None = None
    serial_number: int | None = None
    powers: str | None = None  # the device it powers
    state: MonitorState = MonitorState.CLOSED
    error: str | None = None
    voltage: float | None = None  # the output voltage set on the unit
    recording: str | None = None
    configured: bool = True

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PowerMonitor:
        return cls(**{**data, "state": MonitorState(data.get("state", "closed"))})


@dataclass
class ModelInput:
    name: str
    shape: list[int]
    dtype: str


@dataclass
class Model:
    """An ONNX model as devlab knows it; ``sha256`` of the file bytes is its identity."""

    path: str
    name: str
    sha256: str
    inputs: list[ModelInput] = field(default_factory=list)
    opset: int | None = None
    parameters: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    uid: str | None = None  # a ModuleUID the model file declares (search-space modules)

    @property
    def module_uid(self) -> str:
        """nnabla-nas ModuleUID: the one the file declares, else ``name[[1,3,32,32],...]``."""
        if self.uid:
            return self.uid
        shapes = ",".join("[" + ",".join(str(d) for d in i.shape) + "]" for i in self.inputs)
        return f"{self.name}[{shapes}]"

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Model:
        inputs = [ModelInput(**i) for i in data.get("inputs", [])]
        return cls(**{**data, "inputs": inputs})


@dataclass
class JobSettings:
    """How to measure. Timed runs are ``runs`` iterations, or as many as fit ``min_seconds``.

    ``rounds`` splits the timed runs into rounds: a device worker interleaves the rounds of
    the jobs waiting for it, so a slow phase of the machine spreads over all of them. The
    headline median is the median (or, with ``round_stat = "min"``, the minimum) of the round
    medians; the precision gate adds rounds until its bootstrap interval is within
    ``precision_pct`` or a cap is hit; a reference canary measured before each round gives a
    drift-normalised figure; parity compares one output with host ONNX Runtime's.
    """

    warmup: int = 10
    runs: int | None = 100
    min_seconds: float | None = None
    threads: int | None = 1
    rounds: int = 5
    round_stat: str = "median"  # or "min": the headline from the round medians
    # a round that the runtime can calibrate lasts at least this long (as many runs as fit,
    # never fewer than planned), so a 15 us model gets thousands of samples per round
    min_round_s: float = 0.2
    pin: int | None = None  # the CPU core the measurement process is pinned to
    precision_pct: float = 2.0  # 0 turns the precision gate off
    max_rounds: int = 15  # the gate never runs more rounds than this in all
    precision_time_cap_s: float = 60.0  # nor spends longer than this on extra rounds
    skip_canary: bool = False
    skip_parity: bool = False
    per_layer: bool = False
    profile_runs: int = 20
    settle_c: float | None = None  # wait until the battery is within this of its idle temp
    settle_timeout_s: float = 300.0
    power: bool = False  # capture power with the monitor that powers the device
    power_baseline_s: float = 2.0  # idle baseline recorded right before the timed window
    # how a power job's windows meet the trace: "windows" (the host's timestamps) or "beacon"
    # (device-stamped rounds placed by sync beacons; docs/power-sync.md)
    power_sync: str = "windows"
    # with "beacon": a beacon before and after the job ("job") or before every round and
    # after the last ("round": drift resolved from more beacons; docs/power-sync.md)
    power_beacons: str = "job"
    # with "beacon": "queue" also records one trace over the device's queue of such jobs and
    # fits the clock over all their beacons (drift resolved; docs/power-sync.md)
    power_capture: str = "job"
    perf_profile: str | None = None  # SNPE --perf_profile (burst, high_performance...)
    clip_ranges: str | None = None  # MQBench/SNPE clip-range JSON: --quantization_overrides
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    accuracy_set: str | None = None  # an evaluation set (backends/accuracy): --accuracy

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Job:
    """One model on one device with one runtime. Lower ``priority`` runs first, then FIFO."""

    id: str
    model: Model
    device_id: str
    runtime: str
    settings: JobSettings = field(default_factory=JobSettings)
    priority: int = 0
    state: JobState = JobState.QUEUED
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(
            **{
                **data,
                "model": Model.from_dict(data["model"]),
                "settings": JobSettings.from_dict(data.get("settings", {})),
                "state": JobState(data.get("state", "queued")),
            }
        )


@dataclass
class Stats:
    """Summary of a latency sample, in microseconds (``cv`` is std / mean, unitless).

    Computed from every iteration, the fields are all set; taken from a tool that prints only
    some of them, the others are None rather than guessed.
    """

    count: int
    min: float
    mean: float
    median: float | None
    p90: float | None
    p99: float | None
    max: float
    std: float | None
    cv: float | None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class LayerTime:
    """Mean time of one layer (ONNX node) over the profiled runs, in microseconds."""

    name: str
    op_type: str
    mean_us: float


@dataclass
class Result:
    """What one finished job measured. ``latencies_us`` keeps every timed iteration raw, in
    order; ``round_sizes`` says how many of them each round took.

    ``stats`` summarise the timed runs (the tool's end-to-end inference time, the
    nnabla-nas "Total Inference Time"); ``forward_stats`` is the runtime's forward time
    ("Forward Propagate"): the timed runs less ``call_cost_us`` (the fixed per-call cost,
    measured on a null model) plus ``cold_weights_us`` (what a call costs more with its
    weights out of the per-core cache, as inside a network) where the session measured it,
    else from a separate profiled pass where the tool offers one, like ``layers_stats``
    ("Layers Time").
    """

    job_id: str
    latencies_us: list[float]
    stats: Stats
    stats_source: str = "iterations"  # or "tool summary" when the tool reports no iterations
    round_sizes: list[int] = field(default_factory=list)
    round_medians_us: list[float] = field(default_factory=list)
    forward_stats: Stats | None = None
    layers_stats: Stats | None = None
    layers: list[LayerTime] = field(default_factory=list)
    call_cost_us: float | None = None
    cold_weights_us: float | None = None
    load_us: float | None = None
    first_inference_us: float | None = None
    tool: str = ""
    tool_version: str = ""
    device_properties: dict[str, Any] = field(default_factory=dict)
    conditions_start: dict[str, Any] = field(default_factory=dict)
    conditions_end: dict[str, Any] = field(default_factory=dict)
    raw_log_path: str | None = None
    power: dict[str, Any] | None = None  # mean_w, baseline_w, energy_per_inference_mj, trace
    warnings: list[str] = field(default_factory=list)  # later steps that failed; kept numbers
    # Trustworthy numbers: the reference canary measured just before each round, its long-run
    # median on this device, the drift-normalised headline, the precision gate's bootstrap
    # interval of the headline, and output parity against host ONNX Runtime.
    round_canary_us: list[float | None] = field(default_factory=list)
    canary_reference_us: float | None = None
    # the large-footprint reference paired in the same rounds, its long-run median, and the
    # weight of the blend the rounds were divided by (0: the small canary alone; panel.py)
    round_canary_large_us: list[float | None] = field(default_factory=list)
    canary_large_reference_us: float | None = None
    reference_large_weight: float | None = None
    normalised_median_us: float | None = None
    # the figure to quote: the normalised median unless normalising made the rounds clearly
    # noisier (then the raw one); ``headline_basis`` says which and why
    headline_us: float | None = None
    headline_basis: str | None = None
    ci_low_us: float | None = None
    ci_high_us: float | None = None
    ci_half_width_pct: float | None = None
    converged: bool | None = None
    extra_rounds: int = 0
    parity: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    # the evaluation set's scores on this device (backends.accuracy.score.AccuracyReport)
    accuracy: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        def stats(key: str) -> Stats | None:
            return Stats(**data[key]) if data.get(key) else None

        return cls(
            **{
                **data,
                "stats": Stats(**data["stats"]),
                "forward_stats": stats("forward_stats"),
                "layers_stats": stats("layers_stats"),
                "layers": [LayerTime(**layer) for layer in data.get("layers", [])],
            }
        )


def _plain(record: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with enums turned into their values (JSON-ready)."""
    return json.loads(json.dumps(dataclasses.asdict(record), default=_enum_value))


def _enum_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON-serialisable: {value!r}")
