"""Tests for backends.measure.canary (drift normalisation, history, drift flag)
and the canary model."""

from __future__ import annotations

import hashlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from backends.measure.canary import (
    REFERENCE_MODEL,
    drift_status,
    normalise,
    normalise_rounds,
)
from backends.models.intake import load_model, random_inputs
from backends.runtimes.ort_session import session_options

REPO_ROOT = Path(__file__).resolve().parents[2]
CANARY = REPO_ROOT / REFERENCE_MODEL

TRUE_MODEL_US = 850.0  # what the model takes on a quiet machine
TRUE_CANARY_US = 420.0


def measure_pass(
    slowdowns: list[float], seed: int, iterations: int = 40
) -> tuple[list[float], list[float]]:
    """One pass of rounds: each round slowed by its factor, which hits the canary measured
    just before it equally. Returns (round medians, canary medians), 0.5% jitter on both."""
    rng = np.random.default_rng(seed)
    medians, canaries = [], []
    for factor in slowdowns:
        canary = TRUE_CANARY_US * factor * rng.lognormal(0.0, 0.005, iterations)
        model = TRUE_MODEL_US * factor * rng.lognormal(0.0, 0.005, iterations)
        canaries.append(float(np.median(canary)))
        medians.append(float(np.median(model)))
    return medians, canaries


# --- normalisation -------------------------------------------------------------------------


def test_normalise_is_latency_over_canary_times_long_run() -> None:
    assert normalise(1450.0, 580.0, 400.0) == pytest.approx(1000.0)


@pytest.mark.parametrize(
    "args", [(0.0, 1.0, 1.0), (1.0, -1.0, 1.0), (1.0, 1.0, float("nan")), (1.0, 0.0, 1.0)]
)
def test_normalise_refuses_non_positive_figures(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        normalise(*args)


def test_synthetic_drift_is_divided_out_within_rounds() -> None:
    """Rounds slowed 1.0x to 1.45x: raw round medians differ by 45%, normalised by < 1%."""
    medians, canaries = measure_pass([1.0, 1.45, 1.1, 1.45, 1.0, 1.25], seed=1)
    normalised = normalise_rounds(medians, canaries, TRUE_CANARY_US)
    assert max(medians) / min(medians) > 1.40
    assert max(normalised) / min(normalised) < 1.01
    assert all(v == pytest.approx(TRUE_MODEL_US, rel=0.01) for v in normalised)


def test_two_passes_in_different_bursts_agree_after_normalisation() -> None:
    """A pass on a quiet machine and a pass inside a 1.45x burst: the raw headlines differ by
    40%+, the drift-normalised ones agree within 1%."""
    quiet_medians, quiet_canaries = measure_pass([1.0, 1.0, 1.02, 1.0, 1.0], seed=2)
    busy_medians, busy_canaries = measure_pass([1.45, 1.5, 1.4, 1.45, 1.45], seed=3)
    raw_quiet = statistics.median(quiet_medians)
    raw_busy = statistics.median(busy_medians)
    assert raw_busy / raw_quiet > 1.40
    long_run = TRUE_CANARY_US * 1.003  # the device's history, measured on other days
    quiet = statistics.median(normalise_rounds(quiet_medians, quiet_canaries, long_run))
    busy = statistics.median(normalise_rounds(busy_medians, busy_canaries, long_run))
    assert busy == pytest.approx(quiet, rel=0.01)


def test_without_history_the_jobs_own_canaries_set_the_scale() -> None:
    medians, canaries = measure_pass([1.0, 1.3, 1.0, 1.3, 1.0], seed=4)
    normalised = normalise_rounds(medians, canaries)
    scale = statistics.median(canaries)
    expected = [m / c * scale for m, c in zip(medians, canaries, strict=True)]
    assert normalised == pytest.approx(expected)
    assert max(normalised) / min(normalised) < 1.01


def test_every_round_needs_its_canary() -> None:
    with pytest.raises(ValueError, match="2 canary measurements for 3 rounds"):
        normalise_rounds([1.0, 2.0, 3.0], [1.0, 1.0])
    assert normalise_rounds([], []) == []


# --- drift flag ----------------------------------------------------------------------------


def steady(count: int, centre: float = 420.0, noise: float = 0.01, seed: int = 0) -> list[float]:
    return list(centre * np.random.default_rng(seed).lognormal(0.0, noise, count))


def test_a_step_change_is_flagged_and_steady_batches_are_not() -> None:
    """Walk a synthetic history: jobs of 5 canaries, the device 25% slower from job 8 on."""
    history: list[float] = []
    flags = []
    for job in range(12):
        factor = 1.25 if job >= 8 else 1.0
        recent = [v * factor for v in steady(5, seed=job)]
        flags.append(drift_status(history, recent).drifting)
        history.extend(recent)
    assert flags[:8] == [False] * 8  # the first job has no history: never flagged
    assert flags[8] and flags[9]  # the step, until the history has absorbed it
    status = drift_status(steady(20), [v * 1.25 for v in steady(5, seed=99)])
    assert status.drifting
    assert status.ratio == pytest.approx(1.25, rel=0.02)
    assert status.reason.startswith("drifting: slower, canary +2")
    assert (status.history_count, status.recent_count) == (20, 5)


def test_a_faster_step_is_flagged_too() -> None:
    status = drift_status(steady(20), [v / 1.2 for v in steady(5, seed=5)])
    assert status.drifting
    assert status.reason.startswith("drifting: faster")


def test_noise_within_the_band_is_not_flagged() -> None:
    status = drift_status(steady(30, noise=0.03), [v * 1.05 for v in steady(5, seed=7)])
    assert not status.drifting
    assert status.ratio == pytest.approx(1.05, rel=0.05)
    assert status.reason.startswith("steady: canary +")
    assert status.band_pct == 10.0


def test_a_burst_in_a_minority_of_rounds_is_not_drift() -> None:
    """2 of 5 rounds inside a 1.45x burst: the recent median stays where it was."""
    recent = steady(5, seed=8)
    recent[1] *= 1.45
    recent[3] *= 1.45
    assert not drift_status(steady(30), recent).drifting


def test_a_noisy_history_widens_the_band() -> None:
    noisy = steady(40, noise=0.12, seed=9)
    status = drift_status(noisy, [v * 1.2 for v in steady(5, seed=10)])
    assert status.band_pct > 20.0
    assert not status.drifting


def test_too_little_history_or_no_recent_value_never_flags() -> None:
    short = drift_status(steady(4), [1000.0])
    assert not short.drifting and short.ratio is None
    assert "not enough history (4 < 5" in short.reason
    empty = drift_status(steady(20), [])
    assert not empty.drifting and "no recent" in empty.reason
    assert drift_status(steady(20), [9999.0]).to_dict()["drifting"] is True
    with pytest.raises(ValueError):
        drift_status(steady(20), [1.0], band_pct=0.0)


# --- the reference model -------------------------------------------------------------------


def test_the_canary_model_is_shipped_and_runs_fast_on_one_thread() -> None:
    model = load_model(CANARY)
    assert model.inputs[0].shape == [1, 3, 64, 64]
    assert 10e6 < (model.macs or 0) < 30e6
    session = ort.InferenceSession(
        str(CANARY), session_options(1), providers=["CPUExecutionProvider"]
    )
    feeds = random_inputs(model)
    for _ in range(5):
        (logits,) = session.run(None, feeds)
    assert logits.shape == (1, 10) and np.all(np.isfinite(logits))
    latencies = []
    for _ in range(30):
        start = time.perf_counter()
        session.run(None, feeds)
        latencies.append(time.perf_counter() - start)
    assert statistics.median(latencies) < 0.01  # ~0.4 ms here; loose on a shared machine


def test_the_canary_model_is_rebuilt_byte_for_byte(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "assets/make_reference.py", "--out", str(tmp_path), "--no-run"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for shipped_path in (CANARY, CANARY.with_name("canary_large.onnx")):
        shipped = hashlib.sha256(shipped_path.read_bytes()).hexdigest()
        rebuilt = hashlib.sha256((tmp_path / shipped_path.name).read_bytes()).hexdigest()
        assert rebuilt == shipped, shipped_path.name


def test_the_large_reference_overflows_a_cores_l2_and_outweighs_the_canary() -> None:
    """What makes it a different reference: megabytes of weights streamed every run."""
    large = load_model(CANARY.with_name("canary_large.onnx"))
    weights = sum(
        onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(large.path).graph.initializer
    )
    assert weights > 4e6 > 20 * CANARY.stat().st_size
    session = ort.InferenceSession(
        str(large.path), session_options(1), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, random_inputs(large))
    assert logits.shape == (1, 10) and np.all(np.isfinite(logits))


def test_the_scale_is_the_first_canaries_and_later_load_does_not_move_it(tmp_path) -> None:
    """A real SQLite canary store: a loaded hour appended later changes the recent history
    (the drift check's window) but not the first canaries that fix the normalisation scale."""
    from backends.measure.canary_store import CanaryStore

    store = CanaryStore(tmp_path / "canary.sqlite")
    store.add_canary("host:cpu", "onnxruntime/t1", [100.0 + i % 3 for i in range(120)])
    scale_before = statistics.median(store.first_canaries("host:cpu", "onnxruntime/t1"))
    store.add_canary("host:cpu", "onnxruntime/t1", [130.0] * 400)  # a loaded hour
    assert statistics.median(store.first_canaries("host:cpu", "onnxruntime/t1")) == scale_before
    assert len(store.first_canaries("host:cpu", "onnxruntime/t1")) == 100
    assert statistics.median(store.canary_history("host:cpu", "onnxruntime/t1")) == 130.0
    assert store.first_canaries("host:cpu", "other") == []
    store.close()
