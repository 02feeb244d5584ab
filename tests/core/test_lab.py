"""The Lab with real workers, store and events; only the far end of a device is a test double.

``ScriptedBackend`` (``support.fakes``) stands in for a phone: its sessions record when they
were opened and how many are open at once, and behave by model name: ``fail*`` raises
BenchError, ``crash*`` raises an unexpected exception, ``endless*`` runs until the worker stops
it, ``meet*`` waits for a session on the other device (proving two devices run in parallel);
anything else returns ``runs`` fixed latencies at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.core.events import (
    DeviceAdded,
    DeviceChanged,
    Event,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPriorityChanged,
    JobProgress,
    JobQueued,
    JobStarted,
)
from backends.core.lab import Lab, LabError
from backends.core.records import (
    Capabilities,
    Device,
    DeviceState,
    JobSettings,
    JobState,
)
from backends.core.store import Store
from backends.devices.base import (
    DeviceBackend,
)
from backends.results.tables import results_records
from support.fakes import FAIL_TEXT, BrokenBackend, ScriptedBackend
from support.records import fake_model

WAIT_S = 15.0
FAST = JobSettings(warmup=1, runs=4, rounds=2)


class Recorder:
    """A thread-safe event log."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type | tuple[type, ...]) -> list:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]

    def for_job(self, job_id: str) -> list[Event]:
        with self._lock:
            return [
                e
                for e in self.events
                if getattr(e, "job_id", None) == job_id
                or getattr(getattr(e, "job", None), "id", None) == job_id
            ]


LabFactory = Callable[..., tuple[Lab, Recorder]]


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[LabFactory]:
    """Build started labs on one store in tmp_path; everything is shut down afterwards."""
    store = Store(tmp_path / "lab" / "devlab.db")
    labs: list[Lab] = []

    def factory(*backends: DeviceBackend, start: bool = True) -> tuple[Lab, Recorder]:
        lab = Lab(store, backends=list(backends), log_dir=tmp_path / "logs")
        recorder = Recorder()
        lab.subscribe(recorder)
        labs.append(lab)
        lab.discover()
        if start:
            lab.start()
        return lab, recorder

    yield factory
    for lab in labs:
        lab.shutdown(interrupt=True, timeout=5)
    store.close()


# -- dispatch --------------------------------------------------------------------------------


def test_paused_lab_dispatches_by_priority_then_fifo(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, _ = make_lab(backend)
    lab.pause()
    assert lab.paused
    for name, priority in (("p5", 5), ("p1-first", 1), ("p3", 3), ("p1-second", 1)):
        lab.submit(fake_model(name), "fake:a", settings=FAST, priority=priority)
    assert not lab.wait_until_idle(timeout=0.3), "a paused lab ran jobs"
    assert backend.opened == []

    lab.resume()

    assert lab.wait_until_idle(timeout=WAIT_S)
    assert [name for _, name in backend.opened] == ["p1-first", "p1-second", "p3", "p5"]
    assert {job.state for job in lab.jobs()} == {JobState.DONE}


def test_one_round_per_device_while_two_devices_run_in_parallel(make_lab: LabFactory) -> None:
    """Jobs waiting for one device share it round by round (their models stay loaded), but
    only one round ever runs on a device at a time; two devices run at once."""
    backend = ScriptedBackend(device_ids=("fake:a", "fake:b"))
    lab, _ = make_lab(backend)
    lab.pause()
    for index in range(3):
        for device_id in ("fake:a", "fake:b"):
            lab.submit(fake_model(f"meet-{device_id}-{index}"), device_id, settings=FAST)
    lab.resume()

    assert lab.wait_until_idle(timeout=WAIT_S)
    rows = lab.rows()
    assert [job.error for job, _ in rows] == [None] * 6
    assert all(job.state is JobState.DONE and result is not None for job, result in rows)
    assert dict(backend.max_running) == {"fake:a": 1, "fake:b": 1}
    assert backend.max_running_total == 2
    assert dict(backend.max_open) == {"fake:a": 3, "fake:b": 3}  # interleaved: all loaded
    assert backend.closed == 6


def test_a_tool_that_reports_only_statistics_gives_a_tool_summary(
    make_lab: LabFactory,
) -> None:
    backend = ScriptedBackend()
    lab, _ = make_lab(backend)
    job = lab.submit(
        fake_model("summary"),
        "fake:a",
        settings=JobSettings(warmup=0, runs=6, rounds=2, precision_pct=0),
    )

    assert lab.wait_until_idle(timeout=WAIT_S)
    result = lab.store.result(job.id)
    assert result.stats_source == "tool summary"
    assert result.latencies_us == []  # nothing invented
    assert result.round_sizes == [3, 3] and result.round_medians_us == [1000.0, 2000.0]
    stats = result.stats
    assert stats.count == 6 and stats.min == 990.0 and stats.max == 2050.0
    assert stats.mean == 1500.0 and stats.median == 1500.0


def test_result_holds_every_round(make_lab: LabFactory) -> None:
    lab, _ = make_lab(ScriptedBackend())
    job = lab.submit(fake_model("good"), "fake:a", settings=JobSettings(warmup=0, runs=5, rounds=2))

    assert lab.wait_until_idle(timeout=WAIT_S)
    result = lab.store.result(job.id)
    assert result.round_sizes == [3, 2]
    assert result.latencies_us == [100.0, 101.0, 102.0, 100.0, 101.0]
    assert result.round_medians_us == [101.0, 100.5]
    assert result.stats.count == 5
    assert (result.load_us, result.first_inference_us, result.tool) == (10.0, 20.0, "scripted")


# -- events ----------------------------------------------------------------------------------


def test_events_of_a_good_job(make_lab: LabFactory) -> None:
    lab, recorder = make_lab(ScriptedBackend())
    assert [e.device.id for e in recorder.of(DeviceAdded)] == ["fake:a"]

    job = lab.submit(fake_model("good"), "fake:a", settings=FAST)

    assert lab.wait_until_idle(timeout=WAIT_S)
    events = recorder.for_job(job.id)
    kinds = [type(e) for e in events]
    assert kinds[0] is JobQueued
    assert kinds[1] is JobStarted
    assert kinds[-1] is JobFinished
    assert JobProgress in kinds[2:-1]
    assert set(kinds) == {JobQueued, JobStarted, JobProgress, JobFinished}
    finished = events[-1]
    assert finished.job.state is JobState.DONE
    assert finished.result.job_id == job.id
    assert len(finished.result.latencies_us) == 4


def test_failing_session_publishes_job_failed_with_bench_error_text(make_lab: LabFactory) -> None:
    lab, recorder = make_lab(ScriptedBackend())
    job = lab.submit(fake_model("fail-oom"), "fake:a", settings=FAST)

    assert lab.wait_until_idle(timeout=WAIT_S)
    failed = recorder.of(JobFailed)
    assert [(e.job.id, e.error) for e in failed] == [(job.id, FAIL_TEXT)]
    assert failed[0].job.state is JobState.FAILED
    stored = lab.store.job(job.id)
    assert (stored.state, stored.error) == (JobState.FAILED, FAIL_TEXT)
    assert lab.store.result(job.id) is None
    assert recorder.of(JobFinished) == []


def test_device_is_busy_during_a_job_and_online_after(make_lab: LabFactory) -> None:
    lab, recorder = make_lab(ScriptedBackend())
    lab.submit(fake_model("good"), "fake:a", settings=FAST)

    assert lab.wait_until_idle(timeout=WAIT_S)
    changes = [(e.device.id, e.device.state) for e in recorder.of(DeviceChanged)]
    assert changes == [("fake:a", DeviceState.BUSY), ("fake:a", DeviceState.ONLINE)]
    assert lab.device("fake:a").state is DeviceState.ONLINE


def test_cancelling_a_queued_job_keeps_the_busy_device_busy(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, _ = make_lab(backend)
    running = lab.submit(fake_model("endless"), "fake:a", settings=FAST)
    assert backend.endless_running.wait(WAIT_S)
    waiting = lab.submit(fake_model("good"), "fake:a", settings=FAST)
    assert lab.device("fake:a").state is DeviceState.BUSY

    lab.cancel(waiting.id)

    try:
        assert lab.store.job(waiting.id).state is JobState.CANCELLED
        assert lab.store.job(running.id).state is JobState.RUNNING
        assert lab.device("fake:a").state is DeviceState.BUSY
    finally:
        backend.release_endless.set()
        lab.wait_until_idle(timeout=WAIT_S)


# -- submitting again ------------------------------------------------------------------------


def test_same_submission_twice_does_not_duplicate(make_lab: LabFactory) -> None:
    lab, _ = make_lab(ScriptedBackend())
    lab.pause()
    first = lab.submit(fake_model("m"), "fake:a", settings=FAST)
    second = lab.submit(fake_model("m"), "fake:a", settings=FAST)
    other_settings = lab.submit(fake_model("m"), "fake:a", settings=JobSettings(runs=3))
    other_runtime = lab.submit(fake_model("m"), "fake:a", runtime="rt2", settings=FAST)

    assert second.id == first.id
    ids = [job.id for job in lab.jobs()]
    assert ids == [first.id, other_settings.id, other_runtime.id]
    assert len(set(ids)) == 3


def test_resubmitting_a_failed_job_queues_it_again(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, _ = make_lab(backend)
    job = lab.submit(fake_model("fail-once"), "fake:a", settings=FAST)
    assert lab.wait_until_idle(timeout=WAIT_S)
    assert lab.store.job(job.id).state is JobState.FAILED

    lab.pause()
    again = lab.submit(fake_model("fail-once"), "fake:a", settings=FAST)

    assert again.id == job.id
    assert again.state is JobState.QUEUED
    assert again.error is None
    lab.resume()
    assert lab.wait_until_idle(timeout=WAIT_S)
    assert lab.store.job(job.id).attempts == 2
    assert len(backend.opened) == 2
    assert len(lab.jobs()) == 1


def test_resubmitting_a_done_job_keeps_its_result(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, recorder = make_lab(backend)
    job = lab.submit(fake_model("good"), "fake:a", settings=FAST)
    assert lab.wait_until_idle(timeout=WAIT_S)
    result = lab.store.result(job.id)

    again = lab.submit(fake_model("good"), "fake:a", settings=FAST, priority=3)

    assert again.id == job.id
    assert again.state is JobState.DONE
    assert lab.wait_until_idle(timeout=WAIT_S)
    assert len(backend.opened) == 1
    assert len(recorder.of(JobQueued)) == 1
    assert lab.store.result(job.id) == result
    assert lab.store.job(job.id).attempts == 1


def test_recorded_intake_failure_is_forgotten_once_the_path_is_submitted(
    make_lab: LabFactory,
) -> None:
    lab, recorder = make_lab(ScriptedBackend())
    model = fake_model("was-bad")
    first = lab.record_failure(model, "fake:a", "not an ONNX file", settings=FAST)
    again = lab.record_failure(model, "fake:a", "still not an ONNX file", settings=FAST)

    assert again.id == first.id
    assert lab.store.job(first.id).state is JobState.FAILED
    assert lab.store.job(first.id).error == "still not an ONNX file"
    assert [e.error for e in recorder.of(JobFailed)] == [
        "not an ONNX file",
        "still not an ONNX file",
    ]

    job = lab.submit(model, "fake:a", settings=FAST)

    assert lab.wait_until_idle(timeout=WAIT_S)
    assert [(j.id, j.state) for j in lab.jobs()] == [(job.id, JobState.DONE)]


# -- cancel and shutdown ---------------------------------------------------------------------


def test_cancel_a_queued_job(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, recorder = make_lab(backend)
    lab.pause()
    job = lab.submit(fake_model("good"), "fake:a", settings=FAST)

    lab.cancel(job.id)

    assert lab.store.job(job.id).state is JobState.CANCELLED
    assert [e.job.id for e in recorder.of(JobCancelled)] == [job.id]
    lab.resume()
    assert lab.wait_until_idle(timeout=WAIT_S)
    assert backend.opened == []

    # a cancelled job is queued again when submitted again
    assert lab.submit(fake_model("good"), "fake:a", settings=FAST).state is JobState.QUEUED
    assert lab.wait_until_idle(timeout=WAIT_S)
    assert lab.store.job(job.id).state is JobState.DONE


def test_cancel_a_running_job(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, recorder = make_lab(backend)
    job = lab.submit(
        fake_model("endless"), "fake:a", settings=JobSettings(runs=None, min_seconds=1e6)
    )
    assert backend.endless_running.wait(WAIT_S)

    lab.cancel(job.id)

    assert lab.wait_until_idle(timeout=WAIT_S)
    assert not backend.release_endless.is_set()
    stored = lab.store.job(job.id)
    assert stored.state is JobState.CANCELLED
    assert lab.store.result(job.id) is None
    assert [e.job.id for e in recorder.of(JobCancelled)] == [job.id]
    assert recorder.of(JobFailed) == []
    assert backend.closed == 1
    assert lab.device("fake:a").state is DeviceState.ONLINE


def test_interrupting_shutdown_requeues_the_running_job(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, recorder = make_lab(backend)
    job = lab.submit(fake_model("endless"), "fake:a", settings=FAST)
    assert backend.endless_running.wait(WAIT_S)

    lab.shutdown(interrupt=True, timeout=WAIT_S)

    stored = lab.store.job(job.id)
    assert stored.state is JobState.QUEUED
    assert stored.error is None
    assert stored.attempts == 1
    assert lab.store.result(job.id) is None
    assert recorder.of(JobFailed) == []
    assert recorder.of(JobCancelled) == []
    assert backend.closed == 1

    # the next lab on the same store runs it again
    backend.release_endless.set()
    next_lab, _ = make_lab(backend)
    assert next_lab.wait_until_idle(timeout=WAIT_S)
    rerun = next_lab.store.job(job.id)
    assert rerun.state is JobState.DONE
    assert rerun.attempts == 2
    assert next_lab.store.result(job.id) is not None


def test_unexpected_exception_fails_the_job_and_the_worker_goes_on(make_lab: LabFactory) -> None:
    backend = ScriptedBackend()
    lab, recorder = make_lab(backend)
    lab.pause()
    crash = lab.submit(fake_model("crash"), "fake:a", settings=FAST)
    good = lab.submit(fake_model("good"), "fake:a", settings=FAST)
    lab.resume()

    assert lab.wait_until_idle(timeout=WAIT_S)
    crashed = lab.store.job(crash.id)
    assert crashed.state is JobState.FAILED
    assert crashed.error == "RuntimeError: boom in the driver"
    assert [(e.job.id, e.error) for e in recorder.of(JobFailed)] == [
        (crash.id, "RuntimeError: boom in the driver")
    ]
    assert lab.store.job(good.id).state is JobState.DONE
    assert backend.closed == 2


# -- devices ---------------------------------------------------------------------------------


def test_failing_discovery_does_not_hide_other_backends(make_lab: LabFactory) -> None:
    lab, recorder = make_lab(BrokenBackend(), ScriptedBackend())

    assert [device.id for device in lab.devices] == ["fake:a"]
    assert [e.device.id for e in recorder.of(DeviceAdded)] == ["fake:a"]
    job = lab.submit(fake_model("good"), "fake:a", settings=FAST)
    assert lab.wait_until_idle(timeout=WAIT_S)
    assert lab.store.job(job.id).state is JobState.DONE


def test_submit_to_unknown_device_or_runtime_raises_lab_error(make_lab: LabFactory) -> None:
    lab, _ = make_lab(ScriptedBackend(device_ids=("fake:a", "fake:b")))

    with pytest.raises(LabError) as unknown_device:
        lab.submit(fake_model("m"), "adb:missing")
    message = str(unknown_device.value)
    assert "adb:missing" in message
    assert "fake:a" in message and "fake:b" in message

    with pytest.raises(LabError) as unknown_runtime:
        lab.submit(fake_model("m"), "fake:a", runtime="tflite")
    message = str(unknown_runtime.value)
    assert "tflite" in message
    assert "rt" in message and "rt2" in message

    assert lab.jobs() == []


# -- settle gate -----------------------------------------------------------------------------


class WarmPhoneBackend(ScriptedBackend):
    """A phone whose battery was 30 C when described and cools down while devlab waits."""

    def __init__(self, readings: list[float]) -> None:
        super().__init__()
        self.readings = list(readings)
        self.polls = 0

    def discover(self) -> list[Device]:
        devices = super().discover()
        for device in devices:
            device.properties["battery_temperature_c"] = 30.0
        return devices

    def conditions(self, device: Device) -> dict:
        self.polls += 1
        reading = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        return {"battery_temperature_c": reading}


def test_settle_waits_for_the_battery_to_cool(
    make_lab: LabFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backends.core.worker.SETTLE_POLL_S", 0.01)
    # conditions(): job start, then the settle polls 36, 33, 30.8 (<= 30 + 1), then job end
    backend = WarmPhoneBackend([36.0, 36.0, 33.0, 30.8, 30.5])
    lab, _ = make_lab(backend)
    settings = JobSettings(warmup=0, runs=3, settle_c=1.0)
    job = lab.submit(fake_model("good"), "fake:a", settings=settings)

    assert lab.wait_until_idle(timeout=WAIT_S)
    start = lab.store.result(job.id).conditions_start
    assert start["settle"] == "reached"
    assert start["settle_limit_c"] == 31.0 and start["settle_temperature_c"] == 30.8
    assert backend.polls == 5


def test_settle_gives_up_at_the_timeout_and_still_measures(
    make_lab: LabFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backends.core.worker.SETTLE_POLL_S", 0.01)
    lab, _ = make_lab(WarmPhoneBackend([40.0]))
    settings = JobSettings(warmup=0, runs=3, settle_c=1.0, settle_timeout_s=0.05)
    job = lab.submit(fake_model("good"), "fake:a", settings=settings)

    assert lab.wait_until_idle(timeout=WAIT_S)
    result = lab.store.result(job.id)
    assert result.conditions_start["settle"] == "timed out"
    assert result.stats.count == 3


def test_settle_is_skipped_where_there_is_no_battery(make_lab: LabFactory) -> None:
    lab, _ = make_lab(ScriptedBackend())
    job = lab.submit(
        fake_model("good"), "fake:a", settings=JobSettings(warmup=0, runs=2, settle_c=1.0)
    )

    assert lab.wait_until_idle(timeout=WAIT_S)
    assert lab.store.result(job.id).conditions_start["settle"].startswith("skipped")


def test_a_failing_profiled_pass_keeps_the_timed_runs(make_lab: LabFactory) -> None:
    lab, _ = make_lab(ScriptedBackend())
    settings = JobSettings(warmup=0, runs=4, per_layer=True)
    job = lab.submit(fake_model("badprofile"), "fake:a", settings=settings)

    assert lab.wait_until_idle(timeout=WAIT_S)
    assert lab.store.job(job.id).state is JobState.DONE
    result = lab.store.result(job.id)
    assert result.stats.count == 4 and result.layers_stats is None
    assert result.warnings == ["per-layer profiling failed: the profiler crashed"]
    (record,) = results_records(lab.rows(), {})
    assert record["status"] == "done" and "profiler crashed" in record["warnings"]


# -- priority and capabilities -----------------------------------------------------------------


def test_set_priority_tells_every_subscriber(make_lab: LabFactory) -> None:
    lab, recorder = make_lab(ScriptedBackend(), start=False)
    job = lab.submit(fake_model("m"), "fake:a", settings=FAST)

    updated = lab.set_priority(job.id, -3)

    assert updated.priority == -3 and lab.store.job(job.id).priority == -3
    [event] = recorder.of(JobPriorityChanged)
    assert event.job.id == job.id and event.job.priority == -3


def test_discovered_devices_carry_what_each_runtime_can_do(make_lab: LabFactory) -> None:
    lab, _ = make_lab(ScriptedBackend(), start=False)
    device = lab.device("fake:a")
    assert device.capabilities == {
        "rt": Capabilities(per_layer=True, threads=True),
        "rt2": Capabilities(threads=True),
    }
    assert device.capabilities_for(None) == device.capabilities["rt"]  # the default runtime
    assert Device.from_dict(json.loads(json.dumps(device.to_dict()))) == device
    older = {k: v for k, v in device.to_dict().items() if k != "capabilities"}
    assert Device.from_dict(older).capabilities_for("rt") is None  # unknown, not "none"


class PlainBackend(ScriptedBackend):
    """A backend that says nothing of its capabilities: the contract's default, none."""

    capabilities = DeviceBackend.capabilities


def test_per_layer_is_refused_where_the_runtime_has_no_profiled_pass(
    make_lab: LabFactory,
) -> None:
    lab, recorder = make_lab(ScriptedBackend(), PlainBackend(("plain:b",)), start=False)
    per_layer = JobSettings(warmup=0, runs=2, per_layer=True)
    with pytest.raises(LabError, match=r"fake:a cannot profile per layer with runtime rt2: "):
        lab.submit(fake_model("m"), "fake:a", runtime="rt2", settings=per_layer)
    with pytest.raises(LabError, match=r"plain:b .* without per-layer profiling \(no --per-layer"):
        lab.submit(fake_model("m"), "plain:b", settings=per_layer)
    assert lab.jobs() == [] and recorder.of(JobQueued) == []

    job = lab.submit(fake_model("m"), "fake:a", runtime="rt", settings=per_layer)
    assert job.state is JobState.QUEUED
    plain = lab.submit(fake_model("m"), "plain:b", settings=JobSettings(warmup=0, runs=2))
    assert plain.state is JobState.QUEUED  # without per-layer the same device is fine
