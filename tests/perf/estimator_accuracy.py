"""How accurate is a latency estimator built with devlab on this machine? (the nnabla-nas flow)

1. writes the block-level module models of the CIFAR-10 MobileNetV2 space and samples N
   architectures (``devlab space modules`` / ``sample``, through the Python API);
2. benches the modules, then the sampled set twice, on host:cpu with devlab's own queue:
   ``devlab --run DIR --device host:cpu --threads 1 --rounds R --runs RUNS --out OUT``;
3. the noise check: the share of whole-model medians that agree within +-5 % across the two
   passes (below 95 % the accuracy below is limited by measurement noise, not by the model);
4. fits the estimator on pass 1 (k-fold held-out report) and draws its plots.

Prints the wall time of every stage; the last line is
``RESULT within10=<pct> within5=<pct> mape=<pct> raw_within10=<pct> raw_mape=<pct>`` (held-out
fit on pass 1, and the unfitted raw sum: what a NAS search with a plain table lookup gets).
Usage: python tests/perf/estimator_accuracy.py [--n 50] [--runs 100] [--rounds 5] [--quick]
       [--space FILE] [--work DIR] [--bench-arg=--precision=2 ...] [--smoke]
--smoke: every stage, with 6 sampled architectures, one round of 5 runs per model (the canary
runs, the precision gate may add no round) and 3 folds (make test runs it so; with so few
points the figures mean nothing).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.space.estimator import (  # noqa: E402
    FORWARD_KEY,
    EstimatorError,
    LatencyTable,
    fit_estimator,
    read_latency_table,
    read_sampled,
)
from backends.space.modules import write_modules  # noqa: E402
from backends.space.plots import plot_latency_vs_macs, plot_predicted_vs_measured  # noqa: E402
from backends.space.sample import write_samples  # noqa: E402
from backends.space.spec import load_space  # noqa: E402

DEFAULT_SPACE = ROOT / "assets" / "spaces" / "mobilenetv2_cifar10.json"
DEVLAB = [sys.executable, "-c", "import sys; from console.entry import main; sys.exit(main())"]
NOISE_LIMIT_PCT = 95.0
SMOKE = {
    "n": 6,
    "runs": 5,
    "rounds": 1,
    "warmup": 1,
    "folds": 3,
    "bench_arg": ["--max-rounds=1"],
}
timings: list[tuple[str, float]] = []


@contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    print(f"-- {name} ...", flush=True)
    yield
    seconds = time.perf_counter() - start
    timings.append((name, seconds))
    print(f"   {name}: {seconds:.1f} s", flush=True)


def bench(folder: Path, out: Path, args: argparse.Namespace) -> None:
    """One ``devlab --run`` on host:cpu; its output goes to a log beside ``out``."""
    command = [
        *DEVLAB,
        "--run",
        str(folder),
        "--device",
        "host:cpu",
        "--threads",
        "1",
        "--rounds",
        str(args.rounds),
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
        "--out",
        str(out),
        *args.bench_arg,
    ]
    log = out.with_suffix(".log")
    # every bench shares one reference-canary history, so their normalised medians share a scale
    env = {**os.environ, "XDG_DATA_HOME": str(out.parent / "xdg-data")}
    with open(log, "w") as handle:
        code = subprocess.run(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        ).returncode
    if code == 1:
        print(f"   warning: some jobs failed (see {log}); continuing with the rest")
    elif code != 0:
        raise SystemExit(f"devlab --run exited {code}; see {log}")


def medians(results_csv: Path) -> dict[str, float]:
    """Each model's headline: drift-normalised unless that made its rounds clearly noisier."""
    with open(results_csv, newline="") as handle:
        return {
            row["model_sha256"]: float(
                row.get("headline_us") or row.get("normalised_median_us") or row["median_us"]
            )
            for row in csv.DictReader(handle)
            if row["status"] == "done" and row["median_us"]
        }


def noise_check(first: Path, second: Path) -> float:
    """Share (%) of models whose two pass medians agree within +-5 % of their mean."""
    a, b = medians(first), medians(second)
    both = sorted(set(a) & set(b))
    if not both:
        raise SystemExit("no model was measured in both passes")
    agree = sum(abs(a[k] - b[k]) <= 0.05 * (a[k] + b[k]) / 2 for k in both)
    spread = sorted(abs(a[k] - b[k]) / ((a[k] + b[k]) / 2) * 100 for k in both)
    print(
        f"   {agree}/{len(both)} whole-model medians agree within +-5 % across passes "
        f"(median difference {spread[len(spread) // 2]:.1f} %, max {spread[-1]:.1f} %)"
    )
    return agree / len(both) * 100


def module_table(out: Path, index_uids: set[str]) -> LatencyTable:
    """latency_table.csv when it lists the modules by ModuleUID, else the results.csv."""
    table = read_latency_table(out / "latency_table.csv")
    listed = {uid for uid, *_ in table.values}
    if index_uids <= listed:
        print("   table: latency_table.csv (ModuleUIDs)")
        return table
    print("   table: results.csv + model metadata (latency_table.csv lacks the ModuleUIDs)")
    return read_latency_table(out / "results.csv")


def without_cold_term(table: LatencyTable, results_csv: Path) -> LatencyTable:
    """The table as the modules' hot loops gave it: Forward Propagate less each module's
    ``cold_weights_us`` (what its calls cost more with the weights out of the per-core cache,
    docs/measurement.md), to show what that term does to the raw sum."""
    with open(results_csv, newline="") as handle:
        cold = {
            row["module_uid"]: float(row["cold_weights_us"])
            for row in csv.DictReader(handle)
            if row["status"] == "done" and row.get("cold_weights_us")
        }
    values = {
        (uid, label, key, stat): value - cold.get(uid, 0.0) if key == FORWARD_KEY else value
        for (uid, label, key, stat), value in table.values.items()
    }
    return LatencyTable(values, table.devices, table.source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="sampled architectures (50)")
    parser.add_argument("--runs", type=int, help="timed runs per model (100; quick: 40)")
    parser.add_argument("--rounds", type=int, help="rounds per model (5; quick: 4)")
    parser.add_argument("--warmup", type=int, help="untimed runs (10; quick: 5)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    parser.add_argument("--folds", type=int, default=5, help="k-fold (5)")
    parser.add_argument("--quick", action="store_true", help="fewer runs per model")
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE, help="space file")
    parser.add_argument("--work", type=Path, help="keep everything in this folder")
    parser.add_argument(
        "--bench-arg", action="append", default=[], help="extra devlab --run argument"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(
            f"--{k.replace('_', '-')}={v[0] if isinstance(v, list) else v}"
            for k, v in SMOKE.items()
        ),
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)
    args.runs = args.runs or (40 if args.quick else 100)
    args.rounds = args.rounds or (4 if args.quick else 5)
    args.warmup = args.warmup or (5 if args.quick else 10)
    work = args.work or Path(tempfile.mkdtemp(prefix="devlab-estimator-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"space {args.space.name}, n={args.n}, runs={args.runs}, rounds={args.rounds}, "
        f"warmup={args.warmup}, work {work}"
    )
    try:
        return run(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    total = time.perf_counter()
    space = load_space(args.space)
    with stage("write module models"):
        _, modules = write_modules(space, work / "modules", "block")
        print(f"   {len(modules)} block-level modules")
    with stage("write sampled architectures"):
        _, archs = write_samples(space, work / "sampled", args.n, args.seed)
    with stage("bench modules"):
        bench(work / "modules", work / "modules-out", args)
    with stage("bench sampled, pass 1"):
        bench(work / "sampled", work / "sampled-out-1", args)
    with stage("bench sampled, pass 2"):
        bench(work / "sampled", work / "sampled-out-2", args)
    with stage("noise check"):
        agree = noise_check(
            work / "sampled-out-1" / "results.csv", work / "sampled-out-2" / "results.csv"
        )
        limited = agree < NOISE_LIMIT_PCT
        if limited:
            print(
                f"   NOISE-LIMITED: only {agree:.0f} % < {NOISE_LIMIT_PCT:.0f} % agree; the "
                "estimator accuracy below cannot be better than the measurements"
            )
    with stage("fit"):
        table = module_table(work / "modules-out", {m.uid for m in modules})
        try:
            estimator = fit_estimator(
                table, read_sampled(work / "sampled-out-1" / "results.csv"), folds=args.folds
            )
            second = fit_estimator(
                table, read_sampled(work / "sampled-out-2" / "results.csv"), folds=args.folds
            )
        except EstimatorError as error:
            raise SystemExit(f"fit failed: {error}") from None
        hot = fit_estimator(
            without_cold_term(table, work / "modules-out" / "results.csv"),
            read_sampled(work / "sampled-out-1" / "results.csv"),
            folds=args.folds,
        )
        for warning in estimator.warnings:
            print(f"   warning: {warning}")
        estimator.save(work / "estimator.json")
        plot_predicted_vs_measured(estimator.fits[0], work / "pred_vs_measured.png")
        plot_latency_vs_macs(estimator.fits, work / "latency_vs_macs.png")
    fit = estimator.fits[0]
    report = fit.report
    print(f"\n{fit.runtime} on {fit.device}, {len(archs)} sampled, {report.evaluation}")
    print(f"scale={fit.scale:.4f} bias={fit.bias:.1f} us")
    for label, acc in (
        ("held-out", report.heldout),
        ("in-sample", report.in_sample),
        ("raw sum", report.raw_sum),
        ("held-out, pass 2", second.fits[0].report.heldout),
        ("raw sum, hot", hot.fits[0].report.raw_sum),
    ):
        print(
            f"  {label:17s} within10={acc.within10_pct:5.1f}%  within5={acc.within5_pct:5.1f}%  "
            f"MAPE={acc.mape_pct:5.2f}%  max APE={acc.max_ape_pct:5.1f}%  RMSE={acc.rmse_us:.1f} us"
        )
    print(
        f"noise check: {agree:.0f} % of medians agree within +-5 % across passes"
        + (" (noise-limited)" if limited else "")
    )
    print(
        "wall time: "
        + ", ".join(f"{name} {s:.1f} s" for name, s in timings)
        + f"; total {time.perf_counter() - total:.1f} s"
    )
    if args.work is not None:
        print(f"estimator and plots in {args.work}")
    h, raw = report.heldout, report.raw_sum
    print(
        f"raw sum: modules' forward time + call cost {fit.call_cost_us:.1f} us once per model "
        "('raw sum, hot': without the modules' cold-weights term)"
    )
    print(
        f"RESULT within10={h.within10_pct:.1f} within5={h.within5_pct:.1f} mape={h.mape_pct:.2f} "
        f"raw_within10={raw.within10_pct:.1f} raw_mape={raw.mape_pct:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
