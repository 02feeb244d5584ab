"""Vitis AI parsers (``xdputil benchmark``, ``test_performance_<task>``) on real captures.

Fixtures in ``tests/fixtures/bench-output/`` are verbatim public outputs (``SOURCES.md``);
expected numbers were read from the files by eye. Inputs marked DERIVED (a real fixture with one
documented edit) or SYNTHETIC exist only for the no-silent-drop rule (issue 16).
"""

from __future__ import annotations

import pytest

from backends.runtimes import vitis
from backends.runtimes.common import FORWARD_PROPAGATE, TOTAL_INFERENCE_TIME, ToolOutputError
from support.helpers import bench_output as fixture

approx = pytest.approx


def test_xdputil_two_threads_reports_inverse_throughput_not_latency() -> None:
    run = vitis.parse_xdputil(fixture("xdputil_benchmark_1.txt"))
    assert run.tool == "xdputil"
    assert run.extra["fps"] == approx(28.5485)
    assert run.count == 1714
    assert run.extra["seconds"] == approx(60.0382)
    assert run.extra["threads"] == 2
    assert run.extra["frames_per_thread"] == [904, 810]
    assert run.extra["progress_percent"] == list(range(0, 101, 10))
    assert run.extra["inverse_throughput_us"] == approx(1e6 / 28.5485)
    # With 2 threads 1e6/FPS is not the latency of one inference: not reported as one.
    assert run.avg_us is None
    assert run.total_inference is None
    assert run.latency_keys() == {}
    assert any("inverse throughput" in w for w in run.warnings)


def test_xdputil_one_thread_mean_latency_is_inverse_fps() -> None:
    run = vitis.parse_xdputil(fixture("xdputil_benchmark_2.txt"))
    assert run.extra["fps"] == approx(1254.93)
    assert run.count == 75300
    assert run.extra["seconds"] == approx(60.0033)
    assert run.extra["threads"] == 1
    assert run.avg_us == approx(1e6 / 1254.93)
    assert run.latency_keys() == {TOTAL_INFERENCE_TIME: (None, approx(796.857, rel=1e-5), None)}
    assert run.warnings == []


def test_xdputil_failure_quotes_the_check_failed_lines() -> None:
    with pytest.raises(ToolOutputError) as caught:
        vitis.parse_xdputil(fixture("xdputil_benchmark_3.txt"), exit_code=134)
    message = str(caught.value)
    assert "Check failed: retval == 0 (-1 vs. 0) run dpu failed." in message
    assert "*** Check failure stack trace: ***" in message
    assert "Aborted" in message
    assert "exit code 134" in message
    assert caught.value.lines[0].startswith("F0309 12:37:45.220671")


def test_xdputil_frames_without_space_after_equals() -> None:
    text = (
        "I0101 00:00:00.000000  1 performance_test.hpp:85] thread-0 processes 20225 frames\n"
        "I0101 00:00:00.000000  1 performance_test.hpp:94] "
        "FPS=337.08 number_of_frames=20225 time=60.0001 seconds.\n"
    )
    run = vitis.parse_xdputil(text)
    assert run.count == 20225
    assert run.extra["fps"] == approx(337.08)
    assert run.avg_us == approx(1e6 / 337.08)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I0101 00:00:00.0 1 performance_test.hpp:73] 0% ...\n", "no 'FPS="),
        ("", "no 'FPS="),
        ("FPS= 10 number_of_frames= 600 time= 60 seconds.\nTest FAILED\n", "Test FAILED"),
    ],
)
def test_xdputil_without_report_or_with_failure_raises(text: str, reason: str) -> None:
    with pytest.raises(ToolOutputError, match=reason):
        vitis.parse_xdputil(text)


def test_xdputil_non_zero_exit_with_report_is_an_error() -> None:
    with pytest.raises(ToolOutputError, match="exit code 1"):
        vitis.parse_xdputil(fixture("xdputil_benchmark_2.txt"), exit_code=1)


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ("I0713 18:37:48.241431   849 performance_test.hpp:73] 0% ...", 0),
        ("I0713 18:38:12.242331   849 performance_test.hpp:76] 40% ...", 40),
        ("100% ...", 100),
        ("I0713 18:38:48.279647   849 performance_test.hpp:94] FPS= 28.5485", None),
        ("thread-0 processes 904 frames", None),
        ("150% ...", None),
    ],
)
def test_xdputil_progress(line: str, percent: int | None) -> None:
    assert vitis.xdputil_progress(line) == percent


@pytest.mark.parametrize(
    ("name", "fps", "e2e", "dpu", "threads", "seconds"),
    [
        ("vitis_ai_test_performance_1.txt", 216.327, 18394.5, 15711.6, 4, 10),
        ("vitis_ai_test_performance_2.txt", 386.133, 2588.76, 1346.91, 1, 30),
        ("vitis_ai_test_performance_3.txt", 18.0589, 217547, 214647, 4, 10),
        # Vitis AI 1.1 (benchmark.hpp:175/201/210), no "Logging before InitGoogleLogging" line
        ("vitis_ai_test_performance_4.txt", 235.63, 16964.4, 14459.7, 4, 60),
        # early VCK190 (DPUCVDX8G) image, benchmark.hpp:176/203/211
        ("vitis_ai_test_performance_5.txt", 1567.02, 7650.41, 5580.37, 4, 60),
    ],
)
def test_test_performance_fixtures(
    name: str, fps: float, e2e: float, dpu: float, threads: int, seconds: int
) -> None:
    run = vitis.parse_test_performance(fixture(name))
    assert run.tool == "test_performance"
    assert run.extra["fps"] == approx(fps)
    assert run.avg_us == approx(e2e)
    assert run.extra["threads"] == threads
    assert run.extra["seconds"] == seconds
    assert run.latency_keys() == {
        TOTAL_INFERENCE_TIME: (None, approx(e2e), None),
        FORWARD_PROPAGATE: (None, approx(dpu), None),
    }
    assert run.extra["cpu_side_us"] == approx(e2e - dpu)


def test_test_performance_scientific_notation_and_optional_means() -> None:
    run = vitis.parse_test_performance("FPS=0.412\nE2E_MEAN=2.42718e+06\nDPU_MEAN=2.4e+06\n")
    assert run.avg_us == approx(2427180.0)
    assert run.forward_us == {"mean": approx(2.4e6)}

    only_fps = vitis.parse_test_performance("FPS=1200.5\n")
    assert only_fps.extra["fps"] == approx(1200.5)
    assert only_fps.avg_us is None
    assert only_fps.latency_keys() == {}
    assert any("E2E_MEAN" in w for w in only_fps.warnings)


def test_test_performance_failures() -> None:
    with pytest.raises(ToolOutputError, match="no 'FPS='"):
        vitis.parse_test_performance("WARNING: Logging before InitGoogleLogging()\n")
    glog_fatal = (
        "F0110 18:53:33.324429  8773 dpu_runner.cpp:10] Check failed: fd > 0 open /dev/dpu\n"
        "*** Check failure stack trace: ***\nAborted\n"
    )
    with pytest.raises(ToolOutputError, match="Check failed: fd > 0"):
        vitis.parse_test_performance(glog_fatal)
    with pytest.raises(ToolOutputError, match="exit code 2"):
        vitis.parse_test_performance("FPS=10\n", exit_code=2)


def test_report_detection() -> None:
    assert vitis.has_xdputil_report(fixture("xdputil_benchmark_1.txt"))
    assert not vitis.has_xdputil_report(fixture("vitis_ai_test_performance_1.txt"))
    assert vitis.has_test_performance_report(fixture("vitis_ai_test_performance_2.txt"))
    assert not vitis.has_test_performance_report(fixture("xdputil_benchmark_2.txt"))
    assert vitis.performance_progress("waiting for 10/30 seconds, 1 threads running") == (10, 30)


def test_xdputil_kria_two_threads_test_pass() -> None:
    run = vitis.parse_xdputil(fixture("xdputil_benchmark_4.txt"))
    # "FPS= 6647.71 number_of_frames= 398879 time= 60.0024 seconds."
    assert run.extra["fps"] == approx(6647.71)
    assert run.count == 398879
    assert run.extra["seconds"] == approx(60.0024)
    assert run.extra["threads"] == 2
    assert run.extra["frames_per_thread"] == [199424, 199455]
    assert run.extra["progress_percent"] == list(range(0, 101, 10))
    assert run.avg_us is None and run.latency_keys() == {}
    (warning,) = run.warnings
    assert "inverse throughput" in warning


def test_xdputil_vitis_ai_3_5_one_thread_no_space_before_frames() -> None:
    run = vitis.parse_xdputil(fixture("xdputil_benchmark_5.txt"))
    # "FPS= 337.061 number_of_frames=20225 time= 60.0039 seconds." and "BYEBYE " (trailing space)
    assert run.extra["fps"] == approx(337.061)
    assert run.count == 20225
    assert run.extra["seconds"] == approx(60.0039)
    assert run.extra["threads"] == 1 and run.extra["frames_per_thread"] == [20225]
    assert run.extra["progress_percent"] == [0, 10, 100]  # the vendor elided 20%..90%
    assert run.avg_us == approx(1e6 / 337.061)
    assert run.latency_keys() == {TOTAL_INFERENCE_TIME: (None, approx(2966.82, rel=1e-5), None)}
    assert run.warnings == []


# ------------------------------------------------------------------ no silent drops


def test_xdputil_unreadable_fps_is_an_error_naming_the_line() -> None:
    """DERIVED: fixture 2 with the FPS value replaced by nan."""
    text = fixture("xdputil_benchmark_2.txt").replace("FPS= 1254.93", "FPS= nan")
    with pytest.raises(ToolOutputError, match="cannot read the headline line") as caught:
        vitis.parse_xdputil(text)
    assert "FPS= nan number_of_frames= 75300" in str(caught.value)


def test_xdputil_unreadable_thread_line_and_time_unit_are_warnings() -> None:
    """DERIVED: fixture 1 with one thread line and the time unit changed."""
    text = (
        fixture("xdputil_benchmark_1.txt")
        .replace("thread-1 processes 810 frames", "thread-1 processes 810 images")
        .replace("time= 60.0382 seconds.", "time= 60.0382 fortnights.")
    )
    run = vitis.parse_xdputil(text)
    assert run.count == 1714 and run.extra["fps"] == approx(28.5485)
    assert "seconds" not in run.extra
    assert run.extra["frames_per_thread"] == [904]
    text_of = " | ".join(run.warnings)
    assert "cannot read line 'I0713 18:38:48.279599" in text_of
    assert "thread-1 processes 810 images" in text_of
    assert "fortnights" in text_of
    assert "add up to 904 frames, not number_of_frames=1714" in text_of


def test_test_performance_unreadable_headline_is_an_error() -> None:
    """DERIVED: fixture 2 with E2E_MEAN printed as -nan (what a run without frames prints)."""
    text = fixture("vitis_ai_test_performance_2.txt").replace("E2E_MEAN=2588.76", "E2E_MEAN=-nan")
    with pytest.raises(ToolOutputError, match="cannot read the headline line: E2E_MEAN=-nan"):
        vitis.parse_test_performance(text)


def test_test_performance_unreadable_dpu_mean_and_unknown_keys_are_flagged() -> None:
    """SYNTHETIC report block: DPU_MEAN unreadable, a key no release prints, a step line."""
    run = vitis.parse_test_performance(
        "step 10FPS=380.5\nFPS=386.133\nE2E_MEAN=2588.76\nDPU_MEAN=nan\nE2E_P99=3100\n"
    )
    assert run.avg_us == approx(2588.76)
    assert run.forward_us is None
    assert run.extra["other_values"] == {"E2E_P99": "3100"}
    assert run.extra["step_fps"] == [(10, approx(380.5))]
    text_of = " | ".join(run.warnings)
    assert "cannot read line 'DPU_MEAN=nan'" in text_of
    assert "unknown report line 'E2E_P99=3100'" in text_of
    # an environment assignment in a pasted command line is not a report line
    quiet = vitis.parse_test_performance("XLNX_ENABLE_DUMP=1 ./test_performance_x m l\nFPS=1\n")
    assert "other_values" not in quiet.extra
