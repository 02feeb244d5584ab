"""The "fast but wrong" pairing, the flag rule, the Pareto front and the PNG, on constructed
rows whose answers are known by hand; the real runs are in tests/accuracy/test_fast_wrong_e2e.py.
"""

from __future__ import annotations

import csv
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from backends.results.fast_wrong import (
    fast_wrong_rows,
    pareto_front,
    pareto_points,
    variant_of,
    write_fast_wrong,
)
from backends.results.pareto_plot import plot_accuracy_vs_latency
from support.helpers import run_devlab

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(model: str, device: str, runtime: str, us: float, top1: float | None, **extra: Any) -> dict:
    return {
        "model": model,
        "device": device,
        "runtime": runtime,
        "status": "done",
        "median_us": us,
        "accuracy_top1": top1,
        "accuracy_set": "digits-test",
        **extra,
    }


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([(1.0, 0.9)], [0]),
        ([(1.0, 0.9), (2.0, 0.8)], [0]),  # slower and worse: dominated
        ([(1.0, 0.8), (2.0, 0.9), (3.0, 0.95)], [0, 1, 2]),  # each buys accuracy with time
        ([(3.0, 0.95), (1.0, 0.8), (2.0, 0.7), (2.5, 0.95)], [1, 3]),
        ([(1.0, 0.9), (1.0, 0.9)], [0]),  # duplicates: the first stays
        ([(1.0, 0.8), (1.0, 0.9)], [1]),  # as fast and more accurate
        ([(2.0, 0.9), (1.0, 0.9)], [1]),  # as accurate and faster
        ([], []),
    ],
)
def test_pareto_front(points: list[tuple[float, float]], front: list[int]) -> None:
    assert pareto_front(points) == front


def test_the_front_holds_exactly_the_undominated_points() -> None:
    """Brute force on a grid of points with ties: the definition, checked pair by pair."""
    points = [(float(1 + (i * 7) % 5), ((i * 3) % 7) / 7) for i in range(30)]
    front = set(pareto_front(points))
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (o_lat <= lat and o_acc >= acc and (o_lat, o_acc) != (lat, acc))
            for o_lat, o_acc in points
        )
        duplicate_before = any(points[j] == points[i] for j in range(i))
        assert (i in front) == (not dominated and not duplicate_before), points[i]


def test_quantized_variants_are_told_by_what_devlab_quantize_writes() -> None:
    assert variant_of(row("digits.int8-qdq", "host:cpu", "onnxruntime", 5, 0.9)).source == "digits"
    assert variant_of(row("digits.int16-qdq", "h", "ort", 5, 0.9)).precision == "int16"
    snpe = variant_of(row("digits", "adb:x", "snpe-dsp", 5, 0.9, **{"settings.clip_ranges": "E"}))
    assert (snpe.source, snpe.precision, snpe.scheme) == ("digits", "int8", "snpe-encodings")
    nested = {**row("digits", "adb:x", "snpe-dsp", 5, 0.9), "settings": {"clip_ranges": None}}
    assert variant_of(nested).scheme == "snpe-calibrated"
    assert variant_of(row("digits", "adb:x", "snpe-cpu", 5, 0.9)).precision == "fp32"
    assert variant_of(row("digits-int8", "h", "ort", 5, 0.9)).precision == "fp32"  # not ours


def test_pairs_per_model_and_device_and_flags_past_the_threshold() -> None:
    rows = [
        row("digits", "host:cpu", "onnxruntime", 100.0, 0.97),
        row("digits.int8-qdq", "host:cpu", "onnxruntime", 50.0, 0.96),
        row("digits", "adb:p", "ort", 400.0, 0.97),
        row("digits.int8-qdq", "adb:p", "ort", 200.0, 0.90),  # 7 points lost: flagged
        row("digits", "adb:p", "snpe-cpu", 300.0, 0.97),
        row("digits", "adb:p", "snpe-dsp", 100.0, 0.955, **{"settings.clip_ranges": "e.json"}),
        row("lonely.int8-qdq", "host:cpu", "onnxruntime", 10.0, 0.5),  # no float twin
        row("other", "host:cpu", "onnxruntime", 10.0, 0.5),
    ]
    table = {(r.model, r.device, r.quant_runtime): r for r in fast_wrong_rows(rows)}
    assert set(table) == {
        ("digits", "host:cpu", "onnxruntime"),
        ("digits", "adb:p", "ort"),
        ("digits", "adb:p", "snpe-dsp"),
    }
    host = table[("digits", "host:cpu", "onnxruntime")]
    assert (host.fp32_us, host.quant_us, host.speedup) == (100.0, 50.0, 2.0)
    assert host.drop_points == pytest.approx(1.0) and not host.flagged
    phone_ort = table[("digits", "adb:p", "ort")]
    assert phone_ort.drop_points == pytest.approx(7.0) and phone_ort.flagged
    assert "7.00 points" in phone_ort.note
    dsp = table[("digits", "adb:p", "snpe-dsp")]
    assert dsp.fp32_runtime == "snpe-cpu"  # the float twin of a DSP run is SNPE's CPU
    assert dsp.scheme == "snpe-encodings" and dsp.speedup == pytest.approx(3.0)
    assert dsp.drop_points == pytest.approx(1.5)
    strict = {(r.device, r.quant_runtime): r.flagged for r in fast_wrong_rows(rows, 1.2)}
    assert strict == {
        ("host:cpu", "onnxruntime"): False,
        ("adb:p", "ort"): True,
        ("adb:p", "snpe-dsp"): True,
    }


def test_the_latest_row_wins_failed_rows_are_left_out_and_sets_must_match() -> None:
    rows = [
        row("m", "d", "ort", 100.0, 0.9),
        row("m.int8-qdq", "d", "ort", 80.0, 0.5),
        row("m.int8-qdq", "d", "ort", 60.0, 0.89),  # measured again: this one counts
        {**row("m", "d", "ort", 1.0, 0.1), "status": "failed"},
        row("n", "d", "ort", 100.0, 0.9),
        row("n.int8-qdq", "d", "ort", 50.0, 0.2, accuracy_set="other-set"),
        row("k", "d", "ort", 100.0, None, accuracy_set=None),
        row("k.int8-qdq", "d", "ort", 50.0, None, accuracy_set=None),
    ]
    table = {r.model: r for r in fast_wrong_rows(rows)}
    assert table["m"].quant_us == 60.0 and table["m"].drop_points == pytest.approx(1.0)
    assert table["n"].drop_points is None and not table["n"].flagged
    assert "different sets" in table["n"].note
    assert table["k"].drop_points is None and "--accuracy" in table["k"].note
    assert table["k"].speedup == 2.0  # latency is still reported


def test_a_row_with_only_a_mean_still_has_a_latency() -> None:
    """snpe-diagview prints averages only: such rows have mean_us and no median."""
    rows = [
        {**row("m", "d", "snpe-cpu", 0.0, 0.9), "median_us": None, "mean_us": 300.0},
        {**row("m", "d", "snpe-dsp", 0.0, 0.9), "median_us": "", "mean_us": "100.0"},
    ]
    (pair,) = fast_wrong_rows(rows)
    assert (pair.fp32_us, pair.quant_us, pair.speedup) == (300.0, 100.0, 3.0)


def test_csv_rows_read_back_as_text_pair_the_same(tmp_path: Path) -> None:
    """results.csv cells are strings, empty for missing: the same table comes out."""
    rows = [
        row("digits", "host:cpu", "onnxruntime", 100.0, 0.97, headline_us=""),
        row("digits.int8-qdq", "host:cpu", "onnxruntime", 40.0, 0.95, headline_us=""),
    ]
    as_text = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]
    (pair,) = fast_wrong_rows(as_text)
    assert pair.speedup == 2.5 and pair.drop_points == pytest.approx(2.0) and not pair.flagged
    paths = write_fast_wrong(tmp_path, [pair])
    assert [p.name for p in paths] == ["fast_wrong.csv", "fast_wrong.json"]
    (written,) = list(csv.DictReader(paths[0].open()))
    assert written["model"] == "digits" and float(written["drop_points"]) == pytest.approx(2.0)
    assert json.loads(paths[1].read_text())[0]["flagged"] is False


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_plot_is_a_png_of_plausible_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [
        row("digits", "host:cpu", "onnxruntime", 30.0, 0.972),
        row("digits.int8-qdq", "host:cpu", "onnxruntime", 45.0, 0.969),
        row("digits", "adb:p", "ort", 900.0, 0.972),
        row("digits", "adb:p", "snpe-dsp", 700.0, 0.96),
    ]
    points = pareto_points(rows)
    assert {p.precision for p in points} == {"fp32", "int8"}
    path = plot_accuracy_vs_latency(points, tmp_path / "plot" / "accuracy_pareto.png")
    width, height = png_size(path)
    assert (width, height) == (770, 550)  # 7 x 5 inches at 110 dpi
    assert 15_000 < path.stat().st_size < 500_000  # drawn, not blank
    empty = plot_accuracy_vs_latency([], tmp_path / "empty.png")
    assert png_size(empty) == (770, 550)


def test_devlab_report_writes_the_table_and_the_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "R"
    out.mkdir()
    rows = [
        row("digits", "host:cpu", "onnxruntime", 100.0, 0.97, job_id="a"),
        row("digits.int8-qdq", "host:cpu", "onnxruntime", 50.0, 0.90, job_id="b"),
    ]
    (out / "results.json").write_text(json.dumps(rows))
    run = run_devlab("report", out, home=tmp_path)
    assert run.returncode == 1, run.describe()  # a pair is flagged
    assert "FAST BUT WRONG" in run.stdout and "+7.00 pt" in run.stdout
    assert (out / "fast_wrong.csv").is_file() and png_size(out / "accuracy_pareto.png")
    ok = run_devlab("report", out, "--max-drop", "8", "--json", "--no-plot", home=tmp_path)
    assert ok.returncode == 0, ok.describe()
    assert json.loads(ok.stdout)[0]["flagged"] is False


def test_devlab_report_names_a_missing_table_and_a_bad_threshold(tmp_path: Path) -> None:
    missing = run_devlab("report", tmp_path / "nowhere", home=tmp_path)
    assert missing.returncode == 2 and str(tmp_path / "nowhere") in missing.err_text
    (tmp_path / "results.json").write_text("[]")
    bad = run_devlab("report", tmp_path, "--max-drop", "-1", home=tmp_path)
    assert bad.returncode == 2 and "--max-drop must be >= 0" in bad.err_text


def test_without_matplotlib_the_tables_are_written_and_one_line_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from console.cli.main import main

    for module in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    rows = [
        row("digits", "host:cpu", "onnxruntime", 100.0, 0.97, job_id="a"),
        row("digits.int8-qdq", "host:cpu", "onnxruntime", 50.0, 0.96, job_id="b"),
    ]
    (tmp_path / "results.json").write_text(json.dumps(rows))
    assert main(["report", str(tmp_path)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "no accuracy plot: Accuracy plots need the plots extra: pip install 'devlab[plots]'" in err
    )
    assert "Traceback" not in err
    assert (tmp_path / "fast_wrong.csv").is_file() and not (
        tmp_path / "accuracy_pareto.png"
    ).exists()
