"""Energy per inference end to end: a virtual phone powered by a virtual Monsoon on a pty.

The Monsoon draws ``active_w`` while a benchmark tool runs on the phone and ``baseline_w``
otherwise. devlab must report a net energy per inference within 5% of what that waveform
implies for the time the phone was loaded inside devlab's timed window.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState
from backends.core.store import Store
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.models.intake import load_model
from backends.power.capture import MonitorLink
from backends.virtual.monsoon import VirtualMonsoon
from backends.virtual.registry import phone_load

REPO = Path(__file__).resolve().parents[2]
BASELINE_W, ACTIVE_W = 0.6, 2.4
RUNS = 2000  # about 2 s of load: edge effects of a busy machine stay far below 5%


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
