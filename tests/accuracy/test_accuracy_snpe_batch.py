"""Accuracy on a phone's SNPE runtimes in batches: the whole digits-test set (360 images) goes
through ``snpe-net-run`` a chunk per run (``BATCH_SIZE`` input lines), not one run per image,
through the real Lab, adb server and virtual phone with the stand-in SDK. The DSP job takes the
``devlab quantize --scheme snpe`` encodings, and its score is the fake-quantized model's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbutils
import numpy as np
import onnxruntime as ort
import pytest

from backends.accuracy.evaluate import BATCH_SIZE, evaluate, host_outputs
from backends.accuracy.sets import open_set
from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState
from backends.core.store import Store
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.devices.android.snpe import SnpeSession
from backends.devices.android.snpe_config import SnpeConfig
from backends.models.intake import load_model
from backends.quantize.tool import quantize_model
from backends.virtual import VirtualPhone
from backends.virtual.snpe_sdk import make_standin_sdk
from backends.virtual.tools.snpe_fake_quant import fake_quantize
from support.helpers import REPO_ROOT
from support.waiting import wait_until

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
TEST_SET = ASSETS / "digits-test"
QUICK = {"rounds": 1, "runs": 5, "warmup": 1, "precision_pct": 0, "skip_canary": True}
WAIT_S = 240.0


@pytest.fixture
def lab(
    store: Store,
    tmp_path: Path,
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,  # connected before the lab discovers
) -> Iterator[Lab]:
    sdk = make_standin_sdk(tmp_path / "sdk")
    snpe = SnpeConfig(sdk=sdk, cache_dir=tmp_path / "cache", calibration_inputs=3)
    backend = AndroidBackend(AndroidConfig(adb_port=adb_server[1]), snpe)
    lab = Lab(store, [backend], log_dir=tmp_path / "logs")
    lab.discover()
    lab.start()
    yield lab
    lab.shutdown(interrupt=True, timeout=30)
    backend.close()


def top1_of(model_bytes: bytes) -> float:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])

    def run(feeds: dict[str, Any]) -> list[Any]:
        return list(session.run(None, feeds))

    report = evaluate(run, load_model(DIGITS), open_set(TEST_SET))
    assert report is not None and report.top1 is not None
    return report.top1


def test_the_whole_set_is_scored_in_a_few_net_runs_on_cpu_and_dsp(
    lab: Lab, virtual_phone: VirtualPhone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []
    real = SnpeSession._net_run

    def counted(
        self: SnpeSession, input_list: str, output_dir: str, level: str, stamped: bool = False
    ) -> None:
        runs.append(level)
        real(self, input_list, output_dir, level, stamped)

    monkeypatch.setattr(SnpeSession, "_net_run", counted)
    encodings = quantize_model(DIGITS, ASSETS / "digits-calib", "snpe", tmp_path / "Q").path
    device = f"adb:{virtual_phone.serial}"
    scores = {}
    for runtime, extra in (("snpe-cpu", {}), ("snpe-dsp", {"clip_ranges": str(encodings)})):
        runs.clear()
        settings = JobSettings(**QUICK, skip_parity=True, accuracy_set=str(TEST_SET), **extra)
        job = lab.submit(load_model(DIGITS), device, runtime, settings)
        wait_until(lambda job=job: lab.store.job(job.id).state.finished, timeout=WAIT_S)
        assert lab.store.job(job.id).state is JobState.DONE, lab.store.job(job.id).error
        result = lab.store.result(job.id)
        assert result is not None and result.accuracy is not None, result and result.warnings
        assert result.accuracy["set_size"] == 360
        scores[runtime] = result.accuracy["top1"]
        # outputs: one net-run per chunk of BATCH_SIZE input lines (the timed runs log "basic")
        assert runs.count("off") == math.ceil(360 / BATCH_SIZE), runs

    host = evaluate(host_outputs(str(DIGITS)), load_model(DIGITS), open_set(TEST_SET))
    assert host is not None and scores["snpe-cpu"] == pytest.approx(host.top1)
    quantized, _ = fake_quantize(DIGITS.read_bytes(), json.loads(encodings.read_text()))
    assert scores["snpe-dsp"] == pytest.approx(top1_of(quantized))
    print(f"virtual phone, digits-test (360): snpe-cpu top-1 {scores['snpe-cpu']:.4f}, "
          f"snpe-dsp with the encodings {scores['snpe-dsp']:.4f}")  # fmt: skip
    assert abs(scores["snpe-cpu"] - scores["snpe-dsp"]) <= 0.02


def test_a_batch_evaluation_scores_what_one_sample_at_a_time_does() -> None:
    """The chunked path against the per-sample one on host ORT: same report, fewer calls."""
    model, run = load_model(DIGITS), host_outputs(str(DIGITS))
    calls: list[int] = []

    def batch(feeds: list[dict[str, np.ndarray]]) -> list[list[Any]]:
        calls.append(len(feeds))
        return [run(one) for one in feeds]

    one_by_one = evaluate(run, model, open_set(TEST_SET))
    batched = evaluate(run, model, open_set(TEST_SET), batch=batch)
    assert one_by_one is not None and batched is not None
    assert batched.to_dict() == one_by_one.to_dict()
    assert calls == [100, 100, 100, 60]
