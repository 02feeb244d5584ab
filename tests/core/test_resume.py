"""Resuming a headless run: after ``kill -9``, Ctrl-C or SIGTERM, running the same command again
finishes the queue without losing, duplicating or re-measuring any result.

Each test builds six distinct small models (different bytes, so six jobs) and times each for
``--min-seconds``, so a job stays ``running`` long enough to interrupt it mid-measurement.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from support.helpers import (
    REPO_ROOT,
    STORE_NAME,
    Run,
    connect_ro,
    devlab_cmd,
    devlab_env,
    make_mlp,
    read_results_csv,
    run_devlab,
    store_jobs,
)
from support.waiting import wait_until

HIDDEN_SIZES = (512, 640, 768, 896, 1024, 1152)
IN_FEATURES = 512  # tens of µs per inference: ~30k timed runs per job rather than 150k
MIN_SECONDS = "0.7"
POLL_S = 0.05
JUST_STARTED_S = 0.3
STARTUP_LIMIT_S = 90  # only bounds a hung test; nothing asserts on durations


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for index, hidden in enumerate(HIDDEN_SIZES):
        make_mlp(folder / f"mlp_h{hidden:04d}.onnx", hidden, in_features=IN_FEATURES, seed=index)
    return folder


def run_args(model_dir: Path, out: Path) -> tuple[str | Path, ...]:
    # one round each, no extra rounds: jobs run one after the other, so exactly one is running
    # when the signal lands (interleaved rounds are covered in test_interleave.py)
    return (
        "--run",
        model_dir,
        "--out",
        out,
        "--min-seconds",
        MIN_SECONDS,
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--precision",
        "0",
    )


def start_devlab(args: tuple[str | Path, ...], home: Path) -> tuple[subprocess.Popen, Path]:
    """Start devlab in its own session; its output goes to files (no pipe can fill up)."""
    log = home / f"devlab-{time.monotonic_ns()}.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            devlab_cmd(*args),
            cwd=REPO_ROOT,
            env=devlab_env(home),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Ctrl-C's default: a test run started in the background (`pytest &`) inherits an
            # ignored SIGINT, as every background job of a shell script does, and so would devlab
            preexec_fn=_default_sigint,
        )
    return proc, log


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def snapshot(db_path: Path) -> list[dict] | None:
    """Every job row with its result, or None while the store is missing, locked or half-made."""
    try:
        return store_jobs(db_path)
    except sqlite3.OperationalError:  # no file yet, no table yet, database is locked
        return None


def wait_for_running_after_done(
    proc: subprocess.Popen, log: Path, db_path: Path, done: int
) -> list[dict]:
    """Poll the store (read-only) until ``done`` jobs are done and one has just started."""

    def running_after_done() -> list[dict] | None:
        if proc.poll() is not None:
            pytest.fail(f"devlab exited early ({proc.returncode}):\n{log.read_text()}")
        jobs = snapshot(db_path)
        if jobs is None:
            return None
        counts = Counter(job["state"] for job in jobs)
        running = [job for job in jobs if job["state"] == "running"]
        # a job that started just now has most of its --min-seconds still to go, so the signal
        # lands mid-measurement and not between two jobs; one still queued means the run
        # cannot end before the signal lands, however loaded the machine
        if (
            counts["done"] >= done
            and counts["queued"] >= 1
            and len(running) == 1
            and time.time() - running[0]["started_at"] < JUST_STARTED_S
        ):
            return jobs
        return None

    try:
        return wait_until(
            running_after_done, STARTUP_LIMIT_S, what="a job just started", interval=POLL_S
        )
    except AssertionError:
        stop(proc)
        pytest.fail(f"no job was running after {done} done:\n{log.read_text()}")
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    """Kill the devlab we started (by its pid only) if it still runs."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def assert_complete_without_duplicates(out: Path, model_dir: Path, rerun: Run) -> list[dict]:
    """Every model has one job, one result and one results.csv row, all done."""
    assert rerun.returncode == 0, rerun.describe()
    models = sorted(str(p) for p in model_dir.glob("*.onnx"))
    jobs = store_jobs(out / STORE_NAME)
    assert sorted(job["model_path"] for job in jobs) == models  # one job per model
    assert len({job["key"] for job in jobs}) == len(jobs)
    assert all(job["state"] == "done" for job in jobs), jobs
    assert all(job["result_json"] for job in jobs)
    with contextlib.closing(connect_ro(out / STORE_NAME)) as db:
        result_ids = [row[0] for row in db.execute("SELECT job_id FROM results")]
    assert sorted(result_ids) == sorted(job["id"] for job in jobs)  # one result per job
    rows = read_results_csv(out)
    assert sorted(row["model_path"] for row in rows) == models  # one row per model
    assert {row["job_id"] for row in rows} == {job["id"] for job in jobs}
    assert all(row["status"] == "done" and float(row["median_us"]) > 0 for row in rows)
    return jobs


def test_kill_9_then_rerun_resumes(tmp_path: Path, model_dir: Path) -> None:
    out = tmp_path / "out"
    db_path = out / STORE_NAME
    args = run_args(model_dir, out)
    proc, log = start_devlab(args, tmp_path)
    seen = wait_for_running_after_done(proc, log, db_path, done=2)

    recorded = {j["id"]: j["result_json"] for j in seen if j["state"] == "done"}
    assert len(recorded) >= 2 and all(recorded.values())

    # While it runs, the store is its alone: a second devlab on the same --out is refused.
    second = run_devlab(*args, home=tmp_path)
    assert second.returncode == 2, second.describe()
    assert f"in use by another devlab process (pid {proc.pid})" in second.err_text
    assert proc.poll() is None, log.read_text()

    os.kill(proc.pid, signal.SIGKILL)  # only the process this test started
    assert proc.wait(timeout=30) == -signal.SIGKILL

    # What the dead process left: its committed results and the job it was measuring.
    at_death = store_jobs(db_path)
    done_at_death = {j["id"]: j["result_json"] for j in at_death if j["state"] == "done"}
    running_at_death = [j for j in at_death if j["state"] == "running"]
    assert len(running_at_death) == 1, at_death
    (interrupted,) = running_at_death
    assert interrupted["result_json"] is None and interrupted["attempts"] == 1
    assert set(recorded) <= set(done_at_death)
    assert all(done_at_death[job_id] == result for job_id, result in recorded.items())
    assert len(done_at_death) < len(HIDDEN_SIZES)

    rerun = run_devlab(*args, home=tmp_path)

    jobs = {j["id"]: j for j in assert_complete_without_duplicates(out, model_dir, rerun)}
    assert f"{len(done_at_death)} job(s) already measured" in rerun.err_text
    for job_id, result_json in done_at_death.items():  # kept as they were, not re-measured
        assert jobs[job_id]["result_json"] == result_json
        assert jobs[job_id]["attempts"] == 1
    again = jobs[interrupted["id"]]
    assert again["state"] == "done"
    assert again["attempts"] == 2  # the job cut short by kill -9 ran again
    assert again["started_at"] > interrupted["started_at"]
    others = set(jobs) - set(done_at_death) - {interrupted["id"]}
    assert all(jobs[job_id]["attempts"] == 1 for job_id in others)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_with_130_and_rerun_finishes(
    tmp_path: Path, model_dir: Path, signum: signal.Signals
) -> None:
    out = tmp_path / "out"
    db_path = out / STORE_NAME
    args = run_args(model_dir, out)
    proc, log = start_devlab(args, tmp_path)
    wait_for_running_after_done(proc, log, db_path, done=1)

    os.kill(proc.pid, signum)  # SIGINT is what Ctrl-C sends
    try:
        returncode = proc.wait(timeout=60)
    finally:
        stop(proc)
    output = log.read_text()

    assert returncode == 130, output
    assert "interrupted" in output
    after_stop = store_jobs(db_path)
    done = {j["id"]: j["result_json"] for j in after_stop if j["state"] == "done"}
    assert 1 <= len(done) < len(HIDDEN_SIZES)
    assert not [j for j in after_stop if j["state"] == "running"]  # re-queued, not left running
    requeued = [j for j in after_stop if j["state"] == "queued" and j["attempts"] == 1]
    assert len(requeued) == 1, after_stop
    # the tables were written on the way out, with the finished jobs in them
    rows = read_results_csv(out)
    assert {r["job_id"] for r in rows if r["status"] == "done"} == set(done)
    assert len(rows) == len(after_stop)

    rerun = run_devlab(*args, home=tmp_path)

    jobs = {j["id"]: j for j in assert_complete_without_duplicates(out, model_dir, rerun)}
    for job_id, result_json in done.items():
        assert jobs[job_id]["result_json"] == result_json
        assert jobs[job_id]["attempts"] == 1
    assert jobs[requeued[0]["id"]]["attempts"] == 2
