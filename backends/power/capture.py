"""Power capture: which monitor powers which device, live samples, traces, energy per inference.

A monitor, once opened, streams all the time: every batch goes to the Lab's event bus (the
console's Power view), and while a job captures, also into that job's trace file. Energy per
inference is measured like FAI-PEP does: an idle baseline right before the timed window, then
the timed window itself (both windows are devlab's own timestamps), from V x I
(``capture_energy``: the worker calls it around a power job's rounds). An excess over idle
inside the rail's noise (a few milliseconds of a tiny model in a long window) is not an energy:
the row then has no energy per inference and a warning that says how to get one.

    [[power.monitors]]
    powers = "adb:R5CT00000LK"     # the device this monitor powers
    port = "/dev/ttyACM0"          # or serial_number = 12345 (found by USB id and status)
    voltage = 4.2                  # optional: set the output voltage on open
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.core.events import Event, PowerSamples
from backends.devices.base import BenchError
from backends.power.monsoon.discovery import find_monitor
from backends.power.monsoon.driver import Monsoon
from backends.power.monsoon.protocol import MonsoonError
from backends.power.monsoon.stream import SampleBatch, SampleCounts
from backends.power.trace import TraceWriter, block_noise_w, window_stats

log = logging.getLogger(__name__)

POWER_TAIL_S = 0.3  # idle after the timed window, so that its last samples reach the trace
# a window's excess over idle counts as energy when it is this many errors above zero; with the
# error estimated from about 20 block means (19 degrees of freedom), a constant draw passes for
# an energy well under once in a thousand readings
RESOLVE_SIGMAS = 4.0
NOISE_BLOCKS = 20  # block means the baseline is cut into (at most 100 ms each)


@dataclass(frozen=True)
class MonitorLink:
    """One ``[[power.monitors]]`` entry."""

    device_id: str
    port: str | None = None
    serial_number: int | None = None
    voltage: float | None = None


def links_from_config(raw: dict[str, Any]) -> list[MonitorLink]:
    """The ``[[power.monitors]]`` tables of the config; ValueError names what is wrong."""
    links = []
    for index, entry in enumerate(raw.get("power", {}).get("monitors", [])):
        if not isinstance(entry, dict) or not entry.get("powers"):
            raise ValueError(f'[[power.monitors]] #{index + 1}: needs powers = "<device id>"')
        if not entry.get("port") and entry.get("serial_number") is None:
            raise ValueError(f"[[power.monitors]] #{index + 1}: give port or serial_number")
        links.append(
            MonitorLink(
                device_id=str(entry["powers"]),
                port=str(entry["port"]) if entry.get("port") else None,
                serial_number=int(entry["serial_number"]) if entry.get("serial_number") else None,
                voltage=float(entry["voltage"]) if entry.get("voltage") is not None else None,
            )
        )
    return links


def as_power_samples(monitor_id: str, batch: SampleBatch) -> PowerSamples:
    """A ``SampleBatch`` as the Lab's ``PowerSamples`` event (t0 = first sample's time).

    ``PowerSamples`` assumes evenly spaced samples; samples dropped inside the batch shift the
    later ones by the gap (``dropped`` says how many were lost).
    """
    t0 = float(batch.t[0]) if len(batch) else time.time()
    return PowerSamples(
        monitor_id=monitor_id,
        t0=t0,
        interval_s=batch.interval_s,
        watts=tuple(batch.watts.tolist()),
        dropped=batch.dropped,
        volts=float(batch.volts.mean()) if len(batch) else None,
        amps=float(batch.amps.mean()) if len(batch) else None,
    )


class PowerChannel:
    """One open monitor streaming to the event bus, and to every trace file recording it (a
    job's capture and an operator's recording may run at once, from the same samples)."""

    def __init__(self, monitor_id: str, monsoon: Monsoon, publish: Callable[[Event], None]):
        self.monitor_id = monitor_id
        self.monsoon = monsoon
        self._publish = publish
        self._writers: list[TraceWriter] = []
        self._lock = threading.Lock()

    def start(self, on_error: Callable[[MonsoonError], None] | None = None) -> None:
        """Stream from now on; ``on_error`` hears once if the port fails mid-run."""
        self.monsoon.start_sampling(self._on_batch, on_error=on_error)

    @property
    def dropped(self) -> int:
        """Samples lost so far in this channel's run (lost packets, the device's own drops,
        batches a slow consumer missed); the difference over a window is that window's loss."""
        return self.monsoon.counts.dropped

    def _on_batch(self, batch: SampleBatch) -> None:
        if len(batch):
            self._publish(as_power_samples(self.monitor_id, batch))
        with self._lock:
            for writer in self._writers:
                try:
                    writer.write(batch)
                except Exception:  # a full disk stops that trace, not the stream
                    log.exception("%s: writing %s failed", self.monitor_id, writer.path)

    def add_writer(self, writer: TraceWriter) -> None:
        """Every sample from now on goes into ``writer`` too (from the delivery thread)."""
        with self._lock:
            self._writers.append(writer)

    def remove_writer(self, writer: TraceWriter) -> None:
        """No more samples go into ``writer``; the caller closes it."""
        with self._lock:
            if writer in self._writers:
                self._writers.remove(writer)

    @property
    def recording(self) -> tuple[Path, ...]:
        """The trace files every sample goes into now."""
        with self._lock:
            return tuple(writer.path for writer in self._writers)

    def flush(self, writer: TraceWriter) -> int:
        """Write what ``writer`` still buffers, between two batches; the rows now complete in
        its file (a reader stops there: the stream may append while it reads)."""
        with self._lock:
            writer.flush()
            return writer.samples_written

    @contextlib.contextmanager
    def capture(self, path: Path) -> Iterator[Path]:
        """Record every sample into ``path`` (CSV, written in chunks) while the block runs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = TraceWriter(path)
        self.add_writer(writer)
        try:
            yield path
        finally:
            self.remove_writer(writer)
            writer.close()

    def close(self) -> None:
        with contextlib.suppress(MonsoonError):
            self.monsoon.stop_sampling()
        self.monsoon.close()


class PowerManager:
    """Opens the monitor that powers a device on first use and keeps it streaming."""

    def __init__(
        self,
        links: list[MonitorLink],
        publish: Callable[[Event], None],
        opener: Callable[[str], Monsoon] = Monsoon,
    ) -> None:
        self.links = {link.device_id: link for link in links}
        self._publish = publish
        self._opener = opener
        self._channels: dict[str, PowerChannel] = {}
        self._lock = threading.Lock()

    def powers(self, device_id: str) -> bool:
        return device_id in self.links

    def streams_rails(self, device_id: str) -> bool:
        """Whether ``device_id``'s own rails stream live to the console (the hub's do)."""
        return False

    def channel_for(self, device_id: str) -> PowerChannel:
        """The streaming channel of the monitor that powers ``device_id``."""
        link = self.links.get(device_id)
        if link is None:
            raise BenchError(
                f"{device_id}: power capture asked, but no monitor powers it; add "
                f'[[power.monitors]] powers = "{device_id}" with its port or serial_number'
            )
        with self._lock:
            channel = self._channels.get(device_id)
            if channel is None:
                channel = self._channels[device_id] = self._open(link)
            return channel

    def _open(self, link: MonitorLink) -> PowerChannel:
        try:
            port = link.port or find_monitor(link.serial_number or 0).port
            monsoon = self._opener(port)
            if link.voltage is not None:
                monsoon.set_voltage(link.voltage)
            monitor_id = f"monsoon:{monsoon.serial_number or port}"
            channel = PowerChannel(monitor_id, monsoon, self._publish)
            channel.start()
            return channel
        except MonsoonError as error:
            raise BenchError(f"power monitor for {link.device_id}: {error}") from error

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            try:
                channel.close()
            except Exception:  # one monitor's teardown never stops the others'
                log.exception("closing %s failed", channel.monitor_id)


@dataclass(frozen=True)
class EnergyWindows:
    """devlab's own timestamps (wall clock) of the idle baseline and the timed window."""

    baseline: tuple[float, float]
    timed: tuple[float, float]
    iterations: int


@dataclass(frozen=True)
class EnergyReading:
    """A power job's figures (``Result.power``) and, when the trace was unusable, why the
    energy is missing from them."""

    power: dict[str, Any]
    warning: str | None = None


def capture_energy(
    channel: PowerChannel,
    trace: Path,
    baseline_s: float,
    timed: Callable[[], int | None],
    wait: Callable[[float, str], None],
    tail_s: float = POWER_TAIL_S,
) -> EnergyReading | None:
    """Record ``trace`` over an idle baseline, the timed window and a short tail, then measure
    energy per inference from it.

    ``wait(seconds, phase)`` idles for the baseline (phase "power baseline") and the tail
    ("power"), honouring cancel; ``timed()`` runs the timed window and returns the iterations
    it timed, or None when the job ended inside it (then there is no reading). The latencies
    stand even when the trace is unusable: the reading then holds the trace path, the dropped
    samples and a warning.
    """
    dropped_before = channel.dropped
    with channel.capture(trace):
        baseline_start = time.time()
        wait(baseline_s, "power baseline")
        timed_start = time.time()
        iterations = timed()
        timed_end = time.time()
        if iterations is None:  # the job ended inside the window: no reading to wait for
            return None
        wait(tail_s, "power")  # the window's last samples arrive
    windows = EnergyWindows((baseline_start, timed_start), (timed_start, timed_end), iterations)
    dropped = channel.dropped - dropped_before
    try:
        power = measure_energy(trace, windows, dropped)
    except BenchError as error:
        partial = {"trace_path": str(trace), "dropped": dropped}
        return EnergyReading(partial, f"energy not measured: {error}")
    return EnergyReading(power, resolution_warning(power))


def excess_error_w(trace: Path, windows: EnergyWindows) -> float:
    """The 1-sigma error of (timed mean - baseline mean), from how much the baseline's block
    means (100 ms, shorter for a short baseline so that there are ``NOISE_BLOCKS``) wander:
    both means carry it, each shrinking with the square root of its length."""
    baseline_s = windows.baseline[1] - windows.baseline[0]
    if baseline_s <= 0:
        return math.nan
    block_s = min(0.1, baseline_s / NOISE_BLOCKS)
    noise_w = block_noise_w(trace, *windows.baseline, block_s=block_s)
    if not math.isfinite(noise_w):
        return math.nan
    timed_s = max(windows.timed[1] - windows.timed[0], 1e-9)
    return noise_w * math.sqrt(block_s / timed_s + block_s / baseline_s)


def resolved(excess_w: float, error_w: float) -> bool:
    """Whether the timed window drew measurably more than idle: an excess above
    ``RESOLVE_SIGMAS`` errors (any positive excess when the baseline was too short to judge)."""
    if not math.isfinite(error_w):
        return excess_w > 0
    return excess_w > RESOLVE_SIGMAS * error_w


def resolution_warning(power: dict[str, Any]) -> str | None:
    """Why a reading has no energy per inference although its trace is fine, with the fix."""
    if power.get("energy_per_inference_mj") is not None:
        return None
    excess_mw = (power["mean_w"] - power["baseline_w"]) * 1000.0
    return (
        f"energy per inference not resolved: the timed window drew {excess_mw:+.2f} mW over "
        f"the idle baseline, inside the rail's noise (±{power['excess_error_w'] * 1000.0:.2f} mW "
        f"at 1 sigma, {power['window_s']:.2f} s window); give more runs (--runs) so the device "
        "works for longer inside the window, and check that the monitor powers this device"
    )


def measure_energy(trace: Path, windows: EnergyWindows, dropped: int = 0) -> dict[str, Any]:
    """Mean power, baseline and net energy per inference (mJ) from a trace, V x I."""
    baseline_w, _, baseline_samples = window_stats(trace, *windows.baseline)
    mean_w, energy_j, samples = window_stats(trace, *windows.timed)
    if samples == 0 or baseline_samples == 0:
        raise BenchError(
            f"{trace}: the power trace has no samples in the "
            f"{'timed' if samples == 0 else 'baseline'} window"
        )
    duration = windows.timed[1] - windows.timed[0]
    # from the means, not energy_j: samples the monitor dropped inside the window are not
    # measured time, and must not read as less energy than idle
    net_j = (mean_w - baseline_w) * duration
    error_w = excess_error_w(trace, windows)
    return {
        "mean_w": mean_w,
        "baseline_w": baseline_w,
        "energy_j": energy_j,
        "net_energy_j": net_j,
        # None when the window's excess over idle is inside the rail's noise (see resolved)
        "energy_per_inference_mj": (
            net_j / max(windows.iterations, 1) * 1000.0
            if resolved(mean_w - baseline_w, error_w)
            else None
        ),
        "excess_error_w": error_w,
        "window_s": duration,
        "baseline_window": list(windows.baseline),
        "timed_window": list(windows.timed),
        "samples": samples,
        "dropped": dropped,
        "trace_path": str(trace),
    }


def record_trace(
    port: str,
    out: Path,
    stop: threading.Event,
    seconds: float | None = None,
    voltage: float | None = None,
    on_batch: Callable[[SampleBatch], None] | None = None,
    opener: Callable[[str], Monsoon] = Monsoon,
) -> SampleCounts:
    """Record a monitor into ``out`` until ``seconds`` pass or ``stop`` is set (``devlab
    power``); ``on_batch`` sees every batch too (a live readout). Returns the run's counts."""
    monsoon = opener(port)
    try:
        if voltage is not None:
            monsoon.set_voltage(voltage)
        with TraceWriter(out) as writer:

            def handle(batch: SampleBatch) -> None:
                writer.write(batch)
                if on_batch is not None:
                    on_batch(batch)

            monsoon.start_sampling(handle)
            stop.wait(seconds)
            return monsoon.stop_sampling()
    finally:
        monsoon.close()
