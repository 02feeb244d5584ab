"""SNPE 2.21 as ``snpe_bench.py`` leaves it on disk (a public research repository's results,
provenance in ``tests/fixtures/bench-output/SOURCES.md``): two results CSVs at
``ProfilingLevel basic`` with CRLF line ends and no Forward Propagate row, and the
``snpe-diagview`` text of every run behind the Mars-ResNet50-Quantized CSV's CPU and GPU
columns. At ``basic`` profiling diagview prints ``Forward Propagate Time: 0 NONE``: nothing
was measured, so no Forward Propagate figure may come out of it (a 0 us Forward Propagate in
an nnabla-nas table would be a wrong number).

Expected values are written by hand from the files.
"""

from __future__ import annotations

import statistics

import pytest

from backends.runtimes import snpe
from backends.runtimes.common import FORWARD_PROPAGATE, TOTAL_INFERENCE_TIME
from backends.runtimes.snpe_diag_csv import parse_diagview_csv
from support.helpers import BENCH_OUTPUT
from support.helpers import bench_output as fixture

RUNS = BENCH_OUTPUT / "snpe221_runs"
VERSION = "2.21.0.240401120655_85612"
RUNTIMES = ["GPU", "GPU_ub_float", "GPU_ub_auto", "CPU", "CPU_ub_float", "CPU_ub_auto"]


def diagview_runs(runtime: str) -> list[snpe.ToolRun]:
    return [
        snpe.parse_diagview((RUNS / f"{runtime}_Run{n}_diaglog_out.txt").read_text())
        for n in range(1, 6)
    ]


def test_bench_csv_2_21_resnet50_basic_profiling() -> None:
    runs = snpe.parse_bench_csv(fixture("snpe_bench_results_2.csv"))

    assert list(runs) == RUNTIMES
    gpu, cpu = runs["GPU"], runs["CPU"]
    assert gpu.tool_version == VERSION and gpu.extra["runs"] == 5
    assert gpu.extra["config"]["Name"] == "Mars-ResNet50-Quantized"
    assert gpu.extra["config"]["ProfilingLevel"] == "basic"
    assert (
        gpu.extra["config"]["Runtimes"]
        == "GPU,GPU_ub_float,GPU_ub_auto,CPU,CPU_ub_float,CPU_ub_auto"
    )
    # ",,Total Inference Time,43136,43267,42887,CPU,..." (avg, max, min, runtime)
    assert (gpu.avg_us, gpu.max_us, gpu.min_us) == (43136, 43267, 42887)
    assert (cpu.avg_us, cpu.max_us, cpu.min_us) == (117958, 118020, 117893)
    assert runs["CPU_ub_auto"].avg_us == 115756
    # ",,Init,841008,856575,820398,CPU,..."
    assert gpu.init_us == 841008 and cpu.init_us == 263549
    # basic profiling: no Forward Propagate row, so no Forward Propagate key
    for run in runs.values():
        assert run.forward_us is None
        assert set(run.latency_keys()) == {TOTAL_INFERENCE_TIME}
        assert run.warnings == []
        assert run.layers == []


def test_bench_csv_2_21_name_with_a_space() -> None:
    runs = snpe.parse_bench_csv(fixture("snpe_bench_results_3.csv"))

    assert list(runs) == RUNTIMES
    assert runs["GPU"].extra["config"]["Name"] == "Mars Classifier"
    assert runs["GPU"].extra["config"]["Date"] == "2024-05-02 16:47:21.637124"
    # ",,Total Inference Time,...,118597,118831,118396,CPU,...,114741,115146,114263,CPU"
    cpu, ub_auto = runs["CPU"], runs["CPU_ub_auto"]
    assert (cpu.avg_us, cpu.max_us, cpu.min_us) == (118597, 118831, 118396)
    assert (ub_auto.avg_us, ub_auto.max_us, ub_auto.min_us) == (114741, 115146, 114263)
    assert runs["GPU_ub_float"].init_us == 838028


def test_diagview_2_21_basic_profiling_reports_no_forward_propagate() -> None:
    # CPU Run1: "Total Inference Time: 117966 us", "Forward Propagate Time: 0 NONE",
    # "Init: 266979 us", "Num times yield occured: 0 NONE" (the tool's spelling)
    run = snpe.parse_diagview((RUNS / "CPU_Run1_diaglog_out.txt").read_text())

    assert run.tool_version == VERSION
    assert run.avg_us == 117966 and run.init_us == 266979
    assert run.extra["init"] == {
        "load": 52,
        "deserialize": 30,
        "create": 263880,
        "init": 266979,
        "deinit": 5875,
    }
    assert run.forward_us is None
    assert run.latency_keys() == {TOTAL_INFERENCE_TIME: (117966, 117966, 117966)}
    assert FORWARD_PROPAGATE not in run.latency_keys()
    assert "forward_propagate" in run.extra["not_recorded"]
    assert {"rpc_init", "accelerator_init", "rpc_execute", "accelerator"} <= set(
        run.extra["not_recorded"]
    )
    assert run.extra["yield_count"] == 0
    assert "other_stats" not in run.extra
    assert run.warnings == []


def test_every_run_of_the_csv_agrees_with_its_columns() -> None:
    """snpe_bench's avg/min/max columns are over its runs' diagview reports: the five
    CPU and five GPU reports read here give the CSV's figures (its avg is truncated to us)."""
    table = snpe.parse_bench_csv(fixture("snpe_bench_results_2.csv"))
    for runtime in ("CPU", "GPU"):
        runs = diagview_runs(runtime)
        totals = [run.avg_us for run in runs]
        inits = [run.init_us for run in runs]
        column = table[runtime]
        assert min(totals) == column.min_us and max(totals) == column.max_us
        assert abs(statistics.mean(totals) - column.avg_us) < 1
        assert abs(statistics.mean(inits) - column.init_us) < 1
        assert all(run.forward_us is None and run.warnings == [] for run in runs)


def test_diagview_2_5_on_the_cpu_run1_log_text_and_csv() -> None:
    """The same run's binary SNPEDiag_0.log (CPU Run1) read here by the real SNPE 2.5
    snpe-diagview: its text report agrees with the 2.21 tool's report of that run, and its
    ``--output`` CSV holds all 599 inferences (2.x CSV: a fifth column headed ``Runtime``
    holding the unit, ``NONE`` for what was not measured, ``AVG_*`` rows, an INIT row after
    every inference)."""
    text = snpe.parse_diagview(fixture("snpe_diagview_10.txt"))
    same_run = diagview_runs("CPU")[0]
    assert text.tool_version == VERSION  # the runtime that wrote the log
    assert (text.avg_us, text.init_us) == (same_run.avg_us, same_run.init_us) == (117966, 266979)
    assert text.forward_us is None and "misc_accelerator" in text.extra["not_recorded"]
    assert text.warnings == []

    table = parse_diagview_csv(fixture("snpe_diagcsv_2.csv"))
    # 599 TOTAL_INFERENCE_TIME rows summing to 70661806 us; first 153658, min 111649
    assert table.count == 599
    assert table.avg_us == pytest.approx(70661806 / 599)
    assert (table.first_inference_us, table.min_us, table.max_us) == (153658, 111649, 153658)
    assert int(table.avg_us) == text.avg_us
    # "INIT,-1,266979,us" before the inferences; "INIT,-1,257367,us" after each one
    assert table.init_us == 266979
    assert table.extra["per_inference"] == {"INIT": {"count": 599, "mean_us": 257367}}
    assert table.extra["averages"] == {"AVG_TOTAL_INFERENCE_TIME": 117966}
    assert "RPC INIT TIME" in table.extra["not_recorded"]
    assert "AVG_FORWARD_PROPAGATE_TIME" in table.extra["not_recorded"]
    assert table.forward_us is None and table.layers == [] and table.warnings == []
