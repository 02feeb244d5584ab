"""Power capture: a channel's dropped samples, the energy windows around a power job, and
energy per inference end to end (a virtual phone powered by a virtual Monsoon on a pty).

End to end, the Monsoon draws ``active_w`` while a benchmark tool runs on the phone and
``baseline_w`` otherwise. devlab must report a net energy per inference within 5% of what that
waveform implies for the time the phone was loaded inside devlab's timed window.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backends.core.events import Event, JobCancelled, JobProgress, PowerSamples
from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState
from backends.core.store import Store
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.models.intake import load_model
from backends.power.capture import (
    EnergyWindows,
    MonitorLink,
    PowerChannel,
    PowerManager,
    as_power_samples,
    capture_energy,
    measure_energy,
    resolution_warning,
)
from backends.power.monsoon.driver import Monsoon
from backends.power.monsoon.stream import SampleBatch, SampleCounts
from backends.power.trace import TraceWriter
from backends.virtual.monsoon import VirtualMonsoon
from backends.virtual.registry import phone_load
from support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
BASELINE_W, ACTIVE_W = 0.6, 2.4
RUNS = 2000  # about 2 s of load: edge effects of a busy machine stay far below 5%


WAIT_S = 15.0


@pytest.fixture
def streaming() -> Iterator[tuple[VirtualMonsoon, PowerChannel, list[Event]]]:
    """A virtual Monsoon on a pty (constant 0.5 W) and the manager's streaming channel to it."""
    events: list[Event] = []
    with VirtualMonsoon(serial_number=777, baseline_w=0.5, noise_w=0.005) as sim:
        manager = PowerManager([MonitorLink("adb:phone", port=sim.port)], events.append)
        try:
            channel = manager.channel_for("adb:phone")
            assert wait_until(lambda: channel.monsoon.counts.received > 0, WAIT_S)
            yield sim, channel, events
        finally:
            manager.close()


def drop_and_wait(sim: VirtualMonsoon, channel: PowerChannel, packets: int) -> None:
    """Drop ``packets`` measurement packets and wait until the driver has counted them."""
    target = channel.dropped + packets * 15
    sim.drop_packets(packets)
    assert wait_until(lambda: channel.dropped >= target, WAIT_S), "the drop was not counted"
    assert channel.dropped == target


def test_as_power_samples() -> None:
    batch = SampleBatch(
        t=np.array([10.0, 10.0002]),
        amps=np.array([0.1, 0.2]),
        volts=np.array([4.0, 4.0]),
        watts=np.array([0.4, 0.8]),
        received=2,
        dropped=3,
        garbage_bytes=0,
        interval_s=0.0002,
        counts=SampleCounts(),
    )
    event = as_power_samples("monsoon:12345", batch)
    assert event == PowerSamples(
        "monsoon:12345", 10.0, 0.0002, (0.4, 0.8), dropped=3, volts=4.0, amps=pytest.approx(0.15)
    )


def test_power_channel_counts_the_samples_its_monitor_lost(streaming) -> None:
    sim, channel, events = streaming
    assert channel.monitor_id == "monsoon:777"
    assert channel.dropped == 0
    drop_and_wait(sim, channel, 3)
    assert channel.dropped == sim.counters()["injected_dropped_samples"] == 45
    # the batch that carries the gap reaches subscribers a moment after the driver counts it
    wait_until(
        lambda: any(isinstance(event, PowerSamples) and event.dropped for event in list(events)),
        WAIT_S,
        what="a PowerSamples batch that reports the dropped samples",
    )


def test_capture_energy_measures_both_windows_and_the_drops_inside_them(
    streaming, tmp_path: Path
) -> None:
    sim, channel, _ = streaming
    drop_and_wait(sim, channel, 1)  # lost before the capture: not this job's
    phases: list[str] = []

    def wait(seconds: float, phase: str) -> None:
        phases.append(phase)
        time.sleep(seconds)

    def timed() -> int:
        time.sleep(0.3)
        drop_and_wait(sim, channel, 2)
        time.sleep(0.2)
        return 100

    trace = tmp_path / "job" / "power.csv"
    reading = capture_energy(channel, trace, 0.5, timed, wait, tail_s=0.3)
    assert reading is not None
    power = reading.power
    assert phases == ["power baseline", "power"]
    assert power["dropped"] == 30
    assert power["trace_path"] == str(trace) and trace.is_file()
    assert power["baseline_w"] == pytest.approx(0.5, rel=0.05)
    assert power["mean_w"] == pytest.approx(0.5, rel=0.05)
    baseline, timed_window = power["baseline_window"], power["timed_window"]
    assert baseline[0] < baseline[1] == timed_window[0] < timed_window[1]
    assert power["window_s"] == pytest.approx(timed_window[1] - timed_window[0])
    assert power["samples"] > 0
    # a constant draw: the timed window costs no more than the baseline, which is no energy
    # per inference (not a small or negative one) and a warning that says how to get one
    assert abs(power["net_energy_j"]) < 0.05 * power["energy_j"]
    assert power["energy_per_inference_mj"] is None
    assert reading.warning is not None and "not resolved" in reading.warning
    assert "--runs" in reading.warning


def write_rail(path: Path, watts: np.ndarray, rate_hz: float = 5000.0) -> None:
    """A trace at 4 V whose samples draw ``watts``, one per 1/rate_hz s from t = 0."""
    t = np.arange(watts.size) / rate_hz
    with TraceWriter(path) as writer:
        writer.write_arrays(t, watts / 4.0, np.full(watts.size, 4.0), watts)


@pytest.mark.parametrize(
    ("excess_w", "wander_w", "resolved"),
    [
        (0.02, 0.0, True),  # 20 mW for 1 s over a 5 mW-noise rail: plain energy
        (0.0, 0.0, False),  # a constant draw
        (-0.001, 0.0, False),  # less than idle: never a negative energy per inference
        # 2 mW over a rail whose 100 ms means wander by 10 mW (a slow 3.3 Hz swing): a
        # per-sample error would call it resolved; the wander makes it noise
        (0.002, 0.01, False),
    ],
)
def test_energy_per_inference_only_when_the_excess_stands_out_of_the_rails_noise(
    tmp_path: Path, excess_w: float, wander_w: float, resolved: bool
) -> None:
    rate = 5000.0
    rng = np.random.default_rng(3)
    t = np.arange(int(3.0 * rate)) / rate  # baseline [0, 2), timed [2, 3)
    watts = 0.5 + rng.normal(0.0, 0.005, t.size) + wander_w * np.sin(2 * np.pi * 3.3 * t)
    watts[t >= 2.0] += excess_w
    trace = tmp_path / "power.csv"
    write_rail(trace, watts, rate)
    power = measure_energy(trace, EnergyWindows((0.0, 2.0), (2.0, 3.0), iterations=1000))
    warning = resolution_warning(power)
    if resolved:
        # 20 mW x 1 s over 1000 inferences: 0.02 mJ each
        assert power["energy_per_inference_mj"] == pytest.approx(0.02, rel=0.05)
        assert warning is None
    else:
        assert power["energy_per_inference_mj"] is None
        assert warning is not None and "not resolved" in warning and "--runs" in warning
        assert power["net_energy_j"] == pytest.approx(excess_w, abs=0.004)  # kept, raw
    assert power["excess_error_w"] > 0


def test_capture_energy_gives_no_reading_when_the_job_ended_inside(
    streaming, tmp_path: Path
) -> None:
    _, channel, _ = streaming
    phases: list[str] = []
    reading = capture_energy(
        channel, tmp_path / "power.csv", 0.1, lambda: None, lambda s, p: phases.append(p)
    )
    assert reading is None
    assert phases == ["power baseline"]  # no tail: the job already ended (cancelled or failed)


def test_capture_energy_keeps_the_trace_path_when_the_trace_is_empty(tmp_path: Path) -> None:
    with VirtualMonsoon() as sim, Monsoon(sim.port) as monsoon:
        channel = PowerChannel("monsoon:12345", monsoon, lambda event: None)  # never started
        trace = tmp_path / "power.csv"
        reading = capture_energy(channel, trace, 0.0, lambda: 10, lambda s, p: None)
    assert reading is not None
    assert reading.power == {"trace_path": str(trace), "dropped": 0}
    assert reading.warning is not None
    assert reading.warning.startswith("energy not measured: ")
    assert "no samples" in reading.warning


class RecordedLoad:
    """What the simulator's ``load()`` answered, and when: the waveform it produced."""

    def __init__(self, sandbox: Path) -> None:
        self._load = phone_load(sandbox)
        self.calls: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        value = self._load()
        with self._lock:
            self.calls.append((time.time(), value))
        return value

    def loaded_seconds(self, start: float, end: float) -> float:
        with self._lock:
            calls = list(self.calls)
        total = 0.0
        for (t, value), (t_next, _) in zip(calls, calls[1:], strict=False):
            if value > 0:
                total += max(0.0, min(t_next, end) - max(t, start))
        return total


def test_energy_per_inference_matches_the_simulated_waveform(
    adb_server,
    virtual_phone,
    tmp_path: Path,
) -> None:
    _, port = adb_server
    load = RecordedLoad(Path(virtual_phone.sandbox.root))
    monsoon = VirtualMonsoon(
        serial_number=4242, load=load, baseline_w=BASELINE_W, active_w=ACTIVE_W, noise_w=0.005
    ).start()
    model_path = tmp_path / "mnv2_cifar32.onnx"
    shutil.copy(REPO / "assets" / "models" / "mnv2_cifar32.onnx", model_path)
    device_id = f"adb:{virtual_phone.serial}"
    store = Store(tmp_path / "lab" / "devlab.sqlite")
    lab = Lab(
        store,
        [AndroidBackend(AndroidConfig(adb_port=port))],
        power_links=[MonitorLink(device_id=device_id, port=monsoon.port)],
    )
    try:
        lab.discover()
        lab.start()
        settings = JobSettings(warmup=2, runs=RUNS, power=True, power_baseline_s=1.0)
        job = lab.submit(load_model(model_path), device_id, "ort", settings)
        assert lab.wait_until_idle(timeout=180)
        job = lab.store.job(job.id)
        assert job.state is JobState.DONE, job.error
        result = lab.store.result(job.id)
        power = result.power
    finally:
        lab.shutdown()
        store.close()
        monsoon.stop()

    assert power is not None
    assert power["baseline_w"] == pytest.approx(BASELINE_W, rel=0.03)
    start, end = power["timed_window"]
    loaded = load.loaded_seconds(start, end)
    assert loaded > 0.2, "the phone was hardly loaded inside the timed window"
    # every timed run in the window counts: the planned ones and any the precision gate added
    assert result.stats.count >= RUNS
    implied_mj = (ACTIVE_W - BASELINE_W) * loaded / result.stats.count * 1000.0
    print(
        f"energy per inference: measured {power['energy_per_inference_mj']:.4f} mJ, "
        f"implied by the waveform {implied_mj:.4f} mJ"
    )
    assert power["energy_per_inference_mj"] == pytest.approx(implied_mj, rel=0.05)
    # drops are counted exactly elsewhere (test_monsoon); a saturated machine may cause a few
    assert isinstance(power["dropped"], int) and power["dropped"] >= 0
    trace = Path(power["trace_path"])
    assert trace.is_file() and trace.stat().st_size > 0


def test_a_power_job_cancelled_during_its_rounds_is_cancelled_once(tmp_path: Path) -> None:
    """The cancel ends the job inside the energy window; the tail wait that follows must not
    cancel it a second time (one JobCancelled, one store transition)."""
    monsoon = VirtualMonsoon(serial_number=4343, load=lambda: 0.0).start()
    store = Store(tmp_path / "lab" / "devlab.sqlite")
    lab = Lab(
        store,
        [HostBackend()],
        power_links=[MonitorLink(device_id=HOST_DEVICE_ID, port=monsoon.port)],
    )
    events: list[Event] = []
    lab.subscribe(events.append)
    try:
        lab.discover()
        lab.start()
        settings = JobSettings(warmup=1, runs=None, min_seconds=30.0, rounds=30, power=True)
        settings.power_baseline_s = 0.2
        job = lab.submit(
            load_model(REPO / "assets" / "models" / "mlp.onnx"), HOST_DEVICE_ID, settings=settings
        )
        assert wait_until(
            lambda: any(
                isinstance(e, JobProgress) and e.job_id == job.id and "round" in e.phase
                for e in events
            ),
            timeout=WAIT_S,
        ), "the power job never started measuring"
        lab.cancel(job.id)
        assert lab.wait_until_idle(timeout=60)
        time.sleep(0.5)  # a second transition, if any, would land now
        assert store.job(job.id).state is JobState.CANCELLED
    finally:
        lab.shutdown()
        store.close()
        monsoon.stop()
    cancelled = [e for e in events if isinstance(e, JobCancelled) and e.job.id == job.id]
    assert len(cancelled) == 1, cancelled
