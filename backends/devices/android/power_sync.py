"""A phone's side of power sync: its own clock around each timed tool run, and the beacon.

A power job synced by beacon (``--power-sync beacon``, docs/power-sync.md) needs every round on
the phone's clock: the round's command prints the phone's ``date`` before and after the tool,
in one ``adb shell`` (no adb round trip between stamp and tool), and keeps the tool's exit code.
The beacon is the ``power_beacon`` tool: it runs the pattern and prints its start on the same
clock (``beacon 1 start <epoch seconds>``). The tool's own account of its timed loop
(``timed_loop_s``) lets the round's energy window cover that loop only.
"""

from __future__ import annotations

import re
import shlex

from adbutils import AdbDevice

from backends.devices.base import BenchError
from backends.runtimes.common import ToolRun

BEACON_TOOL = "power_beacon"
STAMP_TAG = "devlab-clock:"
# toybox and GNU date both print nanoseconds with %N; the tag tells the lines from the tool's
_STAMP = shlex.join(["date", f"+{STAMP_TAG}%s.%N"])
_STAMP_LINE = re.compile(rf"^{re.escape(STAMP_TAG)}(\d+\.\d+)\s*$")
_BEACON_LINE = re.compile(r"^beacon \d+ start (\d+(?:\.\d+)?)\s*$", re.MULTILINE)


def stamped_command(argv: list[str]) -> str:
    """``argv`` (quoted) between two stamps of the phone's clock; the command's status stays the
    tool's (``(exit $rc)``, not ``exit``: adbutils appends its own status echo to the line)."""
    return f"{_STAMP}; {shlex.join(argv)}; rc=$?; {_STAMP}; (exit $rc)"


def split_stamps(output: str) -> tuple[str, tuple[float, float] | None]:
    """The tool's own output, and the (start, end) stamps when both came back well formed."""
    kept, stamps = [], []
    for line in output.splitlines(keepends=True):
        match = _STAMP_LINE.match(line.strip())
        if match:
            stamps.append(float(match.group(1)))
        elif not line.strip().startswith(STAMP_TAG):
            kept.append(line)
    span = (stamps[0], stamps[-1]) if len(stamps) == 2 and stamps[1] >= stamps[0] else None
    return "".join(kept), span


def timed_loop_s(run: ToolRun) -> float | None:
    """How long the tool's timed loop ran, in seconds, by its own output: its total where it
    prints one (``onnxruntime_perf_test``: "Total inference run time"), else count x average of
    the timed runs (``benchmark_model``'s ``count=... avg=...`` line); None when it says neither
    (the round's window is then its whole command)."""
    total_us = run.extra.get("run_time_us")
    if isinstance(total_us, int | float) and total_us > 0:
        return float(total_us) / 1e6
    if run.count and run.avg_us is not None and run.avg_us > 0:
        return run.count * run.avg_us / 1e6
    return None


def init_and_deinit_s(run: ToolRun) -> tuple[float | None, float | None]:
    """The tool's own init (before its inferences) and de-init (after them), in seconds, where
    it reports them (``snpe-diagview``'s Init and De-Init): the round's energy window is then
    its command less those two ends."""
    init = run.extra.get("init")
    stats = init if isinstance(init, dict) else {}

    def seconds(key: str) -> float | None:
        value = stats.get(key)
        return float(value) / 1e6 if isinstance(value, int | float) and value >= 0 else None

    return (run.init_us / 1e6 if run.init_us else seconds("init")), seconds("deinit")


def parse_beacon_start(output: str) -> float:
    """The device-clock start the beacon tool printed; BenchError when it printed none."""
    match = _BEACON_LINE.search(output)
    if match is None:
        shown = output.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{BEACON_TOOL} printed no 'beacon 1 start <seconds>' line: {shown[0]}")
    return float(match.group(1))


def run_beacon(adb: AdbDevice, tool: str, timeout_s: float) -> float:
    """Run one beacon with ``tool`` on the phone; its start on the phone's clock."""
    result = adb.shell2(shlex.join([tool, "--count", "1"]), timeout=timeout_s)
    if result.returncode != 0:
        last = result.output.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{BEACON_TOOL} exited with {result.returncode}: {last[0]}")
    return parse_beacon_start(result.output)


def beacon_on_path(adb: AdbDevice) -> bool:
    """Whether the phone's PATH has the beacon tool."""
    result = adb.shell2(shlex.join(["command", "-v", BEACON_TOOL]), timeout=30)
    return result.returncode == 0 and bool(result.output.strip())


__all__ = [
    "BEACON_TOOL",
    "beacon_on_path",
    "init_and_deinit_s",
    "parse_beacon_start",
    "run_beacon",
    "split_stamps",
    "stamped_command",
    "timed_loop_s",
]
