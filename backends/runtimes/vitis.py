"""Xilinx / AMD Vitis AI DPU tools: ``xdputil benchmark`` and ``test_performance_<task>``.

Both tools report throughput, not per-iteration latencies (spec section 6), so a
:class:`ToolRun` from here carries a summary only and ``count`` is the number of frames.

* ``xdputil benchmark``: ``FPS= X number_of_frames= N time= T seconds.`` (a glog line on stderr;
  some versions print no space after ``=``) and one ``thread-K processes N frames`` line per
  thread. The mean latency of one inference is ``1e6 / FPS`` us **only with one thread**; with
  more threads that number is the inverse throughput, kept in ``extra["inverse_throughput_us"]``
  with a warning, and ``avg_us`` stays ``None``.
* ``test_performance_<task>``: ``FPS=``, ``E2E_MEAN=`` (us, "Total Inference Time") and
  ``DPU_MEAN=`` (us, "Forward Propagate") on stdout; the two means are optional (newer programs
  omit them with several threads).

A glog fatal line (``F0309 12:37:45.220671 …``), ``Check failed``, ``*** Check failure stack
trace ***`` or the wrapper's ``Aborted`` make the run a :class:`ToolOutputError` that quotes them.
"""

from __future__ import annotations

import re

from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    error_lines,
    key_values,
    summary,
    tail,
)

XDPUTIL = "xdputil"
TEST_PERFORMANCE = "test_performance"

_FATAL = re.compile(
    r"^F\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]"  # glog FATAL prefix
    r"|Check failed|\*\*\* Check failure stack trace|\bAborted\b|\bSegmentation fault\b"
    r"|(?i:\btest fail)",
)
_PROGRESS = re.compile(r"(?:^|\]\s)(\d{1,3})% \.\.\.\s*$")
_THREAD = re.compile(r"\bthread-(\d+) processes (\d+) frames")
_XDPUTIL_FPS = re.compile(rf"\bFPS=\s*{NUMBER}\s+number_of_frames=")
_TP_LINE = re.compile(rf"^\s*(FPS|E2E_MEAN|DPU_MEAN)=\s*({NUMBER})\s*$")
_TP_WAITING = re.compile(r"waiting for (\d+)/(\d+) seconds, (\d+) threads running")


def xdputil_progress(line: str) -> int | None:
    """The percent of a live ``… performance_test.hpp:76] 40% ...`` line, else None."""
    match = _PROGRESS.search(line.rstrip())
    if not match:
        return None
    percent = int(match.group(1))
    return percent if percent <= 100 else None


def has_xdputil_report(text: str) -> bool:
    """True when ``text`` holds xdputil's ``FPS= … number_of_frames=`` line."""
    return any(_XDPUTIL_FPS.search(line) for line in text.splitlines())


def has_test_performance_report(text: str) -> bool:
    """True when ``text`` holds a test_performance ``FPS=<number>`` line."""
    return any((m := _TP_LINE.match(line)) and m.group(1) == "FPS" for line in text.splitlines())


def parse_xdputil(text: str, exit_code: int | None = None) -> ToolRun:
    """The :class:`ToolRun` of one ``xdputil benchmark`` capture (stderr and stdout together).

    Raises :class:`ToolOutputError` on fatal lines, a non-zero ``exit_code``, or when there is
    no ``FPS=`` line.
    """
    lines = text.splitlines()
    fatal = error_lines(lines, _FATAL)
    if fatal:
        raise ToolOutputError(XDPUTIL, fatal, exit_code, reason="the benchmark aborted")
    run = ToolRun(tool=XDPUTIL)
    report: dict[str, float] | None = None
    frames_per_thread: dict[int, int] = {}
    progress: list[int] = []
    for line in lines:
        if _XDPUTIL_FPS.search(line):
            report = key_values(line[line.index("FPS=") :])
        elif match := _THREAD.search(line):
            frames_per_thread[int(match.group(1))] = int(match.group(2))
        elif (percent := xdputil_progress(line)) is not None:
            progress.append(percent)
    if report is None or "FPS" not in report:
        raise ToolOutputError(
            XDPUTIL, tail(lines), exit_code, reason="no 'FPS= ... number_of_frames=' line"
        )
    if exit_code not in (None, 0):
        raise ToolOutputError(XDPUTIL, tail(lines), exit_code, reason="non-zero exit status")
    fps = report["FPS"]
    run.extra["fps"] = fps
    if "number_of_frames" in report:
        run.count = int(report["number_of_frames"])
    if "time" in report:
        run.extra["seconds"] = report["time"]
    if progress:
        run.extra["progress_percent"] = progress
        if progress[-1] < 100:
            run.warnings.append(f"the progress stopped at {progress[-1]}%")
    threads = len(frames_per_thread) or None
    run.extra["threads"] = threads
    if frames_per_thread:
        run.extra["frames_per_thread"] = [frames_per_thread[k] for k in sorted(frames_per_thread)]
    if fps <= 0:
        run.warnings.append(f"FPS is {fps:g}: no latency can be derived")
        return run
    inverse = 1e6 / fps
    run.extra["inverse_throughput_us"] = inverse
    if threads == 1:
        run.avg_us = inverse
        run.total_inference = summary(count=run.count, mean=inverse)
    else:
        shown = f"{threads} threads" if threads else "an unknown number of threads"
        run.warnings.append(
            f"xdputil ran {shown}: 1e6/FPS = {inverse:.6g} us is the inverse throughput, "
            "not the latency of one inference (run 1 thread for latency)"
        )
    return run


def parse_test_performance(text: str, exit_code: int | None = None) -> ToolRun:
    """The :class:`ToolRun` of one ``test_performance_<task>`` capture.

    ``avg_us`` and "Total Inference Time" are ``E2E_MEAN``; "Forward Propagate" is
    ``DPU_MEAN`` (the DPU part only). Raises :class:`ToolOutputError` on fatal lines, a non-zero
    ``exit_code`` or when there is no ``FPS=`` line.
    """
    lines = text.splitlines()
    fatal = error_lines(lines, _FATAL)
    if fatal:
        raise ToolOutputError(TEST_PERFORMANCE, fatal, exit_code, reason="the program aborted")
    values: dict[str, float] = {}
    run = ToolRun(tool=TEST_PERFORMANCE)
    for line in lines:
        if match := _TP_LINE.match(line):
            values[match.group(1)] = float(match.group(2))
        elif match := _TP_WAITING.search(line):
            run.extra["seconds"] = int(match.group(2))
            run.extra["threads"] = int(match.group(3))
    if "FPS" not in values:
        raise ToolOutputError(TEST_PERFORMANCE, tail(lines), exit_code, reason="no 'FPS=' line")
    if exit_code not in (None, 0):
        raise ToolOutputError(
            TEST_PERFORMANCE, tail(lines), exit_code, reason="non-zero exit status"
        )
    run.extra["fps"] = values["FPS"]
    e2e, dpu = values.get("E2E_MEAN"), values.get("DPU_MEAN")
    run.avg_us = e2e
    run.total_inference = summary(mean=e2e)
    run.forward_us = summary(mean=dpu)
    if e2e is not None and dpu is not None:
        run.extra["cpu_side_us"] = e2e - dpu
    if e2e is None:
        run.warnings.append("no E2E_MEAN line (printed by some programs only with 1 thread)")
    return run


def performance_progress(line: str) -> tuple[int, int] | None:
    """``(elapsed, total)`` seconds of a ``waiting for 10/30 seconds`` line, else None."""
    match = _TP_WAITING.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None
