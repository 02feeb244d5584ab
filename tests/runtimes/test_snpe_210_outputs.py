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


def test_diagview_2_25_reads_the_same_log_in_the_new_layout() -> None:
    """The same 2.10 log read by the real QAIRT 2.25 snpe-diagview: the 2.37-style report
    (``SNPE Create Statistics``, ``SNPE Execute Statistics (Averaged)``) whose layer rows have
    an empty name (``0:  : 84 us : CPU``), in another order than 2.5 prints them."""
    run = snpe.parse_diagview(fixture("snpe_diagview_13.txt"))
    older = snpe.parse_diagview(fixture("snpe_diagview_11.txt"))

    assert run.tool_version == "2.10.0.4541"  # the runtime that wrote the log
    assert (run.avg_us, run.init_us) == (older.avg_us, older.init_us) == (171941, 55289)
    assert run.forward_us["mean"] == 171853
    # "Snpe Accelerator Time: 0 us" is measured; "RPC Execute Time: 0 " (no unit) is not
    assert run.extra["execute"]["snpe_accelerator"] == 0
    assert {"rpc_execute", "accelerator"} <= set(run.extra["not_recorded"])
    # empty names read as the unnamed layout: layer_NNN, index 0 the input
    assert [layer.name for layer in run.layers[:2]] == ["layer_000", "layer_001"]
    assert run.layers[0].mean_us == 84 and run.extra["input_layer_indices"] == [0]
    assert run.layers_total_us == 170414 - 84
    # the same 94 layer times as diagview 2.5 printed, in another order
    assert sorted(x.mean_us for x in run.layers) == sorted(x.mean_us for x in older.layers)
    assert run.warnings == []


def test_diagview_2_25_csv_with_its_header_a_comma_short() -> None:
    # header "Msg Timestamp,Message,Layer Id,Time,RuntimeGraph Name" over rows of six cells
    # ("...,FORWARD_PROPAGATE_LAYER,0,84,CPU,graph"); unmeasured values have a blank unit
    # ("RPC_INIT_TIME,-1,0,,")
    table = parse_diagview_csv(fixture("snpe_diagcsv_4.csv"))
    report = snpe.parse_diagview(fixture("snpe_diagview_13.txt"))

    assert table.count == 1 and table.avg_us == 171941 and table.init_us == 55289
    assert table.extra["init"]["create_networks"] == 34816  # "CREATE_NETWORK(S),-1,34816,us,"
    assert {"RPC_INIT_TIME", "AVG_RPC_EXECUTE_TIME"} <= set(table.extra["not_recorded"])
    assert "rpc_init" not in table.extra["init"]
    assert [x.mean_us for x in table.layers] == [x.mean_us for x in report.layers]
    assert {row["runtime"] for row in table.extra["layer_rows"]} == {"CPU"}
    assert table.layers_total_us == report.layers_total_us == 170330
    assert table.warnings == []
