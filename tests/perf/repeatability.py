"""Do devlab's numbers reproduce, on a quiet machine and under a competing load? Two passes a
few minutes apart over the same models, measured once with a naive protocol and once with
devlab's default protocol, on ``host:cpu``.

* naive: one model at a time, a fresh ONNX Runtime session, 10 warm-up runs, the median of 50
  timed runs (what a quick script does);
* devlab: ``devlab --run DIR --device host:cpu --threads 1`` with its defaults: sessions kept
  loaded in the measurement process, 5 interleaved rounds of at least 0.2 s in shuffled order,
  the two drift references (the small canary and the large-footprint one) in alternating blocks
  with the model inside every round, the precision gate; the compared figure is ``headline_us``
  (drift-normalised by the blend of the references the model moves with, unless that made the
  job's rounds clearly noisier), with the raw ``median_us`` shown too.

The models: the sample models in assets/models plus ``--archs`` (default 30) architectures
sampled from the MobileNetV2 CIFAR-10 search space. The order of the four measurements is
naive 1, devlab 1, a pause of ``--gap`` seconds, naive 2, devlab 2, so both protocols see the
machine's slow phases alike.

Interference (``--interference``, a comma-separated list, default ``none,steady,bursty``): pass
2 runs under that mode's competing load from tests/perf/interference.py (``steady``: one process
streaming memory and doing arithmetic without pause; ``bursty``: the same for ``--duty`` of every
100 ms; ``none``: nothing), pass 1 always on the quiet machine. Every mode re-runs BOTH passes,
with its own canary history, rather than comparing several loaded second passes with one shared
first pass: the host drifts over minutes, so a shared pass 1 would put more time (and more
drift) between the passes of the later modes and the comparison across modes would measure the
clock as much as the load. Paired this way, each mode is the same experiment (quiet pass, gap,
pass) and only the load differs; the price is two passes per mode instead of one.

Prints per mode the share of models whose two medians agree within +-5% and +-10%, for naive,
devlab raw and devlab normalised, and the CPU the load used; then, per mode, how much the host's
pace moved between the passes for the models (raw) and for each reference, and every model whose
headline is off by more than 5% with its raw, canary, large-reference and headline ratios and
the blend's weight (the evidence for why a run fails when it fails); the last line is
``RESULT agree5_naive=<pct> agree5_devlab=<pct> agree5_devlab_steady=<pct>
agree5_devlab_bursty=<pct> agree5_naive_steady=<pct> agree5_naive_bursty=<pct>`` (the first
two are the ``none`` mode; keys of modes not run are left out).

Usage: python tests/perf/repeatability.py [--archs 30] [--seed 7] [--gap 180] [--naive-runs 50]
       [--interference none,steady,bursty] [--duty 0.4] [--work DIR] [--smoke]
       [-- DEVLAB OPTIONS...]
--smoke: the sample models and 2 architectures, no pause, 5 naive runs, the modes none and
bursty, and a devlab protocol cut to 2 rounds of 10 runs (the canary and the gate still run;
make test runs it so).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from interference import competing_load, parse_modes  # noqa: E402  (this script's folder)

from backends.models.intake import load_model, random_inputs  # noqa: E402
from backends.runtimes.ort_session import session_options  # noqa: E402
from backends.space.sample import write_samples  # noqa: E402
from backends.space.spec import load_space  # noqa: E402

SPACE = REPO / "assets" / "spaces" / "mobilenetv2_cifar10.json"
SAMPLE_MODELS = REPO / "assets" / "models"
SMOKE = {
    "archs": 2,
    "gap": 0.0,
    "naive_runs": 5,
    "interference": "none,bursty",
    "devlab_args": ["--warmup=1", "--runs=10", "--rounds=2", "--max-rounds=3"],
}


def prepare_models(folder: Path, archs: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(SAMPLE_MODELS.glob("*.onnx")):
        shutil.copy(path, folder / path.name)
    write_samples(load_space(SPACE), folder / "archs", archs, seed)
    return sorted(folder.rglob("*.onnx"))


def naive_pass(models: list[Path], warmup: int, runs: int) -> dict[str, float]:
    """One model at a time, a fresh session each, the median of ``runs`` timed runs."""
    medians: dict[str, float] = {}
    for path in models:
        model = load_model(path)
        session = ort.InferenceSession(str(path), session_options(1))
        feeds = random_inputs(model)
        for _ in range(warmup):
            session.run(None, feeds)
        latencies = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            session.run(None, feeds)
            latencies.append((time.perf_counter_ns() - start) / 1e3)
        medians[model.sha256] = statistics.median(latencies)
    return medians


def devlab_pass(
    folder: Path, out: Path, extra: list[str], data_home: Path
) -> tuple[dict, dict, float]:
    """``devlab --run`` with its default protocol; (normalised medians, raw medians, seconds).

    Both passes share one canary history (``data_home``), as two runs on one machine do.
    """
    started = time.monotonic()
    env = {**os.environ, "XDG_DATA_HOME": str(data_home)}
    command = [
        sys.executable,
        "-m",
        "console.entry",
        "--run",
        str(folder),
        "--device",
        "host:cpu",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"devlab failed ({done.returncode}):\n{done.stderr[-3000:]}")
    normalised, raw = {}, {}
    with open(out / "results.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["status"] != "done":
                continue
            raw[row["model_sha256"]] = float(row["median_us"])
            # the headline devlab quotes: normalised unless that made the rounds clearly noisier
            value = row.get("headline_us") or row.get("normalised_median_us") or row["median_us"]
            normalised[row["model_sha256"]] = float(value)
    return normalised, raw, time.monotonic() - started


def agreement(first: dict[str, float], second: dict[str, float], within_pct: float) -> float:
    keys = sorted(set(first) & set(second))
    if not keys:
        return 0.0
    close = sum(abs(second[k] / first[k] - 1.0) * 100.0 <= within_pct for k in keys)
    return 100.0 * close / len(keys)


@dataclass
class ModeResult:
    """One interference mode's two passes: medians by model sha256 per protocol."""

    mode: str
    naive: tuple[dict[str, float], dict[str, float]]
    raw: tuple[dict[str, float], dict[str, float]]
    normalised: tuple[dict[str, float], dict[str, float]]
    load_cpu_per_s: float
    load_covered: bool


def run_mode(mode: str, models: list[Path], work: Path, args: argparse.Namespace) -> ModeResult:
    """Pass 1 on the quiet machine, the gap, pass 2 under ``mode``'s load."""
    print(f"mode {mode}: pass 1 quiet, pause {args.gap:.0f} s, pass 2 with load {mode}", flush=True)
    folder, data_home = work / "models", work / f"xdg-data-{mode}"
    timings: dict[str, float] = {}
    started = time.monotonic()
    naive_1 = naive_pass(models, 10, args.naive_runs)
    timings["naive pass 1"] = time.monotonic() - started
    devlab_1, raw_1, timings["devlab pass 1"] = devlab_pass(
        folder, work / f"devlab-{mode}-1", args.devlab_args, data_home
    )
    pass_1_s = time.monotonic() - started
    time.sleep(args.gap)
    # generous bound: the load is killed when pass 2 ends; the bound only matters if we die
    with competing_load(mode, duration_s=3.0 * pass_1_s + 60.0, duty=args.duty) as load:
        started = time.monotonic()
        naive_2 = naive_pass(models, 10, args.naive_runs)
        timings["naive pass 2"] = time.monotonic() - started
        devlab_2, raw_2, timings["devlab pass 2"] = devlab_pass(
            folder, work / f"devlab-{mode}-2", args.devlab_args, data_home
        )
    print("  " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    if not load.covered:
        print(f"  WARNING: the {mode} load stopped before pass 2 ended", flush=True)
    return ModeResult(
        mode,
        (naive_1, naive_2),
        (raw_1, raw_2),
        (devlab_1, devlab_2),
        load.cpu_per_s,
        load.covered,
    )


def report(results: list[ModeResult], naive_runs: int) -> str:
    """The per-mode table (printed) and the RESULT line (returned)."""
    print(
        f"agreement of pass 2 with pass 1: naive = fresh session, median of {naive_runs}; "
        "raw = devlab median of round medians; norm = devlab headline (drift-normalised unless "
        "that made the job's rounds clearly noisier)"
    )
    print(
        f"{'mode':<7} {'models':>6} {'naive 5%':>9} {'naive 10%':>10} {'raw 5%':>7} "
        f"{'raw 10%':>8} {'norm 5%':>8} {'norm 10%':>9} {'load CPU/s':>10}"
    )
    agree5: dict[str, tuple[float, float]] = {}
    for result in results:
        figures = [
            agreement(*pair, within)
            for pair in (result.naive, result.raw, result.normalised)
            for within in (5, 10)
        ]
        count = len(set(result.normalised[0]) & set(result.normalised[1]))
        load = f"{result.load_cpu_per_s:.2f}" + ("" if result.load_covered else " (ended)")
        print(
            f"{result.mode:<7} {count:>6} {figures[0]:>8.1f}% {figures[1]:>9.1f}% "
            f"{figures[2]:>6.1f}% {figures[3]:>7.1f}% {figures[4]:>7.1f}% {figures[5]:>8.1f}% "
            f"{load:>10}"
        )
        agree5[result.mode] = (figures[0], figures[4])
    pairs: list[tuple[str, float]] = []
    if "none" in agree5:
        pairs += [("agree5_naive", agree5["none"][0]), ("agree5_devlab", agree5["none"][1])]
    pairs += [(f"agree5_devlab_{m}", agree5[m][1]) for m in ("steady", "bursty") if m in agree5]
    pairs += [(f"agree5_naive_{m}", agree5[m][0]) for m in ("steady", "bursty") if m in agree5]
    return "RESULT " + " ".join(f"{key}={value:.1f}" for key, value in pairs)


def explain(work: Path, mode: str) -> None:
    """Why pass 2 disagrees with pass 1, from each job's row: the pace change every model and
    both references saw between the passes, and for each model off by more than 5% its raw,
    canary, large-reference and normalised ratios (pass 2 / pass 1) and the blend's weight."""
    passes = []
    for number in (1, 2):
        path = work / f"devlab-{mode}-{number}" / "results.json"
        if not path.exists():
            return
        rows = [row for row in json.loads(path.read_text()) if row.get("status") == "done"]
        passes.append({row["model_sha256"]: row for row in rows})
    first, second = passes
    keys = sorted(set(first) & set(second), key=lambda k: first[k]["median_us"])

    def ratio(key: str, column: str) -> float | None:
        a, b = first[key].get(column), second[key].get(column)
        return b / a if a and b else None

    def median_of(column: str) -> str:
        values = [r for r in (ratio(k, column) for k in keys) if r is not None]
        return f"{statistics.median(values):.3f}" if values else "-"

    print(
        f"  {mode}: pass 2 / pass 1, median over models: raw {median_of('median_us')}, "
        f"canary {median_of('canary_median_us')}, large reference "
        f"{median_of('canary_large_median_us')}, headline {median_of('headline_us')}"
    )
    for key in keys:
        headline = ratio(key, "headline_us")
        if headline is None or abs(headline - 1.0) <= 0.05:
            continue
        figures = " ".join(
            f"{label} {value:.3f}" if value is not None else f"{label} -"
            for label, value in (
                ("raw", ratio(key, "median_us")),
                ("canary", ratio(key, "canary_median_us")),
                ("large", ratio(key, "canary_large_median_us")),
                ("headline", headline),
            )
        )
        weight = second[key].get("reference_large_weight")
        rounds = f"{first[key].get('rounds')}/{second[key].get('rounds')}"
        print(
            f"    off: {first[key]['model']:<18} {first[key]['median_us']:>8.1f} us  {figures}"
            f"  weight {weight if weight is not None else '-'}  rounds {rounds}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archs", type=int, default=30, help="sampled architectures (30; >= 30 for the figure)"
    )
    parser.add_argument("--seed", type=int, default=7, help="sampling seed (7)")
    parser.add_argument("--gap", type=float, default=180.0, help="seconds between the passes")
    parser.add_argument("--naive-runs", type=int, default=50, help="naive timed runs (50)")
    parser.add_argument(
        "--interference",
        type=parse_modes,
        default="none,steady,bursty",
        help="competing loads for pass 2, comma-separated (none,steady,bursty)",
    )
    parser.add_argument("--duty", type=float, default=0.4, help="bursty duty fraction (0.4)")
    parser.add_argument("--work", type=Path, help="keep the models and runs here")
    parser.add_argument(
        "devlab_args", nargs="*", help="extra devlab options after --, e.g. -- --precision 1"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(
            f"--{k.replace('_', '-')}={v if isinstance(v, str) else format(v, 'g')}"
            for k, v in SMOKE.items()
            if k != "devlab_args"
        )
        + " -- "
        + " ".join(SMOKE["devlab_args"]),
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="devlab-repeatability-"))
    models = prepare_models(work / "models", args.archs, args.seed)
    print(f"{len(models)} models ({args.archs} sampled architectures) in {work / 'models'}")
    results = [run_mode(mode, models, work, args) for mode in args.interference]
    result_line = report(results, args.naive_runs)
    print("why pass 2 differs (ratios pass 2 / pass 1; models off by more than 5% listed):")
    for result in results:
        explain(work, result.mode)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(result_line)


if __name__ == "__main__":
    main()
