"""Pipelines on this machine: the stage graph, the priorities of the "quicker, better first"
order, the idempotent quantize stage, and ``devlab pipeline`` end to end on the digits model
with the real Lab, host:cpu and ONNX Runtime (float and int8 scored on the same set), and a
quantize stage that fails failing what follows it with its reason."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backends.core.records import Model, Result, Stats
from backends.models.intake import load_model
from backends.pipeline.artifacts import artifact_key, leftovers, quantize_once
from backends.pipeline.plan import (
    PipelineRequest,
    Stage,
    build_stages,
    dependants,
    stage_priority,
)
from backends.quantize.tool import QuantizeError
from support.helpers import REPO_ROOT, read_results_csv, run_devlab

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
CALIB = ASSETS / "digits-calib"
TEST_SET = ASSETS / "digits-test"
QUICK = ("--runs", "20", "--rounds", "2", "--warmup", "2", "--precision", "0")


def request_for(*names: str, order: str = "fifo", priority: int = 0) -> PipelineRequest:
    models = [Model(path=f"/m/{n}.onnx", name=n, sha256=n * 4) for n in names]
    return PipelineRequest(
        models, "host:cpu", str(CALIB), str(TEST_SET), order=order, priority=priority
    )


def bench_result(median_us: float, top1: float | None = None) -> Result:
    stats = Stats(1, median_us, median_us, median_us, median_us, median_us, median_us, 0, 0)
    accuracy = {"top1": top1} if top1 is not None else None
    return Result("j", [median_us], stats, accuracy=accuracy)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- the graph and its priorities -------------------------------------------------------------


def test_each_model_gets_quantize_then_bench_then_accuracy_for_both_variants() -> None:
    stages = {s.id: s for s in build_stages(request_for("a", "b"))}
    assert len(stages) == 10
    assert stages["a/quantize"].needs == () and stages["a/quantize"].host_only
    assert stages["a/bench:fp32"].needs == ()
    assert stages["a/bench:int8"].needs == ("a/quantize",)
    assert stages["a/accuracy:fp32"].needs == ("a/bench:fp32",)
    assert stages["a/accuracy:int8"].needs == ("a/bench:int8",)
    assert not stages["b/bench:int8"].host_only
    below = {s.id for s in dependants(list(stages.values()), "a/quantize")}
    assert below == {"a/bench:int8", "a/accuracy:int8"}  # b's stages never wait on a's


def test_quicker_better_order_waits_for_the_float_results_and_ranks_by_them() -> None:
    request = request_for("fast", "slow", order="quicker-better", priority=3)
    stages = {s.id: s for s in build_stages(request)}
    assert stages["fast/bench:int8"].needs == ("fast/quantize", "fast/bench:fp32")
    assert stages["fast/accuracy:int8"].needs == ("fast/bench:int8", "fast/accuracy:fp32")

    def priority(stage: Stage, **upstream: Result) -> int:
        keyed = {f"{stage.model}/{k.replace('_', ':')}": v for k, v in upstream.items()}
        return stage_priority(stage, keyed, request)

    fast = priority(stages["fast/bench:int8"], bench_fp32=bench_result(100.0))
    slow = priority(stages["slow/bench:int8"], bench_fp32=bench_result(900.0))
    assert 3 < fast < slow  # the quicker model's int8 bench runs first, after --priority
    # among equally quick int8 models, the one whose float model scored better goes first
    good = priority(
        stages["fast/accuracy:int8"],
        bench_int8=bench_result(100.0),
        accuracy_fp32=bench_result(1.0, top1=0.98),
    )
    poor = priority(
        stages["slow/accuracy:int8"],
        bench_int8=bench_result(100.0),
        accuracy_fp32=bench_result(1.0, top1=0.60),
    )
    assert good < poor
    fifo = request_for("fast", order="fifo", priority=3)
    assert stage_priority(stages["fast/bench:int8"], {}, fifo) == 3


def test_bad_requests_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="devlab quantize --scheme snpe"):
        PipelineRequest([], "host:cpu", "c", "a", scheme="snpe")
    with pytest.raises(ValueError, match="choose from fifo, quicker-better"):
        PipelineRequest([], "host:cpu", "c", "a", order="fastest")
    twins = request_for("same")
    twins.models.append(twins.models[0])
    with pytest.raises(ValueError, match="two models are named same"):
        build_stages(twins)


# -- the quantize stage is idempotent ---------------------------------------------------------


def test_quantize_stage_reruns_find_the_finished_file_and_leave_no_partial_files(
    tmp_path: Path,
) -> None:
    model = load_model(DIGITS)
    cache = tmp_path / "cache"
    key = artifact_key(model.sha256, CALIB, "ort-qdq", 8)
    stale = cache / f".partial-{key}-killed"  # what a run killed mid-write leaves
    stale.mkdir(parents=True)
    (stale / "digits.int8-qdq.onnx").write_bytes(b"half a model")

    first = quantize_once(DIGITS, model.sha256, CALIB, "ort-qdq", 8, cache)
    assert not first.reused and first.calibration_samples == 100
    assert first.path == cache / key / "digits.int8-qdq.onnx"
    assert load_model(first.path).sha256 == first.sha256
    again = quantize_once(DIGITS, model.sha256, CALIB, "ort-qdq", 8, cache)
    assert again.reused and again.path == first.path and again.sha256 == first.sha256
    assert leftovers(cache) == []

    edited = tmp_path / "calib-edited"  # another set: another address, the first file kept
    shutil.copytree(CALIB, edited)
    np.save(edited / "inputs.npy", np.load(CALIB / "inputs.npy")[::-1].copy())
    other = quantize_once(DIGITS, model.sha256, edited, "ort-qdq", 8, cache)
    assert other.key != first.key and first.path.is_file()

    with pytest.raises(QuantizeError, match="no such evaluation set"):
        quantize_once(DIGITS, model.sha256, tmp_path / "missing", "ort-qdq", 8, cache)
    assert leftovers(cache) == []


# -- devlab pipeline, end to end --------------------------------------------------------------


def test_pipeline_scores_float_and_int8_digits_within_two_points(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("pipeline", DIGITS, "--calibration", CALIB, "--accuracy", TEST_SET, *QUICK)
    run = run_devlab(*args, "--out", out, home=tmp_path / "home", timeout=240)
    assert run.returncode == 0, run.stderr

    summary = {row["variant"]: row for row in read_csv(out / "pipeline.csv")}
    assert set(summary) == {"fp32", "int8"}
    fp32, int8 = (float(summary[v]["accuracy_top1"]) for v in ("fp32", "int8"))
    assert fp32 > 0.9 and abs(fp32 - int8) <= 0.02, summary
    assert all(float(summary[v]["latency_us"]) > 0 for v in summary)
    assert summary["int8"]["quantized_on"]

    rows = read_results_csv(out)  # the usual table: both benches and both accuracy jobs
    assert sorted(row["model"] for row in rows) == ["digits"] * 2 + ["digits.int8-qdq"] * 2
    assert {row["status"] for row in rows} == {"done"}
    scored = sorted(float(row["accuracy_top1"]) for row in rows if row["accuracy_top1"])
    assert scored == sorted([fp32, int8])

    stages = json.loads((out / "pipeline_stages.json").read_text())
    assert {s["state"] for s in stages} == {"done"}
    artifact = Path(next(s["artifact"] for s in stages if s["kind"] == "quantize"))
    assert artifact.is_file() and artifact.parent.parent == out / "quantized"

    # the same request again keeps every result: nothing is quantized or measured twice
    again = run_devlab(*args, "--out", out, home=tmp_path / "home", timeout=240)
    assert again.returncode == 0, again.stderr
    assert sorted(row["job_id"] for row in read_results_csv(out)) == sorted(
        row["job_id"] for row in rows
    )


def test_a_failed_quantize_stage_fails_its_dependants_with_the_reason(tmp_path: Path) -> None:
    misfit = tmp_path / "calib-7x7"  # 49 values a sample: digits takes 64
    misfit.mkdir()
    np.save(misfit / "inputs.npy", np.zeros((4, 7, 7), np.uint8))
    (misfit / "labels.csv").write_text("label\n0\n1\n2\n3\n")
    out = tmp_path / "out"
    run = run_devlab(
        "pipeline", DIGITS, "--calibration", misfit, "--accuracy", TEST_SET, *QUICK,
        "--out", out, home=tmp_path / "home", timeout=240,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr

    stages = {s["id"]: s for s in json.loads((out / "pipeline_stages.json").read_text())}
    reason = stages["digits/quantize"]["error"]
    assert stages["digits/quantize"]["state"] == "failed" and "49 values" in reason
    for below in ("digits/bench:int8", "digits/accuracy:int8"):
        assert stages[below]["state"] == "failed"
        assert stages[below]["error"] == f"upstream stage quantize failed: {reason}"
    for fine in ("digits/bench:fp32", "digits/accuracy:fp32"):
        assert stages[fine]["state"] == "done", stages[fine]

    rows = read_results_csv(out)  # the float results are kept next to the int8 failures
    done = [row for row in rows if row["status"] == "done"]
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(done) == 2 and {row["model"] for row in done} == {"digits"}
    assert len(failed) == 2
    assert all(row["error"].startswith("upstream stage quantize failed: ") for row in failed)
    summary = {row["variant"]: row for row in read_csv(out / "pipeline.csv")}
    assert summary["fp32"]["state"] == "done" and float(summary["fp32"]["accuracy_top1"]) > 0.9
    assert summary["int8"]["state"] == "failed"
