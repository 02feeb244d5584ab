"""A pipeline's own tables beside the usual results: one row per model and variant (latency
from its bench stage, accuracy from its accuracy stage, where each ran), and every stage's
record (state, host, attempts, reason), as CSV and JSON written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from backends.pipeline.plan import ACCURACY, BENCH, FP32, INT8, QUANTIZE, latency_us, top1
from backends.pipeline.run import PipelineReport
from backends.results.tables import atomic_write_text

SUMMARY_FILE = "pipeline"  # pipeline.csv / pipeline.json
STAGES_FILE = "pipeline_stages"  # pipeline_stages.csv / .json


def summary_rows(report: PipelineReport) -> list[dict[str, Any]]:
    """Per model and variant: latency, top-1, the drop from fp32, hosts and the first reason."""
    by_id = {stage.id: stage for stage in report.stages}
    models = list(dict.fromkeys(stage.model for stage in report.stages))
    rows: list[dict[str, Any]] = []
    for model in models:
        fp32_top1: float | None = None
        for variant in (FP32, INT8):
            bench = by_id[f"{model}/{BENCH}:{variant}"]
            accuracy = by_id[f"{model}/{ACCURACY}:{variant}"]
            quantize = by_id[f"{model}/{QUANTIZE}"] if variant == INT8 else None
            score = top1(report.result_of(accuracy))
            if variant == FP32:
                fp32_top1 = score
            stages = [s for s in (quantize, bench, accuracy) if s is not None]
            failed = next((s for s in stages if s.error), None)
            rows.append(
                {
                    "model": model,
                    "variant": variant,
                    "state": "done" if all(s.state == "done" for s in stages) else "failed",
                    "latency_us": latency_us(report.result_of(bench)),
                    "accuracy_top1": score,
                    "top1_drop": (
                        fp32_top1 - score
                        if variant == INT8 and score is not None and fp32_top1 is not None
                        else None
                    ),
                    "quantized_on": quantize.host if quantize is not None else None,
                    "bench_on": bench.host,
                    "accuracy_on": accuracy.host,
                    "bench_job": bench.job_id,
                    "accuracy_job": accuracy.job_id,
                    "error": failed.error if failed is not None else None,
                }
            )
    return rows


def stage_rows(report: PipelineReport) -> list[dict[str, Any]]:
    return [
        {**stage.to_dict(), "needs": " ".join(stage.needs), "notes": "; ".join(stage.notes)}
        for stage in report.stages
    ]


def write_pipeline_tables(out_dir: str | Path, report: PipelineReport) -> list[Path]:
    """``pipeline.{csv,json}`` and ``pipeline_stages.{csv,json}`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, rows in ((SUMMARY_FILE, summary_rows(report)), (STAGES_FILE, stage_rows(report))):
        written += [_write_csv(out / f"{name}.csv", rows), out / f"{name}.json"]
        atomic_write_text(out / f"{name}.json", json.dumps(rows, indent=2) + "\n")
    return written


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return path
