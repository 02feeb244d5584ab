"""How much does devlab add to a host CPU measurement? (target: max_ratio_harness <= 1.02)

For each sample model, in the same process and interleaved round by round (the order rotates
every round), this measures three things:
- harness: a job on ``host:cpu`` through the whole Lab path (store, worker thread, progress
  callback, events rendered by the CLI's rich progress view into a buffer) with the canary, the
  precision gate and output parity off and one round, so it times the same warmup and runs as
  the bare loop: what the harness alone costs;
- default: the same job with devlab's default protocol (``--rounds`` rounds of the runs, the
  reference canary before each, the precision gate adding rounds, parity), so its latencies
  come from more, shorter rounds than the bare loop's;
- bare: a hand-written ONNX Runtime loop (same session options, inputs, warmup and runs).

It prints the three medians (of every latency pooled over the rounds) and the two ratios to
bare per model, and ends with
``RESULT max_ratio_harness=<x> max_ratio_default=<y> max_ratio=<x> models=<n> ...``
(``max_ratio`` is the harness figure, the one the target is about).
Usage: python tests/perf/host_overhead.py [--rounds 6] [--runs 150] [--warmup 10] [--threads 1]
       [--job-rounds 5] [--smoke] [models...]
--smoke: the smallest sample model, one round of 20 runs after 2 warm-up runs (make test).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import onnxruntime as ort
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.core.lab import Lab  # noqa: E402
from backends.core.records import JobSettings, Model  # noqa: E402
from backends.core.store import Store  # noqa: E402
from backends.devices.host import HOST_DEVICE_ID, HostBackend  # noqa: E402
from backends.models.intake import load_model, random_inputs  # noqa: E402
from backends.runtimes.ort_session import session_options  # noqa: E402
from console.cli.progress import ProgressView  # noqa: E402

MODELS = ROOT / "assets" / "models"
SMOKE = {"rounds": 1, "runs": 20, "warmup": 2, "models": [str(MODELS / "mlp.onnx")]}


def bare_loop(model: Model, warmup: int, runs: int, threads: int) -> list[float]:
    """The baseline: what anyone would write by hand to time a model with ONNX Runtime."""
    session = ort.InferenceSession(
        model.path, session_options(threads), providers=["CPUExecutionProvider"]
    )
    feeds = random_inputs(model)
    for _ in range(warmup + 1):
        session.run(None, feeds)
    latencies = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feeds)
        latencies.append((time.perf_counter_ns() - start) / 1e3)
    return latencies


def devlab_round(model: Model, settings: JobSettings, workdir: Path) -> list[float]:
    """One devlab job on host:cpu through the Lab, as the headless CLI runs it."""
    store = Store(workdir / "devlab.sqlite", fresh=True)
    lab = Lab(store, [HostBackend()])
    lab.discover()
    view = ProgressView(Console(file=io.StringIO(), force_terminal=True), total_jobs=1)
    lab.subscribe(view)
    job = lab.submit(model, HOST_DEVICE_ID, settings=settings)
    with view:
        lab.start()
        lab.wait_until_idle()
    lab.shutdown()
    result = store.result(job.id)
    store.close()
    if result is None:
        raise SystemExit(f"devlab job failed: {store.path}")
    return result.latencies_us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="*",
        default=sorted(str(p) for p in MODELS.glob("*.onnx")),
        help="ONNX models (default: every sample model in assets/models)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--runs", type=int, default=150, help="timed runs per job (default 150)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument(
        "--job-rounds",
        type=int,
        default=JobSettings.rounds,
        help="rounds of the default-protocol job (devlab's default, %(default)s)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k}={v}" for k, v in SMOKE.items() if k != "models")
        + " on mlp.onnx",
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)

    default = JobSettings(
        warmup=args.warmup, runs=args.runs, threads=args.threads, rounds=args.job_rounds
    )
    harness = replace(default, rounds=1, precision_pct=0, skip_canary=True, skip_parity=True)
    ratios: dict[str, list[float]] = {"harness": [], "default": []}
    print(
        f"{'model':<24}{'harness median us':>19}{'default median us':>19}{'bare median us':>16}"
        f"{'harness/bare':>14}{'default/bare':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            model = load_model(path)
            pooled: dict[str, list[float]] = {"harness": [], "default": [], "bare": []}
            order = list(pooled)
            for round_index in range(args.rounds):
                shift = round_index % len(order)  # rotate who goes first
                for name in order[shift:] + order[:shift]:
                    if name == "bare":
                        latencies = bare_loop(model, args.warmup, args.runs, args.threads)
                    else:
                        settings = harness if name == "harness" else default
                        latencies = devlab_round(model, settings, Path(tmp))
                    pooled[name].extend(latencies)
            medians = {name: statistics.median(values) for name, values in pooled.items()}
            for name in ratios:
                ratios[name].append(medians[name] / medians["bare"])
            print(
                f"{model.name:<24}{medians['harness']:>19.1f}{medians['default']:>19.1f}"
                f"{medians['bare']:>16.1f}{ratios['harness'][-1]:>14.3f}"
                f"{ratios['default'][-1]:>14.3f}",
                flush=True,
            )
    print(
        f"RESULT max_ratio_harness={max(ratios['harness']):.3f} "
        f"max_ratio_default={max(ratios['default']):.3f} max_ratio={max(ratios['harness']):.3f} "
        f"models={len(args.models)} rounds={args.rounds} runs_per_round={args.runs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
