"""A standard competing load for devlab's repeatability tests: one process that shares this
machine with the measurement the way a busy lab host does.

The load is ONE child process (the host has 2 cores and devlab measures on one, so one load
process contends for the other core, the shared last-level cache and memory bandwidth without
starving the measurement of a core outright). Each work slice multiplies small matrices that
stay in L1/L2 (CPU-bound arithmetic) and then streams read-modify-write over one chunk of a
buffer larger than the last-level cache, so the measured model loses cache lines and bandwidth,
not only cycles.

* ``none``: nothing is started;
* ``steady``: the work loops without pause (about one full core);
* ``bursty``: the same work for ``duty`` (default 0.4) of every ``period_s`` (0.1 s) period and
  sleeps for the rest, on an absolute schedule so the duty cycle does not drift.

``competing_load(mode, duration_s)`` starts the child, waits until its buffer is allocated
(so the load is fully on when the block starts), and kills it by its pid on exit. The child
also stops by itself ``margin_s`` after ``duration_s`` and as soon as its parent is gone, so a
crashed or killed test run leaves nothing behind.

As a script it checks the load on this machine: it runs each mode for ``--seconds`` and prints
the CPU seconds per second the child used; the last line is
``RESULT steady_cpu=<x> bursty_cpu=<x>``.
Usage: python tests/perf/interference.py [--modes steady,bursty] [--seconds 3] [--duty 0.4]
       [--smoke]
--smoke: every mode for 0.5 s (make test runs it so).
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODES = ("none", "steady", "bursty")
LLC_SIZE = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
MIN_BUFFER = 64 << 20
MAX_BUFFER = 512 << 20  # a VM may report a huge LLC; the load must stay polite with memory
CHUNK = 4 << 20  # bytes streamed per work slice: about a millisecond, so the duty is fine-grained
MATRIX = 96  # 96x96 float64: three of them fit in L2
READY = "ready"
READY_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SINGLE_THREAD = {
    name: "1"
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")  # one core only
}


def buffer_bytes() -> int:
    """Twice the last-level cache when the kernel reports it, within [64 MiB, 512 MiB]: a
    stream over it evicts the whole cache every pass."""
    try:
        text = LLC_SIZE.read_text().strip().upper()
    except OSError:
        return MIN_BUFFER
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        size = int(text.rstrip("KMG")) * scale
    except ValueError:
        return MIN_BUFFER
    return max(MIN_BUFFER, min(MAX_BUFFER, 2 * size))


def cpu_seconds(pid: int) -> tuple[str, float] | None:
    """(state, user + system CPU seconds) of ``pid`` from /proc, or None once it is reaped.

    A zombie (state ``Z``) still carries its times, so read this before reaping the child.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may contain spaces
    # after the name: state is field 3 of stat(5), utime 14 and stime 15
    return fields[0], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Load:
    """What ran during a ``competing_load`` block; filled in on exit."""

    mode: str
    pid: int | None = None
    cpu_per_s: float = 0.0  # CPU seconds the child used per wall second of the block
    covered: bool = True  # False when the child had stopped before the block ended
    _started: float = field(default=0.0, repr=False)
    _cpu_start: float = field(default=0.0, repr=False)


@contextmanager
def competing_load(
    mode: str,
    duration_s: float,
    *,
    duty: float = 0.4,
    period_s: float = 0.1,
    margin_s: float = 10.0,
) -> Iterator[Load]:
    """Run the ``mode`` load for the block (at most ``duration_s + margin_s``); kill it after."""
    if mode not in MODES:
        raise ValueError(f"unknown interference mode {mode!r}; one of {', '.join(MODES)}")
    if not 0.0 < duty <= 1.0:
        raise ValueError(f"duty must be in (0, 1], not {duty}")
    load = Load(mode)
    if mode == "none":
        yield load
        return
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--seconds",
        repr(duration_s + margin_s),
        "--duty",
        repr(duty),
        "--period",
        repr(period_s),
        "--buffer-bytes",
        str(buffer_bytes()),
        "--parent",
        str(os.getpid()),
    ]
    env = {**os.environ, **SINGLE_THREAD}
    # same process group as the caller: a harness that kills the group ends the load too
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        _wait_ready(proc)
        load.pid = proc.pid
        load._started = time.monotonic()
        load._cpu_start = _cpu(proc.pid)
        yield load
        stat = cpu_seconds(proc.pid)
        wall = time.monotonic() - load._started
        if stat is not None:
            load.covered = stat[0] != "Z"
            load.cpu_per_s = (stat[1] - load._cpu_start) / wall if wall > 0 else 0.0
    finally:
        if proc.poll() is None:
            proc.kill()  # SIGKILL to this pid only
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _cpu(pid: int) -> float:
    stat = cpu_seconds(pid)
    return stat[1] if stat else 0.0


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    """Block until the child has allocated its buffer and starts loading."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
    line = proc.stdout.readline().strip() if readable else ""
    if line != READY:
        code = proc.poll()
        raise RuntimeError(
            f"interference load did not start (exit {code}, said {line!r})"
            if code is not None or line
            else f"interference load not ready after {READY_TIMEOUT_S:g} s"
        )


def run_child(
    mode: str, seconds: float, duty: float, period_s: float, nbytes: int, parent: int
) -> None:
    """The load itself: work slices for ``duty`` of each period until the deadline or until
    the parent is gone."""
    deadline = time.monotonic() + seconds
    stream = np.empty(nbytes // 4, dtype=np.float32)
    stream.fill(1.0)  # touch every page now, so the first pass is no page-fault storm
    rng = np.random.default_rng(0)
    left, right = rng.random((MATRIX, MATRIX)), rng.random((MATRIX, MATRIX))
    product = np.empty((MATRIX, MATRIX))
    step, offset = CHUNK // 4, 0
    busy_s = period_s * (1.0 if mode == "steady" else duty)
    print(READY, flush=True)

    start, period = time.monotonic(), 0
    while True:
        now = time.monotonic()
        if now >= deadline or os.getppid() != parent:
            return
        begin = start + period * period_s
        if now - begin >= period_s:  # fell behind (descheduled): rejoin the schedule
            period = int((now - start) / period_s)
            begin = start + period * period_s
        while time.monotonic() < begin + busy_s:
            for _ in range(8):
                np.matmul(left, right, out=product)
            chunk = stream[offset : offset + step]
            np.add(chunk, 1.0, out=chunk)
            offset = offset + step if offset + 2 * step <= stream.size else 0
        rest = begin + period_s - time.monotonic()
        if mode == "bursty" and rest > 0:
            time.sleep(rest)
        period += 1


def parse_modes(text: str) -> list[str]:
    """``none,steady,bursty`` -> the list; an unknown or repeated mode is an error."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give distinct modes from {', '.join(MODES)}, comma-separated"
        )
    return modes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", type=parse_modes, default="steady,bursty")
    parser.add_argument("--seconds", type=float, default=3.0, help="per mode (3)")
    parser.add_argument("--duty", type=float, default=0.4, help="bursty duty fraction (0.4)")
    parser.add_argument("--smoke", action="store_true", help="--seconds=0.5 (make test)")
    # the child's own arguments (competing_load passes them)
    parser.add_argument("--child", choices=MODES[1:], help=argparse.SUPPRESS)
    parser.add_argument("--period", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--buffer-bytes", type=int, default=MIN_BUFFER, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(seconds=0.5)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.seconds, args.duty, args.period, args.buffer_bytes, args.parent)
        return

    print(f"buffer {buffer_bytes() >> 20} MiB, duty {args.duty:g}, period {args.period:g} s")
    shares: dict[str, float] = {}
    for mode in args.modes:
        with competing_load(mode, args.seconds, duty=args.duty) as load:
            time.sleep(args.seconds)
        shares[mode] = load.cpu_per_s
        print(f"{mode:>7}: pid {load.pid}, {load.cpu_per_s:.2f} CPU s per s")
    print("RESULT " + " ".join(f"{mode}_cpu={share:.2f}" for mode, share in shares.items()))


if __name__ == "__main__":
    main()
