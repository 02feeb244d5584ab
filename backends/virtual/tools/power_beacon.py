"""A device-side power sync beacon runner for the virtual phone: it busy-loops the beacon
pattern on a virtual device clock and marks the phone's load while busy, so a virtual Monsoon
powering the phone (``backends.virtual.registry.phone_load``) draws the pattern.

The clock is the host's wall clock with ``--offset-s`` and ``--drift-ppm`` applied from
``--ref`` (epoch seconds): ``device = t + offset + drift * (t - ref)``; without them, the
phone's own clock (``DEVLAB_VIRTUAL_CLOCK``, set from its profile, as its ``date`` reports it).
A real phone's clock is simply its own. One line per beacon on stdout, flushed as soon as it
ends::

    beacon 1 start 1700000001.234567

Usage: python -m backends.virtual.tools.power_beacon [--count 2] [--pause 1.0] [--order 5]
       [--chip-ms 20] [--offset-s 0] [--drift-ppm 0] [--ref EPOCH] [--sandbox DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from backends.power.beacon import BeaconPattern, run_beacon
from backends.virtual.tools._common import CLOCK_ENV, LOAD_DIR, SANDBOX_ENV


def device_clock(offset_s: float, drift_ppm: float, ref: float) -> Callable[[], float]:
    def clock() -> float:
        now = time.time()
        return now + offset_s + drift_ppm * 1e-6 * (now - ref)

    return clock


def phone_clock() -> tuple[float, float, float | None]:
    """(offset s, drift ppm, ref epoch s) of the virtual phone's clock; zeros without one."""
    try:
        offset_ns, drift_ppb, ref_ns = (int(part) for part in os.environ[CLOCK_ENV].split())
    except (KeyError, ValueError):
        return 0.0, 0.0, None
    return offset_ns / 1e9, drift_ppb / 1e3, ref_ns / 1e9


def load_marker(sandbox: Path | None) -> Callable[[bool], None]:
    """Creates or removes this process's file under the sandbox's load folder."""

    def mark(busy: bool) -> None:
        if sandbox is None:
            return
        marker = sandbox / LOAD_DIR / f"{os.getpid()}-beacon"
        with contextlib.suppress(OSError):
            if busy:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            else:
                marker.unlink(missing_ok=True)

    return mark


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2, help="beacons to run (2)")
    parser.add_argument("--pause", type=float, default=1.0, help="idle seconds between them")
    parser.add_argument("--order", type=int, default=5, help="m-sequence order (5: 31 chips)")
    parser.add_argument("--chip-ms", type=float, default=20.0, help="chip length, ms (20)")
    offset_s, drift_ppm, ref = phone_clock()
    parser.add_argument("--offset-s", type=float, default=offset_s, help="device clock offset, s")
    parser.add_argument("--drift-ppm", type=float, default=drift_ppm, help="clock drift, ppm")
    parser.add_argument("--ref", type=float, default=ref, help="epoch where the offset holds")
    parser.add_argument("--sandbox", default=os.environ.get(SANDBOX_ENV), help="phone sandbox")
    args = parser.parse_args(argv)
    try:
        pattern = BeaconPattern.default(args.order, args.chip_ms / 1000.0)
    except ValueError as error:
        print(f"power_beacon: {error}", file=sys.stderr)
        return 2
    clock = device_clock(
        args.offset_s, args.drift_ppm, time.time() if args.ref is None else args.ref
    )
    mark = load_marker(Path(args.sandbox) if args.sandbox else None)
    for number in range(1, max(0, args.count) + 1):
        if number > 1:
            time.sleep(args.pause)
        start = run_beacon(pattern, clock, on_busy=mark)
        print(f"beacon {number} start {start:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
