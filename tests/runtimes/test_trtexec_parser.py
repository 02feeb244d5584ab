"""TensorRT ``trtexec`` parsers on real captures of several versions (7.x block layout, 8.0 on a
Jetson Nano, 8.x and 10.x summaries, failures of 5/6, 8.2, 10.0 and 10.3) and the exported JSON.

Fixtures in ``tests/fixtures/bench-output/`` are verbatim public outputs (``SOURCES.md``);
expected numbers were read from the files by eye. No real ``--exportTimes``/``--exportProfile``
file was found, so the JSON parsers are tested on inputs marked SYNTHETIC (field names as the
code that reads real files uses them) and on the stand-in's files (tests/agent).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.runtimes import trtexec
from backends.runtimes.common import ToolOutputError
from backends.runtimes.trtexec_profile import read_printed_profile
from support.helpers import bench_output as fixture

approx = pytest.approx
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench-output"


def test_every_trtexec_fixture_is_read_or_refused_with_its_own_words() -> None:
    files = sorted(FIXTURES.glob("trtexec_*.txt"))
    assert len(files) == 11
    # unreadable fields; no end-to-end timing; a profile table alone
    refused = ("trtexec_5.txt", "trtexec_10.txt", "trtexec_11_profile_only.txt")
    for path in files:
        text = path.read_text()
        if "_failed" in path.name or path.name in refused:
            with pytest.raises(ToolOutputError):
                trtexec.parse_trtexec(text)
        else:
            run = trtexec.parse_trtexec(text)
            assert run.avg_us and run.avg_us > 0, path.name
            assert run.min_us <= run.median_us <= run.max_us, path.name


def test_tensorrt_8_0_on_a_jetson_nano() -> None:
    run = trtexec.parse_trtexec(fixture("trtexec_1.txt"))
    assert run.tool == "trtexec" and run.tool_version == "8.0.1"
    assert run.count == 100
    assert run.min_us == approx(40500.5) and run.max_us == approx(40859.1)
    assert run.avg_us == approx(40632.6) and run.median_us == approx(40633.7)
    assert run.p99_us == approx(40859.1) and run.p90_us is None
    assert run.forward_us == approx(
        {"min": 39856.9, "max": 40193.1, "mean": 40002.7, "median": 39998.2, "p99": 40193.1}
    )
    assert run.extra["end_to_end_us"]["mean"] == approx(40677.1)
    assert run.extra["enqueue_us"]["median"] == approx(40417.6)
    assert run.extra["h2d_us"]["mean"] == approx(544.677)
    assert run.extra["d2h_us"]["max"] == approx(150.146)
    assert run.extra["throughput_qps"] == approx(24.5583)
    assert run.extra["total_host_walltime_s"] == approx(4.07195)
    assert run.extra["total_gpu_s"] == approx(4.00027)
    averages = run.extra["trace_averages"]
    assert len(averages) == 10
    assert averages[0] == approx(
        {"runs": 10, "gpu_us": 39992.4, "host_us": 40645.1, "end_to_end_us": 40704.1,
         "enqueue_us": 40416.9}
    )  # fmt: skip
    # trtexec's own advice after the summary: "[W] * Throughput may be bound by Enqueue Time
    # ..." and its indented continuation "[W]   If not already in use, --useCudaGraph ..."
    (advice,) = run.warnings
    assert advice.startswith("trtexec: Throughput may be bound by Enqueue Time")
    assert advice.endswith(
        "--useCudaGraph (utilize CUDA graphs where possible) may increase the throughput."
    )


def test_tensorrt_10_era_summary_with_90_95_99_percentiles() -> None:
    run = trtexec.parse_trtexec(fixture("trtexec_2.txt"))
    assert run.tool_version == ""  # the excerpt holds no version line
    assert run.avg_us == approx(7606.28) and run.median_us == approx(7160.92)
    assert (run.p90_us, run.p95_us, run.p99_us) == approx((10299.6, 10869.8, 12967.5))
    assert run.forward_us["p95"] == approx(10817.5)
    assert run.extra["throughput_qps"] == approx(130.298)
    assert run.extra["d2h_us"]["min"] == approx(3.90625)
    assert run.count is None  # no "Timing trace has N queries" line in the excerpt


def test_tensorrt_7_block_layout() -> None:
    run = trtexec.parse_trtexec(fixture("trtexec_3.txt"))
    assert run.min_us == approx(1640.58) and run.max_us == approx(6291.5)
    assert run.avg_us == approx(1660.69) and run.median_us == approx(1656.01)
    assert run.p99_us == approx(1670.65)
    assert run.extra["end_to_end_us"] == approx(
        {"min": 1663.68, "max": 7655.52, "mean": 3009.09, "median": 3016.36}
    )
    assert run.extra["throughput_qps"] == 0.0  # as printed
    assert run.extra["total_host_walltime_s"] == approx(3.00461)
    assert len(run.extra["trace_averages"]) == 5
    assert run.warnings == []


def test_tensorrt_8_trace_averages_without_end_to_end() -> None:
    run = trtexec.parse_trtexec(fixture("trtexec_4.txt"))
    assert run.avg_us == approx(4299.66) and run.p95_us == approx(4311.28)
    assert run.extra["trace_averages"][1] == approx(
        {"runs": 10, "gpu_us": 4241.51, "host_us": 4296.18, "enqueue_us": 1817.37}
    )


def test_a_summary_whose_headline_cannot_be_read_names_the_line() -> None:
    """The author's copy lost some '=' signs: the latency mean is unreadable, not guessed."""
    with pytest.raises(ToolOutputError) as caught:
        trtexec.parse_trtexec(fixture("trtexec_5.txt"))
    assert "latency mean cannot be read" in str(caught.value)
    assert "max 6.19507 ms, mean 5.93288 ms" in str(caught.value)


def test_unreadable_fields_of_other_lines_are_warnings_naming_them() -> None:
    """DERIVED from trtexec_5.txt: its Latency line given back its '=' signs, nothing else."""
    text = fixture("trtexec_5.txt").replace(
        "max 6.19507 ms, mean 5.93288 ms, median 6.02185 ms, percentile(99%) 6.17407 ms",
        "max = 6.19507 ms, mean = 5.93288 ms, median = 6.02185 ms, percentile(99%) = 6.17407 ms",
    )
    run = trtexec.parse_trtexec(text)
    assert run.avg_us == approx(5932.88)
    assert run.forward_us["mean"] == approx(3632.42)
    assert "p99" not in run.forward_us  # "percentile(99%) 3.87793 ms": flagged, not read
    flagged = " ".join(run.warnings)
    assert "'percentile(99%) 3.87793 ms'" in flagged
    assert "'mean 1.47722 ms'" in flagged and "D2H Latency" in flagged
    assert run.extra["throughput_qps"] == approx(169.352)


@pytest.mark.parametrize(
    ("name", "version", "quoted"),
    [
        ("trtexec_6_failed.txt", "10.3.0", "Cask convolution isConsistent check failed"),
        ("trtexec_7_failed.txt", "8.2.5", "Failed to parse onnx file"),
        ("trtexec_8_failed.txt", "10.0.1", "Engine deserialization failed"),
        ("trtexec_9_failed.txt", "", "Deploy file not specified"),
    ],
)
def test_failures_quote_trtexec_error_lines(name: str, version: str, quoted: str) -> None:
    text = fixture(name)
    assert trtexec.trtexec_version(text) == version
    with pytest.raises(ToolOutputError) as caught:
        trtexec.parse_trtexec(text)
    assert quoted in str(caught.value)
    assert "&&&& FAILED" in str(caught.value)


def test_a_non_zero_exit_is_a_failure_even_with_a_summary() -> None:
    with pytest.raises(ToolOutputError) as caught:
        trtexec.parse_trtexec(fixture("trtexec_2.txt"), exit_code=139)
    assert "exit code 139" in str(caught.value)


def test_versions_from_the_marker_number() -> None:
    assert trtexec.version_from_number(8001) == "8.0.1"
    assert trtexec.version_from_number(8602) == "8.6.2"
    assert trtexec.version_from_number(100300) == "10.3.0"
    assert trtexec.version_from_number(101303) == "10.13.3"


# -- exported JSON (SYNTHETIC: field names of real files) -------------------------------------


def test_export_times_gives_per_query_samples_in_microseconds() -> None:
    records = [
        {"startEnqMs": 0.5, "endEnqMs": 0.9, "startH2dMs": 0.5, "endH2dMs": 0.6,
         "startComputeMs": 0.6, "endComputeMs": 2.6, "startD2hMs": 2.6, "endD2hMs": 2.7,
         "h2dMs": 0.1, "computeMs": 2.0, "d2hMs": 0.1, "latencyMs": 2.2},
        {"startEnqMs": 3.0, "endEnqMs": 3.5, "h2dMs": 0.2, "computeMs": 2.5, "d2hMs": 0.1,
         "latencyMs": 2.8},
    ]  # fmt: skip
    series = trtexec.parse_export_times(json.dumps(records))
    assert series["latency"] == approx([2200.0, 2800.0])
    assert series["compute"] == approx([2000.0, 2500.0])
    assert series["enqueue"] == approx([400.0, 500.0])
    assert "end_to_end" not in series  # neither record has endToEndMs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("{}", "non-empty JSON list"),
        ('[{"latencyMs": 1.0}, {"computeMs": 2.0}]', "record 1 has no readable latencyMs"),
        ('[{"latencyMs": -1}]', "record 0"),
        ('[{"latencyMs": NaN}]', "record 0"),
    ],
)
def test_bad_export_times_name_the_record(text: str, message: str) -> None:
    with pytest.raises(trtexec.ExportError, match=message):
        trtexec.parse_export_times(text, "times.json")


def test_export_profile_gives_layers_per_run() -> None:
    data = [
        {"count": 50},
        {"name": "Conv_0 + Relu_1", "timeMs": 10.0, "averageMs": 0.2, "percentage": 40.0},
        {"name": "Reformatting CopyNode for Input Tensor 0", "timeMs": 15.0, "percentage": 60},
    ]
    profile = trtexec.parse_export_profile(json.dumps(data))
    assert profile["count"] == 50
    first, second = profile["layers"]
    assert (first.name, first.op_type, first.mean_us) == ("Conv_0 + Relu_1", "Conv", approx(200))
    assert second.mean_us == approx(300.0)  # timeMs / count when averageMs is absent
    assert second.op_type == "TensorRT"
    assert profile["percentages"]["Conv_0 + Relu_1"] == 40.0
    with pytest.raises(trtexec.ExportError, match="element 1"):
        trtexec.parse_export_profile(json.dumps([{"count": 5}, {"timeMs": 1.0}]))
    with pytest.raises(trtexec.ExportError, match="count"):
        trtexec.parse_export_profile(json.dumps([{"name": "x", "averageMs": 1.0}]))


def test_command_lines_are_argument_lists() -> None:
    argv = trtexec.build_argv("trtexec", "/m a.onnx", "/e.engine", "int8", 512)
    assert argv == [
        "trtexec", "--onnx=/m a.onnx", "--saveEngine=/e.engine", "--int8",
        "--memPoolSize=workspace:512",
    ]  # fmt: skip
    assert "--fp16" not in trtexec.build_argv("trtexec", "m", "e", "fp32")
    timed = trtexec.timed_argv("trtexec", "e", 100, 250, "t.json")
    assert "--iterations=100" in timed and "--duration=0" in timed and "--warmUp=250" in timed
    with pytest.raises(ValueError, match="fp32, fp16, int8"):
        trtexec.precision_flags("tf32")


def test_dump_profile_without_a_separate_run_names_the_missing_option() -> None:
    # trtexec_10.txt (TensorRT 8.5.2, Jetson, --dumpProfile --verbose, "&&&& PASSED"): "The e2e
    # network timing is not reported since it is inaccurate ... add --separateProfileRun"
    with pytest.raises(ToolOutputError, match="--separateProfileRun") as caught:
        trtexec.parse_trtexec(fixture("trtexec_10.txt"))
    assert "no end-to-end timing" in str(caught.value)


def test_the_printed_profile_table_in_both_layouts() -> None:
    # trtexec_10.txt (8.5.2): "Layer   Time (ms)   Avg. Time (ms)   Median Time (ms)   Time %",
    # names first; "[HostToDeviceCopy 0]       16.77   0.0543   0.0285   0.5", Total 9.9309
    newer = read_printed_profile(fixture("trtexec_10.txt").splitlines())
    assert newer is not None and newer.iterations == 309 and len(newer.layers) == 28
    assert newer.layers[0] == {
        "name": "[HostToDeviceCopy 0]",
        "total_ms": 16.77,
        "avg_ms": 0.0543,
        "median_ms": 0.0285,
        "percent": 0.5,
    }
    assert newer.total is not None and newer.total["avg_ms"] == 9.9309
    # trtexec_11_profile_only.txt (8.6.1): "Time(ms)  Avg.(ms)  Median(ms)  Time(%)  Layer",
    # numbers first; "486.12  0.3390  0.3389  21.0  {ForeignNode[771 + (Unnamed Layer* 1) ..."
    older = read_printed_profile(fixture("trtexec_11_profile_only.txt").splitlines())
    assert older is not None and older.iterations == 1434 and len(older.layers) == 28
    assert older.layers[0]["name"].startswith("{ForeignNode[771 + (Unnamed Layer* 1) [Shuffle]")
    assert (older.layers[0]["avg_ms"], older.layers[0]["percent"]) == (0.339, 21.0)
    assert older.layers[-1]["name"] == "Reformatting CopyNode for Output Tensor 0 to Transpose_309"
    assert older.total is not None and older.total["total_ms"] == 2309.39
    assert newer.warnings == older.warnings == []
    assert read_printed_profile(fixture("trtexec_1.txt").splitlines()) is None


def test_a_timed_run_with_a_printed_profile_has_its_layers() -> None:
    """DERIVED: trtexec_1.txt (a summary, TensorRT 8.0) with trtexec_11's printed profile
    (8.6.1, numbers first) put before its '&&&& PASSED' line, as --separateProfileRun
    prints them."""
    timed = fixture("trtexec_1.txt")
    table = [
        line
        for line in fixture("trtexec_11_profile_only.txt").splitlines()
        if not line.startswith("&&&&")
    ]
    passed = timed.index("&&&& PASSED")
    run = trtexec.parse_trtexec(timed[:passed] + "\n".join(table) + "\n" + timed[passed:])
    assert run.avg_us == approx(40632.6)  # the summary's, unchanged
    assert len(run.layers) == 28 and run.layers[1].name == "PPScatter_0"
    assert run.layers[1].mean_us == approx(91.3)
    assert run.layers_total_us == approx(1610.5)
    assert run.extra["printed_profile"]["iterations"] == 1434
