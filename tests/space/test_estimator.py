"""Latency estimator: the fit, the accuracy maths, held-out evaluation, JSON, the CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from backends.core.records import Job, JobSettings, JobState, Result
from backends.measure.stats import summarize
from backends.models.intake import load_model
from backends.results.tables import write_results
from backends.space.estimator import (
    TOTAL_KEY,
    Estimator,
    EstimatorError,
    LatencyTable,
    SampledMeasurement,
    accuracy,
    fit_estimator,
    heldout_predictions,
    least_squares,
    read_latency_table,
    read_sampled,
)
from backends.space.sample import write_samples
from backends.space.spec import load_space
from console.cli import space as space_cli
from console.cli.space import run_space_tool

CIFAR = Path(__file__).resolve().parents[2] / "assets" / "spaces" / "mobilenetv2_cifar10.json"
UIDS = [f"M[i={i}][[1,{8 * (i + 1)},4,4]]" for i in range(8)]
LATENCY = {uid: 10.0 * (i + 1) for i, uid in enumerate(UIDS)}


def synthetic(
    n: int, scale: float, bias: float, noise: float = 0.0, seed: int = 0
) -> tuple[LatencyTable, list[SampledMeasurement]]:
    """A table of 8 modules and ``n`` architectures measured as scale * sum + bias (+ noise)."""
    rng = np.random.default_rng(seed)
    values = {(uid, "onnxruntime", TOTAL_KEY, "Median_Time"): v for uid, v in LATENCY.items()}
    values |= {(uid, "onnxruntime", TOTAL_KEY, "Avg_Time"): v + 1 for uid, v in LATENCY.items()}
    sampled = []
    for i in range(n):
        uids = list(rng.choice(UIDS, size=int(rng.integers(3, 12))))
        measured = scale * sum(LATENCY[u] for u in uids) + bias
        measured *= 1 + noise * rng.standard_normal()
        sampled.append(
            SampledMeasurement(
                f"arch_{i}",
                f"/x/arch_{i}.onnx",
                f"sha{i}",
                "host:cpu",
                "onnxruntime",
                {(TOTAL_KEY, "Median_Time"): measured},
                {"block": uids},
                macs=1000 * (i + 1),
            )
        )
    return LatencyTable(values, ["host:cpu"], "table.csv"), sampled


# --- maths -----------------------------------------------------------------------------------


def test_least_squares_recovers_a_known_line() -> None:
    x = np.linspace(100, 900, 30)
    assert least_squares(x, 1.25 * x + 300) == pytest.approx((1.25, 300.0))
    noisy = 1.25 * x + 300 + np.random.default_rng(1).normal(0, 2, x.size)
    scale, bias = least_squares(x, noisy)
    assert scale == pytest.approx(1.25, abs=0.01) and bias == pytest.approx(300, abs=6)
    with pytest.raises(EstimatorError, match="all equal"):
        least_squares([5, 5, 5], [1, 2, 3])


def test_fit_on_synthetic_data_recovers_scale_and_bias() -> None:
    table, sampled = synthetic(40, scale=1.3, bias=250.0)
    estimator = fit_estimator(table, sampled)
    fit = estimator.fit_for()
    assert (fit.scale, fit.bias) == (pytest.approx(1.3), pytest.approx(250.0))
    assert estimator.stat == "Median_Time" and estimator.granularity == "block"
    assert fit.report.evaluation == "5-fold cross-validation (shuffled, seed 0)"
    assert fit.report.heldout.within5_pct == 100.0
    assert fit.report.heldout.mape_pct == pytest.approx(0.0, abs=1e-9)
    assert fit.report.raw_sum.mape_pct > 10  # the unfitted sum is far off


def test_fit_with_noise_stays_close() -> None:
    table, sampled = synthetic(60, scale=0.8, bias=120.0, noise=0.01, seed=5)
    fit = fit_estimator(table, sampled).fit_for()
    assert fit.scale == pytest.approx(0.8, rel=0.03)
    assert fit.report.heldout.within5_pct >= 95.0
    assert fit.report.heldout.mape_pct == pytest.approx(0.8, abs=0.5)


def test_accuracy_report_on_a_hand_computed_example() -> None:
    # errors 5, -20, 0, 6 -> APE 5 %, 10 %, 0 %, 12 %
    acc = accuracy([100, 200, 400, 50], [105, 180, 400, 56])
    assert acc.n == 4
    assert acc.rmse_us == pytest.approx(math.sqrt((25 + 400 + 0 + 36) / 4))  # 10.7355
    assert acc.mape_pct == pytest.approx((5 + 10 + 0 + 12) / 4)  # 6.75
    assert acc.max_ape_pct == pytest.approx(12.0)
    assert acc.within5_pct == 50.0  # 5 % and 0 % (the bounds count as within)
    assert acc.within10_pct == 75.0


@pytest.mark.parametrize("n", [6, 23])  # leave-one-out, then 5-fold
def test_heldout_predictions_never_use_their_own_point(n: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(100, 1000, n)
    y = 1.1 * x + 50 + rng.normal(0, 5, n)
    base, folds = heldout_predictions(x, y, folds=5, seed=0)
    assert folds == (n if n < 10 else 5)
    for i in range(n):
        changed = y.copy()
        changed[i] += 1e6  # a wild measurement changes every fit that sees it
        again, _ = heldout_predictions(x, changed, folds=5, seed=0)
        assert again[i] == pytest.approx(base[i])
    if n < 10:  # leave-one-out equals refitting without the point
        for i in range(n):
            scale, bias = least_squares(np.delete(x, i), np.delete(y, i))
            assert base[i] == pytest.approx(scale * x[i] + bias)


def test_too_few_points_is_a_clear_error() -> None:
    table, sampled = synthetic(2, 1.0, 0.0)
    with pytest.raises(EstimatorError, match="only 2 usable .* at least 3"):
        fit_estimator(table, sampled)
    table, sampled = synthetic(5, 1.0, 0.0)
    fit = fit_estimator(table, sampled).fit_for()
    assert fit.report.evaluation == "leave-one-out (5 points)"


def test_architectures_with_unknown_modules_are_skipped_with_a_warning() -> None:
    table, sampled = synthetic(12, 1.2, 40.0)
    sampled[0].module_uids["block"].append("Unknown[x=1][[1,2]]")
    sampled[1].module_uids["block"].append("Unknown[x=1][[1,2]]")
    estimator = fit_estimator(table, sampled)
    assert estimator.fit_for().report.n == 10
    (warning,) = estimator.warnings
    assert "2 sampled architecture(s) skipped" in warning and "Unknown[x=1][[1,2]]" in warning


def test_stat_defaults_to_median_and_can_be_chosen() -> None:
    table, sampled = synthetic(12, 1.0, 10.0)
    for item in sampled:
        item.latencies[(TOTAL_KEY, "Avg_Time")] = item.latencies[(TOTAL_KEY, "Median_Time")]
    assert fit_estimator(table, sampled, stat="Avg_Time").stat == "Avg_Time"
    with pytest.raises(EstimatorError, match="no Max_Time values"):
        fit_estimator(table, sampled, stat="Max_Time")
    with pytest.raises(EstimatorError, match="no 'Layers Time' rows"):
        fit_estimator(table, sampled, key="Layers Time")


# --- estimator JSON and predictions ----------------------------------------------------------


def test_predict_from_a_saved_estimator(tmp_path: Path) -> None:
    table, sampled = synthetic(20, 1.5, 75.0)
    path = fit_estimator(table, sampled).save(tmp_path / "estimator.json")
    loaded = Estimator.load(path)
    uids = [UIDS[0], UIDS[3], UIDS[3]]
    expected = 1.5 * (10 + 40 + 40) + 75.0
    assert loaded.predict(uids) == pytest.approx(expected)
    assert loaded.predict(uids, device="host:cpu", runtime="onnxruntime") == pytest.approx(expected)
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and data["fits"][0]["table"][UIDS[1]] == 20.0
    assert set(data["fits"][0]["report"]) >= {"heldout", "in_sample", "raw_sum", "evaluation"}


def test_missing_uids_are_named(tmp_path: Path) -> None:
    table, sampled = synthetic(20, 1.5, 75.0)
    estimator = fit_estimator(table, sampled)
    with pytest.raises(EstimatorError, match=r"1 ModuleUID\(s\) are not in the table.*Nope"):
        estimator.predict([UIDS[0], "Nope[][[1]]"])
    with pytest.raises(EstimatorError, match="no fit for device phone"):
        estimator.predict([UIDS[0]], device="phone")


def test_damaged_estimator_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format_version": 9}')
    with pytest.raises(EstimatorError, match="not a devlab estimator"):
        Estimator.load(bad)
    with pytest.raises(EstimatorError, match="no such estimator file"):
        Estimator.load(tmp_path / "none.json")


# --- real files and the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Five sampled CIFAR architectures with a hand-made module table and results.csv.

    The module latencies are made up per ModuleUID; each model's "measured" latency is
    1.2 x the sum of its modules + 150 us (+-0.2 %), written with devlab's own results writer.
    """
    root = tmp_path_factory.mktemp("bench")
    space = load_space(CIFAR)
    index, entries = write_samples(space, root / "sampled", n=6, seed=11)
    uids = sorted({uid for e in entries for uid in e.module_uids})
    # Made-up but widely spread module latencies (20-320 us), fixed by the UID text.
    latency = {uid: 20.0 + int(hashlib.sha256(uid.encode()).hexdigest(), 16) % 300 for uid in uids}
    with open(root / "latency_table.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for uid, value in latency.items():
            for stat, factor in (
                ("Min_Time", 0.9),
                ("Avg_Time", 1.05),
                ("Median_Time", 1.0),
                ("Max_Time", 1.5),
            ):
                writer.writerow([uid, "onnxruntime", TOTAL_KEY, stat, round(value * factor, 1)])
    rows = []
    for number, entry in enumerate(entries):
        model = load_model(index.parent / entry.file)
        truth = 1.2 * sum(latency[u] for u in entry.module_uids) + 150.0
        truth *= 1 + 0.002 * (-1) ** number
        job = Job(
            f"job{number}", model, "host:cpu", "onnxruntime", JobSettings(), state=JobState.DONE
        )
        stats = summarize([truth * 0.99, truth, truth * 1.01])
        rows.append((job, Result(job.id, [truth * 0.99, truth, truth * 1.01], stats)))
    write_results(root / "results", rows, {})
    return {
        "root": root,
        "table": root / "latency_table.csv",
        "results": root / "results" / "results.csv",
        "model": index.parent / entries[2].file,
        "arch": index,  # its entries carry "choices"
    }


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr with whitespace collapsed)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(space_cli, "_stdout", lambda: Console(file=out, width=200))
        code = run_space_tool(list(args), Console(file=err, width=400))
    return code, out.getvalue(), " ".join(err.getvalue().split())


def test_real_results_and_table_files_are_read(bench: dict[str, Path]) -> None:
    table = read_latency_table(bench["table"])
    assert table.runtime_labels() == ["onnxruntime"]
    assert table.stats(TOTAL_KEY) == ["Avg_Time", "Max_Time", "Median_Time", "Min_Time"]
    sampled = read_sampled(bench["results"])
    assert len(sampled) == 6
    assert all(len(m.module_uids["block"]) == 24 and m.macs for m in sampled)


def test_cli_fit_then_predict_end_to_end(bench: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "est" / "estimator.json"
    code, stdout, stderr = run_cli(
        "estimator",
        "fit",
        "--table",
        str(bench["table"]),
        "--sampled",
        str(bench["results"]),
        "--out",
        str(out),
    )
    assert code == 0, stderr
    assert "leave-one-out (6 points)" in stdout and "raw sum (unfitted)" in stdout
    assert (out.parent / "estimator_pred_vs_measured.png").read_bytes()[:4] == b"\x89PNG"
    assert (out.parent / "estimator_latency_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    estimator = Estimator.load(out)
    fit = estimator.fit_for()
    assert fit.scale == pytest.approx(1.2, rel=0.05)
    assert fit.report.heldout.within5_pct == 100.0

    code, stdout, stderr = run_cli("estimator", "predict", str(out), str(bench["model"]), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["estimate_us"] == pytest.approx(
        estimator.predict_model(bench["model"])
    )

    entry = json.loads(bench["arch"].read_text())["architectures"][2]
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(entry["choices"]))
    code, stdout, stderr = run_cli(
        "estimator",
        "predict",
        str(out),
        "--arch",
        str(arch_file),
        "--space",
        str(CIFAR),
        "--json",
    )
    assert code == 0, stderr
    assert json.loads(stdout)["estimate_us"] == pytest.approx(
        estimator.predict_model(bench["model"])
    )


def test_cli_usage_errors_name_the_input(bench: dict[str, Path], tmp_path: Path) -> None:
    code, _, stderr = run_cli(
        "estimator",
        "fit",
        "--table",
        str(tmp_path / "none.csv"),
        "--sampled",
        str(bench["results"]),
        "--out",
        str(tmp_path / "e.json"),
    )
    assert code == 2 and "none.csv: no such latency table file" in stderr
    code, _, stderr = run_cli("estimator", "predict", str(tmp_path / "e.json"))
    assert code == 2 and "give either MODEL.onnx or --arch" in stderr
    code, _, stderr = run_cli("space", "show", str(tmp_path / "space.json"))
    assert code == 2 and "no such space file" in stderr
    code, _, _ = run_cli("space", "modules", str(CIFAR))  # --out missing: argparse
    assert code == 2


def test_cli_reports_failed_work_with_exit_1(bench: dict[str, Path], tmp_path: Path) -> None:
    # A table without the head module: no architecture can be summed.
    lines = [
        line for line in bench["table"].read_text().splitlines() if not line.startswith('"Head')
    ]
    partial = tmp_path / "latency_table.csv"
    partial.write_text("\n".join(lines) + "\n")
    code, _, stderr = run_cli(
        "estimator",
        "fit",
        "--table",
        str(partial),
        "--sampled",
        str(bench["results"]),
        "--out",
        str(tmp_path / "e.json"),
        "--no-plots",
    )
    assert code == 1
    assert "only 0 usable sampled architecture(s) of 6" in stderr
    assert "ModuleUIDs are not in the table, e.g. Head[classes=10,out=1280][[1,320,4,4]]" in stderr

    # An estimator whose table lacks a module the model needs: predict fails with exit 1.
    good = tmp_path / "good.json"
    assert (
        run_cli(
            "estimator",
            "fit",
            "--table",
            str(bench["table"]),
            "--sampled",
            str(bench["results"]),
            "--out",
            str(good),
            "--no-plots",
        )[0]
        == 0
    )
    data = json.loads(good.read_text())
    data["fits"][0]["table"] = {
        k: v for k, v in data["fits"][0]["table"].items() if not k.startswith("Stem")
    }
    good.write_text(json.dumps(data))
    code, _, stderr = run_cli("estimator", "predict", str(good), str(bench["model"]))
    assert code == 1 and "Stem[kernel=3,out=32,stride=2][[1,3,32,32]]" in stderr


def test_cli_space_commands(tmp_path: Path) -> None:
    code, stdout, _ = run_cli("space", "show", str(CIFAR), "--json")
    assert code == 0
    shown = json.loads(stdout)
    assert shown["blocks"] == 22 and shown["search_space_size"] == 6**6 * 7**15
    code, _, stderr = run_cli(
        "space", "modules", str(CIFAR), "--out", str(tmp_path / "m"), "--granularity", "op"
    )
    assert code == 0 and "op-level module models" in stderr
    index = json.loads((tmp_path / "m" / "index.json").read_text())
    assert index["count"] == shown["unique_modules"]["op"]
    code, _, _ = run_cli(
        "space", "sample", str(CIFAR), "--n", "2", "--seed", "1", "--out", str(tmp_path / "s")
    )
    assert code == 0 and len(list((tmp_path / "s").glob("*.onnx"))) == 2


def test_pareto_front_keeps_the_most_macs_for_each_latency() -> None:
    import numpy as np

    from backends.space.plots import _pareto

    macs = np.array([10.0, 20.0, 15.0, 30.0, 25.0])
    latency = np.array([1.0, 2.0, 2.5, 3.0, 3.5])
    # 15 MACs at 2.5 ms is beaten by 20 MACs at 2.0 ms; 25 at 3.5 by 30 at 3.0
    assert list(_pareto(macs, latency)) == [0, 1, 3]


def test_forward_times_plus_one_call_cost_make_the_raw_sum_add_up(tmp_path: Path) -> None:
    """Each module's total time pays the call cost once; a whole model pays it once too. With
    Forward Propagate and Call Overhead in the table, the raw sum is sum(forward) + call once,
    so it matches models measured as exactly that; the totals' sum counts the cost per module."""
    call = 6.0
    table, sampled = synthetic(30, scale=1.0, bias=0.0)
    forward = {uid: value - call for uid, value in LATENCY.items()}
    for item in sampled:  # a whole model: its modules' forward times and one call
        uids = item.module_uids["block"]
        item.latencies[(TOTAL_KEY, "Median_Time")] = sum(forward[u] for u in uids) + call
    totals_only = fit_estimator(table, sampled).fit_for()
    assert totals_only.report.raw_sum.mape_pct > 5  # the call cost counted once per module
    values = dict(table.values)
    for uid in UIDS:
        values[(uid, "onnxruntime", "Forward Propagate", "Median_Time")] = forward[uid]
        values[(uid, "onnxruntime", "Call Overhead", "Median_Time")] = call
    composed = fit_estimator(LatencyTable(values, ["host:cpu"], "t.csv"), sampled).fit_for()
    assert composed.call_cost_us == call
    assert composed.report.raw_sum.mape_pct == pytest.approx(0.0, abs=1e-9)
    assert composed.report.raw_sum.within10_pct == 100.0
    uids = [UIDS[0], UIDS[2]]
    saved = Estimator.load(
        fit_estimator(LatencyTable(values, None, "t"), sampled).save(tmp_path / "e.json")
    )
    assert saved.predict(uids) == pytest.approx(forward[UIDS[0]] + forward[UIDS[2]] + call)


def test_forward_times_join_normalised_totals_on_their_basis() -> None:
    """Forward Propagate is a raw median; against Normalised_Time totals each module's is put
    at the normalised pace by its own normalised/raw ratio (the modules ran while the host was
    10 % slower than its reference history: their raw figures are 10 % high)."""
    call = 6.0
    table, sampled = synthetic(30, scale=1.0, bias=0.0)
    pace = 1.1
    values = dict(table.values)
    for uid, value in LATENCY.items():
        values[(uid, "onnxruntime", TOTAL_KEY, "Median_Time")] = value * pace
        values[(uid, "onnxruntime", TOTAL_KEY, "Normalised_Time")] = value
        values[(uid, "onnxruntime", "Forward Propagate", "Median_Time")] = (value - call) * pace
        values[(uid, "onnxruntime", "Call Overhead", "Median_Time")] = call
    for item in sampled:
        uids = item.module_uids["block"]
        exact = sum(LATENCY[u] - call for u in uids) + call
        item.latencies[(TOTAL_KEY, "Normalised_Time")] = exact
        item.latencies[(TOTAL_KEY, "Median_Time")] = exact * pace
    table = LatencyTable(values, ["host:cpu"], "t.csv")
    normalised = fit_estimator(table, sampled).fit_for()
    assert normalised.report.raw_sum.mape_pct == pytest.approx(0.0, abs=1e-9)
    raw = fit_estimator(table, sampled, stat="Median_Time").fit_for()
    # raw against raw: the forward times are summed as they are, the call cost once
    assert raw.report.raw_sum.mape_pct < 1.0
