"""OpenVINO benchmark_app across releases: stat-name spellings, enum hints, no silent drops.

Expected values are copied by hand from the fixture files (see tests/fixtures/bench-output/
SOURCES.md), not from the parser's output. Tests marked "modified real fixture" change one
thing in a real capture to show a layout no public capture was found for.
"""

from __future__ import annotations

import pytest

from backends.runtimes.common import TOTAL_INFERENCE_TIME, ToolOutputError
from backends.runtimes.openvino import hint_value, parse_benchmark_app
from backends.runtimes.parsers import parse_log
from support.helpers import bench_output as read


def test_2024_1_cpu_python_tool_with_enum_hint() -> None:
    run = parse_benchmark_app(read("openvino_benchmark_app_5.txt"))
    assert run.tool_version == "2024.1.0-15008-f4afc983258-releases/2024/1"
    assert run.extra["device"] == "CPU"
    # "performance hint will be set to PerformanceMode.THROUGHPUT." -> the part after the dot
    assert run.extra["performance_hint"] == "THROUGHPUT"
    assert run.count == 1668
    assert run.extra["duration_us"] == pytest.approx(10042.46e3)
    assert run.median_us == pytest.approx(20.76e3)
    assert run.avg_us == pytest.approx(23.91e3)
    assert run.min_us == pytest.approx(11.55e3)
    assert run.max_us == pytest.approx(90.43e3)
    assert run.extra["throughput_fps"] == pytest.approx(166.09)
    assert run.first_inference_us == pytest.approx(14.61e3)
    assert run.extra["read_us"] == pytest.approx(15.20e3)
    assert run.init_us == pytest.approx(111.41e3)
    assert run.extra["infer_requests"] == 4
    assert run.latency_keys()[TOTAL_INFERENCE_TIME] == pytest.approx((11.55e3, 23.91e3, 90.43e3))
    assert not any("not read" in warning for warning in run.warnings)


def test_2024_1_npu_enum_hint_in_the_config_block() -> None:
    run = parse_benchmark_app(read("openvino_benchmark_app_6.txt"))
    assert run.extra["device"] == "NPU"
    assert run.extra["performance_hint"] == "THROUGHPUT"
    assert run.count == 932
    assert run.median_us == pytest.approx(42.83e3)
    assert run.avg_us == pytest.approx(43.03e3)
    assert run.min_us == pytest.approx(22.87e3)
    assert run.max_us == pytest.approx(74.75e3)
    assert run.extra["throughput_fps"] == pytest.approx(92.51)
    assert run.init_us == pytest.approx(1180.63e3)


def test_hint_value_keeps_the_part_after_the_dot() -> None:
    assert hint_value("PerformanceMode.THROUGHPUT") == "THROUGHPUT"
    assert hint_value("PerformanceMode.LATENCY") == "LATENCY"
    assert hint_value("throughput") == "THROUGHPUT"


def test_upper_case_avg_min_max_modified_real_fixture() -> None:
    # Modified real fixture: no public capture of the AVG/MIN/MAX release line was found, so
    # the 2024.1 capture is upper-cased the way that release prints its latency block.
    text = read("openvino_benchmark_app_5.txt")
    for old, new in (("Average:", "AVG:    "), ("Min:", "MIN:"), ("Max:", "MAX:")):
        text = text.replace(f"]    {old}", f"]    {new}")
    assert "AVG:" in text and "MIN:" in text and "MAX:" in text
    run = parse_benchmark_app(text)
    assert run.avg_us == pytest.approx(23.91e3)
    assert run.min_us == pytest.approx(11.55e3)
    assert run.max_us == pytest.approx(90.43e3)
    assert run.total_inference is not None and run.total_inference["mean"] == pytest.approx(23.91e3)
    assert not any("not read" in warning for warning in run.warnings)


def test_percentile_line_modified_real_fixture() -> None:
    # Modified real fixture: "-latency_percentile 90" prints "90 percentile:" for the median.
    text = read("openvino_benchmark_app_5.txt").replace("Median:   ", "90 percentile:")
    run = parse_benchmark_app(text)
    assert run.extra["p90_us"] == pytest.approx(20.76e3)
    assert run.p90_us == pytest.approx(20.76e3)
    assert run.avg_us == pytest.approx(23.91e3)


def test_unknown_stat_name_is_flagged_with_its_line() -> None:
    text = read("openvino_benchmark_app_4.txt").replace("Min:    ", "Minimal:")
    run = parse_benchmark_app(text)
    assert run.min_us is None
    assert run.avg_us == pytest.approx(22.09e3)
    flagged = [warning for warning in run.warnings if "not read" in warning]
    assert len(flagged) == 1 and "Minimal:" in flagged[0] and "20.78 ms" in flagged[0]


def test_unknown_unit_is_flagged_with_its_line() -> None:
    text = read("openvino_benchmark_app_4.txt").replace("33.51 ms", "33.51 ticks")
    run = parse_benchmark_app(text)
    assert run.max_us is None
    flagged = [warning for warning in run.warnings if "not read" in warning]
    assert len(flagged) == 1 and "33.51 ticks" in flagged[0]


def test_no_headline_latency_is_an_error_naming_the_lines() -> None:
    text = read("openvino_benchmark_app_5.txt")
    text = text.replace("Median:   ", "Middle:   ").replace("Average:  ", "Typical:  ")
    with pytest.raises(ToolOutputError, match="without a readable latency") as caught:
        parse_benchmark_app(text)
    assert any("Middle:" in line for line in caught.value.lines)
    assert any("Typical:" in line for line in caught.value.lines)


def test_count_without_any_latency_is_an_error() -> None:
    dropped = ("Latency:", "Median:", "Average:", "Min:", "Max:")
    lines = read("openvino_benchmark_app_5.txt").splitlines()
    text = "\n".join(line for line in lines if not any(word in line for word in dropped))
    assert "Count:" in text and "Throughput:" in text
    with pytest.raises(ToolOutputError, match="without a readable latency"):
        parse_benchmark_app(text)


# ---------------------------------------------------------------- issue 16, more real captures


def test_2022_1_python_tool_prints_avg_min_max_in_upper_case() -> None:
    # Real 2022.1 capture: "Latency:" then "    Median:     2.43 ms", "    AVG:        2.75 ms",
    # "    MIN:        1.61 ms", "    MAX:        130.30 ms", all without an [ INFO ] prefix.
    run = parse_benchmark_app(read("openvino_benchmark_app_7.txt"))
    assert run.tool_version == "2022.1.0-7019-cdb9bec7210-releases/2022/1"
    assert run.extra["device"] == "CPU"
    assert run.extra["performance_hint"] == "THROUGHPUT"
    assert run.count == 214260
    assert run.extra["duration_us"] == pytest.approx(60003.34e3)
    assert run.median_us == pytest.approx(2.43e3)
    assert run.avg_us == pytest.approx(2.75e3)
    assert run.min_us == pytest.approx(1.61e3)
    assert run.max_us == pytest.approx(130.30e3)
    assert run.extra["throughput_fps"] == pytest.approx(3570.80)
    assert run.extra["read_us"] == pytest.approx(28.07e3)
    assert run.init_us == pytest.approx(249.27e3)  # "Compile model took 249.27 ms"
    assert run.first_inference_us == pytest.approx(4.75e3)
    assert run.extra["infer_requests"] == 10
    # "…using 10 streams for CPU, inference only: True, limits: 60000 ms duration)"
    assert run.extra["limits"] == "60000 ms duration"
    assert run.latency_keys()[TOTAL_INFERENCE_TIME] == pytest.approx((1.61e3, 2.75e3, 130.30e3))
    assert not any("not read" in warning for warning in run.warnings)


def test_2022_1_dynamic_shape_run_has_no_median() -> None:
    # Real 2022.1 capture with "-hint latency" on a dynamic-batch model: the block is only
    # AVG/MIN/MAX (21.40 / 17.28 / 73.23 ms), so the headline is the average.
    run = parse_benchmark_app(read("openvino_benchmark_app_8.txt"))
    assert run.count == 2793
    assert run.median_us is None
    assert run.avg_us == pytest.approx(21.40e3)
    assert run.min_us == pytest.approx(17.28e3)
    assert run.max_us == pytest.approx(73.23e3)
    assert run.extra["throughput_fps"] == pytest.approx(46.54)
    assert run.first_inference_us == pytest.approx(31.26e3)
    assert run.init_us == pytest.approx(232.62e3)
    assert run.extra["infer_requests"] == 1
    assert run.total_inference == {
        "min": pytest.approx(17.28e3),
        "mean": pytest.approx(21.40e3),
        "max": pytest.approx(73.23e3),
        "count": 2793,
    }
    assert not any("not read" in warning for warning in run.warnings)


def test_2023_0_python_tool_cpu() -> None:
    run = parse_benchmark_app(read("openvino_benchmark_app_9.txt"))
    assert run.tool_version == "2023.0.0-10926-b4452d56304-releases/2023/0"
    assert run.extra["device"] == "CPU"
    assert run.extra["execution_devices"] == ["CPU"]  # "Execution Devices:['CPU']"
    assert run.extra["performance_hint"] == "THROUGHPUT"
    assert run.count == 17526
    assert run.extra["duration_us"] == pytest.approx(15005.75e3)
    assert run.median_us == pytest.approx(5.00e3)
    assert run.avg_us == pytest.approx(5.00e3)
    assert run.min_us == pytest.approx(3.28e3)
    assert run.max_us == pytest.approx(14.83e3)
    assert run.extra["throughput_fps"] == pytest.approx(1167.95)
    assert run.first_inference_us == pytest.approx(7.60e3)
    assert run.init_us == pytest.approx(151.57e3)
    assert run.extra["read_us"] == pytest.approx(9.14e3)
    assert run.extra["limits"] == "15000 ms duration"


def test_2024_5_auto_device_reports_the_device_that_ran() -> None:
    # -d AUTO; the config block nests the CPU's own "PERFORMANCE_HINT: THROUGHPUT" under the
    # AUTO plugin's "PERFORMANCE_HINT: PerformanceMode.THROUGHPUT".
    run = parse_benchmark_app(read("openvino_benchmark_app_10.txt"))
    assert run.tool_version == "2024.5.0-16993-9c432a3641a"
    assert run.extra["device"] == "AUTO"
    assert run.extra["execution_devices"] == ["CPU"]
    assert run.extra["performance_hint"] == "THROUGHPUT"
    assert run.count == 17436
    assert run.median_us == pytest.approx(4.99e3)
    assert run.avg_us == pytest.approx(5.03e3)
    assert run.min_us == pytest.approx(2.84e3)
    assert run.max_us == pytest.approx(24.60e3)
    assert run.extra["throughput_fps"] == pytest.approx(1161.75)
    assert run.first_inference_us == pytest.approx(7.14e3)
    assert run.init_us == pytest.approx(157.24e3)
    assert not any("not read" in warning for warning in run.warnings)


def test_2023_0_1_failed_run_quotes_the_cause() -> None:
    # Real failure: "[ ERROR ] Check 'false' failed at …" and the cause on the lines after it.
    text = read("openvino_benchmark_app_11.txt")
    with pytest.raises(ToolOutputError, match="no statistics report") as caught:
        parse_benchmark_app(text)
    assert caught.value.lines[0].startswith("[ ERROR ] Check 'false' failed")
    assert any("ScatterElementsUpdate node" in line for line in caught.value.lines)
    header = parse_benchmark_app(text, require_stats=False)
    assert header.tool_version == "2023.0.1-11005-fa1c41994f3-releases/2023/0"
    assert header.extra["performance_hint"] == "LATENCY"  # PerformanceMode.LATENCY
    assert header.init_us == pytest.approx(667.03e3)


def test_three_runs_pasted_together_read_as_three_runs() -> None:
    # openvino_benchmark_app_12.txt: the result blocks of a CPU, a GPU.0 and a GPU.1 run in
    # one block, each "Execution Devices:[...]", "Count: ...", "Latency:", "Throughput: ..."
    runs = parse_log("openvino", read("openvino_benchmark_app_12.txt"))
    assert list(runs) == ["run 1", "run 2", "run 3"]
    cpu, gpu0, gpu1 = runs.values()
    # "Count: 5388 iterations", "Median: 57.83 ms", "Average: 66.74 ms"
    assert (cpu.count, cpu.median_us, cpu.avg_us) == (5388, 57830, 66740)
    assert cpu.extra["execution_devices"] == ["CPU"]
    assert (gpu0.count, gpu0.avg_us) == (10432, 22860)
    assert gpu0.extra["execution_devices"] == ["GPU.0"]
    # "Count: 67840 iterations", "Median: 112.96 ms", "Max: 1060.00 ms"
    assert (gpu1.count, gpu1.median_us, gpu1.max_us) == (67840, 112960, 1060000)
    assert gpu1.extra["throughput_fps"] == pytest.approx(1110.84)


def test_split_runs_at_step_one() -> None:
    """DERIVED: two complete real captures (fixtures 5 and 6, 2024.1) one after the other;
    each run keeps its own settings."""
    first, second = read("openvino_benchmark_app_5.txt"), read("openvino_benchmark_app_6.txt")
    runs = parse_log("openvino", first + "\n" + second)
    assert list(runs) == ["run 1", "run 2"]
    alone = [parse_log("openvino", text)[""] for text in (first, second)]
    assert [run.avg_us for run in runs.values()] == [run.avg_us for run in alone]
    assert [run.extra.get("performance_hint") for run in runs.values()] == [
        run.extra.get("performance_hint") for run in alone
    ]
