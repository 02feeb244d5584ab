"""A virtual power rig that tells the truth: a phone with its own drifting clock behind a
jittery adb link, running a queue of power jobs (and sync beacons), and the 5 kHz trace a
Monsoon powering it records, with exact ground truth.

Clocks: the trace's time axis is the monitor's clock ``m`` (the reference). The host's clock is
``m - monitor_lag_s`` (a monitor stamps samples when they arrive, a few ms late), the phone's is
``m + offset_s + drift_ppm * 1e-6 * (m - start)``. Every adb command takes ``adb_base_s`` plus
a uniform ``0..adb_jitter_s`` each way.

A queue runs like devlab runs it, in one continuous capture. Per job: a command that idles
``baseline_s`` on the device (device-stamped: the beacon method's baseline) and, with the
beacon on, then runs the beacon pattern; then ``rounds`` round commands, each doing some
per-call work (``overhead_*``: reading the request, writing results) around a timed loop of
whole inferences that the device stamps; the host waits ``gap_s`` between rounds. With the
beacon on, a last beacon closes the queue; ``beacon_every="round"`` puts one before every round
instead of every job. The host keeps today's windows as well: its own clock around the
idle wait, and around the job's round commands.

Power: ``idle_w`` plus a slow wander, plus each activity's extra draw, plus white noise per
sample (and, for a noisy rail, random background bursts). Each sample is the mean power over
its period (the drawn energy is integrated exactly), so the ground truth of a job, the extra
energy its timed loops drew per inference, is known exactly: ``RigRun.truth_mj``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backends.power.beacon import BeaconPattern
from backends.power.sync_energy import BeaconStamp, JobStamps, Span

START = 1_700_000_000.0  # the capture's first sample, monitor clock (epoch-like seconds)
VOLTS = 4.0


@dataclass(frozen=True)
class DeviceClock:
    """The phone's clock against the monitor's: an offset at ``ref`` and a rate error."""

    offset_s: float = 0.0
    drift_ppm: float = 0.0
    ref: float = START

    def device(self, monitor_t: float) -> float:
        return monitor_t + self.offset_s + self.drift_ppm * 1e-6 * (monitor_t - self.ref)

    def monitor(self, device_t: float) -> float:
        rate = 1.0 + self.drift_ppm * 1e-6
        return self.ref + (device_t - self.ref - self.offset_s) / rate


@dataclass(frozen=True)
class RigConfig:
    """What the rig simulates; every default is a plausible phone on a Monsoon."""

    offset_s: float = 1.234
    drift_ppm: float = 200.0
    adb_base_s: float = 0.003
    adb_jitter_s: float = 0.030
    monitor_lag_s: float = 0.004
    rate_hz: float = 5000.0
    idle_w: float = 0.8
    noise_w: float = 0.03
    wander_w: float = 0.005
    wander_period_s: float = 7.0
    background_w: float = 0.0  # random on/off bursts of the phone's own (a noisy rail)
    background_dwell_s: float = 0.03
    beacon: BeaconPattern | None = field(default_factory=BeaconPattern.default)
    beacon_w: float = 1.5  # extra draw of the busy loop
    beacon_every: str = "job"  # or "round"
    edge_jitter_s: float = 5e-5  # the device's wake-up error on each chip edge
    jobs: int = 10
    rounds: int = 8
    round_s: float = 0.1
    baseline_s: float = 0.3
    gap_s: float = 0.03
    overhead_before_s: float = 0.006
    overhead_after_s: float = 0.004
    overhead_w: float = 1.0
    model_w: tuple[float, float] = (0.6, 2.0)  # a job's extra draw, drawn per job
    latency_s: tuple[float, float] = (0.004, 0.012)  # a job's time per inference
    lead_s: float = 0.3  # idle before the first and after the last command
    seed: int = 0

    def __post_init__(self) -> None:
        if self.beacon_every not in ("job", "round"):
            raise ValueError(f'beacon_every must be "job" or "round", got {self.beacon_every!r}')
        if self.jobs < 1 or self.rounds < 1:
            raise ValueError("the rig needs at least one job of one round")


@dataclass
class RigRun:
    """What one run produced: the trace, what the device and host stamped, and the truth."""

    config: RigConfig
    clock: DeviceClock
    frame: pd.DataFrame  # t_s (monitor clock), amps, volts, watts
    beacons: list[BeaconStamp]
    jobs: list[JobStamps]
    truth_mj: dict[str, float]  # job id -> true extra energy per inference, mJ
    beacon_truth: list[float]  # monitor time each beacon really began

    def true_offset_at(self, monitor_t: float) -> float:
        """device minus monitor clock at ``monitor_t``."""
        return self.clock.device(monitor_t) - monitor_t


class _Timeline:
    """The run as it unfolds: a cursor on the monitor clock and the activities drawn."""

    def __init__(self, config: RigConfig) -> None:
        self.config = config
        # one stream per purpose, so the same seed gives the same jobs and round delays with
        # the beacon on or off
        self.adb_rng = np.random.default_rng([config.seed, 1])
        self.beacon_rng = np.random.default_rng([config.seed, 2])
        self.clock = DeviceClock(config.offset_s, config.drift_ppm, START)
        self.now = START + config.lead_s  # monitor clock
        self.segments: list[tuple[float, float, float]] = []

    def host(self, monitor_t: float) -> float:
        return monitor_t - self.config.monitor_lag_s

    def adb(self, rng: np.random.Generator | None = None) -> float:
        """One adb transfer's delay (the round's stream, or ``rng``'s)."""
        rng = self.adb_rng if rng is None else rng
        return self.config.adb_base_s + float(rng.uniform(0.0, self.config.adb_jitter_s))

    def busy(self, seconds_device: float, watts: float) -> tuple[float, float]:
        """The device is busy for ``seconds_device`` of its own clock; its (start, end) stamps."""
        start_d = self.clock.device(self.now)
        end_d = start_d + seconds_device
        end_m = self.clock.monitor(end_d)
        if watts:
            self.segments.append((self.now, end_m, watts))
        self.now = end_m
        return start_d, end_d

    def beacon(self, pattern: BeaconPattern) -> float:
        """Run the pattern on the device clock; its device start stamp."""
        start_d = self.clock.device(self.now)
        jitter = self.config.edge_jitter_s
        for on, off in pattern.on_spans():
            a = self.clock.monitor(start_d + on) + float(self.beacon_rng.normal(0.0, jitter))
            b = self.clock.monitor(start_d + off) + float(self.beacon_rng.normal(0.0, jitter))
            self.segments.append((a, b, self.config.beacon_w))
        self.now = self.clock.monitor(start_d + pattern.duration_s)
        return start_d


def _render(config: RigConfig, segments, end: float, rng: np.random.Generator) -> pd.DataFrame:
    """Samples of mean power per period: idle + wander + activities (integrated exactly)."""
    period = 1.0 / config.rate_hz
    count = int(np.ceil((end - START) / period))
    edges = np.arange(count + 1) * period  # from START: exact widths, no epoch rounding
    if segments:
        starts = np.array([s[0] for s in segments]) - START
        ends = np.array([s[1] for s in segments]) - START
        watts = np.array([s[2] for s in segments])
        points = np.concatenate((starts, ends))
        steps = np.concatenate((watts, -watts))
        order = np.argsort(points, kind="stable")
        points, rate = points[order], np.cumsum(steps[order])
        energy = np.concatenate(([0.0], np.cumsum(rate[:-1] * np.diff(points))))
        cumulative = np.interp(edges, points, energy, left=0.0, right=energy[-1])
        extra = np.diff(cumulative) / period
    else:
        extra = np.zeros(count)
    mid = edges[:-1] + period / 2
    wander = config.wander_w * np.sin(2 * np.pi * mid / config.wander_period_s)
    watts_out = config.idle_w + wander + extra + rng.normal(0.0, config.noise_w, count)
    np.maximum(watts_out, 0.0, out=watts_out)
    return pd.DataFrame(
        {"t_s": START + edges[:-1], "amps": watts_out / VOLTS, "volts": VOLTS, "watts": watts_out}
    )


def _background(config: RigConfig, end: float, rng: np.random.Generator) -> list:
    """Random telegraph bursts of ``background_w`` (mean dwell ``background_dwell_s``)."""
    bursts, t, on = [], START, False
    while config.background_w > 0 and t < end:
        dwell = float(rng.exponential(config.background_dwell_s))
        if on:
            bursts.append((t, t + dwell, config.background_w))
        t, on = t + dwell, not on
    return bursts


def run_queue(config: RigConfig | None = None) -> RigRun:
    """Simulate one queue in one capture (see the module docstring)."""
    config = config or RigConfig()
    line = _Timeline(config)
    job_rng = np.random.default_rng([config.seed, 0])
    pattern = config.beacon
    beacons: list[BeaconStamp] = []
    beacon_truth: list[float] = []
    jobs: list[JobStamps] = []
    truth: dict[str, float] = {}

    def beacon_command() -> None:
        assert pattern is not None
        sent = line.host(line.now)
        line.now += line.adb(line.beacon_rng)
        beacon_truth.append(line.now)
        start_d = line.beacon(pattern)
        line.now += line.adb(line.beacon_rng)
        beacons.append(BeaconStamp(start_d, (sent, line.host(line.now))))

    for index in range(config.jobs):
        job_id = f"job{index + 1:02d}"
        model_w = float(job_rng.uniform(*config.model_w))
        latency = float(job_rng.uniform(*config.latency_s))
        iterations = max(1, round(config.round_s / latency))
        # the idle baseline: the host waits (today's window), the device idles and stamps it
        host_baseline = Span(line.host(line.now), line.host(line.now) + config.baseline_s)
        line.now += line.adb()
        device_baseline = Span(*line.busy(config.baseline_s, 0.0))
        if pattern is not None and config.beacon_every == "job":
            line.now += 0.02  # the beacon right after the baseline, same command
            beacon_truth.append(line.now)
            start_d = line.beacon(pattern)
            beacons.append(BeaconStamp(start_d, (host_baseline.start, line.host(line.now))))
        line.now += line.adb()
        rounds, first_sent, extra_j = [], None, 0.0
        for _ in range(config.rounds):
            if pattern is not None and config.beacon_every == "round":
                beacon_command()
            sent = line.host(line.now)
            first_sent = sent if first_sent is None else first_sent
            line.now += line.adb()
            line.busy(config.overhead_before_s, config.overhead_w)
            before = line.now
            start_d, end_d = line.busy(iterations * latency, model_w)
            extra_j += model_w * (line.now - before)
            rounds.append(Span(start_d, end_d, iterations))
            line.busy(config.overhead_after_s, config.overhead_w)
            line.now += line.adb()
            host_timed_end = line.host(line.now)
            line.now += config.gap_s
        assert first_sent is not None
        host_timed = Span(first_sent, host_timed_end, iterations * config.rounds)
        jobs.append(JobStamps(job_id, device_baseline, tuple(rounds), host_baseline, host_timed))
        truth[job_id] = extra_j / (iterations * config.rounds) * 1000.0
    if pattern is not None:
        beacon_command()
    end = line.now + config.lead_s
    segments = line.segments + _background(config, end, np.random.default_rng([config.seed, 3]))
    frame = _render(config, segments, end, np.random.default_rng([config.seed, 4]))
    return RigRun(config, line.clock, frame, beacons, jobs, truth, beacon_truth)


__all__ = ["START", "DeviceClock", "RigConfig", "RigRun", "run_queue"]
