"""Do devlab's numbers reproduce? Two passes a few minutes apart over the same models, measured
once with a naive protocol and once with devlab's default protocol, on ``host:cpu``.

* naive: one model at a time, a fresh ONNX Runtime session, 10 warm-up runs, the median of 50
  timed runs (what a quick script does);
* devlab: ``devlab --run DIR --device host:cpu --threads 1`` with its defaults: sessions kept
  loaded, 5 interleaved rounds in shuffled order, the reference canary before every round, the
  precision gate; the compared figure is ``normalised_median_us`` (the drift-normalised
  headline), with the raw ``median_us`` shown too.

The models: the sample models in assets/models plus ``--archs`` (default 30) architectures
sampled from the MobileNetV2 CIFAR-10 search space. The order of the four measurements is
naive 1, devlab 1, a pause of ``--gap`` seconds, naive 2, devlab 2, so both protocols see the
machine's slow phases alike. Prints the share of models whose two medians agree within +-5%
and +-10% for each protocol; the last line is
``RESULT agree5_naive=<pct> agree5_devlab=<pct>``.

Usage: python tests/perf/repeatability.py [--archs 30] [--seed 7] [--gap 180] [--naive-runs 50]
       [--work DIR] [--smoke] [-- DEVLAB OPTIONS...]
--smoke: the sample models and 2 architectures, no pause, 5 naive runs, and a devlab protocol
cut to 2 rounds of 5 runs (the canary and the gate still run; make test runs it so).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

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
            value = row.get("normalised_median_us") or row["median_us"]
            normalised[row["model_sha256"]] = float(value)
    return normalised, raw, time.monotonic() - started


def agreement(first: dict[str, float], second: dict[str, float], within_pct: float) -> float:
    keys = sorted(set(first) & set(second))
    if not keys:
        return 0.0
    close = sum(abs(second[k] / first[k] - 1.0) * 100.0 <= within_pct for k in keys)
    return 100.0 * close / len(keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archs", type=int, default=30, help="sampled architectures (30; >= 30 for the figure)"
    )
    parser.add_argument("--seed", type=int, default=7, help="sampling seed (7)")
    parser.add_argument("--gap", type=float, default=180.0, help="seconds between the passes")
    parser.add_argument("--naive-runs", type=int, default=50, help="naive timed runs (50)")
    parser.add_argument("--work", type=Path, help="keep the models and runs here")
    parser.add_argument(
        "devlab_args", nargs="*", help="extra devlab options after --, e.g. -- --precision 1"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k.replace('_', '-')}={v:g}" for k, v in SMOKE.items() if k != "devlab_args")
        + " -- "
        + " ".join(SMOKE["devlab_args"]),
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="devlab-repeatability-"))
    models = prepare_models(work / "models", args.archs, args.seed)
    print(f"{len(models)} models ({args.archs} sampled architectures) in {work / 'models'}")

    timings: dict[str, float] = {}
    started = time.monotonic()
    naive_1 = naive_pass(models, 10, args.naive_runs)
    timings["naive pass 1"] = time.monotonic() - started
    devlab_1, raw_1, timings["devlab pass 1"] = devlab_pass(
        work / "models", work / "devlab-1", args.devlab_args, work / "xdg-data"
    )
    print(f"pause {args.gap:.0f} s between the passes", flush=True)
    time.sleep(args.gap)
    started = time.monotonic()
    naive_2 = naive_pass(models, 10, args.naive_runs)
    timings["naive pass 2"] = time.monotonic() - started
    devlab_2, raw_2, timings["devlab pass 2"] = devlab_pass(
        work / "models", work / "devlab-2", args.devlab_args, work / "xdg-data"
    )

    for name, seconds in timings.items():
        print(f"{name:>14}: {seconds:7.1f} s")
    rows = [
        (f"naive (fresh session, median of {args.naive_runs})", naive_1, naive_2),
        ("devlab raw median of round medians", raw_1, raw_2),
        ("devlab drift-normalised (headline)", devlab_1, devlab_2),
    ]
    print(f"{'protocol':<40} {'models':>6} {'within 5%':>10} {'within 10%':>11}")
    for label, first, second in rows:
        count = len(set(first) & set(second))
        print(
            f"{label:<40} {count:>6} {agreement(first, second, 5):>9.1f}% "
            f"{agreement(first, second, 10):>10.1f}%"
        )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"RESULT agree5_naive={agreement(naive_1, naive_2, 5):.1f} "
        f"agree5_devlab={agreement(devlab_1, devlab_2, 5):.1f}"
    )


if __name__ == "__main__":
    main()
