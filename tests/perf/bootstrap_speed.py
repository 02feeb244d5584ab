"""How long does the precision gate's bootstrap take after a round? (target: < 5 ms per call)

It times ``median_ci`` on 10 rounds of 100 iterations (2000 resamples, the gate's defaults),
with bursty synthetic latencies, and ends with ``RESULT ms_per_call=<x>`` (the median of
several repeats, so a busy neighbour on a shared machine does not decide the figure).
Usage: python tests/perf/bootstrap_speed.py [--rounds 10] [--iterations 100] [--calls 200]
       [--repeats 5] [--smoke]
--smoke: the same rounds, 10 calls in each of 2 repeats (make test runs it so).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.measure.precision import median_ci  # noqa: E402

SMOKE = {"calls": 10, "repeats": 2}


def synthetic_rounds(rounds: int, iterations: int) -> list[list[float]]:
    """Lognormal jitter around 1 ms; every third round is slowed 1.45x, as in a burst."""
    rng = np.random.default_rng(0)
    return [
        list(rng.lognormal(np.log(1000.0), 0.05, iterations) * (1.45 if r % 3 == 2 else 1.0))
        for r in range(rounds)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds (default 10)")
    parser.add_argument("--iterations", type=int, default=100, help="per round (default 100)")
    parser.add_argument("--calls", type=int, default=200, help="calls per repeat (default 200)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k}={v}" for k, v in SMOKE.items()),
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)

    latencies = synthetic_rounds(args.rounds, args.iterations)
    medians = [float(np.median(r)) for r in latencies]
    median_ci(medians, latencies)  # warm numpy's code paths
    per_call = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for seed in range(args.calls):
            interval = median_ci(medians, latencies, seed=seed)
        per_call.append((time.perf_counter() - start) / args.calls * 1e3)
    print(
        f"{args.rounds} rounds x {args.iterations} iterations: estimate "
        f"{interval.estimate:.1f} us, +-{interval.half_width_pct:.2f}% ({interval.method})"
    )
    print("repeats (ms/call): " + " ".join(f"{ms:.2f}" for ms in per_call))
    print(f"RESULT ms_per_call={statistics.median(per_call):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
