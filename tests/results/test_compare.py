"""Tests for ``devlab compare`` (backends.results.compare, console.cli.compare) on real files.

The tables are written by the real writers (backends.results.tables) from synthetic records, or by
real ``devlab --run`` runs; columns that later devlab versions add (confidence intervals,
drift-normalised medians, flags, conditions) are patched into the written files.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from backends.core.records import Device, Job, JobSettings, JobState, Model, ModelInput, Result
from backends.measure.stats import summarize
from backends.results import tables
from backends.results.compare import (
    FASTER,
    INDISTINGUISHABLE,
    NOT_COMPARABLE,
    SLOWER,
    CompareError,
    compare_tables,
    condition_tolerance,
    load_results,
)
from console.cli.compare import run_compare_tool
from console.cli.exit_codes import ExitCode
from support.helpers import MODELS_DIR, run_devlab

HOST = Device(
    id="host:cpu",
    kind="host",
    name="Host CPU",
    runtimes=["onnxruntime"],
    properties={"cpu_model": "EPYC", "cores": 2},
)
STARTED = 1_700_000_000.0
NEW_COLUMNS = (
    "round_medians_us",
    "ci_low_us",
    "ci_high_us",
    "ci_half_width_pct",
    "converged",
    "canary_median_us",
    "canary_reference_us",
    "normalised_median_us",
    "parity_ok",
    "parity_max_abs_diff",
    "parity_cosine",
    "parity_top1_agree",
    "drifting",
)


def record(
    name: str,
    median: float,
    *,
    rounds: int = 3,
    per_round: int = 60,
    jitter: float = 0.002,
    factors: list[float] | None = None,
    sha: str | None = None,
    runs: int | None = None,
    tool_version: str = "1.18.0",
    conditions: dict[str, Any] | None = None,
    state: JobState = JobState.DONE,
    seed: int = 0,
) -> tuple[Job, Result | None]:
    """One job and its result: ``rounds`` rounds of lognormal jitter around ``median``."""
    model = Model(
        path=f"/models/{name}.onnx",
        name=name,
        sha256=sha or hashlib.sha256(name.encode()).hexdigest(),
        inputs=[ModelInput("x", [1, 3, 32, 32], "float32")],
    )
    settings = JobSettings(rounds=rounds, runs=runs or rounds * per_round)
    job = Job(
        id=f"{name}-{seed}",
        model=model,
        device_id=HOST.id,
        runtime="onnxruntime",
        settings=settings,
        state=state,
        attempts=1,
        started_at=STARTED + seed,
        finished_at=STARTED + seed + 5,
    )
    if state is not JobState.DONE:
        job.error = "inference failed"
        return job, None
    rng = np.random.default_rng(seed)
    per_round_latencies = [
        list(median * factor * rng.lognormal(0.0, jitter, per_round))
        for factor in (factors or [1.0] * rounds)
    ]
    latencies = [v for r in per_round_latencies for v in r]
    result = Result(
        job_id=job.id,
        latencies_us=latencies,
        stats=summarize(latencies),
        round_sizes=[per_round] * len(per_round_latencies),
        round_medians_us=[float(np.median(r)) for r in per_round_latencies],
        tool="onnxruntime-python",
        tool_version=tool_version,
        conditions_start=dict(conditions or {}),
        conditions_end=dict(conditions or {}),
    )
    return job, result


def write_run(folder: Path, rows: list[tuple[Job, Result | None]]) -> Path:
    """results.csv, results.json and iterations.csv, as ``devlab --run`` writes them."""
    tables.write_results(folder, rows, {HOST.id: HOST})
    tables.write_iterations(folder, rows)
    return folder


def patch_json(folder: Path, model: str, **columns: Any) -> Path:
    """Set (or add) columns of one model's row in results.json; returns the file."""
    path = folder / "results.json"
    records = json.loads(path.read_text())
    for row in records:
        if row["model"] == model:
            row.update(columns)
    path.write_text(json.dumps(records))
    return path


def drop_columns(folder: Path, columns: tuple[str, ...]) -> Path:
    """Today's results.csv: without the columns of the trustworthy-numbers work."""
    path = folder / "results.csv"
    frame = pd.read_csv(path)
    frame = frame.drop(columns=[c for c in columns if c in frame.columns])
    frame.to_csv(path, index=False)
    return path


def only(report_rows: list, model: str):
    matches = [row for row in report_rows if row.model == model]
    assert len(matches) == 1, report_rows
    return matches[0]


def compare(a: Path, b: Path, **kwargs: Any):
    return compare_tables(load_results(a), load_results(b), **kwargs)


# --- verdicts --------------------------------------------------------------------------------


def test_a_run_compared_with_itself_is_indistinguishable_everywhere(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", [record("mbnet", 1000.0), record("tiny", 20.0, seed=1)])
    report = compare(run, run)
    assert [row.verdict for row in report.rows] == [INDISTINGUISHABLE] * 2
    assert all(row.delta_pct == 0.0 and not row.conditions_differ for row in report.rows)
    assert not report.only_in_a and not report.only_in_b


def test_round_level_intervals_decide_with_three_rounds(tmp_path: Path) -> None:
    """Rounds scattered by ~1.5% around their medians, as on a quiet machine."""
    spread = [1.0, 1.015, 0.99]
    a = write_run(
        tmp_path / "a", [record(n, 1000.0, factors=spread, seed=i) for i, n in enumerate("xyz")]
    )
    b = write_run(
        tmp_path / "b",
        [
            record("x", 1200.0, factors=spread[::-1], seed=10),  # clearly slower
            record("y", 800.0, factors=spread[::-1], seed=11),  # clearly faster
            record("z", 1008.0, factors=spread[::-1], seed=12),  # inside the rounds' noise
        ],
    )
    report = compare(a, b)
    assert only(report.rows, "x").verdict == SLOWER
    assert only(report.rows, "y").verdict == FASTER
    z = only(report.rows, "z")
    assert z.verdict == INDISTINGUISHABLE
    assert z.noise_source == "rounds"
    assert z.rule.startswith("intervals overlap")
    assert only(report.rows, "x").delta_pct == pytest.approx(20.0, abs=1.0)


def test_a_burst_round_makes_a_delta_indistinguishable(tmp_path: Path) -> None:
    """Same 6% delta: apart with steady rounds, inside the noise when a round was in a burst."""
    a = write_run(tmp_path / "a", [record("x", 1000.0), record("y", 1000.0, seed=1)])
    b = write_run(
        tmp_path / "b",
        [
            record("x", 1060.0, seed=2),
            record("y", 1060.0, factors=[1.0, 1.45, 0.94], seed=3),
        ],
    )
    report = compare(a, b)
    assert only(report.rows, "x").verdict == SLOWER
    assert only(report.rows, "y").verdict == INDISTINGUISHABLE


def test_without_rounds_the_threshold_is_the_noise(tmp_path: Path) -> None:
    """One round each (no interval): |delta| within --threshold-pct is indistinguishable."""
    a = write_run(tmp_path / "a", [record("x", 1000.0, rounds=1), record("y", 1000.0, rounds=1)])
    b = write_run(
        tmp_path / "b",
        [record("x", 1030.0, rounds=1, seed=1), record("y", 1080.0, rounds=1, seed=2)],
    )
    report = compare(a, b)
    x, y = only(report.rows, "x"), only(report.rows, "y")
    assert (x.verdict, y.verdict) == (INDISTINGUISHABLE, SLOWER)
    assert x.noise_source == "threshold"
    assert x.rule.endswith("<= noise 5.00%")
    strict = compare(a, b, threshold_pct=1.0)
    assert only(strict.rows, "x").verdict == SLOWER


def test_noisy_iterations_widen_the_band_beyond_the_threshold(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 1000.0, rounds=1, per_round=20, jitter=0.4)])
    b = write_run(tmp_path / "b", [record("x", 1080.0, rounds=1, per_round=20, jitter=0.4)])
    row = only(compare(a, b).rows, "x")
    assert row.noise_source == "cv"
    assert row.a_half_width_pct is not None and row.a_half_width_pct > 5.0
    assert row.verdict == INDISTINGUISHABLE


def test_the_rows_own_confidence_intervals_are_used(tmp_path: Path) -> None:
    """A 3% delta: apart with +-1% intervals, overlapping with +-2%."""
    a = write_run(tmp_path / "a", [record("x", 1000.0), record("y", 1000.0, seed=1)])
    b = write_run(tmp_path / "b", [record("x", 1030.0, seed=2), record("y", 1030.0, seed=3)])
    for folder in (a, b):
        patch_json(folder, "x", ci_half_width_pct=1.0)
        patch_json(folder, "y", ci_half_width_pct=2.0)
    report = compare(a, b)
    x, y = only(report.rows, "x"), only(report.rows, "y")
    assert (x.verdict, x.noise_source) == (SLOWER, "ci")
    assert (y.verdict, y.noise_source) == (INDISTINGUISHABLE, "ci")
    assert x.rule == "intervals apart (A +-1.00%, B +-1.00%)"


def test_ci_bounds_alone_give_the_interval(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 1000.0)])
    b = write_run(tmp_path / "b", [record("x", 1030.0, seed=1)])
    median_a = load_results(a).rows[0]["median_us"]
    median_b = load_results(b).rows[0]["median_us"]
    patch_json(a, "x", ci_low_us=median_a * 0.98, ci_high_us=median_a * 1.02)
    patch_json(b, "x", ci_low_us=median_b * 0.98, ci_high_us=median_b * 1.02)
    row = only(compare(a, b).rows, "x")
    assert row.a_half_width_pct == pytest.approx(2.0)
    assert (row.verdict, row.noise_source) == (INDISTINGUISHABLE, "ci")


def test_drift_normalised_medians_are_compared_when_both_rows_have_them(tmp_path: Path) -> None:
    """B ran inside a 1.45x burst: raw medians 45% apart, normalised ones equal."""
    a = write_run(tmp_path / "a", [record("x", 1000.0)])
    b = write_run(tmp_path / "b", [record("x", 1450.0, seed=1)])
    patch_json(a, "x", normalised_median_us=1000.0, ci_half_width_pct=1.0)
    patch_json(b, "x", normalised_median_us=1004.0, ci_half_width_pct=1.0)
    row = only(compare(a, b).rows, "x")
    assert row.basis == "normalised_median_us"
    assert row.delta_pct == pytest.approx(0.4)
    assert row.verdict == INDISTINGUISHABLE
    raw = only(compare(a, b, raw=True).rows, "x")
    assert (raw.basis, raw.verdict) == ("median_us", SLOWER)


def test_flags_of_either_row_are_shown(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 1000.0)])
    b = write_run(tmp_path / "b", [record("x", 1000.0, seed=1)])
    patch_json(a, "x", drifting=True, converged=True, parity_ok=True)
    patch_json(b, "x", drifting=False, converged=False, parity_ok=False)
    assert only(compare(a, b).rows, "x").flags == [
        "A drifting",
        "B outputs differ",
        "B not converged",
    ]


# --- pairing ---------------------------------------------------------------------------------


def test_rows_only_on_one_side_are_listed(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 100.0), record("gone", 50.0, seed=1)])
    b = write_run(tmp_path / "b", [record("x", 100.0, seed=2), record("new", 70.0, seed=3)])
    report = compare(a, b)
    assert [r.model for r in report.rows] == ["x"]
    assert [(u.side, u.model) for u in report.only_in_a] == [("A", "gone")]
    assert [(u.side, u.model, u.median_us) for u in report.only_in_b] == [
        ("B", "new", pytest.approx(70.0, rel=0.01))
    ]
    assert report.counts()["only_in_b"] == 1


def test_a_failed_row_is_not_comparable(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 100.0)])
    b = write_run(tmp_path / "b", [record("x", 100.0, state=JobState.FAILED)])
    row = only(compare(a, b).rows, "x")
    assert row.verdict == NOT_COMPARABLE
    assert row.rule == "no latency: B failed"


def test_a_changed_model_file_pairs_by_name_and_is_marked(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 100.0, sha="1" * 64)])
    b = write_run(tmp_path / "b", [record("x", 101.0, sha="2" * 64, seed=1)])
    row = only(compare(a, b).rows, "x")
    assert row.conditions_differ[0] == "model_sha256: 111111111111 -> 222222222222"


def test_the_latest_of_duplicate_rows_is_compared_with_a_note(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 100.0), record("x", 150.0, seed=9)])
    b = write_run(tmp_path / "b", [record("x", 150.0, seed=2)])
    report = compare(a, b)
    assert only(report.rows, "x").verdict == INDISTINGUISHABLE
    assert report.notes == [
        "A: 2 rows for x on host:cpu/onnxruntime; compared the latest measured one"
    ]


# --- conditions ------------------------------------------------------------------------------


def test_settings_tool_version_and_device_properties_that_differ_are_listed(
    tmp_path: Path,
) -> None:
    a = write_run(tmp_path / "a", [record("x", 100.0, runs=200)])
    b = write_run(tmp_path / "b", [record("x", 100.0, runs=300, tool_version="1.19.0", seed=1)])
    patch_json(b, "x", device_properties={"cpu_model": "EPYC", "cores": 4})
    row = only(compare(a, b).rows, "x")
    assert row.conditions_differ == [
        "device_properties.cores: 2 -> 4",
        "settings.runs: 200 -> 300",
        "tool_version: 1.18.0 -> 1.19.0",
    ]


@pytest.mark.parametrize(
    ("start_a", "start_b", "differs"),
    [
        ({"temperature_c": 40.0}, {"temperature_c": 42.5}, False),
        ({"temperature_c": 40.0}, {"temperature_c": 47.0}, True),
        ({"loadavg_1m": 0.2}, {"loadavg_1m": 0.6}, False),
        ({"loadavg_1m": 0.2}, {"loadavg_1m": 2.5}, True),
        ({"battery_level": 80}, {"battery_level": 74}, False),
        ({"governor": "performance"}, {"governor": "schedutil"}, True),
    ],
)
def test_recorded_conditions_differ_beyond_a_small_tolerance(
    tmp_path: Path, start_a: dict, start_b: dict, differs: bool
) -> None:
    a = write_run(tmp_path / "a", [record("x", 100.0, conditions=start_a)])
    b = write_run(tmp_path / "b", [record("x", 100.0, conditions=start_b, seed=1)])
    names = only(compare(a, b).rows, "x").conditions_differ_names
    expected = {f"conditions_start.{k}" for k in start_a} | {f"conditions_end.{k}" for k in start_a}
    assert (set(names) == expected) if differs else (names == [])


def test_condition_tolerances() -> None:
    assert condition_tolerance("conditions_start.thermal_c.cpu0", 40.0, 41.0) == 3.0
    assert condition_tolerance("conditions_end.loadavg_1m", 4.0, 2.0) == 1.0
    assert condition_tolerance("conditions_end.battery_voltage", 4000.0, 3900.0) == 400.0


# --- formats ---------------------------------------------------------------------------------


def test_csv_json_and_folders_give_the_same_comparison(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [record("x", 1000.0), record("y", 500.0, seed=1)])
    b = write_run(tmp_path / "b", [record("x", 1100.0, seed=2), record("y", 505.0, seed=3)])

    def verdicts(report) -> list[tuple]:
        return [
            (r.model, r.verdict, round(r.delta_pct, 6), r.conditions_differ) for r in report.rows
        ]

    by_folder = verdicts(compare(a, b))
    assert verdicts(compare(a / "results.csv", b / "results.json")) == by_folder
    assert verdicts(compare(a / "results.json", b / "results.csv")) == by_folder


def test_todays_results_csv_without_the_new_columns_still_compares(tmp_path: Path) -> None:
    """No interval columns, no round medians in the row: the rounds come from iterations.csv."""
    a = write_run(tmp_path / "a", [record("x", 1000.0)])
    b = write_run(tmp_path / "b", [record("x", 1200.0, seed=1)])
    for folder in (a, b):
        (folder / "results.json").unlink()
        drop_columns(folder, NEW_COLUMNS)
    row = only(compare(a, b).rows, "x")
    assert (row.verdict, row.noise_source, row.basis) == (SLOWER, "rounds", "median_us")
    (a / "iterations.csv").unlink()
    (b / "iterations.csv").unlink()
    row = only(compare(a, b).rows, "x")
    assert (row.verdict, row.noise_source) == (SLOWER, "threshold")


# --- the command -----------------------------------------------------------------------------


def run_tool(*args: str | Path) -> tuple[int, str]:
    """``devlab compare ARGS`` in this process: (exit code, stderr); stdout goes to capsys."""
    err = io.StringIO()
    code = run_compare_tool(["compare", *map(str, args)], Console(file=err, width=400))
    return code, err.getvalue()


def test_the_table_names_verdicts_conditions_and_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "a", [record("x", 1000.0, runs=240), record("gone", 9.0, seed=1)])
    b = write_run(tmp_path / "b", [record("x", 1200.0, seed=2)])
    code, err = run_tool(a, b)
    out = capsys.readouterr().out
    assert code == ExitCode.OK, err
    assert "slower" in out and "+20." in out
    assert "differ: settings.runs" in out
    assert "conditions differ for x (host:cpu/onnxruntime): settings.runs: 240 -> 180" in out
    assert "only in A: gone (host:cpu/onnxruntime)" in out
    assert "1 compared: 0 faster, 1 slower, 0 indistinguishable" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", [record("x", 1000.0)])
    b = write_run(tmp_path / "b", [record("x", 800.0, seed=1)])
    code, _ = run_tool(a / "results.csv", b, "--json")
    data = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK
    assert data["a"].endswith("results.csv") and data["b"].endswith("results.json")
    assert data["rows"][0]["verdict"] == FASTER
    assert data["rows"][0]["delta_pct"] == pytest.approx(-20.0, abs=1.0)
    assert data["summary"]["faster"] == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.csv", "missing.csv: no such file or folder"),
        (lambda d: d, "no results.json, results.csv, results.parquet in this folder"),
        (
            lambda d: _write(d / "other.csv", "a,b\n1,2\n"),
            "other.csv: not a devlab results table (no model, median_us column)",
        ),
        (lambda d: _write(d / "bad.json", "{not json"), "bad.json: cannot be read"),
        (lambda d: _write(d / "dict.json", '{"rows": []}'), "expected a JSON list of rows"),
        (lambda d: _write(d / "notes.txt", "hello"), "expected .csv, .json or .parquet"),
    ],
)
def test_usage_errors_name_the_file_and_the_fix(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    good = write_run(tmp_path / "good", [record("x", 1.0)])
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_tool(good, make(empty))
    assert code == ExitCode.USAGE
    assert message in err
    assert err.startswith("devlab compare: error: ")


def test_argument_errors_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tool("only-one")[0] == ExitCode.USAGE
    assert run_tool("a", "b", "--threshold-pct", "-1")[0] == ExitCode.USAGE
    assert "the following arguments are required: B" in capsys.readouterr().err


def test_load_results_raises_compare_error(tmp_path: Path) -> None:
    with pytest.raises(CompareError, match="give a results.csv or results.json"):
        load_results(tmp_path / "nope")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- real runs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real ``devlab --run`` runs of mlp.onnx: two alike, one with more runs."""
    root = tmp_path_factory.mktemp("real")
    runs = {}
    for name, count in (("a", "20"), ("b", "20"), ("c", "30")):
        out = root / name
        run = run_devlab("--run", MODELS_DIR / "mlp.onnx", "--runs", count, "--out", out, home=root)
        assert run.returncode == 0, run.describe()
        runs[name] = out
    return runs


def test_two_real_runs_of_the_same_command_pair_up_with_no_settings_differing(
    real_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_tool(real_runs["a"], real_runs["b"], "--json")
    assert code == ExitCode.OK, err
    data = json.loads(capsys.readouterr().out)
    (row,) = data["rows"]
    assert (row["model"], row["device"], row["runtime"]) == ("mlp", "host:cpu", "onnxruntime")
    assert row["verdict"] in (FASTER, SLOWER, INDISTINGUISHABLE)
    assert row["a_us"] > 0 and row["b_us"] > 0
    # the machine is shared: load and temperature may move, nothing else may
    assert all(c.startswith("conditions_") for c in row["conditions_differ"])
    assert not data["only_in_a"] and not data["only_in_b"]


def test_real_runs_with_other_settings_are_marked(
    real_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_tool(real_runs["a"] / "results.csv", real_runs["c"])
    out = capsys.readouterr().out
    assert code == ExitCode.OK, err
    assert "mlp" in out and "differ: " in out
    assert "settings.runs: 20 -> 30" in out
