"""tests/perf/interference.py (the repeatability test's competing load) does what its name says
and never outlives its use. Kept out of tests/perf, whose every file is a --smoke script.

Each load runs for about a second; the child's CPU time is read from /proc, so the figures are
what the kernel charged to that one process, not what the generator believes it did.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest
from perf.interference import competing_load, cpu_seconds, parse_modes

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
HERE = Path(__file__).resolve().parent / "perf"  # where interference.py lives


def cpu_per_second(mode: str, seconds: float = 1.0) -> tuple[float, int | None]:
    """CPU seconds per wall second the load's child used over ``seconds``, and its pid."""
    with competing_load(mode, duration_s=seconds + 5.0) as load:
        assert load.pid is not None
        stat = cpu_seconds(load.pid)
        assert stat is not None
        began, cpu_began = time.monotonic(), stat[1]
        time.sleep(seconds)
        stat = cpu_seconds(load.pid)
        assert stat is not None and stat[0] != "Z", "the load stopped inside its block"
        rate = (stat[1] - cpu_began) / (time.monotonic() - began)
    return rate, load.pid


def gone(pid: int) -> bool:
    stat = cpu_seconds(pid)
    return stat is None or stat[0] == "Z"


def test_steady_load_uses_about_one_full_core_and_is_gone_after_the_block() -> None:
    rate, pid = cpu_per_second("steady")
    assert rate > 0.6, f"steady load used only {rate:.2f} CPU s per s"
    assert pid is not None and gone(pid)


def test_bursty_load_uses_a_fraction_of_a_core_and_is_gone_after_the_block() -> None:
    rate, pid = cpu_per_second("bursty")
    assert 0.15 < rate < 0.75, f"bursty load used {rate:.2f} CPU s per s"
    assert pid is not None and gone(pid)


def test_no_load_starts_nothing() -> None:
    with competing_load("none", duration_s=1.0) as load:
        assert load.pid is None


def test_the_load_is_killed_when_the_block_raises() -> None:
    with pytest.raises(KeyError), competing_load("steady", duration_s=5.0) as load:
        raise KeyError("boom")
    assert load.pid is not None and gone(load.pid)


def test_the_load_stops_by_itself_after_its_duration_and_margin() -> None:
    with competing_load("bursty", duration_s=0.2, margin_s=0.1) as load:
        time.sleep(1.0)
    assert not load.covered


def test_the_load_stops_when_its_parent_dies_without_cleaning_up() -> None:
    """A test run killed hard must not leave a core busy: the child notices it is orphaned."""
    parent = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from interference import competing_load\n"
        "with competing_load('steady', duration_s=60.0) as load:\n"
        "    print(load.pid, flush=True)\n"
        "    os._exit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=30
    )
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 3.0
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), f"load {pid} outlived its parent"


def test_modes_are_a_comma_separated_list_of_known_distinct_names() -> None:
    assert parse_modes("none, steady,bursty") == ["none", "steady", "bursty"]
    for bad in ("", "loud", "none,none"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_modes(bad)
    with pytest.raises(ValueError, match="unknown"):
        competing_load("loud", 1.0).__enter__()
