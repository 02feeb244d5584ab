"""OpenVINO benchmark_app and NCSDK mvNCProfile parsers on real captured outputs."""

from __future__ import annotations

import pytest

from backends.runtimes.common import LAYERS_TIME, TOTAL_INFERENCE_TIME, ToolOutputError
from backends.runtimes.mvnc import parse_mvnc_profile
from backends.runtimes.openvino import parse_benchmark_app
from support.helpers import bench_output as read


def test_benchmark_app_2019_myriad_async_old_layout() -> None:
    run = parse_benchmark_app(read("openvino_benchmark_app_1.txt"))
    assert run.tool_version == "custom_2019_b0c5accaf8e0c0fac17aaef688478d7f391d05bb"
    assert run.extra["device"] == "MYRIAD"
    assert run.extra["plugin"] == "myriadPlugin" and run.extra["plugin_version"] == "2.1"
    assert run.count == 24416
    assert run.extra["duration_us"] == pytest.approx(60011.68e3)
    assert run.median_us == pytest.approx(9440.0)  # old "Latency:" is the median
    assert run.avg_us is None and run.total_inference is None
    assert run.extra["throughput_fps"] == pytest.approx(406.85)
    assert run.init_us == pytest.approx(2239.71e3)
    assert run.extra["read_us"] == pytest.approx(18.13e3)
    assert run.extra["api"] == "async" and run.extra["infer_requests"] == 4
    assert any("queueing" in warning for warning in run.warnings)


def test_benchmark_app_2021_python_tail_with_collapsed_padding() -> None:
    run = parse_benchmark_app(read("openvino_benchmark_app_2.txt"))
    assert run.count == 2596
    assert run.extra["duration_us"] == pytest.approx(60141.63e3)
    assert run.median_us == pytest.approx(92600.0)
    assert run.extra["throughput_fps"] == pytest.approx(5525.09)
    assert run.first_inference_us == pytest.approx(33880.0)


def test_benchmark_app_2022_myriad_header_of_a_hung_run() -> None:
    text = read("openvino_benchmark_app_3.txt")
    with pytest.raises(ToolOutputError, match="no statistics report"):
        parse_benchmark_app(text)
    run = parse_benchmark_app(text, require_stats=False)
    assert run.tool_version == "2022.3.0"
    assert run.extra["device"] == "MYRIAD"
    assert run.extra["plugin"] == "openvino_intel_myriad_plugin"
    assert run.extra["plugin_version"] == "2022.3.0"
    assert run.extra["build"] == "2022.3.0-8631-cec772f2c09"
    assert run.extra["performance_hint"] == "THROUGHPUT"
    assert run.extra["read_us"] == pytest.approx(50460.0)
    assert run.count is None


def test_benchmark_app_2022_latency_block() -> None:
    run = parse_benchmark_app(read("openvino_benchmark_app_4.txt"))
    assert run.tool_version == "2022.3.0-7750-c1109a7317e-feature/py_cpp_align"
    assert run.extra["device"] == "CPU"
    assert run.count == 5380
    assert run.extra["duration_us"] == pytest.approx(60036.78e3)
    assert run.median_us == pytest.approx(22040.0)
    assert run.avg_us == pytest.approx(22090.0)
    assert run.min_us == pytest.approx(20780.0)
    assert run.max_us == pytest.approx(33510.0)
    assert run.extra["throughput_fps"] == pytest.approx(89.61)
    assert run.init_us == pytest.approx(974640.0)
    assert run.first_inference_us == pytest.approx(38410.0)
    assert run.extra["infer_requests"] == 2
    assert run.latency_keys() == {
        TOTAL_INFERENCE_TIME: (
            pytest.approx(20780.0),
            pytest.approx(22090.0),
            pytest.approx(33510.0),
        )
    }


def test_benchmark_app_error_quotes_the_tool() -> None:
    text = "[Step 1/11] Parsing\n[ ERROR ] Can not init Myriad device: NC_ERROR\n"
    with pytest.raises(ToolOutputError, match="NC_ERROR"):
        parse_benchmark_app(text)


def test_mvnc_profile_ncsdk_1_10_docs_layout() -> None:
    run = parse_mvnc_profile(read("mvnc_profile_1.txt"))
    assert len(run.layers) == 75
    assert run.layers[0].name == "conv1/7x7_s2"
    assert run.layers[0].mean_us == pytest.approx(5630.0)
    assert run.layers[4].name == "conv2/3x3" and run.layers[4].mean_us == pytest.approx(11550.0)
    assert run.layers[-1].name == "prob" and run.layers[-1].mean_us == pytest.approx(180.0)
    assert run.extra["mflops"]["conv2/3x3"] == pytest.approx(693.633)
    assert run.extra["bandwidth_mb_s"]["prob"] == pytest.approx(10.62)
    assert run.layers_total_us == pytest.approx(88660.0)
    assert run.extra["layers_complete"] is True and run.warnings == []
    assert run.latency_keys() == {LAYERS_TIME: (None, pytest.approx(88660.0), None)}
    assert run.total_inference is None


def test_mvnc_profile_later_layout_with_usb_lines_and_elided_rows() -> None:
    run = parse_mvnc_profile(read("mvnc_profile_2.txt"))
    assert [layer.name for layer in run.layers][:1] == [
        "InceptionResnetV2/InceptionResnetV2/Conv2d_1a_3x3/Relu"
    ]
    assert len(run.layers) == 6
    assert run.layers[2].mean_us == pytest.approx(17883.0)
    assert run.layers[-1].name == "InceptionResnetV2/Logits/Predictions"
    assert run.layers[-1].mean_us == pytest.approx(202.0)
    assert run.extra["mflops"]["InceptionResnetV2/InceptionResnetV2/Conv2d_2b_3x3/Relu"] == 796.6
    assert run.layers_total_us == pytest.approx(740280.0)
    assert run.extra["layers_complete"] is False
    assert any("elided" in warning for warning in run.warnings)
    assert run.count == 2
    assert run.extra["time_to_execute_us"] == [pytest.approx(798710.0), pytest.approx(748350.0)]
    keys = run.latency_keys()
    assert keys[TOTAL_INFERENCE_TIME] == (
        pytest.approx(748350.0),
        pytest.approx(773530.0),
        pytest.approx(798710.0),
    )


def test_mvnc_profile_without_a_table_fails() -> None:
    with pytest.raises(ToolOutputError, match="no per-layer profile"):
        parse_mvnc_profile("E: [ 0] dispatcherEventReceive:236 Error: device not found\n")
