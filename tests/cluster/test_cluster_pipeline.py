"""``devlab pipeline --cluster`` on real processes on 127.0.0.1: ``devlab scheduler``, a lab
host with no device (``devlab worker --no-devices``) and one with its host CPU.

The quantize stage runs on the device-less host, the bench and accuracy stages on the host
with the device. Then a second request with a large calibration set (quantize takes seconds)
has the device-less host killed with SIGKILL while it quantizes: the stage runs again on the
other host, and every row of the request ends complete, with no partial file left where it ran.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from backends.cluster.client import ClusterLab
from backends.cluster.host_stages import STAGE_KEY_PREFIX
from backends.pipeline.artifacts import leftovers
from support.devlab_process import START_S, Process
from support.helpers import REPO_ROOT, devlab_cmd, read_results_csv
from support.waiting import wait_until

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
RUN_S = 240.0
BIG_SAMPLES = 60_000  # calibration samples: quantizing them takes seconds, so the kill lands
QUICK = ("--runs", "20", "--rounds", "2", "--warmup", "2", "--precision", "0", "--no-parity")


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):  # only the processes this test started, by pid
        process.stop()


def big_calibration_set(folder: Path) -> Path:
    """digits-calib's samples repeated to BIG_SAMPLES, with its recipe."""
    source = ASSETS / "digits-calib"
    folder.mkdir(parents=True)
    samples = np.load(source / "inputs.npy")
    np.save(folder / "inputs.npy", np.resize(samples, (BIG_SAMPLES, *samples.shape[1:])))
    labels = [line for line in (source / "labels.csv").read_text().split()[1:]]
    (folder / "labels.csv").write_text("label\n" + "\n".join(np.resize(labels, BIG_SAMPLES)) + "\n")
    shutil.copy(source / "set.json", folder / "set.json")
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stages_of(out: Path) -> dict[str, dict]:
    return {s["id"]: s for s in json.loads((out / "pipeline_stages.json").read_text())}


def assert_complete(out: Path, device_host: str) -> None:
    """Both variants done, scored within two points, every device stage on ``device_host``."""
    summary = {row["variant"]: row for row in read_csv(out / "pipeline.csv")}
    assert {row["state"] for row in summary.values()} == {"done"}, summary
    fp32, int8 = (float(summary[v]["accuracy_top1"]) for v in ("fp32", "int8"))
    assert fp32 > 0.9 and abs(fp32 - int8) <= 0.02, summary
    for row in summary.values():
        assert row["bench_on"] == row["accuracy_on"] == device_host, row
        assert float(row["latency_us"]) > 0
    rows = read_results_csv(out)
    assert len(rows) == 4 and {row["status"] for row in rows} == {"done"}


def test_quantize_runs_on_the_device_less_host_and_survives_its_death(
    tmp_path: Path, processes: list[Process]
) -> None:
    home = tmp_path / "home"
    scheduler = Process(
        devlab_cmd("scheduler", "--port", "0", "--out", tmp_path / "cluster"),
        home,
        tmp_path / "scheduler.log",
    )
    processes.append(scheduler)
    line = scheduler.first_line()
    assert line.startswith("devlab scheduler listening on tcp://127.0.0.1:"), line
    address = line.rsplit(" ", 1)[1]

    hostless = Process(
        devlab_cmd(
            "worker",
            address,
            "--name",
            "hostless",
            "--no-devices",
            "--work-dir",
            tmp_path / "hostless",
            "--poll",
            "0.5",
        ),  # fmt: skip
        home,
        tmp_path / "worker-hostless.log",
    )
    processes.append(hostless)
    device = Process(
        devlab_cmd(
            "worker", address, "--name", "dev", "--work-dir", tmp_path / "dev", "--poll", "0.5"
        ),  # fmt: skip
        home,
        tmp_path / "worker-dev.log",
    )
    processes.append(device)
    assert hostless.first_line() == "devlab worker hostless ready with devices: none"
    assert "host:cpu@dev" in device.first_line()
    console = ClusterLab(address)
    try:
        wait_until(
            lambda: "host:cpu@dev" in {d.id for d in console.discover()},
            timeout=START_S,
            what="the dispatcher to hear of host:cpu@dev",
        )
    finally:
        console.shutdown()

    def pipeline(calibration: Path, out: Path) -> Process:
        return Process(
            devlab_cmd(
                "pipeline",
                DIGITS,
                "--calibration",
                calibration,
                "--accuracy",
                ASSETS / "digits-test",
                *QUICK,
                "--cluster",
                address,
                "--device",
                "host:cpu@dev",
                "--out",
                out,
            ),  # fmt: skip
            home,
            out.parent / f"{out.name}.log",
        )

    # 1. quantize on the device-less host, the device stages on the device's host
    first_out = tmp_path / "first"
    first = pipeline(ASSETS / "digits-calib", first_out)
    processes.append(first)
    assert first.proc.wait(timeout=RUN_S) == 0, first.stderr()
    assert_complete(first_out, "dev")
    quantize = stages_of(first_out)["digits/quantize"]
    assert quantize["host"] == "hostless" and quantize["attempts"] == 1, quantize
    assert len(list((tmp_path / "hostless" / "quantized").glob("*/*.onnx"))) == 1
    assert not list((tmp_path / "dev" / "quantized").glob("*/*.onnx"))

    # 2. the device-less host dies mid-quantize: the stage runs again on the other host
    second_out = tmp_path / "second"
    second = pipeline(big_calibration_set(tmp_path / "calib-big"), second_out)
    processes.append(second)
    executing = lambda dask_worker: [str(t.key) for t in dask_worker.state.executing]  # noqa: E731
    with Client(address, set_as_default=False) as client:
        workers = client.scheduler_info()["workers"]
        target = next(a for a, info in workers.items() if info["name"] == "hostless")
        wait_until(
            lambda: any(
                key.startswith(STAGE_KEY_PREFIX)
                for key in client.run(executing, workers=[target])[target]
            ),
            timeout=START_S,
            what="the quantize stage to run on the device-less host",
            interval=0.1,
        )
    os.kill(hostless.proc.pid, signal.SIGKILL)
    assert second.proc.wait(timeout=RUN_S) == 0, second.stderr()

    assert_complete(second_out, "dev")
    stages = stages_of(second_out)
    quantize = stages["digits/quantize"]
    assert quantize["host"] == "dev" and quantize["attempts"] == 2, quantize
    assert "lab host hostless died while running it" in quantize["notes"]
    made = list((tmp_path / "dev" / "quantized").glob("*/*.onnx"))
    assert len(made) == 1 and leftovers(tmp_path / "dev" / "quantized") == []
    kept = Path(quantize["artifact"])
    assert kept.read_bytes() == made[0].read_bytes()
    assert leftovers(second_out / "quantized") == []
    # the float stages were measured by the first request: kept, not measured again
    first_jobs = {
        row["job_id"] for row in read_results_csv(first_out) if "int8" not in row["model"]
    }
    second_jobs = {
        row["job_id"] for row in read_results_csv(second_out) if "int8" not in row["model"]
    }
    assert first_jobs == second_jobs
