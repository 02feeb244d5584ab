"""``--accuracy`` through the real Lab and device workers: host:cpu (its session lives in the
measurement process) and the virtual phone's ``ort`` runtime, whose onnxruntime_perf_test
stand-in hands back outputs the way output parity reads them. Devices plug in through
``BenchSession.outputs``; nothing here is host-specific.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import adbutils
import numpy as np
import pytest

from backends.accuracy.evaluate import evaluate, host_outputs
from backends.accuracy.sets import open_set
from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState
from backends.core.store import Store
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.models.intake import load_model
from backends.virtual import VirtualPhone
from support.helpers import REPO_ROOT
from support.waiting import wait_until

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
WAIT_S = 120.0
QUICK = {"rounds": 1, "runs": 5, "warmup": 1, "precision_pct": 0, "skip_canary": True}
PHONE_SAMPLES = 8  # every sample is one tool run on the phone


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    """The first samples of digits-test, stacked, with the same recipe."""
    folder = tmp_path / "digits-small"
    folder.mkdir()
    source = ASSETS / "digits-test"
    np.save(folder / "inputs.npy", np.load(source / "inputs.npy")[:PHONE_SAMPLES])
    rows = list(csv.reader((source / "labels.csv").open()))[: PHONE_SAMPLES + 1]
    with (folder / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (folder / "set.json").write_text((source / "set.json").read_text())
    return folder


@pytest.fixture
def lab(store: Store, tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    opened: list[Lab] = []

    def make(*backends: object) -> Lab:
        lab = Lab(store, list(backends), log_dir=tmp_path / "logs")
        opened.append(lab)
        lab.discover()
        lab.start()
        return lab

    yield make
    for each in opened:
        each.shutdown(interrupt=True, timeout=30)


def finished(lab: Lab, job_id: str) -> JobState:
    wait_until(lambda: lab.store.job(job_id).state.finished, timeout=WAIT_S)
    return lab.store.job(job_id).state


def expected_top1(set_path: Path) -> float:
    report = evaluate(host_outputs(str(DIGITS)), load_model(DIGITS), open_set(set_path))
    assert report is not None and report.top1 is not None
    return report.top1


def test_host_job_in_the_measurement_process_scores_the_set(lab: Callable[..., Lab]) -> None:
    test_set = ASSETS / "digits-test"
    running = lab(HostBackend())
    settings = JobSettings(**QUICK, accuracy_set=str(test_set))
    job = running.submit(load_model(DIGITS), HOST_DEVICE_ID, None, settings)
    assert finished(running, job.id) is JobState.DONE, running.store.job(job.id).error
    result = running.store.result(job.id)
    assert result is not None and result.stats.count >= 5
    assert result.accuracy is not None
    assert result.accuracy["set_name"] == "digits-test" and result.accuracy["set_size"] == 360
    assert result.accuracy["top1"] == pytest.approx(expected_top1(test_set))
    assert not result.warnings


def test_the_virtual_phones_ort_runtime_scores_the_set(
    lab: Callable[..., Lab],
    small_set: Path,
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,
) -> None:
    backend = AndroidBackend(AndroidConfig(adb_port=adb_server[1]))
    try:
        running = lab(backend)
        settings = JobSettings(**QUICK, skip_parity=True, accuracy_set=str(small_set))
        job = running.submit(load_model(DIGITS), f"adb:{virtual_phone.serial}", "ort", settings)
        assert finished(running, job.id) is JobState.DONE, running.store.job(job.id).error
        result = running.store.result(job.id)
        assert result is not None and result.accuracy is not None, result and result.warnings
        assert result.accuracy["set_size"] == PHONE_SAMPLES
        assert result.accuracy["top1"] == pytest.approx(expected_top1(small_set))
    finally:
        backend.close()
