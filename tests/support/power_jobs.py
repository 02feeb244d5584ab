"""Beacon-synced power jobs on a virtual phone, end to end, and the load the Monsoon saw.

The virtual Monsoon draws ``BASELINE_W`` plus ``ACTIVE_W - BASELINE_W`` times the phone's load
(1.0 while a tool's timed loop or a beacon runs; a stand-in's warm-up may mark less), and
``LoadLog`` records every change of that load with its host time, so a test can integrate the
true waveform over any window.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState, Result
from backends.core.store import Store
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.devices.android.snpe_config import SnpeConfig
from backends.models.intake import load_model
from backends.power.capture import MonitorLink
from backends.virtual import VirtualPhone
from backends.virtual.monsoon import VirtualMonsoon
from backends.virtual.registry import phone_load

REPO = Path(__file__).resolve().parents[2]
BASELINE_W, ACTIVE_W = 0.6, 2.4
# the stand-in benchmark_model reads ONNX: a "conversion" to .tflite that copies the file
COPY_CONVERTER = [
    sys.executable,
    "-c",
    "import shutil,sys; shutil.copy(sys.argv[1], sys.argv[2])",
    "{input}",
    "{output}",
]


class LoadLog:
    """The virtual Monsoon's load callback, logging each change of the load with its time."""

    def __init__(self, sandbox: Path) -> None:
        self._load = phone_load(sandbox)
        self._lock = threading.Lock()
        self.changes: list[tuple[float, float]] = []

    def __call__(self) -> float:
        value = self._load()
        with self._lock:
            if not self.changes or self.changes[-1][1] != value:
                self.changes.append((time.time(), value))
        return value

    def load_seconds(self, start: float, end: float, only: float | None = None) -> float:
        """The load integrated over [start, end] (seconds of full load); with ``only``, the
        seconds the load was exactly that level."""
        with self._lock:
            changes = [*self.changes, (time.time(), 0.0)]
        total = 0.0
        for (t, value), (t_next, _) in zip(changes, changes[1:], strict=False):
            overlap = max(0.0, min(t_next, end) - max(t, start))
            if only is None:
                total += value * overlap
            elif value == only:
                total += overlap
        return total

    def loaded_seconds(self, start: float, end: float) -> float:
        """The seconds inside [start, end] during which anything loaded the phone."""
        with self._lock:
            changes = [*self.changes, (time.time(), 0.0)]
        return sum(
            max(0.0, min(t_next, end) - max(t, start))
            for (t, value), (t_next, _) in zip(changes, changes[1:], strict=False)
            if value > 0
        )


def run_synced_job(
    phone: VirtualPhone,
    adb_port: int,
    tmp_path: Path,
    runtime: str,
    settings: Mapping[str, Any],
    monsoon_serial: int,
    convert: Mapping[str, list[str]] | None = None,
    snpe: SnpeConfig | None = None,
) -> tuple[Result, LoadLog]:
    """One ``--power --power-sync beacon`` job of mnv2_cifar32 on ``phone`` (``settings``
    on top of 2 warm-up runs, no gate, no parity, a 1 s baseline); its result and load log."""
    results, load = run_synced_jobs(
        phone, adb_port, tmp_path, runtime, [settings], monsoon_serial, convert, snpe
    )
    return results[0], load


def run_synced_jobs(
    phone: VirtualPhone,
    adb_port: int,
    tmp_path: Path,
    runtime: str,
    queue: Sequence[Mapping[str, Any]],
    monsoon_serial: int,
    convert: Mapping[str, list[str]] | None = None,
    snpe: SnpeConfig | None = None,
    when_idle: Callable[[Lab], None] | None = None,
    tick_s: float = 0.002,
) -> tuple[list[Result], LoadLog]:
    """A queue of such jobs, one per entry of ``queue`` (their settings differ, or they are one
    job), submitted together; their results in order and the load log. ``when_idle(lab)`` runs
    once the queue is done, before the lab shuts down; the Monsoon reads the load every
    ``tick_s``."""
    load = LoadLog(Path(phone.sandbox.root))
    monsoon = VirtualMonsoon(
        serial_number=monsoon_serial,
        load=load,
        baseline_w=BASELINE_W,
        active_w=ACTIVE_W,
        noise_w=0.005,
        tick_s=tick_s,
    ).start()
    model_path = tmp_path / "mnv2_cifar32.onnx"
    shutil.copy(REPO / "assets" / "models" / "mnv2_cifar32.onnx", model_path)
    device_id = f"adb:{phone.serial}"
    store = Store(tmp_path / "lab" / "devlab.sqlite")
    lab = Lab(
        store,
        [AndroidBackend(AndroidConfig(adb_port=adb_port, convert=dict(convert or {})), snpe)],
        power_links=[MonitorLink(device_id=device_id, port=monsoon.port)],
    )
    base = {
        "warmup": 2,
        "precision_pct": 0.0,
        "skip_parity": True,
        "power": True,
        "power_baseline_s": 1.0,
        "power_sync": "beacon",
    }
    results = []
    try:
        lab.discover()
        lab.start()
        model = load_model(model_path)
        jobs = [
            lab.submit(model, device_id, runtime, JobSettings(**{**base, **settings}))
            for settings in queue
        ]
        assert lab.wait_until_idle(timeout=60 + 60 * len(jobs))
        for job in jobs:
            job = lab.store.job(job.id)
            assert job.state is JobState.DONE, job.error
            result = lab.store.result(job.id)
            assert result is not None and result.power is not None
            results.append(result)
        if when_idle is not None:
            when_idle(lab)
    finally:
        lab.shutdown()
        store.close()
        monsoon.stop()
    return results, load
