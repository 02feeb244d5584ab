"""onnxruntime_perf_test across releases and forks, and the no-silent-drop rule of its parser.

Expected values are copied by hand from the fixture files (sources in
tests/fixtures/bench-output/SOURCES.md), not from the parser's output. Tests marked SYNTHETIC
edit one line of a real capture to show that an unreadable line is flagged, never dropped.
"""

from __future__ import annotations

import pytest
from pytest import approx

from backends.runtimes import ort_perf
from backends.runtimes.common import TOTAL_INFERENCE_TIME, ToolOutputError
from support.helpers import bench_output as fixture


def not_read(warnings: list[str]) -> list[str]:
    """The parser's warnings about lines it recognised but could not read."""
    return [warning for warning in warnings if warning.startswith("line not read")]


# ------------------------------------------------------------------------ real captures


def test_vendor_fork_with_total_cpu_usage_and_provider_line() -> None:
    # SpacemiT K1 (RISC-V) fork: "using SpaceMITExecutionProvider ", "Total CPU usage: 382 %",
    # no "Runs:" line, the -s block printed anyway; trailing spaces kept from the source.
    run = ort_perf.parse(fixture("ort_perf_test_5.txt"))
    assert run.extra["execution_provider"] == "SpaceMITExecutionProvider"
    assert run.count == 100
    assert run.avg_us == approx(62293.5)  # "Average inference time cost: 62.2935 ms"
    assert run.init_us == approx(2_747_160)  # "Session creation time cost: 2.74716 s"
    assert run.first_inference_us == approx(85_000)
    assert run.min_us == approx(52942.2)  # "Min Latency: 0.0529422 s"
    assert run.max_us == approx(91285.7)
    assert run.median_us == approx(60356.2)
    assert run.p90_us == approx(74159.3)
    assert run.p95_us == approx(83705.2)
    assert run.p99_us == approx(91285.7)
    assert run.extra["p999_us"] == approx(91285.7)
    assert run.extra["total_cpu_usage_pct"] == 382
    assert run.extra["throughput_ips"] == approx(16.0476)
    assert run.extra["peak_working_set_bytes"] == 114634752
    assert "stats_runs" not in run.extra
    assert run.warnings == []


def test_vendor_fork_with_thread_count_and_runs_line() -> None:
    run = ort_perf.parse(fixture("ort_perf_test_6.txt"))
    assert run.extra["intra_op_threads"] == 4
    assert run.count == 10 == run.extra["stats_runs"]
    assert run.avg_us == approx(82338.2)
    assert run.init_us == approx(1_144_760)
    assert run.first_inference_us == approx(248_000)
    assert run.min_us == approx(80812.9)
    assert run.max_us == approx(83881.7)
    assert run.median_us == approx(82609.5)
    assert run.extra["avg_cpu_usage_pct"] == 48
    assert run.extra["peak_working_set_bytes"] == 78946304
    assert run.latency_keys() == {
        TOTAL_INFERENCE_TIME: (approx(80812.9), approx(82338.2), approx(83881.7))
    }
    assert run.warnings == []


def test_2025_source_build_before_the_total_wording() -> None:
    # Azure Cobalt 100, -Z: "Disabling intra-op thread spinning", "Average inference time cost:"
    run = ort_perf.parse(fixture("ort_perf_test_7.txt"))
    assert run.count == 100 == run.extra["stats_runs"]
    assert run.avg_us == approx(1857.39)
    assert run.init_us == approx(10201.6)
    assert run.first_inference_us == approx(2000)  # "First inference time cost: 2 ms"
    assert run.min_us == approx(1834.04)
    assert run.max_us == approx(1903.12)
    assert run.median_us == approx(1856.74)
    assert run.p90_us == approx(1872.15)
    assert run.p95_us == approx(1873.93)
    assert run.p99_us == approx(1903.12)
    assert run.extra["total_cost_us"] == approx(185739)
    assert run.extra["run_time_us"] == approx(185810)
    assert run.extra["throughput_ips"] == approx(538.184)
    assert run.extra["avg_cpu_usage_pct"] == 96
    assert run.warnings == []


def test_ort_1_0_layout_and_a_truncated_unit_is_flagged() -> None:
    # The ORT <= 1.0 sample in the perftest README: "Total time cost:58.8053" (seconds, no unit),
    # "Total iterations:1000", "Average time cost:58.8053 ms", "Min Latency is 0.0559777sec".
    # Its last line ends in "se" (cut short in the source): flagged, not dropped.
    run = ort_perf.parse(fixture("ort_perf_test_8.txt"))
    assert run.count == 1000
    assert run.avg_us == approx(58805.3)
    assert run.extra["total_cost_us"] == approx(58_805_300)
    assert run.extra["run_time_us"] == approx(58_810_200)
    assert run.min_us == approx(55977.7)
    assert run.max_us == approx(62347.2)
    assert run.median_us == approx(58710.8)
    assert run.p90_us == approx(59984.5)
    assert run.p95_us == approx(60567.6)
    assert run.p99_us == approx(61951.7)
    assert "p999_us" not in run.extra
    flagged = not_read(run.warnings)
    assert len(flagged) == 1 and "P999 Latency is 0.0623472se" in flagged[0]
    assert run.init_us is None and run.first_inference_us is None


# ------------------------------------------------------------- no silent drops (SYNTHETIC)


def test_unknown_time_unit_on_a_known_line_is_flagged() -> None:
    # SYNTHETIC: fixture 7 with the session line's unit changed.
    text = fixture("ort_perf_test_7.txt").replace("0.0102016 s", "0.0102016 ticks")
    run = ort_perf.parse(text)
    assert run.init_us is None
    assert run.avg_us == approx(1857.39)
    flagged = not_read(run.warnings)
    assert len(flagged) == 1 and "Session creation time cost: 0.0102016 ticks" in flagged[0]


def test_unreadable_number_is_flagged() -> None:
    # SYNTHETIC: fixture 7 with "-nan" where the first-inference time was.
    text = fixture("ort_perf_test_7.txt").replace("cost: 2 ms", "cost: -nan ms")
    run = ort_perf.parse(text)
    assert run.first_inference_us is None
    flagged = not_read(run.warnings)
    assert len(flagged) == 1 and "First inference time cost: -nan ms" in flagged[0]


def test_statistics_line_with_an_unknown_label_is_flagged() -> None:
    # SYNTHETIC: a "Mean Latency" line added to the -s block of fixture 7.
    text = fixture("ort_perf_test_7.txt").replace(
        "P50 Latency:", "Mean Latency: 0.0018 s\nP50 Latency:"
    )
    run = ort_perf.parse(text)
    flagged = not_read(run.warnings)
    assert len(flagged) == 1 and "Mean Latency: 0.0018 s" in flagged[0]
    assert "unknown statistics label" in flagged[0]
    assert run.median_us == approx(1856.74)


def test_other_percentiles_are_read_not_flagged() -> None:
    # SYNTHETIC: a "P75 Latency" line added to fixture 7 (the tool's -s labels are Pnn).
    text = fixture("ort_perf_test_7.txt").replace(
        "P90 Latency:", "P75 Latency: 0.0018612 s\nP90 Latency:"
    )
    run = ort_perf.parse(text)
    assert run.extra["p75_us"] == approx(1861.2)
    assert run.warnings == []


def test_unknown_measurement_line_is_flagged() -> None:
    # SYNTHETIC: a new kind of time line that this parser does not know.
    text = fixture("ort_perf_test_7.txt") + "Total warmup time cost: 0.5 s\n"
    run = ort_perf.parse(text)
    flagged = not_read(run.warnings)
    assert len(flagged) == 1 and "unknown measurement name" in flagged[0]
    assert "Total warmup time cost: 0.5 s" in flagged[0]


def test_unexpected_unit_on_a_size_line_is_flagged() -> None:
    # SYNTHETIC: bytes printed as MB would be a silent misread by a factor of a million.
    text = fixture("ort_perf_test_7.txt").replace("36696064 bytes", "36.7 MB")
    run = ort_perf.parse(text)
    assert run.extra["peak_working_set_bytes"] == 36696064  # the unit-less repeat line
    flagged = not_read(run.warnings)
    assert len(flagged) == 1 and "Peak working set size: 36.7 MB" in flagged[0]


@pytest.mark.parametrize(
    "line",
    ["Average inference time cost: -nan ms", "Average inference time cost total: 98.96 ticks"],
)
def test_unreadable_headline_is_an_error_naming_the_line(line: str) -> None:
    # SYNTHETIC: fixture 7 with its headline replaced by an unreadable one.
    text = fixture("ort_perf_test_7.txt").replace("Average inference time cost: 1.85739 ms", line)
    with pytest.raises(ToolOutputError, match="could not be read") as caught:
        ort_perf.parse(text)
    assert caught.value.lines == [line]


def test_missing_headline_is_an_error() -> None:
    # SYNTHETIC: fixture 7 without its headline line.
    lines = fixture("ort_perf_test_7.txt").splitlines()
    text = "\n".join(line for line in lines if not line.startswith("Average inference"))
    with pytest.raises(ToolOutputError, match="no 'Average inference time cost' line"):
        ort_perf.parse(text)
