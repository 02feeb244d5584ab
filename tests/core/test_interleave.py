"""The rounds scheduler with its canary, precision gate and parity check, through the real Lab,
store and workers. The far end is a simulated device whose speed changes between rounds (a
machine's slow phases), so what the worker does with them can be asserted exactly; the last
tests use the real host CPU with ONNX Runtime.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.core.events import DeviceChanged, Event, JobProgress
from backends.core.lab import Lab
from backends.core.records import Device, Job, JobSettings, JobState, Model
from backends.core.store import Store
from backends.devices.base import BenchSession, DeviceBackend, IterationCallback, Timed
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.models.intake import load_model
from support.fakes import PhasedDevice, PhasedSession
from support.helpers import MODELS_DIR, make_mlp
from support.records import fake_model

WAIT_S = 30.0


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "lab" / "devlab.sqlite")
    yield store
    store.close()


def run_jobs(
    store: Store, backend: DeviceBackend, models: list[Model], settings: JobSettings
) -> tuple[Lab, list[Job], Recorder]:
    lab = Lab(store, [backend], log_dir=store.path.parent / "logs")
    recorder = Recorder()
    lab.subscribe(recorder)
    lab.discover()
    device_id = lab.devices[0].id
    lab.pause()
    lab.start()
    jobs = [lab.submit(model, device_id, settings=settings) for model in models]
    lab.resume()
    assert lab.wait_until_idle(timeout=WAIT_S)
    lab.shutdown()
    return lab, jobs, recorder


def test_rounds_of_waiting_jobs_interleave_one_round_at_a_time(store: Store) -> None:
    device = PhasedDevice([1.0])
    names = ["a", "bb", "ccc"]
    settings = JobSettings(warmup=0, runs=12, rounds=4, precision_pct=0, skip_parity=True)
    _, jobs, _ = run_jobs(store, device, [fake_model(n) for n in names], settings)

    assert all(store.job(job.id).state is JobState.DONE for job in jobs)
    log = device.round_log
    assert sorted(log) == sorted(names * 4)
    # every job's round r runs before any job's round r + 1: rounds are interleaved...
    for start in range(0, len(log), 3):
        assert sorted(log[start : start + 3]) == names, log
    # ...in shuffled order, with all three models loaded and one round running at a time
    assert device.max_open == 3 + 1  # the three jobs and the canary
    assert device.max_running == 1
    assert device.canary_runs == len(log)  # the canary before every round
    for job in jobs:
        assert store.result(job.id).round_sizes == [3, 3, 3, 3]


class ClockedDevice(PhasedDevice):
    """Sessions that run for the round's seconds (``min_seconds``), 2 ms per iteration."""

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        return ClockedSession(self, model)


class ClockedSession(PhasedSession):
    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        assert iterations is None and min_seconds is not None
        latencies: list[float] = []
        end = time.monotonic() + min_seconds
        while time.monotonic() < end:
            time.sleep(0.002)
            latencies.append(2000.0)
            on_iteration(len(latencies), latencies)
        return Timed(latencies)

    def close(self) -> None:
        pass


def test_time_based_progress_covers_the_whole_job_and_never_falls_back(store: Store) -> None:
    """With ``min_seconds`` the bar runs once from 0 to 1 over all rounds, not once per round."""
    settings = JobSettings(
        warmup=0,
        runs=None,
        min_seconds=2.5,
        rounds=5,
        precision_pct=0,
        skip_parity=True,
        skip_canary=True,
    )
    _, jobs, recorder = run_jobs(store, ClockedDevice([1.0]), [fake_model("a")], settings)
    assert store.job(jobs[0].id).state is JobState.DONE
    fractions = [
        (event.phase, event.fraction)
        for event in recorder.events
        if isinstance(event, JobProgress) and event.phase.startswith("round")
    ]
    phases = sorted({phase for phase, _ in fractions})
    assert phases == [f"round {n}/5" for n in range(1, 6)]
    values = [fraction for _, fraction in fractions]
    assert values == sorted(values), fractions  # never falls back at a round's start
    assert values[0] == 0.0 and values[-1] >= 0.8
    # at the start of round n the bar already shows the n - 1 rounds done
    starts = {phase: fraction for phase, fraction in reversed(fractions)}
    assert starts["round 3/5"] == pytest.approx(0.4)


def test_cancel_between_short_rounds_ends_that_job_only(store: Store) -> None:
    device = PhasedDevice([1.0])
    lab = Lab(store, [device], log_dir=store.path.parent / "logs")
    lab.discover()
    lab.pause()
    lab.start()
    settings = JobSettings(warmup=0, runs=20, rounds=10, precision_pct=0, skip_parity=True)
    victim, other = (lab.submit(fake_model(n), "phased:a", settings=settings) for n in ("v", "o"))

    def cancel_after_first_round(name: str) -> None:
        if name == "v" and device.round_log.count("v") == 1:
            lab.cancel(victim.id)  # rounds of 2 runs: far shorter than a progress tick

    device.after_round = cancel_after_first_round
    lab.resume()
    assert lab.wait_until_idle(timeout=WAIT_S)
    lab.shutdown()
    assert store.job(victim.id).state is JobState.CANCELLED
    assert device.round_log.count("v") <= 2  # stopped at the next round, not after ten
    assert store.job(other.id).state is JobState.DONE
    assert store.result(other.id).round_sizes == [2] * 10


def test_canary_normalisation_removes_synthetic_drift(store: Store) -> None:
    slowdowns = [1.0, 1.45, 1.0, 1.3, 1.45]  # bursts of a slow machine between rounds
    device = PhasedDevice(slowdowns)
    settings = JobSettings(warmup=0, runs=50, rounds=5, precision_pct=2.0, skip_parity=True)
    _, (job,), _ = run_jobs(store, device, [fake_model("m")], settings)

    result = store.result(job.id)
    raw = result.round_medians_us
    assert max(raw) / min(raw) > 1.4  # the raw rounds carry the drift...
    canaries = result.round_canary_us
    assert len(canaries) == len(raw) and all(c is not None for c in canaries)
    normalised = [m / c for m, c in zip(raw, canaries, strict=True)]
    assert max(normalised) / min(normalised) < 1.01  # ...divided by the canary it is gone
    # the headline: the round medians at the canary's usual pace
    expected = statistics.median(normalised) * result.canary_reference_us
    assert result.normalised_median_us == pytest.approx(expected, rel=1e-9)
    # the gate judges the normalised rounds: converged without extra rounds
    assert result.converged is True and result.extra_rounds == 0
    assert result.ci_half_width_pct is not None and result.ci_half_width_pct < 1.0


def test_drifting_device_is_flagged(store: Store) -> None:
    device = PhasedDevice([1.0])
    settings = JobSettings(warmup=0, runs=10, rounds=5, precision_pct=0, skip_parity=True)
    run_jobs(store, device, [fake_model("first")], settings)  # 5 canaries of history
    run_jobs(store, device, [fake_model("second")], settings)  # steady: 10 in all
    device.slowdowns = [1.5]  # the device got slow (throttling, a background job...)
    lab, (job,), recorder = run_jobs(store, device, [fake_model("third")], settings)

    drift = store.result(job.id).drift
    assert drift["drifting"] is True and drift["ratio"] == pytest.approx(1.5, rel=0.01)
    flagged = [
        e
        for e in recorder.events
        if isinstance(e, DeviceChanged) and e.device.properties.get("drift")
    ]
    assert flagged and flagged[-1].device.properties["drift"]["drifting"] is True
    assert lab.devices[0].properties["drift"]["ratio"] == pytest.approx(1.5, rel=0.01)


def test_precision_gate_adds_rounds_until_its_cap_on_a_noisy_device(store: Store) -> None:
    device = PhasedDevice([1.0], noise=0.2)  # 20% round-to-round noise the canary cannot see
    settings = JobSettings(
        warmup=0,
        runs=20,
        rounds=4,
        precision_pct=1.0,
        max_rounds=9,
        skip_canary=True,
        skip_parity=True,
    )
    _, (job,), _ = run_jobs(store, device, [fake_model("noisy")], settings)

    result = store.result(job.id)
    assert result.converged is False
    assert result.extra_rounds == 5 and len(result.round_sizes) == 9  # capped at max_rounds
    assert any("precision gate: not converged" in w for w in result.warnings)
    assert result.ci_half_width_pct > 1.0

    quiet = PhasedDevice([1.0])
    _, (job,), _ = run_jobs(store, quiet, [fake_model("quiet")], settings)
    assert store.result(job.id).converged is True
    assert store.result(job.id).extra_rounds == 0


@pytest.mark.parametrize(("scale", "ok"), [(1.0, True), (1.05, False)])
def test_output_parity_flags_a_device_whose_outputs_differ(
    store: Store, tmp_path: Path, scale: float, ok: bool
) -> None:
    device = PhasedDevice([1.0])
    device.outputs_scale = scale
    model = load_model(make_mlp(tmp_path / "mlp.onnx", 32, seed=3))
    settings = JobSettings(warmup=0, runs=6, rounds=2, precision_pct=0, skip_canary=True)
    _, (job,), _ = run_jobs(store, device, [model], settings)

    result = store.result(job.id)
    assert result.parity["ok"] is ok
    if ok:
        assert result.parity["max_abs_diff"] < 1e-5
        assert not any("outputs differ" in w for w in result.warnings)
    else:
        assert result.parity["max_abs_diff"] > 0
        assert any("outputs differ from host ONNX Runtime" in w for w in result.warnings)


def test_host_rows_carry_canary_interval_and_parity(store: Store) -> None:
    models = [load_model(MODELS_DIR / name) for name in ("mlp.onnx", "mnv2_cifar32.onnx")]
    settings = JobSettings(warmup=2, runs=30, rounds=3, precision_pct=0, min_round_s=0)
    lab, jobs, _ = run_jobs(store, HostBackend(), models, settings)

    for job in jobs:
        assert store.job(job.id).state is JobState.DONE
        result = store.result(job.id)
        assert result.round_sizes == [10, 10, 10]
        assert len(result.round_canary_us) == 3 and all(result.round_canary_us)
        assert result.canary_reference_us > 0 and result.normalised_median_us > 0
        assert result.ci_low_us <= result.headline_us <= result.ci_high_us
        assert result.headline_us in (result.normalised_median_us, result.stats.median)
        assert result.parity["ok"] is True and result.parity["cosine"] > 0.9999
        assert "loadavg_1m" in result.conditions_start
        # the canary ran in blocks alternating with the model inside each round
        assert result.conditions_start["canary_pairing"].startswith("alternating blocks")
        # ... and so did the large reference: measured in every round, slower than the canary
        assert len(result.round_canary_large_us) == 3 and all(result.round_canary_large_us)
        assert statistics.median(result.round_canary_large_us) > statistics.median(
            result.round_canary_us
        )
        assert result.canary_large_reference_us > 0
    # the blend follows each model's latency: the tiny MLP the small canary alone, the CNN
    # (slower than the small canary) partly or wholly the large reference
    weights = {job.model.name: store.result(job.id).reference_large_weight for job in jobs}
    assert weights["mlp"] == 0.0 and weights["mnv2_cifar32"] > 0.0
    # ... and keeps a history of its own, apart from canaries measured before rounds
    assert lab.canaries.canary_history(HOST_DEVICE_ID, "onnxruntime/t1/paired")
    assert lab.canaries.canary_history(HOST_DEVICE_ID, "onnxruntime/t1/paired/large")
    assert not lab.canaries.canary_history(HOST_DEVICE_ID, "onnxruntime/t1")
