"""The virtual phone's stand-in ``snpe-diagview`` writes ``--output`` in the layout real 2.x
diagview writes (see tests/fixtures/bench-output/snpe_diagcsv_3.csv), so devlab's SNPE session
reads every inference's time from it; its text report and its CSV agree as the real tool's do.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from backends.runtimes.snpe import parse_diagview
from backends.runtimes.snpe_diag_csv import parse_diagview_csv
from backends.virtual.tools import snpe_diagview
from backends.virtual.tools.snpe_standin import write_log

TOTALS = [210.4, 180.2, 181.9, 179.6, 250.3]


def record(runtime: str) -> dict[str, object]:
    return {
        "version": "2.37.0.devlab_standin",
        "created": 1_700_000_000.0,
        "steady_ns": 5_000_000_000,
        "runtime": runtime,
        "init": {"load": 100.0, "deserialize": 50.0, "create": 900.0, "init": 1100.0},
        "inferences": [{"total": total, "forward": total - 3} for total in TOTALS],
        "layers": [
            {"name": "fc1", "op_type": "Gemm", "times": [total * 0.6 for total in TOTALS]},
            {"name": "fc2", "op_type": "Gemm", "times": [total * 0.3 for total in TOTALS]},
        ],
    }


@pytest.mark.parametrize("runtime", ["CPU", "GPU", "DSP"])
def test_the_csv_holds_every_inference_and_agrees_with_the_report(
    tmp_path: Path, runtime: str
) -> None:
    log = write_log(tmp_path, record(runtime))
    table = tmp_path / "diag.csv"
    out = io.StringIO()
    assert snpe_diagview.run(["--input_log", str(log), "--output", str(table)], out) == 0

    run = parse_diagview_csv(table.read_text())
    assert run.extra["total_inference_us"] == [round(total) for total in TOTALS]
    assert run.count == 5 and run.min_us == 180 and run.max_us == 250
    assert run.init_us == 1100 and run.warnings == []
    report = parse_diagview(out.getvalue())
    assert report.avg_us == round(sum(TOTALS) / 5)
    assert abs(run.avg_us - report.avg_us) < 1
    if runtime == "DSP":  # HTP layer times are cycles in the real tool: not in the CSV
        assert run.layers == []
    else:
        assert [layer.mean_us for layer in run.layers] == pytest.approx(
            [sum(round(t * share) for t in TOTALS) / 5 for share in (0.6, 0.3)]
        )
        assert {row["runtime"] for row in run.extra["layer_rows"]} == {runtime}
