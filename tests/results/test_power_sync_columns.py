"""results.csv carries how each power job's trace was lined up (``power_sync``), why a beacon
sync fell back (``power_sync_reason``), the beacons (``power_beacons``, ``beacons_found``) and
what each round was measured over (``power_window``), next to the other power columns."""

from __future__ import annotations

import csv
from pathlib import Path

from backends.core.records import Device, Job, JobSettings, JobState, Model, Result
from backends.measure.stats import summarize
from backends.results import tables

PHONE = Device(id="adb:R58M", kind="adb", name="Galaxy S21", runtimes=["tflite"])
MODEL = Model(path="/models/m.onnx", name="m", sha256="c" * 64)
LATENCIES = [100.0, 101.0, 99.0]


def _row(job_id: str, power: dict | None) -> tuple[Job, Result]:
    sync = "beacon" if power and power.get("power_sync") else "windows"
    job = Job(
        id=job_id,
        model=MODEL,
        device_id=PHONE.id,
        runtime="tflite",
        settings=JobSettings(runs=3, power=power is not None, power_sync=sync),
        state=JobState.DONE,
    )
    result = Result(
        job_id=job_id,
        latencies_us=LATENCIES,
        stats=summarize(LATENCIES),
        tool="benchmark_model",
        tool_version="2.16",
        power=power,
    )
    return job, result


def _power(**sync: object) -> dict:
    return {"mean_w": 2.5, "baseline_w": 1.5, "energy_per_inference_mj": 0.4, **sync}


def test_results_csv_has_power_sync_and_its_reason_after_the_power_columns(tmp_path: Path):
    rows = [
        _row(
            "beacon",
            _power(
                power_sync="beacon",
                power_sync_reason="",
                clock_offset_s=0.2,
                power_beacons="round",
                beacons_found=4,
                power_window="timed loop",
            ),
        ),
        _row("one", _power(power_sync="one beacon", power_sync_reason="drift not solved")),
        _row("windows", _power(power_sync="windows", power_sync_reason="no beacon in the trace")),
        _row("plain", _power()),  # a power job without --power-sync beacon
        _row("timing", None),
    ]
    tables.write_results(tmp_path, rows, {PHONE.id: PHONE})
    with (tmp_path / "results.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        by_id = {row["job_id"]: row for row in reader}

    at = header.index("power_trace")
    assert header[at + 1 : at + 6] == [
        "power_sync",
        "power_sync_reason",
        "power_beacons",
        "beacons_found",
        "power_window",
    ]
    assert by_id["beacon"]["power_beacons"] == "round"
    assert by_id["beacon"]["beacons_found"] == "4"
    assert by_id["beacon"]["power_window"] == "timed loop"
    assert by_id["windows"]["power_window"] == ""  # not given: empty, never a guess
    assert by_id["beacon"]["power_sync"] == "beacon"
    assert by_id["beacon"]["power_sync_reason"] == ""  # no fallback: nothing to say
    assert by_id["one"]["power_sync"] == "one beacon"
    assert by_id["one"]["power_sync_reason"] == "drift not solved"
    assert by_id["windows"]["power_sync"] == "windows"
    assert by_id["windows"]["power_sync_reason"] == "no beacon in the trace"
    for job_id in ("plain", "timing"):
        assert by_id[job_id]["power_sync"] == "" and by_id[job_id]["power_sync_reason"] == ""
    assert float(by_id["one"]["energy_per_inference_mj"]) == 0.4
