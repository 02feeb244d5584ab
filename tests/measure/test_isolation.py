"""The measurement process: timed rounds in a child of their own, a crash boundary around the
runtime, cancels that stop a round there, and pinning. Real processes, real ONNX Runtime."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from backends.core.lab import Lab
from backends.core.records import Device, Job, JobSettings, JobState
from backends.core.store import Store
from backends.devices.base import JobInterrupted
from backends.devices.host import HOST_DEVICE_ID, HostBackend
from backends.measure.isolation import (
    IsolatedSession,
    MeasurementProcess,
    RuntimeCrashed,
)
from backends.models.intake import load_model
from support.crashing import CRASHY_DEVICE_ID, CrashingBackend
from support.helpers import MODELS_DIR

FAST = JobSettings(warmup=2, runs=30, rounds=3, precision_pct=0, skip_parity=True, min_round_s=0)


@pytest.fixture
def model_copy(tmp_path: Path):
    """A copy of the smallest sample model that marker files can be put beside."""

    def copy(name: str, source: str = "mlp.onnx") -> Path:
        path = tmp_path / f"{name}.onnx"
        shutil.copy(MODELS_DIR / source, path)
        return path

    return copy


@pytest.fixture
def process(tmp_path: Path):
    measurer = MeasurementProcess("test", stall_timeout_s=3.0, log_path=tmp_path / "m.log")
    yield measurer
    measurer.close()


def _job(path: Path, settings: JobSettings = FAST) -> Job:
    return Job("j1", load_model(path), CRASHY_DEVICE_ID, "onnxruntime", settings)


def _device() -> Device:
    return CrashingBackend().discover()[0]


def _ignore(done: int, latencies: list[float]) -> None:
    pass


def test_rounds_run_in_another_process_and_stream_their_latencies(process, model_copy):
    path = model_copy("plain")
    session = IsolatedSession(process, CrashingBackend, _device(), _job(path), load_model(path))
    assert int(session.info.tool_version) == process.pid != os.getpid()
    session.warmup(2)
    seen: list[int] = []
    timed = session.run(None, 0.5, lambda done, latencies: seen.append(len(latencies)))
    assert len(timed.latencies_us) > 100 and all(v > 0 for v in timed.latencies_us)
    assert seen and seen == sorted(seen) and seen[-1] <= len(timed.latencies_us)
    assert len(seen) >= 3  # progress arrived during the round, not only at its end
    session.close()


def test_a_stop_during_a_round_ends_it_there_and_the_process_stays_usable(process, model_copy):
    path = model_copy("plain")
    session = IsolatedSession(process, CrashingBackend, _device(), _job(path), load_model(path))

    def stop(done: int, latencies: list[float]) -> None:
        raise JobInterrupted("j1")

    with pytest.raises(JobInterrupted):
        session.run(None, 30.0, stop)  # would take 30 s if the stop did not reach the child
    pid = process.pid
    assert session.run(5, None, _ignore).count == 5
    assert process.pid == pid


def test_a_segfault_names_the_signal_and_the_next_call_gets_a_fresh_process(process, model_copy):
    crashing, other = model_copy("crashing"), model_copy("other")
    Path(f"{crashing}.crash").touch()
    device = _device()
    victim = IsolatedSession(process, CrashingBackend, device, _job(crashing), load_model(crashing))
    bystander = IsolatedSession(process, CrashingBackend, device, _job(other), load_model(other))
    bystander.warmup(3)
    first_pid = process.pid
    assert victim.run(5, None, _ignore).count == 5
    with pytest.raises(RuntimeCrashed, match="runtime crashed: SIGSEGV in round 2"):
        victim.run(5, None, _ignore)
    # the session that shared the dead process is loaded again in a new one, transparently
    assert bystander.run(7, None, _ignore).count == 7
    assert process.pid != first_pid
    assert int(bystander.info.tool_version) == process.pid


def test_a_hung_runtime_is_killed_after_the_stall_timeout(process, model_copy):
    path = model_copy("hanging")
    Path(f"{path}.hang").touch()
    session = IsolatedSession(process, CrashingBackend, _device(), _job(path), load_model(path))
    pid = process.pid
    with pytest.raises(RuntimeCrashed, match=r"runtime hung: no iteration finished in 3 s"):
        session.run(5, None, _ignore)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung child is gone
    assert session.run(4, None, _ignore).count == 4  # reopened in a new process


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_pin_puts_the_measurement_process_on_one_core(process, model_copy):
    path = model_copy("pinned")
    core = sorted(os.sched_getaffinity(0))[-1]
    settings = JobSettings(warmup=1, runs=5, pin=core)
    session = IsolatedSession(
        process, CrashingBackend, _device(), _job(path, settings), load_model(path)
    )
    session.run(5, None, _ignore)
    assert os.sched_getaffinity(process.pid) == {core}


def test_a_crash_fails_its_job_only_and_a_retry_runs_on_a_fresh_process(tmp_path, model_copy):
    """Through the Lab: the crashing job fails naming the signal and round; its batch-mate on
    the same device and a job on host:cpu finish; the retry works."""
    # a different model: the same one twice on one device would be one job
    crashing, mate = model_copy("crashing"), model_copy("mate", "mnv2_cifar32.onnx")
    Path(f"{crashing}.crash").touch()
    store = Store(tmp_path / "devlab.sqlite", fresh=True)
    lab = Lab(store, [HostBackend(), CrashingBackend()], log_dir=tmp_path / "logs")
    lab.discover()
    try:
        # no canary for it: its model then runs one session call per round, so the crash
        # marker's "second call" is its second round
        alone = dataclasses.replace(FAST, skip_canary=True)
        doomed = lab.submit(load_model(crashing), CRASHY_DEVICE_ID, settings=alone)
        batch_mate = lab.submit(load_model(mate), CRASHY_DEVICE_ID, settings=FAST)
        on_host = lab.submit(load_model(MODELS_DIR / "mlp.onnx"), HOST_DEVICE_ID, settings=FAST)
        lab.start()
        assert lab.wait_until_idle(timeout=180)
        failed = store.job(doomed.id)
        assert failed.state == JobState.FAILED
        assert "runtime crashed: SIGSEGV in round 2" in (failed.error or "")
        for job in (batch_mate, on_host):
            assert store.job(job.id).state == JobState.DONE, store.job(job.id).error
            result = store.result(job.id)
            assert result is not None and result.stats.count == 30
            assert result.conditions_start["measured_in"] == "measurement process"
        lab.retry(doomed.id)
        assert lab.wait_until_idle(timeout=180)
        assert store.job(doomed.id).state == JobState.DONE
        assert int(store.result(doomed.id).tool_version) != os.getpid()
    finally:
        lab.shutdown()
        store.close()
