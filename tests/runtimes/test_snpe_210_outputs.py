"""A detailed SNPE 2.10 diagnostic log (MobileNetV3 on a phone's CPU, published in a public
repository) read here by the real SNPE 2.5 ``snpe-diagview``: the text report (2.x layer rows
``N: T us : CPU``) and the ``--output`` CSV, whose fifth column holds the unit on statistic rows
and the runtime on layer rows; plus the tool's real answer to a log of a format it dropped.
Provenance in ``tests/fixtures/bench-output/SOURCES.md``; expected values by hand from the
files.
"""

from __future__ import annotations

import pytest

from backends.core.records import LayerTime
from backends.runtimes import snpe
from backends.runtimes.common import LAYERS_TIME, ToolOutputError
from backends.runtimes.snpe_diag_csv import parse_diagview_csv
from support.helpers import bench_output as fixture


def test_diagview_2_10_detailed_cpu_report() -> None:
    run = snpe.parse_diagview(fixture("snpe_diagview_11.txt"))

    assert run.tool_version == "2.10.0.4541"
    # "Total Inference Time: 171941 us", "Forward Propagate Time: 171853 us", "Init: 55289 us"
    assert run.avg_us == 171941 and run.forward_us["mean"] == 171853
    assert run.init_us == 55289 and run.extra["init"]["create_networks"] == 34816
    # "RPC Execute Time: 0 us" is measured; "RPC Init Time: 0 NONE" is not
    assert run.extra["execute"]["rpc_execute"] == 0
    assert "rpc_init" in run.extra["not_recorded"]
    # 94 rows "0: 6849 us : CPU" .. "93: ..."; they add up to 170414 us, layer 0 (the input,
    # by the unnamed layout's rule) is 6849 of it
    assert len(run.layers) == 94
    assert run.layers[0] == LayerTime("layer_000", "", 6849)
    assert run.layers[13] == LayerTime("layer_013", "", 17759)
    assert {row["runtime"] for row in run.extra["layer_rows"]} == {"CPU"}
    assert run.layers_total_us == 170414 - 6849
    assert run.warnings == []


def test_diagview_2_10_csv_matches_the_report() -> None:
    table = parse_diagview_csv(fixture("snpe_diagcsv_3.csv"))
    report = snpe.parse_diagview(fixture("snpe_diagview_11.txt"))

    # one inference: "TOTAL_INFERENCE_TIME,-1,171941,us", "INIT,-1,58,us" after it
    assert table.count == 1 and table.avg_us == 171941
    assert table.init_us == 55289  # "INIT,-1,55289,us" of the set-up
    assert table.extra["per_inference"] == {"INIT": {"count": 1, "mean_us": 58}}
    assert table.extra["averages"]["AVG_FORWARD_PROPAGATE_TIME"] == 171853
    # "FORWARD_PROPAGATE_LAYER,0,6849,CPU": the fifth column is the runtime on layer rows
    assert [layer.mean_us for layer in table.layers] == [layer.mean_us for layer in report.layers]
    assert {row["runtime"] for row in table.extra["layer_rows"]} == {"CPU"}
    assert table.latency_keys()[LAYERS_TIME] == (163565, 163565, 163565)
    assert "RPC INIT TIME" in table.extra["not_recorded"] and table.warnings == []


def test_a_log_of_a_dropped_format_is_a_failure_naming_it() -> None:
    # snpe_diagview_12_failed.txt: what diagview 2.5 prints (exit status 0) for the
    # repository's 14-byte SNPEDiag.log
    with pytest.raises(ToolOutputError, match="Deprecated log format no longer supported"):
        snpe.parse_diagview(fixture("snpe_diagview_12_failed.txt"))
