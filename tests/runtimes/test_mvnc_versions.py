"""NCSDK ``mvNCProfile`` across SDK versions and table layouts (issue 16): NCSDK 2 (v02.00) with
number fields that run into each other, the later 1.x layout, and no silent drops.

Expected values are written by hand from the fixture files (``tests/fixtures/bench-output``,
provenance in the sources file). Inputs marked DERIVED are a real fixture with one documented
edit; they exist only for the no-silent-drop rule.
"""

from __future__ import annotations

import pytest

from backends.runtimes.common import LAYERS_TIME, TOTAL_INFERENCE_TIME, ToolOutputError
from backends.runtimes.mvnc import parse_mvnc_profile
from support.helpers import bench_output as fixture

approx = pytest.approx


def cannot_read(warnings: list[str]) -> list[str]:
    return [warning for warning in warnings if "cannot read line" in warning]


def test_ncsdk2_tiny_yolo_with_glued_columns_and_dispatcher_error() -> None:
    run = parse_mvnc_profile(fixture("mvnc_profile_3.txt"))
    # "mvNCProfile v02.00, Copyright @ Intel Corporation 2017"
    assert run.tool_version == "02.00"
    # "Time to Execute :  151.82  ms" and "Time to Execute :  132.19  ms"
    assert run.count == 2
    assert run.extra["time_to_execute_us"] == [approx(151820.0), approx(132190.0)]
    assert run.latency_keys()[TOTAL_INFERENCE_TIME] == (
        approx(132190.0),
        approx(142005.0),
        approx(151820.0),
    )
    # 16 rows (0 data .. 15 fc9); row 0 prints "0.0222998.7": 0.0 MFLOPs, 222998.7 MB/s
    assert len(run.layers) == 16
    assert run.layers[0].name == "data" and run.layers[0].mean_us == approx(5.0)
    assert run.extra["mflops"]["data"] == 0.0
    assert run.extra["bandwidth_mb_s"]["data"] == approx(222998.7)
    assert run.layers[3].name == "scale2" and run.layers[3].mean_us == approx(15908.0)
    assert run.extra["bandwidth_mb_s"]["scale2"] == approx(867.1)
    assert run.layers[-1].name == "fc9" and run.layers[-1].mean_us == approx(16201.0)
    # "Total inference time  117.59"; the rows add up to 117.593 ms, so none is missing
    assert run.layers_total_us == approx(117590.0)
    assert sum(layer.mean_us for layer in run.layers) == approx(117593.0)
    assert run.extra["layers_complete"] is True
    # the USB dispatcher's error line in a complete run is kept, not dropped
    (warning,) = run.warnings
    assert "E: [         0] dispatcherEventReceive:198" in warning
    assert cannot_read(run.warnings) == []


def test_later_layout_vgg16_without_usb_lines() -> None:
    run = parse_mvnc_profile(fixture("mvnc_profile_4.txt"))
    assert len(run.layers) == 22
    assert run.layers[0].name == "block1_conv1/Relu"
    assert run.layers[0].mean_us == approx(8512.0)
    assert run.extra["mflops"]["block1_conv2/Relu"] == approx(3699.4)
    assert run.layers[18].name == "fc1/Relu" and run.layers[18].mean_us == approx(90830.0)
    assert run.extra["bandwidth_mb_s"]["fc1/Relu"] == approx(2158.5)
    assert run.layers[-1].name == "predictions/Softmax"
    assert run.layers[-1].mean_us == approx(201.0)
    # "Total inference time  749.64"; no "Time to Execute" lines in this copy
    assert run.layers_total_us == approx(749640.0)
    assert sum(layer.mean_us for layer in run.layers) == approx(749640.0, abs=10.0)
    assert run.count is None and run.total_inference is None
    assert run.latency_keys() == {LAYERS_TIME: (None, approx(749640.0), None)}
    assert run.warnings == [] and run.extra["layers_complete"] is True
    assert run.tool_version == ""


# ------------------------------------------------------------------ no silent drops


def test_unreadable_table_row_is_a_warning_naming_it() -> None:
    """DERIVED: fixture 4 with one row's time replaced by text."""
    text = fixture("mvnc_profile_4.txt").replace(
        "13   block4_pool/MaxPool                      0.4   907.0   0.845",
        "13   block4_pool/MaxPool                      0.4   907.0   n/a",
    )
    run = parse_mvnc_profile(text)
    (warning,) = cannot_read(run.warnings)
    assert "13   block4_pool/MaxPool" in warning and "Detailed Per Layer Profile" in warning
    assert len(run.layers) == 21
    assert run.extra["layers_complete"] is False
    assert run.layers_total_us == approx(749640.0)  # the printed total is still the tool's


def test_unreadable_total_line_is_an_error_naming_it() -> None:
    """DERIVED: fixture 4 with the footer's number replaced by text."""
    text = fixture("mvnc_profile_4.txt").replace(
        "Total inference time                  749.64", "Total inference time                  n/a"
    )
    with pytest.raises(ToolOutputError, match="Total inference time +n/a"):
        parse_mvnc_profile(text)


def test_time_to_execute_in_an_unknown_unit_is_a_warning() -> None:
    """DERIVED: fixture 3 with the first run's unit replaced."""
    text = fixture("mvnc_profile_3.txt").replace(
        "Time to Execute :  151.82  ms", "Time to Execute :  151.82  ticks"
    )
    run = parse_mvnc_profile(text)
    (warning,) = cannot_read(run.warnings)
    assert "'Time to Execute :  151.82  ticks'" in warning
    assert run.count == 1 and run.avg_us == approx(132190.0)


def test_both_table_layouts_split_touching_number_fields() -> None:
    """SYNTHETIC rows in each layout's field widths where a wide value touches its neighbour."""
    old = (
        "Detailed Per Layer Profile\n"
        "Layer      Name                                 MFLOPs    Bandwidth MB/s        time(ms)\n"
        "0          conv1                               236.028123456789012.00            5.63\n"
        "           Total inference time                                                     5.63\n"
    )
    run = parse_mvnc_profile(old)
    assert run.extra["mflops"]["conv1"] == approx(236.028)
    assert run.extra["bandwidth_mb_s"]["conv1"] == approx(123456789012.0)
    assert run.layers[0].mean_us == approx(5630.0) and run.warnings == []
