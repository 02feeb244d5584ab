"""A power job synced by beacon (``--power-sync beacon``): one continuous capture from the first
beacon to the last, the job's energy placed by the device's own clock.

The capture stays open over: beacon 1, the idle baseline, the rounds (each stamped on the
device's clock by its session), beacon 2, a short tail; with ``every_round`` (``--power-beacons
round``) a beacon also runs before every round after the first, so the fit has rounds + 1
beacons. ``sync_queue`` finds the beacons in the trace, fits device -> monitor time and
measures the baseline (between the end of beacon 1 and the first round, on the device clock)
and every round from the device's stamps: over the tool's timed loop where its output says how
long that took (``StampedRound.window``), else over the whole command. When no beacon ran or
none was found, or a round came back without stamps, the job is measured as today
(``capture.measure_energy`` over the host's windows, which hold no beacon) and its warnings say
why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.devices.base import BenchError
from backends.power.beacon import BeaconPattern
from backends.power.capture import (
    POWER_TAIL_S,
    EnergyReading,
    EnergyWindows,
    PowerChannel,
    excess_error_w,
    measure_energy,
    resolution_warning,
    resolved,
)
from backends.power.sync_energy import BeaconStamp, JobStamps, Span, sync_queue
from backends.power.trace import read_trace

BASELINE_GUARD_S = 0.1  # kept clear of the beacon's end and the first round's start
SYNC_MODES = {"beacon": "beacon", "beacon-offset-only": "one beacon", "host-windows": "windows"}
TIMED_LOOP, COMMAND = "timed loop", "command"  # a round's energy window (Result.power)
TRIMMED = "command less init and de-init"


@dataclass(frozen=True)
class StampedRound:
    """One round on the device's clock: the stamps around its whole command (``iterations``
    timed inside), and what the tool says of its own phases: how long its timed loop took
    (``loop_s``), or how long it spent before and after its inferences (``head_s``,
    ``tail_s``: SNPE's Init and De-Init); None where it did not say."""

    command: Span
    loop_s: float | None = None
    head_s: float | None = None
    tail_s: float | None = None

    def window(self) -> tuple[Span, str, str]:
        """The round's energy window, its kind and why not the timed loop (empty when it is).

        The timed loop is ``[end - loop_s, end]``: the tool prints and exits right after its
        loop, while the model load, init and warm-up all come before it. A tool that reports
        its init and de-init instead keeps ``[start + head_s, end - tail_s]``. A tool that
        said neither, or whose phases do not fit its stamped command, keeps the command."""
        span = self.command
        length = span.end - span.start
        if self.loop_s is not None:
            if 0 < self.loop_s <= length:
                return Span(span.end - self.loop_s, span.end, span.iterations), TIMED_LOOP, ""
            return (
                span,
                COMMAND,
                f"the tool's timed loop ({self.loop_s:.6f} s) does not fit its stamped "
                f"command ({length:.6f} s)",
            )
        if self.head_s is None and self.tail_s is None:
            return span, COMMAND, "the tool printed no duration of its timed loop"
        head, tail = self.head_s or 0.0, self.tail_s or 0.0
        if head + tail >= length:
            return (
                span,
                COMMAND,
                f"the tool's init and de-init ({head:.6f} + {tail:.6f} s) do not fit its "
                f"stamped command ({length:.6f} s)",
            )
        inner = Span(span.start + head, span.end - tail, span.iterations)
        return inner, TRIMMED, "the tool reports its init and de-init, not its loop"


@dataclass
class BeaconRuns:
    """The beacons the device ran (device start + the host's window around each), and why
    one did not run."""

    stamps: list[BeaconStamp]
    failure: str = ""

    def run(self, beacon: Callable[[], float | None]) -> None:
        if self.failure:
            return
        sent = time.time()
        try:
            start = beacon()
        except BenchError as error:
            self.failure = f"the beacon did not run: {error}"
            return
        if start is None:
            self.failure = "this device's session cannot run the power sync beacon"
            return
        self.stamps.append(BeaconStamp(start, (sent, time.time())))


def capture_synced(
    channel: PowerChannel,
    trace: Path,
    baseline_s: float,
    beacon: Callable[[], float | None],
    timed: Callable[[Callable[[], None]], int | None],
    device_rounds: Callable[[], Sequence[StampedRound]],
    wait: Callable[[float, str], None],
    tail_s: float = POWER_TAIL_S,
    pattern: BeaconPattern | None = None,
    every_round: bool = False,
) -> EnergyReading | None:
    """Record ``trace`` over beacon, baseline, rounds, beacon and tail; energy per inference
    from the beacons' clock fit, else from the host's windows (the reason in the warning).

    ``beacon()`` runs one beacon on the device (its device-clock start; None: cannot;
    BenchError: failed), ``timed(before_round)`` runs the rounds, calling ``before_round()``
    before each (iterations, None when the job ended inside), ``device_rounds()`` gives them on
    the device's clock; ``wait`` as in ``capture_energy``. With ``every_round`` a beacon runs
    before every round but the first (beacon 1 and the baseline precede that one).
    """
    pattern = pattern or BeaconPattern.default()
    beacons = BeaconRuns([])
    begun = 0

    def before_round() -> None:
        nonlocal begun
        if every_round and begun:
            beacons.run(beacon)
        begun += 1

    dropped_before = channel.dropped
    with channel.capture(trace):
        beacons.run(beacon)
        baseline_start = time.time()
        wait(baseline_s, "power baseline")
        timed_start = time.time()
        iterations = timed(before_round)
        timed_end = time.time()
        if iterations is None:
            return None
        beacons.run(beacon)
        wait(tail_s, "power")
    windows = EnergyWindows((baseline_start, timed_start), (timed_start, timed_end), iterations)
    dropped = channel.dropped - dropped_before
    reason = beacons.failure if not beacons.stamps else ""
    rounds = list(device_rounds())
    if not reason and sum(r.command.iterations for r in rounds) != iterations:
        reason = f"only {len(rounds)} round(s) came back with the device's clock stamps"
    if not reason:
        try:
            reading = _by_beacon(trace, windows, beacons, rounds, pattern, dropped)
        except _NoSync as error:
            reason = str(error)
        else:
            reading.power["power_beacons"] = "round" if every_round else "job"
            return reading
    return _by_windows(trace, windows, dropped, reason)


class _NoSync(Exception):
    """The beacons gave no usable placement; the message says why."""


def _round_windows(rounds: list[StampedRound]) -> tuple[list[Span], dict[str, Any]]:
    """Each round's energy window, and what the row says about them: ``power_window`` (timed
    loop, command, or mixed), why not the timed loop, and each round's kind."""
    placed = [stamped.window() for stamped in rounds]
    kinds = [kind for _, kind, _ in placed]
    why = next((reason for _, _, reason in placed if reason), "")
    if len(set(kinds)) == 1:
        window = kinds[0]
    else:
        window = "mixed"
        others = len(kinds) - kinds.count(TIMED_LOOP)
        why = f"{others} of {len(kinds)} rounds not over the timed loop: {why}"
    notes = {"power_window": window, "power_window_reason": why, "round_windows": kinds}
    return [span for span, _, _ in placed], notes


def _by_beacon(
    trace: Path,
    windows: EnergyWindows,
    beacons: BeaconRuns,
    rounds: list[StampedRound],
    pattern: BeaconPattern,
    dropped: int,
) -> EnergyReading:
    first = beacons.stamps[0].device_start + pattern.duration_s + BASELINE_GUARD_S
    last = max(first, rounds[0].command.start - BASELINE_GUARD_S)
    spans, window_notes = _round_windows(rounds)
    stamps = JobStamps(
        job_id="job",
        device_baseline=Span(first, last),
        device_rounds=tuple(spans),
        host_baseline=Span(*windows.baseline),
        host_timed=Span(*windows.timed, windows.iterations),
    )
    try:
        sync = sync_queue(read_trace(trace), [stamps], beacons.stamps, pattern)
    except (OSError, ValueError) as error:
        raise _NoSync(f"the trace could not be read for the beacon: {error}") from error
    row = sync.jobs[0]
    if row.sync == "host-windows" or sync.fit is None:
        raise _NoSync(row.sync_reason or "no beacon found in the trace")
    power: dict[str, Any] = dict(row.power)
    fit = power.pop("clock_fit")
    timed_start = power["timed_window"][0]  # the noise shrinks with the rounds' own seconds
    error_w = excess_error_w(
        trace,
        EnergyWindows(
            tuple(power["baseline_window"]), (timed_start, timed_start + power["window_s"]), 1
        ),
    )
    reason = "; ".join(part for part in (row.sync_reason, beacons.failure) if part)
    power.update(
        power_sync=SYNC_MODES[row.sync],
        power_sync_reason=reason,
        clock_offset_s=fit["offset_s"],
        clock_drift_ppm=fit["drift_ppm"] if fit["drift_solved"] else None,
        clock_fit=fit,
        beacons=[  # the host's window too: where a queue's trace searches it again
            {**match.to_dict(), "host_window": list(stamp.host_window or ())}
            for match, stamp in zip(sync.matches, beacons.stamps, strict=True)
        ],
        device_baseline_window=[first, last],
        excess_error_w=error_w,
        host_baseline_window=list(windows.baseline),
        host_timed_window=list(windows.timed),
        device_rounds=[[r.command.start, r.command.end, r.command.iterations] for r in rounds],
        device_windows=[[span.start, span.end, span.iterations] for span in spans],
        dropped=dropped,
        trace_path=str(trace),
        **window_notes,
    )
    warning = None
    if not resolved(power["mean_w"] - power["baseline_w"], error_w):
        power["energy_per_inference_mj"] = None
        warning = resolution_warning(power)
    elif reason:
        warning = f"power sync: {reason}"
    return EnergyReading(power, warning)


def _by_windows(trace: Path, windows: EnergyWindows, dropped: int, reason: str) -> EnergyReading:
    """Today's method over the host's windows; the warning starts with why not by beacon."""
    note = f"power sync by beacon not used ({reason}); energy from the host's windows"
    try:
        power = measure_energy(trace, windows, dropped)
    except BenchError as error:
        partial = {"trace_path": str(trace), "dropped": dropped, "power_sync": "windows"}
        partial["power_sync_reason"] = reason
        return EnergyReading(partial, f"{note}; energy not measured: {error}")
    power.update(
        power_sync="windows",
        power_sync_reason=reason,
        power_window=COMMAND,
        power_window_reason="the host's windows span the whole round commands",
    )
    unresolved = resolution_warning(power)
    return EnergyReading(power, f"{note}; {unresolved}" if unresolved else note)


__all__ = [
    "BASELINE_GUARD_S",
    "COMMAND",
    "SYNC_MODES",
    "TIMED_LOOP",
    "TRIMMED",
    "StampedRound",
    "capture_synced",
]
