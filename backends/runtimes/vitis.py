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

No silent drops (issue 16): a report line the parser recognises (``FPS=``, ``E2E_MEAN=``,
``thread-K processes``, a ``KEY=value`` line of test_performance's report) whose value cannot be
read is never skipped quietly. An unreadable headline (xdputil's ``FPS=``, test_performance's
``FPS=`` or ``E2E_MEAN=``) is a :class:`ToolOutputError` naming the line; anything else becomes a
warning naming the line. Thread lines whose frames do not add up to ``number_of_frames`` are
flagged too (a thread line was lost).
"""

from __future__ import annotations

import re

from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    clean_log,
    error_lines,
    key_values,
    summary,
    tail,
    to_us,
)

XDPUTIL = "xdputil"
TEST_PERFORMANCE = "test_performance"

_FATAL = re.compile(
    r"^F\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]"  # glog FATAL prefix
    r"|Check failed|\*\*\* Check failure stack trace|\bAborted\b|\bSegmentation fault\b"
    r"|(?i:\btest fail)",
)
_PROGRESS = re.compile(r"(?:^|\]\s)(\d{1,3})% \.\.\.\s*$")
_THREAD_ANY = re.compile(r"\bthread-\S*\s+processes\b")
_THREAD = re.compile(r"\bthread-(\d+) processes (\d+) frames\s*$")
_XDPUTIL_FPS = re.compile(rf"\bFPS=\s*{NUMBER}\s+number_of_frames=")
# xdputil's report line, however its values are spelled: "FPS=… number_of_frames=… time=…"
_XDPUTIL_REPORT = re.compile(r"\bFPS=.*\bnumber_of_frames=")
_XDPUTIL_VALUES = re.compile(
    rf"\bFPS=\s*(?P<fps>{NUMBER})\s+number_of_frames=\s*(?P<frames>\d+)"
    rf"(?:\s+time=\s*(?P<time>{NUMBER})\s*(?P<unit>[A-Za-zµ]+)?\.?)?\s*$"
)
_TP_LINE = re.compile(rf"^\s*(FPS|E2E_MEAN|DPU_MEAN)=\s*({NUMBER})\s*$")
# any line of test_performance's report block: an upper-case KEY=value on its own line
_TP_ANY = re.compile(r"^\s*([A-Z][A-Z0-9_]*)=(\S*)\s*$")
_TP_KNOWN = ("FPS", "E2E_MEAN", "DPU_MEAN")
_TP_STEP = re.compile(rf"^\s*step\s+(\d+)\s*FPS=\s*({NUMBER})\s*$")
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
    text = clean_log(text)
    lines = text.splitlines()
    fatal = error_lines(lines, _FATAL)
    if fatal:
        raise ToolOutputError(XDPUTIL, fatal, exit_code, reason="the benchmark aborted")
    run = ToolRun(tool=XDPUTIL)
    report: dict[str, float] | None = None
    report_line = ""
    frames_per_thread: dict[int, int] = {}
    progress: list[int] = []
    for line in lines:
        if _XDPUTIL_REPORT.search(line):
            report_line = line.strip()
            report = _xdputil_report(line, run)
        elif _THREAD_ANY.search(line):
            if match := _THREAD.search(line):
                frames_per_thread[int(match.group(1))] = int(match.group(2))
            else:
                run.warnings.append(f"{XDPUTIL}: cannot read line {line.strip()!r}")
        elif (percent := xdputil_progress(line)) is not None:
            progress.append(percent)
    if report_line and (report is None or "FPS" not in report):
        raise ToolOutputError(
            XDPUTIL, [report_line], exit_code, reason="cannot read the headline line"
        )
    if report is None:
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
    if frames_per_thread and run.count is not None:
        threads_total = sum(frames_per_thread.values())
        if threads_total != run.count:
            run.warnings.append(
                f"the thread lines add up to {threads_total} frames, not number_of_frames="
                f"{run.count}: a thread line is missing or unreadable"
            )
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


def _xdputil_report(line: str, run: ToolRun) -> dict[str, float] | None:
    """The values of xdputil's ``FPS= … number_of_frames= … time= … seconds.`` line.

    None when FPS cannot be read (the caller raises, naming the line); a readable FPS with an
    unreadable rest keeps what was read and adds a warning naming the line.
    """
    text = line[line.index("FPS=") :].strip()
    if match := _XDPUTIL_VALUES.search(text):
        values = {"FPS": float(match["fps"]), "number_of_frames": float(match["frames"])}
        if match["time"] is not None:
            unit = match["unit"] or "seconds"
            try:
                values["time"] = to_us(float(match["time"]), unit) / 1e6
            except ValueError as exc:
                run.warnings.append(f"{XDPUTIL}: cannot read line {line.strip()!r} ({exc})")
        elif "time=" in text:
            run.warnings.append(f"{XDPUTIL}: cannot read the time in line {line.strip()!r}")
        return values
    values = key_values(text)
    if "FPS" not in values:
        return None
    run.warnings.append(f"{XDPUTIL}: cannot read line {line.strip()!r} (unexpected layout)")
    return values


def parse_test_performance(text: str, exit_code: int | None = None) -> ToolRun:
    """The :class:`ToolRun` of one ``test_performance_<task>`` capture.

    ``avg_us`` and "Total Inference Time" are ``E2E_MEAN``; "Forward Propagate" is
    ``DPU_MEAN`` (the DPU part only). Raises :class:`ToolOutputError` on fatal lines, a non-zero
    ``exit_code`` or when there is no ``FPS=`` line.
    """
    text = clean_log(text)
    lines = text.splitlines()
    fatal = error_lines(lines, _FATAL)
    if fatal:
        raise ToolOutputError(TEST_PERFORMANCE, fatal, exit_code, reason="the program aborted")
    values: dict[str, float] = {}
    unreadable: dict[str, str] = {}  # known key -> its line, when the value could not be read
    other: dict[str, str] = {}
    steps: list[tuple[int, float]] = []
    run = ToolRun(tool=TEST_PERFORMANCE)
    for line in lines:
        if match := _TP_LINE.match(line):
            values[match.group(1)] = float(match.group(2))
        elif match := _TP_STEP.match(line):
            steps.append((int(match.group(1)), float(match.group(2))))
        elif match := _TP_ANY.match(line):
            key, value = match.group(1), match.group(2).strip()
            if key in _TP_KNOWN:
                unreadable[key] = line.strip()
            else:
                other[key] = value
                run.warnings.append(
                    f"{TEST_PERFORMANCE}: unknown report line {line.strip()!r} "
                    "(kept in extra['other_values'])"
                )
        elif match := _TP_WAITING.search(line):
            run.extra["seconds"] = int(match.group(2))
            run.extra["threads"] = int(match.group(3))
    for key in ("FPS", "E2E_MEAN"):  # the headline figures
        if key not in values and key in unreadable:
            raise ToolOutputError(
                TEST_PERFORMANCE,
                [unreadable[key]],
                exit_code,
                reason="cannot read the headline line",
            )
    if "FPS" not in values:
        raise ToolOutputError(TEST_PERFORMANCE, tail(lines), exit_code, reason="no 'FPS=' line")
    for key, line in unreadable.items():
        if key not in values:
            run.warnings.append(f"{TEST_PERFORMANCE}: cannot read line {line!r}")
    if other:
        run.extra["other_values"] = other
    if steps:
        run.extra["step_fps"] = steps
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
