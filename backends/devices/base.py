"""The contract a device backend fulfils, so phones, sticks and boards only add modules.

A backend discovers its devices and opens *bench sessions*: a model loaded on a device with
a runtime, ready to run timed rounds. The device worker drives sessions round by round
(warmup, rounds of timed runs, optional per-layer profiling) and interleaves the rounds of the
jobs waiting for one device, so a session must stay usable between its rounds. A session that
can hand back its outputs (:meth:`BenchSession.outputs`) gets output parity against host ONNX
Runtime.

What only a kind of device knows stays on its backend class: how it reads its config tables
(:meth:`DeviceBackend.from_config`), whether its ids name a part of this machine
(``machine_local``), what to tell someone who asks for one of its ids that is not there
(:meth:`DeviceBackend.hint_for_unknown`), and advice for a device's state (the
``core.records.STATE_HINT`` property). Front ends and the cluster read these, never ``kind ==``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, List  # typing's: 3.8 (the agent)

from backends.core.records import Capabilities, Device, Job, LayerTime, Model, Stats
from backends.measure.stats import summarize
from backends.runtimes.ort_profile import read_ort_profile

if TYPE_CHECKING:
    from typing import Self

IterationCallback = Callable[[int, List[float]], None]
"""Called after each timed iteration with (iterations done, the latencies so far in us).

It may raise (``JobInterrupted``) to stop the session early; keep it cheap, it sits in the
timed loop.
"""


@dataclass
class Timed:
    """What one round of timed runs measured.

    ``latencies_us`` holds every iteration where the tool reports them (ONNX Runtime in
    process does); tools that print only statistics (TFLite ``benchmark_model``,
    ``onnxruntime_perf_test``) leave it empty and give ``summary`` instead. Nothing is
    invented: a result says which of the two its statistics come from.
    """

    latencies_us: list[float]
    summary: Stats | None = None
    #: The round's start and end on the device's own clock (epoch seconds), where the session
    #: stamps them (a power job synced by beacon: ``backends.power.sync_capture``); else None.
    device_span: tuple[float, float] | None = None
    #: How long the tool says its timed loop took (seconds; its own total, or count x mean),
    #: where a stamped round's tool printed it: the energy window is then the loop's, not the
    #: whole command's (model load, warm-up). None: the tool did not say.
    device_loop_s: float | None = None
    #: How long the tool says it ran before and after its inferences (seconds; SNPE's Init and
    #: De-Init), where it reports that but not its loop: the energy window is then the command
    #: less those two ends. None: the tool did not say.
    device_head_s: float | None = None
    device_tail_s: float | None = None

    @property
    def count(self) -> int:
        return len(self.latencies_us) or (self.summary.count if self.summary else 0)


class JobInterrupted(Exception):
    """Raised from a progress callback when a job is cancelled or the lab shuts down."""


class BenchError(Exception):
    """A benchmark failed for a reason the operator can act on (the message says how)."""


@dataclass
class SessionInfo:
    """What opening a session measured and which tool did the work."""

    load_us: float | None
    first_inference_us: float | None
    tool: str
    tool_version: str
    #: The harness's fixed cost of one call (input binding, output copy, the call itself),
    #: measured on a null model of the same inputs and outputs; None where not measured.
    call_cost_us: float | None = None
    #: What a call costs more when the weights are out of the per-core cache, as inside a
    #: network (``backends/devices/host_cold.py``); None where not measured.
    cold_weights_us: float | None = None


@dataclass
class LayerProfile:
    """Outcome of a separate profiled pass (never mixed into the timed runs)."""

    layers: list[LayerTime]
    forward_stats: Stats | None
    layers_stats: Stats | None
    raw_log_path: str | None = None


def ort_layer_profile(trace_path: str, skip_runs: int = 0) -> LayerProfile:
    """Per-layer and per-run times from an ONNX Runtime profiler trace (the host's and a
    phone's ORT sessions both profile this way): "Layers Time" of a run is the sum of its node
    times, "Forward Propagate" the executor's time, in microseconds."""
    profile = read_ort_profile(trace_path, skip_runs)
    forward, layers = profile.executor_us, profile.layers_us()
    return LayerProfile(
        layers=profile.layer_times(),
        forward_stats=summarize(forward) if forward else None,
        layers_stats=summarize(layers) if layers else None,
        raw_log_path=trace_path,
    )


class BenchSession(ABC):
    """A model loaded on a device, kept alive across rounds."""

    info: SessionInfo
    #: Whether ``run`` takes ``iterations`` and ``min_seconds`` together as two lower bounds
    #: (the worker then sizes rounds by time: ``JobSettings.min_round_s``). Sessions that
    #: take one or the other leave it False.
    calibrates: bool = False

    @abstractmethod
    def warmup(self, iterations: int) -> None:
        """Untimed runs that bring caches, clocks and allocators to a steady state."""

    @abstractmethod
    def run(
        self,
        iterations: int | None,
        min_seconds: float | None,
        on_iteration: IterationCallback,
    ) -> Timed:
        """Timed runs: ``iterations`` of them, or as many as fit ``min_seconds`` (at least one).

        Returns every iteration's latency in microseconds, or the tool's own statistics.
        """

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile | None:
        """Per-layer times from a separate profiled pass; ``None`` where the tool has none."""
        return None

    def device_power(self) -> dict[str, Any] | None:
        """Power the device measured itself over the timed runs (a Jetson's tegrastats rails,
        sampled by its agent), as rail samples and windows (``backends.power.rails``), or None
        where it measures none (the default). The worker asks after the rounds of a power job
        whose device no monitor powers."""
        return None

    def sync_beacon(self) -> float | None:
        """Run the power sync beacon (``backends.power.beacon``) on the device now and return
        its start on the device's own clock (epoch seconds); None where this session cannot
        run one (the default). BenchError says why one that should run did not (the beacon
        tool is missing...): the power job then falls back to the host's windows."""
        return None

    def outputs(self, feeds: Mapping[str, Any]) -> list[Any] | None:
        """The model's outputs (numpy arrays, in graph order) for ``feeds``, as the device
        computes them, for output parity against host ONNX Runtime.

        ``None`` means this session cannot return outputs (the default: a tool that prints
        only timings); the job then records no parity. Raises BenchError when it should
        return them and fails.
        """
        return None

    def cancel(self) -> None:  # noqa: B027 - optional hook, most sessions need nothing
        """The operator cancelled the job: stop work the device does on its own (a remote
        agent's job). Not called when the lab shuts down, so such work can be re-attached."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sessions need nothing
        """Release the model and the device."""


def returns_outputs(session: BenchSession) -> bool:
    """Whether ``session`` implements ``outputs`` (so parity inputs are worth making for it)."""
    return type(session).outputs is not BenchSession.outputs


class DeviceBackend(ABC):
    """One kind of device (host CPU, Android phones, NCS sticks, DPU boards)."""

    kind: str
    #: What every id of this kind starts with (``adb:`` for phones, ``host:`` ...).
    id_prefix: ClassVar[str]
    #: Whether an id of this kind names a part of this machine (``host:cpu``, ``openvino:CPU``,
    #: ``ncs:<usb path>``: the same id means another thing on another machine, so a cluster
    #: worker appends its name), or something unique in the world (a phone's serial, a URL).
    machine_local: ClassVar[bool] = True
    #: Seconds a device of this kind may stay offline before its queued jobs fail with the
    #: reason; None lets them wait for it indefinitely.
    offline_timeout_s: float | None = None
    #: Whether the jobs waiting for one device may share it round by round (their sessions
    #: loaded at once). False where a session's rounds cannot be split (a remote agent job).
    interleave_rounds: bool = True
    #: Whether the reference canary can be measured before each round.
    supports_canary: bool = True

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config_dir: Path | None) -> Self:
        """The backend as the config file sets it up. ``raw`` holds the config tables this kind
        reads (see ``backends.devices.registry``), only those present; relative file names in
        them are relative to ``config_dir``. ValueError names the bad setting."""
        return cls()

    @classmethod
    def hint_for_unknown(cls, device_id: str) -> str | None:
        """What to tell someone who asked for ``device_id`` when no such device is attached,
        if the id is of this kind and there is something to do about it (a config entry)."""
        return None

    def unavailable(self) -> str | None:
        """Why this kind can have no devices in this installation (its pip extra is missing: the
        message says which to install), None when it can. Discovery then finds nothing."""
        return None

    def isolation(self) -> Callable[[], DeviceBackend] | None:
        """A picklable factory that builds this backend again in devlab's measurement process
        (``backends.measure.isolation``), for runtimes that time in-process; None (the
        default) keeps sessions in the worker's process (tools on a phone, board or stick
        time themselves there)."""
        return None

    @abstractmethod
    def discover(self) -> list[Device]:
        """The devices of this kind that are attached now (cheap enough to poll). A device
        whose state needs the operator (unauthorized...) says what to do in its ``STATE_HINT``
        property (``backends.core.records``)."""

    def describe(self, device: Device) -> Device:
        """The device with its properties filled in (may talk to the device)."""
        return device

    def capabilities(self, device: Device, runtime: str | None = None) -> Capabilities:
        """What a job on ``device`` with ``runtime`` may ask for (None: the device's first
        runtime, its default)."""
        return Capabilities()

    def conditions(self, device: Device) -> dict[str, Any]:
        """Device conditions worth recording at the start and end of a job (temperature...)."""
        return {}

    def rail_stream(self, device: Device) -> Callable[[], Iterator[dict[str, Any]]] | None:
        """For a device that measures its own power (a Jetson's agent with tegrastats): what
        opens its live rails, each item one batch ``{"interval_ms", "samples": [{"t", "mw",
        "rail", "rails"}]}`` (``{}`` while none came; a ConnectionError when the link broke);
        the power hub streams it to the Power view (``backends.power.agent_rails``). None: no
        such thing (the default)."""
        return None

    @abstractmethod
    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        """Load ``model`` on ``device`` for ``job.runtime``; raises BenchError on bad input."""

    def watch(self, on_change: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Call ``on_change`` (from any thread) when devices come or go; polling backends
        need not implement it."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Stop background threads; teardown errors of one backend never stop the others."""
