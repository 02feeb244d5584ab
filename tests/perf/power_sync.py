"""Does the power sync beacon place a queue's jobs in one continuous trace? (targets:
offset_err_ms <= 2, drift_err_ppm <= 20, energy_err_pct_max <= 2)

The virtual rig (``backends/virtual/power_rig.py``, no hardware): a phone whose clock is 1.234 s
ahead of the monitor's and 200 ppm fast, behind an adb link with 3 ms + up to 30 ms of jitter
each way, a monitor stamping samples 4 ms late, runs a queue of ten jobs of eight 100 ms rounds
in one 5 kHz capture; each round does 6 + 4 ms of per-call work around its timed loop.

Measured, over ``--seeds`` queues:
- the clock fit (``backends/power/sync_energy.sync_queue``): offset error at the first beacon
  (ms) and drift error (ppm) against the rig's clock;
- each job's net energy per inference against the rig's ground truth (the extra energy its
  timed loops drew), placed by the beacon fit; and the same queue with the beacon off, measured
  from the host's windows as a ``--power`` job is today; and that again with no per-call work
  (what adb jitter and the monitor's lag alone cost);
- beacons before every round (a 75 ms pattern) instead of every job; and the beacon on a rail
  with no noise and no idle wander (what is left is the timing's own error);
- how busy a rail's own random bursts may be before the beacon is not found (and the rows
  fall back).

The last line is ``RESULT offset_err_ms=<max |x|> drift_err_ppm=<max |x|>
energy_err_pct_max=<max |x|> energy_err_pct_max_nobeacon=<max |x|>``.

Usage: python tests/perf/power_sync.py [--seeds 20] [--smoke]
--smoke: 2 seeds and a short noise sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.power.beacon import BeaconPattern  # noqa: E402
from backends.power.sync_energy import QueueSync, sync_queue  # noqa: E402
from backends.virtual.power_rig import RigConfig, RigRun, run_queue  # noqa: E402

ISSUE = RigConfig(offset_s=1.234, drift_ppm=200.0, adb_jitter_s=0.030, jobs=10, round_s=0.1)
SHORT = BeaconPattern.default(order=4, chip_s=0.005)


def measure(config: RigConfig) -> tuple[RigRun, QueueSync]:
    run = run_queue(config)
    return run, sync_queue(run.frame, run.jobs, run.beacons, config.beacon or SHORT)


def errors_pct(run: RigRun, sync: QueueSync) -> list[float]:
    return [
        (row.power["energy_per_inference_mj"] / run.truth_mj[row.job_id] - 1.0) * 100.0
        for row in sync.jobs
    ]


def clock_errors(run: RigRun, sync: QueueSync) -> tuple[float, float]:
    fit = sync.fit
    if fit is None:
        raise SystemExit(f"no clock fit: {sync.jobs[0].sync_reason}")
    offset_ms = (fit.offset_s - run.true_offset_at(fit.ref_monitor)) * 1e3
    return offset_ms, fit.drift_ppm - run.config.drift_ppm


def worst(values: list[float]) -> float:
    return max(abs(v) for v in values)


def job_table(run: RigRun, beacon: QueueSync, today: QueueSync) -> None:
    print(f"{'job':6} {'truth mJ':>9} {'beacon mJ':>10} {'err %':>7} {'today mJ':>9} {'err %':>7}")
    for on, off in zip(beacon.jobs, today.jobs, strict=True):
        truth = run.truth_mj[on.job_id]
        a = on.power["energy_per_inference_mj"]
        b = off.power["energy_per_inference_mj"]
        print(
            f"{on.job_id:6} {truth:9.3f} {a:10.3f} {(a / truth - 1) * 100:7.2f} "
            f"{b:9.3f} {(b / truth - 1) * 100:7.2f}"
        )


def noise_sweep(levels: list[float], seeds: int) -> None:
    print("\nrail's own bursts (W, 30 ms dwell) -> beacons found, rows placed by the beacon")
    for level in levels:
        found = placed = total = rows = 0
        for seed in range(seeds):
            config = dataclasses.replace(ISSUE, jobs=3, background_w=level, seed=seed)
            _, sync = measure(config)
            found += sum(match.found for match in sync.matches)
            total += len(sync.matches)
            placed += sum(row.sync.startswith("beacon") for row in sync.jobs)
            rows += len(sync.jobs)
        print(f"  {level:4.1f} W  found {found:3d}/{total:<3d}  placed {placed:3d}/{rows}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="queues to simulate (20)")
    parser.add_argument("--smoke", action="store_true", help="2 seeds, short noise sweep")
    args = parser.parse_args(argv)
    seeds = 2 if args.smoke else max(1, args.seeds)
    print(
        f"rig: offset {ISSUE.offset_s} s, drift {ISSUE.drift_ppm:g} ppm, adb "
        f"{ISSUE.adb_base_s * 1e3:g} + 0..{ISSUE.adb_jitter_s * 1e3:g} ms each way, monitor lag "
        f"{ISSUE.monitor_lag_s * 1e3:g} ms, {ISSUE.jobs} jobs x {ISSUE.rounds} rounds of "
        f"{ISSUE.round_s * 1e3:g} ms, beacon {len(ISSUE.beacon.chips) if ISSUE.beacon else 0} "
        f"chips x {ISSUE.beacon.chip_s * 1e3 if ISSUE.beacon else 0:g} ms, {seeds} queues"
    )
    offsets, drifts, beacon_err, today_err, jitter_only, per_round, flat = ([] for _ in range(7))
    for seed in range(seeds):
        config = dataclasses.replace(ISSUE, seed=seed)
        run, beacon = measure(config)
        off_run, today = measure(dataclasses.replace(config, beacon=None))
        bare_run, bare = measure(dataclasses.replace(config, beacon=None, overhead_w=0.0))
        rounds_run, rounds = measure(
            dataclasses.replace(config, beacon=SHORT, beacon_every="round")
        )
        flat_run, flat_sync = measure(dataclasses.replace(config, wander_w=0.0, noise_w=0.0))
        offset_ms, drift_ppm = clock_errors(run, beacon)
        offsets.append(offset_ms)
        drifts.append(drift_ppm)
        beacon_err += errors_pct(run, beacon)
        today_err += errors_pct(off_run, today)
        jitter_only += errors_pct(bare_run, bare)
        per_round += errors_pct(rounds_run, rounds)
        flat += errors_pct(flat_run, flat_sync)
        if seed == 0:
            fit = beacon.fit
            assert fit is not None
            print(
                f"\nqueue 0: {len(run.frame)} samples ({len(run.frame) / 5000:.1f} s), "
                f"{fit.beacons} beacons, fit offset {fit.offset_s:.6f} s drift "
                f"{fit.drift_ppm:.1f} ppm, worst residual {fit.residual_ms_max:.3f} ms, "
                f"peak correlations {min(m.ncc for m in beacon.matches):.3f}.."
                f"{max(m.ncc for m in beacon.matches):.3f}"
            )
            job_table(run, beacon, today)
    print(
        f"\nover {seeds} queues ({len(beacon_err)} jobs):\n"
        f"  offset error    max |{worst(offsets):.4f}| ms\n"
        f"  drift error     max |{worst(drifts):.2f}| ppm\n"
        f"  energy/inference error, beacon (a beacon per job)   max |{worst(beacon_err):.2f}| %\n"
        f"  energy/inference error, beacon per round (75 ms)    max |{worst(per_round):.2f}| %\n"
        f"  ... beacon on a flat, noise-free idle (timing only) max |{worst(flat):.2f}| %\n"
        f"  energy/inference error, beacon off (today)          max |{worst(today_err):.2f}| %"
        f"  (mean {sum(today_err) / len(today_err):+.2f} %)\n"
        f"  ... today with no per-call work (jitter+lag only)   max |{worst(jitter_only):.2f}| %"
    )
    noise_sweep([0.0, 1.0, 2.0, 3.0] if args.smoke else [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0], seeds)
    print(
        f"RESULT offset_err_ms={worst(offsets):.4f} drift_err_ppm={worst(drifts):.3f} "
        f"energy_err_pct_max={worst(beacon_err):.3f} "
        f"energy_err_pct_max_nobeacon={worst(today_err):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
