"""A cluster of real processes on 127.0.0.1, as an operator would run it: ``devlab
scheduler``, two ``devlab worker`` processes that both offer their host CPU under the shared
id ``shared:cpu``, and ``devlab --run assets/models --cluster ...``; one worker is killed
with SIGKILL while it measures a job. Every job ends done exactly once, the interrupted one
on the other host at its second attempt.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from backends.cluster.client import ClusterLab
from backends.cluster.wire import job_of_key
from backends.core.events import JobStarted
from backends.core.store import STORE_FILE
from support.cluster_fixtures import WAIT_S, Recorder
from support.devlab_process import START_S, Process
from support.helpers import (
    MODELS_DIR,
    devlab_cmd,
    read_results_csv,
    store_jobs,
)
from support.waiting import wait_until


def devlab_tool(*args: str) -> list[str]:
    """``devlab scheduler ...`` / ``devlab worker ...``."""
    return devlab_cmd(*args)


def devlab_run(*args: str) -> list[str]:
    """``devlab --run ... --cluster ADDRESS``."""
    return devlab_cmd(*args)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def test_a_cluster_of_processes_survives_a_killed_worker(
    tmp_path: Path, processes: list[Process]
) -> None:
    home, cluster_out, out = tmp_path / "home", tmp_path / "cluster", tmp_path / "out"
    scheduler = Process(
        devlab_tool("scheduler", "--port", "0", "--out", str(cluster_out)),
        home,
        tmp_path / "scheduler.log",
    )
    processes.append(scheduler)
    line = scheduler.first_line()
    assert line.startswith("devlab scheduler listening on tcp://127.0.0.1:"), line
    address = line.rsplit(" ", 1)[1]

    workers = {}
    for name in ("a", "b"):
        options = f"--name {name} --alias shared:cpu=host:cpu --work-dir {tmp_path / name}"
        worker = Process(
            devlab_tool("worker", address, *options.split(), "--poll", "0.5"),
            home,
            tmp_path / f"worker-{name}.log",
        )
        processes.append(worker)
        workers[name] = worker
    for name, worker in workers.items():
        ready = worker.first_line()
        assert ready.startswith(f"devlab worker {name} ready with devices: "), ready
        assert {f"host:cpu@{name}", "shared:cpu"} <= set(ready.split(": ", 1)[1].split(", "))

    # Each job times itself for 2 s in two rounds, so the kill lands mid-job.
    options = "--min-seconds 2 --rounds 2 --warmup 2 --precision 0 --no-parity"
    run = Process(
        devlab_run(
            "--run",
            str(MODELS_DIR),
            "--cluster",
            address,
            "--device",
            "shared:cpu",
            *options.split(),
            "--out",
            str(out),
        ),  # fmt: skip
        home,
        tmp_path / "run.log",
    )
    processes.append(run)

    # Pickled by value (a lambda): the worker cannot import this test module.
    executing_keys = lambda dask_worker: [task.key for task in dask_worker.state.executing]  # noqa: E731
    console = ClusterLab(address)  # a second console, watching
    recorder = Recorder()
    console.subscribe(recorder)
    try:
        with Client(address, set_as_default=False) as client:
            workers_info = client.scheduler_info()["workers"]
            a = next(addr for addr, info in workers_info.items() if info["name"] == "a")
            keys = wait_until(
                lambda: client.run(executing_keys, workers=[a])[a],
                timeout=START_S,
                what="worker a to run a job",
            )
        killed_job = job_of_key(keys[0])
        wait_until(
            lambda: killed_job in {e.job.id for e in recorder.of(JobStarted)},
            timeout=WAIT_S,
            what="the job to start measuring on a",
        )
        os.kill(workers["a"].proc.pid, signal.SIGKILL)
        assert run.proc.wait(timeout=120) == 0, run.stderr()
    finally:
        console.shutdown()

    jobs = store_jobs(cluster_out / STORE_FILE)
    assert len(jobs) == 4 and len({job["id"] for job in jobs}) == 4
    for job in jobs:
        assert job["state"] == "done" and job["result_json"], job
        result = json.loads(job["result_json"])
        assert result["job_id"] == job["id"]
        if job["id"] == killed_job:
            assert job["attempts"] == 2
            assert result["device_properties"]["lab_host"] == "b"
        else:
            assert job["attempts"] == 1
    rows = read_results_csv(out)
    assert sorted(row["status"] for row in rows) == ["done"] * 4
    assert "re-queued" in run.stderr()

    assert workers["b"].stop() == 0, workers["b"].stderr()
    assert scheduler.stop() == 0, scheduler.stderr()
