"""The SQLite store: dedupe, dispatch order, atomic results, recovery, locking, persistence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backends.core.records import JobSettings, JobState
from backends.core.store import Store, StoreLocked
from support.records import make_job, make_result


def result_rows(path: Path, job_id: str) -> int:
    """How many result rows the file holds for ``job_id``, read through a second connection."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM results WHERE job_id = ?", (job_id,)).fetchone()[0]
    finally:
        db.close()


def test_add_job_dedupes_by_key(store: Store) -> None:
    first, inserted = store.add_job(make_job("a"), key="same")
    assert inserted
    assert first.created_at is not None

    again, inserted_again = store.add_job(make_job("b"), key="same")

    assert not inserted_again
    assert again.id == "job-a"
    assert again.model.name == "a"
    assert [job.id for job in store.jobs()] == ["job-a"]

    _, inserted_other = store.add_job(make_job("c"), key="other")
    assert inserted_other
    assert [job.id for job in store.jobs()] == ["job-a", "job-c"]


def test_claim_next_lowest_priority_first_then_fifo_for_the_given_device(store: Store) -> None:
    for name, device, priority in [
        ("p5", "dev:a", 5),
        ("p1-first", "dev:a", 1),
        ("other-device", "dev:b", 0),
        ("p3", "dev:a", 3),
        ("p1-second", "dev:a", 1),
    ]:
        store.add_job(make_job(name, device, priority), key=name)

    claimed = []
    while (job := store.claim_next(["dev:a"])) is not None:
        assert job.state is JobState.RUNNING
        assert job.attempts == 1
        assert job.started_at is not None
        claimed.append(job.id)

    assert claimed == ["job-p1-first", "job-p1-second", "job-p3", "job-p5"]
    assert store.job("job-other-device").state is JobState.QUEUED
    assert store.claim_next([]) is None
    assert store.claim_next(["dev:b"]).id == "job-other-device"
    assert store.claim_next(["dev:a", "dev:b"]) is None


def test_claim_next_sees_priority_changes(store: Store) -> None:
    store.add_job(make_job("x", priority=1), key="x")
    store.add_job(make_job("y", priority=2), key="y")
    store.set_priority("job-y", 0)
    assert store.claim_next(["dev:a"]).id == "job-y"


def test_finish_writes_result_and_marks_done(store: Store, store_path: Path) -> None:
    store.add_job(make_job("a"), key="a")
    store.claim_next(["dev:a"])

    done = store.finish("job-a", make_result("job-a", [1.0, 2.0, 3.0]))

    assert done.state is JobState.DONE
    assert done.finished_at is not None
    assert done.error is None
    assert store.job("job-a").state is JobState.DONE
    assert store.result("job-a").latencies_us == [1.0, 2.0, 3.0]
    assert result_rows(store_path, "job-a") == 1


def test_second_finish_raises_and_keeps_one_result(store: Store, store_path: Path) -> None:
    store.add_job(make_job("a"), key="a")
    store.claim_next(["dev:a"])
    first = store.finish("job-a", make_result("job-a", [1.0, 2.0, 3.0]))

    with pytest.raises(sqlite3.IntegrityError):
        store.finish("job-a", make_result("job-a", [9.0, 9.0]))

    assert result_rows(store_path, "job-a") == 1
    assert store.result("job-a").latencies_us == [1.0, 2.0, 3.0]
    after = store.job("job-a")
    assert after.state is JobState.DONE
    assert after.finished_at == first.finished_at
    # the failed transaction was rolled back: the store still takes writes
    store.add_job(make_job("b"), key="b")
    assert [job.id for job in store.jobs()] == ["job-a", "job-b"]


def test_finish_of_unknown_job_writes_nothing(store: Store, store_path: Path) -> None:
    with pytest.raises((sqlite3.IntegrityError, KeyError)):
        store.finish("job-ghost", make_result("job-ghost"))
    assert result_rows(store_path, "job-ghost") == 0
    assert store.result("job-ghost") is None


def test_requeue_of_done_job_raises_and_keeps_result(store: Store) -> None:
    store.add_job(make_job("a"), key="a")
    store.claim_next(["dev:a"])
    store.finish("job-a", make_result("job-a"))

    with pytest.raises(ValueError, match="job-a"):
        store.requeue("job-a")

    assert store.job("job-a").state is JobState.DONE
    assert store.result("job-a") is not None


def test_requeue_of_failed_job_clears_error(store: Store) -> None:
    store.add_job(make_job("a"), key="a")
    store.claim_next(["dev:a"])
    failed = store.fail("job-a", "device fell off the bus")
    assert failed.state is JobState.FAILED
    assert failed.error == "device fell off the bus"

    queued = store.requeue("job-a")

    assert queued.state is JobState.QUEUED
    assert queued.error is None
    assert queued.started_at is None
    assert queued.finished_at is None
    assert queued.attempts == 1
    assert store.claim_next(["dev:a"]).attempts == 2


def test_recover_interrupted_requeues_running_jobs_and_keeps_attempts(store_path: Path) -> None:
    store = Store(store_path)
    for name in ("running", "queued", "done", "failed"):
        store.add_job(make_job(name), key=name)
    for _ in range(4):
        store.claim_next(["dev:a"])
    store.requeue("job-queued")
    store.finish("job-done", make_result("job-done"))
    store.fail("job-failed", "boom")
    assert store.job("job-running").state is JobState.RUNNING
    store.close()  # the process "dies" with job-running still running

    reopened = Store(store_path)
    try:
        recovered = reopened.recover_interrupted()

        assert [job.id for job in recovered] == ["job-running"]
        job = reopened.job("job-running")
        assert job.state is JobState.QUEUED
        assert job.attempts == 1
        assert job.started_at is None
        assert reopened.job("job-queued").state is JobState.QUEUED
        assert reopened.job("job-queued").attempts == 1
        assert reopened.job("job-done").state is JobState.DONE
        assert reopened.job("job-failed").state is JobState.FAILED
        assert reopened.job("job-failed").error == "boom"
        assert reopened.recover_interrupted() == []
    finally:
        reopened.close()


def test_cancel_if_queued_only_cancels_queued_jobs(store: Store) -> None:
    for name in ("running", "done", "queued"):
        store.add_job(make_job(name), key=name)
    store.claim_next(["dev:a"])
    store.claim_next(["dev:a"])
    store.finish("job-done", make_result("job-done"))

    cancelled = store.cancel_if_queued("job-queued")
    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at is not None

    assert store.cancel_if_queued("job-running") is None
    assert store.job("job-running").state is JobState.RUNNING
    assert store.cancel_if_queued("job-done") is None
    assert store.job("job-done").state is JobState.DONE
    assert store.cancel_if_queued("job-queued") is None
    assert store.claim_next(["dev:a"]) is None


def test_second_store_on_same_path_raises_store_locked(store: Store, store_path: Path) -> None:
    store.add_job(make_job("a"), key="a")

    with pytest.raises(StoreLocked) as raised:
        Store(store_path)
    assert str(store_path.parent) in str(raised.value)

    with pytest.raises(StoreLocked):
        Store(store_path, fresh=True)
    assert [job.id for job in store.jobs()] == ["job-a"], "a refused fresh open deleted data"

    store.close()
    again = Store(store_path)
    try:
        assert [job.id for job in again.jobs()] == ["job-a"]
    finally:
        again.close()


def test_fresh_store_forgets_jobs_and_results(store_path: Path) -> None:
    store = Store(store_path)
    store.add_job(make_job("a"), key="a")
    store.claim_next(["dev:a"])
    store.finish("job-a", make_result("job-a"))
    store.close()

    fresh = Store(store_path, fresh=True)
    try:
        assert fresh.jobs() == []
        assert fresh.rows() == []
        assert fresh.result("job-a") is None
        _, inserted = fresh.add_job(make_job("a"), key="a")
        assert inserted
    finally:
        fresh.close()


def test_data_survives_close_and_reopen(store_path: Path) -> None:
    settings = JobSettings(warmup=3, runs=None, min_seconds=0.5, rounds=2, per_layer=True)
    store = Store(store_path)
    store.add_job(make_job("done", priority=2, settings=settings), key="done")
    store.add_job(make_job("queued", device_id="dev:b", priority=7), key="queued")
    store.claim_next(["dev:a"])
    result = make_result("job-done", [5.0, 6.0, 7.0, 8.0])
    result.round_sizes = [2, 2]
    store.finish("job-done", result)
    before = [(job.to_dict(), res.to_dict() if res else None) for job, res in store.rows()]
    store.close()

    reopened = Store(store_path)
    try:
        after = [(job.to_dict(), res.to_dict() if res else None) for job, res in reopened.rows()]
        assert after == before
        done = reopened.job("job-done")
        assert done.state is JobState.DONE
        assert done.settings == settings
        assert done.priority == 2
        assert done.attempts == 1
        assert reopened.result("job-done").round_sizes == [2, 2]
        # the key survives too: the same key still dedupes after reopening
        _, inserted = reopened.add_job(make_job("queued-again", device_id="dev:b"), key="queued")
        assert not inserted
    finally:
        reopened.close()


def test_rows_returns_jobs_with_results_in_submission_order(store: Store) -> None:
    for name, priority in (("first", 9), ("second", 0), ("third", 5)):
        store.add_job(make_job(name, priority=priority), key=name)
    store.claim_next(["dev:a"])  # second (priority 0)
    store.finish("job-second", make_result("job-second", [42.0]))
    store.claim_next(["dev:a"])  # third
    store.fail("job-third", "nope")

    rows = store.rows()

    assert [(job.id, job.state) for job, _ in rows] == [
        ("job-first", JobState.QUEUED),
        ("job-second", JobState.DONE),
        ("job-third", JobState.FAILED),
    ]
    assert rows[0][1] is None
    assert rows[1][1].job_id == "job-second"
    assert rows[1][1].latencies_us == [42.0]
    assert rows[2][1] is None
    assert rows[2][0].error == "nope"


def test_jobs_filters_by_state(store: Store) -> None:
    for name in ("a", "b", "c"):
        store.add_job(make_job(name), key=name)
    store.claim_next(["dev:a"])
    store.cancel_if_queued("job-c")

    assert [j.id for j in store.jobs([JobState.QUEUED])] == ["job-b"]
    assert [j.id for j in store.jobs([JobState.RUNNING, JobState.CANCELLED])] == ["job-a", "job-c"]
    assert [j.id for j in store.jobs()] == ["job-a", "job-b", "job-c"]


def test_forget_failed_deletes_only_a_failed_job_with_that_key(store: Store) -> None:
    failed = make_job("bad-file")
    failed.state = JobState.FAILED
    failed.error = "not an ONNX file"
    store.add_job(failed, key="intake:bad-file")
    store.add_job(make_job("queued"), key="intake:queued")

    assert store.forget_failed("intake:queued") is False
    assert store.forget_failed("intake:unknown") is False
    assert store.forget_failed("intake:bad-file") is True

    assert [job.id for job in store.jobs()] == ["job-queued"]
    assert store.forget_failed("intake:bad-file") is False
    _, inserted = store.add_job(make_job("bad-file"), key="intake:bad-file")
    assert inserted
