"""What does int8 cost the shipped digits classifier, and what does it buy? (issue 19's figures)

1. ``devlab quantize`` the shipped model both ways on digits-calib: a QDQ model (``ort-qdq``)
   and SNPE encodings (``snpe``);
2. ``devlab --run`` the float and the QDQ model on host:cpu with ``--accuracy digits-test``
   (360 held-out images), which writes the fast-but-wrong table and the Pareto PNG;
3. the SNPE encodings applied as the stand-in SDK applies them (fake quantization) and scored
   on host ONNX Runtime: what an SNPE DSP run of these encodings computes.

Prints the table; the last line is ``RESULT fp32_top1=<f> qdq_top1=<f> snpe_top1=<f>
max_drop_pts=<points> qdq_speedup=<x> flagged=<n>``.
Usage: python tests/perf/int8_accuracy.py [--runs 200] [--rounds 5] [--work DIR] [--smoke]
--smoke: one round of 20 runs, no canary (make test runs it so; the latencies mean little).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.accuracy.evaluate import evaluate  # noqa: E402
from backends.accuracy.sets import open_set  # noqa: E402
from backends.models.intake import load_model  # noqa: E402
from backends.virtual.tools.snpe_fake_quant import fake_quantize  # noqa: E402

ASSETS = ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"


def devlab(*args: object) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "console.entry", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    if done.returncode not in (0, 1):  # 1: a pair flagged, still a report
        sys.exit(f"devlab {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def snpe_top1(encodings: Path) -> float:
    import onnxruntime as ort

    model, _ = fake_quantize(DIGITS.read_bytes(), json.loads(encodings.read_text()))
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    report = evaluate(
        lambda feeds: list(session.run(None, feeds)),
        load_model(DIGITS),
        open_set(ASSETS / "digits-test"),
    )
    assert report is not None and report.top1 is not None
    return report.top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="int8-accuracy-"))
    bench = ["--runs", str(args.runs), "--rounds", str(args.rounds)]
    if args.smoke:
        bench = ["--runs", "20", "--rounds", "1", "--precision", "0", "--no-canary"]
    q_dir, out = work / "Q", work / "R"
    for scheme in ("ort-qdq", "snpe"):
        devlab("quantize", DIGITS, "--calibration", ASSETS / "digits-calib", "--scheme", scheme,
               "--out", q_dir)  # fmt: skip
    qdq, encodings = q_dir / "digits.int8-qdq.onnx", q_dir / "digits.int8.encodings.json"
    print(devlab("--run", DIGITS, qdq, "--accuracy", ASSETS / "digits-test", "--out", out,
                 "--fresh", *bench))  # fmt: skip
    with (out / "fast_wrong.csv").open(newline="") as handle:
        (pair,) = list(csv.DictReader(handle))
    snpe = snpe_top1(encodings)
    fp32, qdq_top1 = float(pair["fp32_top1"]), float(pair["quant_top1"])
    drops = [(fp32 - qdq_top1) * 100, (fp32 - snpe) * 100]
    print(f"digits-test (360): fp32 {fp32:.4f}, ort-qdq {qdq_top1:.4f}, SNPE encodings {snpe:.4f}")
    print(f"host:cpu latency: fp32 {float(pair['fp32_us']):.1f} us, int8 QDQ "
          f"{float(pair['quant_us']):.1f} us; plot {out / 'accuracy_pareto.png'}")  # fmt: skip
    print(
        f"RESULT fp32_top1={fp32:.4f} qdq_top1={qdq_top1:.4f} snpe_top1={snpe:.4f} "
        f"max_drop_pts={max(drops):.2f} qdq_speedup={float(pair['speedup']):.3f} "
        f"flagged={int(pair['flagged'] == 'True')}"
    )
    if args.smoke and args.work is None:  # a full run keeps its folder: the PNG is worth a look
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
