"""SNPE 1.17 outputs made here by the SDK's own x86_64 tools (provenance in
``tests/fixtures/bench-output/SOURCES.md``): ``snpe-net-run`` on the host CPU over 20 inputs,
then ``snpe-diagview`` on its diagnostic log as a text report (1.x layout: a
Load/Deserialize/Create block with no Init, layer rows without a runtime column) and as the
per-inference CSV of ``--output``; and two of diagview's real failures.

Expected values are written by hand from the files. The text report's figures are the CSV's
means truncated to whole microseconds, which the last test checks across the two files.
"""

from __future__ import annotations

import math

import pytest

from backends.core.records import LayerTime
from backends.runtimes import snpe
from backends.runtimes.common import (
    FORWARD_PROPAGATE,
    LAYERS_TIME,
    TOTAL_INFERENCE_TIME,
    ToolOutputError,
)
from backends.runtimes.snpe_diag_csv import parse_diagview_csv
from support.helpers import bench_output as fixture


def test_diagview_1_17_text_report() -> None:
    run = snpe.parse_diagview(fixture("snpe_diagview_7.txt"))

    assert run.tool_version == "1.17.0.0"
    # "Total Inference Time: 196 us", "Forward Propagate Time: 194 us"
    assert run.avg_us == 196 and run.forward_us is not None and run.forward_us["mean"] == 194
    # "Load: 128 us", "Deserialize: 82 us", "Create: 397 us"; 1.17 prints no Init line
    assert run.extra["init"] == {"load": 128, "deserialize": 82, "create": 397}
    assert run.init_us is None
    # "0: 0 us" .. "10: 1 us": no runtime column; layer 0 is the input
    assert len(run.layers) == 11
    assert run.layers[1] == LayerTime("layer_001", "", 84)
    assert run.layers[4] == LayerTime("layer_004", "", 67)
    assert run.layers_total_us == 84 + 2 + 14 + 67 + 1 + 5 + 4 + 0 + 12 + 1
    assert run.latency_keys() == {
        TOTAL_INFERENCE_TIME: (196, 196, 196),
        FORWARD_PROPAGATE: (194, 194, 194),
        LAYERS_TIME: (190, 190, 190),
    }
    assert run.warnings == []


def test_diagview_1_17_csv_has_every_inference() -> None:
    run = parse_diagview_csv(fixture("snpe_diagcsv_1.csv"))

    # 20 TOTAL_INFERENCE_TIME rows: 326, 171, 165, 167, 241, 192, 169, 165, 172, 165,
    # 165, 230, 291, 170, 165, 168, 166, 169, 246, 230
    assert run.count == 20
    assert run.first_inference_us == 326
    assert (run.min_us, run.max_us) == (165, 326)
    assert run.avg_us == pytest.approx(3933 / 20)
    assert run.median_us == pytest.approx((169 + 170) / 2)
    assert run.forward_us is not None and run.forward_us["count"] == 20
    assert run.forward_us["mean"] == pytest.approx(3891 / 20)
    # "LOAD,-1,128", "DESERIALIZE,-1,82", "CREATE,-1,397"; "INIT,-1,5" comes after inference 1
    assert run.extra["init"] == {"load": 128, "deserialize": 82, "create": 397}
    assert run.extra["per_inference"] == {"INIT": {"count": 1, "mean_us": 5}}
    assert run.init_us is None
    assert len(run.layers) == 11 and run.warnings == []
    low, high = run.layers_total_range_us or (None, None)
    assert low is not None and high is not None
    assert low <= run.layers_total_us <= high
    # inference 1: layers 1..10 = 172 + 6 + 13 + 86 + 3 + 5 + 4 + 0 + 14 + 7
    assert high == 310


def test_the_text_report_is_the_csvs_means_truncated() -> None:
    text = snpe.parse_diagview(fixture("snpe_diagview_7.txt"))
    table = parse_diagview_csv(fixture("snpe_diagcsv_1.csv"))
    assert math.floor(table.avg_us) == text.avg_us
    assert math.floor(table.forward_us["mean"]) == text.forward_us["mean"]
    assert [math.floor(layer.mean_us) for layer in table.layers] == [
        layer.mean_us for layer in text.layers
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("snpe_diagview_8_failed.txt", 'Error parsing log: "Failed to parse message.'),
        ("snpe_diagview_9_failed.txt", "Failed to open log file: nonexist.log"),
    ],
)
def test_diagview_failures_name_the_tools_reason(name: str, reason: str) -> None:
    with pytest.raises(ToolOutputError, match="no 'Total Inference Time' line") as caught:
        snpe.parse_diagview(fixture(name))
    assert reason in str(caught.value)


def test_an_unreadable_csv_row_is_a_warning_quoting_it() -> None:
    """DERIVED: the real CSV with one time cut short by a damaged copy."""
    text = fixture("snpe_diagcsv_1.csv")
    edited = text.replace(
        "67156044041,FORWARD_PROPAGATE,-1,168", "67156044041,FORWARD_PROPAGATE,-1,1x", 1
    )
    assert edited != text
    run = parse_diagview_csv(edited)
    (warning,) = run.warnings
    assert "'67156044041,FORWARD_PROPAGATE,-1,1x'" in warning
    assert run.count == 20 and run.forward_us["count"] == 19


def test_an_unknown_latency_message_is_flagged_and_kept() -> None:
    """DERIVED: the real CSV with one message of a name 1.17 does not write."""
    text = fixture("snpe_diagcsv_1.csv")
    edited = text.replace(
        "67156044041,FORWARD_PROPAGATE,-1,168\n",
        "67156044041,FORWARD_PROPAGATE,-1,168\n67156044041,RPC_EXECUTE,-1,40\n",
        1,
    )
    assert edited != text
    run = parse_diagview_csv(edited)
    assert run.extra["per_inference"]["RPC_EXECUTE"] == {"count": 1, "mean_us": 40}
    (warning,) = run.warnings
    assert "RPC_EXECUTE" in warning and "per_inference" in warning


def test_a_text_report_is_not_a_csv() -> None:
    with pytest.raises(ToolOutputError, match="CSV"):
        parse_diagview_csv(fixture("snpe_diagview_7.txt"))
