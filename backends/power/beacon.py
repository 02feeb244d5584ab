"""The power sync beacon: a known on/off load pattern a device runs, stamped with its own clock.

A continuous power trace is stamped by the monitor's clock; a job's rounds are stamped by the
device's. To line them up without extra wiring, the device runs a short busy-loop pattern
before and after each job (or round) and reports when, by its own clock, the pattern began;
``backends.power.beacon_detect`` finds the pattern in the trace and ``backends.power.clock_fit``
solves device time -> monitor time from two or more of them.

The pattern is a maximal-length LFSR sequence (an m-sequence) of on/off chips: its
autocorrelation has one sharp peak and flat, low sidelobes, so a matched filter finds its
position to a fraction of a chip even in a noisy rail, and a round's plain on/off block does not
look like it. The default is 31 chips of 20 ms (0.62 s), long enough to stand out of the idle
trace, short enough to run around every job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Feedback taps (1-based) of a primitive polynomial per register length: x^n + x^k + 1.
PRIMITIVE_TAPS: dict[int, tuple[int, int]] = {
    3: (3, 2),
    4: (4, 3),
    5: (5, 3),
    6: (6, 5),
    7: (7, 6),
    9: (9, 5),
    10: (10, 7),
}


def m_sequence(order: int) -> tuple[int, ...]:
    """The 2^order - 1 chips (0/1) of a maximal-length sequence; ValueError for an order with
    no tap table entry."""
    if order not in PRIMITIVE_TAPS:
        raise ValueError(
            f"beacon order {order} is not supported; use one of {sorted(PRIMITIVE_TAPS)}"
        )
    first, second = PRIMITIVE_TAPS[order]
    state = [1] * order
    chips = []
    for _ in range(2**order - 1):
        chips.append(state[-1])
        feedback = state[first - 1] ^ state[second - 1]
        state = [feedback, *state[:-1]]
    return tuple(chips)


@dataclass(frozen=True)
class BeaconPattern:
    """The chips (1 = busy, 0 = idle) and how long each lasts on the device's clock."""

    chips: tuple[int, ...]
    chip_s: float = 0.02

    def __post_init__(self) -> None:
        if self.chip_s <= 0:
            raise ValueError(f"beacon chip_s must be > 0, got {self.chip_s}")
        if len(self.chips) < 3 or set(self.chips) != {0, 1}:
            raise ValueError("a beacon needs at least 3 chips with both on (1) and off (0)")

    @classmethod
    def default(cls, order: int = 5, chip_s: float = 0.02) -> BeaconPattern:
        return cls(m_sequence(order), chip_s)

    @property
    def duration_s(self) -> float:
        return len(self.chips) * self.chip_s

    def on_spans(self) -> list[tuple[float, float]]:
        """(start, end) of every busy run, seconds from the pattern start (device clock)."""
        spans: list[tuple[float, float]] = []
        for index, chip in enumerate(self.chips):
            if not chip:
                continue
            start, end = index * self.chip_s, (index + 1) * self.chip_s
            if spans and abs(spans[-1][1] - start) < 1e-12:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return spans

    def template(self, period_s: float) -> np.ndarray:
        """The pattern as a monitor with sample period ``period_s`` would see it: each sample
        is the busy fraction of its period (sample 0 starts with the pattern)."""
        if period_s <= 0:
            raise ValueError("sample period must be > 0")
        count = int(np.ceil(self.duration_s / period_s))
        edges = np.arange(count + 1) * period_s
        busy = np.zeros(count + 1)
        for start, end in self.on_spans():
            busy += np.clip(edges - start, 0.0, end - start)
        return np.diff(busy) / period_s


def run_beacon(
    pattern: BeaconPattern,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_busy: Callable[[bool], None] | None = None,
) -> float:
    """Run ``pattern`` here (the device side): busy-loop through on chips, sleep through off
    chips, every chip boundary scheduled on ``clock``. Returns the start stamp on ``clock``.

    Chip ends are absolute deadlines from the start, so a late wake-up never accumulates
    across chips. ``on_busy(True/False)`` hears each busy run begin and end (a virtual phone
    marks its load with it)."""
    start = clock()
    busy = False
    for index, chip in enumerate(pattern.chips):
        deadline = start + (index + 1) * pattern.chip_s
        if bool(chip) != busy:
            busy = bool(chip)
            if on_busy is not None:
                on_busy(busy)
        if chip:
            while clock() < deadline:
                pass
        else:
            remaining = deadline - clock()
            if remaining > 0:
                sleep(remaining)
    if busy and on_busy is not None:
        on_busy(False)
    return start


__all__ = ["PRIMITIVE_TAPS", "BeaconPattern", "m_sequence", "run_beacon"]
