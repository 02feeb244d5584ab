"""TFLite benchmark_model across versions: node-type summary, delegate evidence, ERROR lines.

Expected values are copied by hand from the fixture files (see tests/fixtures/bench-output/
SOURCES.md), not from the parser's output. Tests marked "modified real fixture" change one
thing in a real capture to show a case no complete public capture was found for.
"""

from __future__ import annotations

import pytest
from pytest import approx

from backends.runtimes import tflite
from backends.runtimes.common import LAYERS_TIME, TOTAL_INFERENCE_TIME, ToolOutputError
from backends.runtimes.parsers import parse_log
from support.helpers import bench_output as fixture

CPU_NUMBERS = "numbers are CPU numbers"


def test_node_type_summary_avg_is_already_the_per_run_total() -> None:
    # 2019 build: CONV_2D row "15  322.055 ms ... [times called] 15"; the 15 calls are already
    # summed into 322.055 ms (the five rows add up to the Run Order total, ~394 ms).
    run = tflite.parse(fixture("tflite_benchmark_model_1.txt"))
    types = {row["node type"]: row for row in run.extra["node_type_summary"]}
    assert types["CONV_2D"]["time_us"] == approx(322_055)
    assert types["DEPTHWISE_CONV_2D"]["time_us"] == approx(71_644)
    assert types["SOFTMAX"]["time_us"] == approx(76)
    total = sum(row["time_us"] for row in types.values())
    assert total == approx(322_055 + 71_644 + 267 + 76 + 5)
    assert total == approx(run.layers_total_us, abs=20)


def test_litert_2025_layout_with_profiler() -> None:
    run = tflite.parse(fixture("tflite_benchmark_model_6.txt"))
    assert run.count == 2112
    assert run.avg_us == approx(464.545)
    assert run.min_us == 442 and run.max_us == 979
    assert run.median_us == 462 and run.p95_us == 478 and run.extra["p5_us"] == 460
    assert run.extra["warmup_count"] == 1055 and run.warmup_avg_us == approx(465.319)
    assert run.init_us == approx(4478)  # "Initialized session in 4.478ms."
    assert run.extra["delegation"] == {
        "delegate": "TfLiteXNNPackDelegate",
        "replaced_nodes": 1,
        "total_nodes": 1,
        "partitions": 1,
    }
    by_name = {layer.name: layer.mean_us for layer in run.layers}
    assert by_name["Delegate/Fully Connected (NC, PF32) GEMM:1"] == approx(382)
    # AllocateTensors is listed in the regular Run Order with [times called] 0: not per run.
    assert by_name["AllocateTensors/0"] == 0
    # 0.014 + 0.003 + 0.382 + 0.012 ms, against the profiler's own avg=411.071 us
    assert run.layers_total_us == approx(411)
    assert run.latency_keys()[LAYERS_TIME][1] == approx(411)
    types = {row["node type"]: row for row in run.extra["node_type_summary"]}
    assert types["Fully Connected (NC, PF32) GEMM"]["time_us"] == approx(382)
    assert run.extra["profiled_timings_us"]["avg"] == approx(411.071)
    assert run.warnings == []


def test_gpu_took_the_graph_while_nnapi_declined() -> None:
    # --use_gpu=true --use_nnapi=true: GPU replaced 49/49 nodes, NNAPI "will not be executed".
    run = tflite.parse(fixture("tflite_benchmark_model_7.txt"))
    assert run.count == 50
    assert run.avg_us == 309350 and run.min_us == 305938 and run.max_us == 333030
    assert run.median_us == 307968
    assert run.init_us == 5664363
    assert run.extra["delegation"]["delegate"] == "TfLiteGpuDelegateV2"
    assert run.extra["delegation"]["replaced_nodes"] == 49
    assert not any(CPU_NUMBERS in warning for warning in run.warnings)
    assert any("NNAPI" in note for note in run.extra["delegate_notes"])
    assert run.latency_keys()[TOTAL_INFERENCE_TIME] == (305938, 309350, 333030)


def test_declined_when_no_delegate_took_the_graph_modified_real_fixture() -> None:
    # Modified real fixture: the GPU lines removed, only NNAPI's refusal is left.
    gpu_lines = ("Replacing 49 out of 49", "Created 1 GPU delegate", "Explicitly applied GPU")
    text = "\n".join(
        line
        for line in fixture("tflite_benchmark_model_7.txt").splitlines()
        if not any(marker in line for marker in gpu_lines)
    )
    run = tflite.parse(text)
    declined = [warning for warning in run.warnings if CPU_NUMBERS in warning]
    assert len(declined) == 1 and "NNAPI" in declined[0]


def test_zero_gpu_kernels_is_a_decline_modified_real_fixture() -> None:
    # Modified real fixture: "Replacing N out of N" then "Created 0 GPU delegate kernels", the
    # pattern quoted from real logs in public write-ups (see SOURCES.md), on fixture 7.
    text = fixture("tflite_benchmark_model_7.txt")
    text = text.replace("Created 1 GPU delegate kernels.", "Created 0 GPU delegate kernels.")
    text = text.replace(
        "INFO: Explicitly applied GPU delegate, and the model graph will be completely executed "
        "by the delegate.\n",
        "",
    )
    run = tflite.parse(text)
    assert any(CPU_NUMBERS in warning for warning in run.warnings)


def test_error_prefixed_debug_lines_of_a_completed_run_modified_real_fixture() -> None:
    # Modified real fixture: a research build's debug lines at ERROR level, inserted before the
    # timing lines of fixture 7. The run completed: one summarising warning, not one per line.
    debug = [
        "ERROR: [delegate_debug] partition 0: 49 nodes",
        "ERROR: [delegate_debug] tensor 12 realloc",
        "ERROR: [delegate_debug] tensor 13 realloc",
    ]
    text = fixture("tflite_benchmark_model_7.txt").replace(
        "INFO: The input model file size", "\n".join(debug) + "\nINFO: The input model file size"
    )
    run = tflite.parse(text)
    assert run.avg_us == 309350
    summarising = [warning for warning in run.warnings if "error-level" in warning]
    assert len(summarising) == 1 and "3 error-level" in summarising[0]
    assert not any(warning.startswith("tool reported") for warning in run.warnings)
    assert run.extra["error_lines"] == debug


def test_error_lines_of_a_run_without_timings_still_fail() -> None:
    with pytest.raises(ToolOutputError, match="Benchmarking failed"):
        tflite.parse(fixture("tflite_benchmark_model_4.txt"))


# ---------------------------------------------------------------- issue 16, more real captures


def test_tf_1_12_oldest_layout_single_warmup_run() -> None:
    # TF Lite 1.12 (TI Processor SDK): "Num runs: [50]", "Running benchmark for 1 iterations",
    # a warm-up line "count=1 curr=146161" without first=/avg=.
    run = tflite.parse(fixture("tflite_benchmark_model_8.txt"))
    assert run.count == 50
    assert run.avg_us == 137722
    assert (run.min_us, run.max_us, run.std_us) == (137079, 143416, 896)
    assert run.extra["timed_first_us"] == 137789
    assert run.extra["warmup_count"] == 1
    assert run.warmup_avg_us == 146161  # "Warmup: 146161"
    assert run.first_inference_us == 146161  # the only warm-up run is the first inference
    assert run.init_us == 4452  # "Init: 4452" = "Initialized session in 4.452ms"
    assert run.extra["params"]["Num runs"] == "50"
    assert run.extra["params"]["Use nnapi"] == "0"
    assert run.latency_keys()[TOTAL_INFERENCE_TIME] == (137079, 137722, 143416)
    assert run.warnings == []


def test_tf_1_13_space_padded_op_profiling_tables() -> None:
    # TF 1.13/1.14 era on a Pixel phone (taskset f0): space-padded tables with [start], the
    # "Number of nodes executed" line between Top by Computation Time and Summary by node type.
    run = tflite.parse(fixture("tflite_benchmark_model_9.txt"))
    assert run.count == 50
    assert run.avg_us == 115062
    assert (run.min_us, run.max_us, run.std_us) == (88216, 129193, 7678)
    assert run.extra["warmup_count"] == 6
    assert run.warmup_avg_us == approx(86184.3)
    assert run.first_inference_us == 91810  # warm-up "count=6 first=91810"
    assert run.init_us == 1892
    assert len(run.layers) == 65 == run.extra["nodes_executed"]
    assert run.layers[0].name == "MobilenetV2/Conv/Relu6"
    assert run.layers[0].op_type == "CONV_2D" and run.layers[0].mean_us == approx(7237)
    assert run.layers[3].mean_us == approx(17846)  # expanded_conv_1/expand/Relu6
    assert run.layers[-1].name == "output" and run.layers[-1].mean_us == approx(5)
    # the 65 Run Order rows sum to 114.923 ms; the profiler's own avg is 114924 us
    assert run.layers_total_us == approx(114_923, abs=2)
    assert run.extra["profiled_timings_us"]["avg"] == 114924
    types = {row["node type"]: row for row in run.extra["node_type_summary"]}
    assert types["CONV_2D"]["count"] == 36
    assert types["CONV_2D"]["time_us"] == approx(92_625)  # not x36 calls
    assert types["ADD"]["time_us"] == approx(882)
    assert run.warnings == []


def test_tf_1_14_zedboard_run_without_profiling() -> None:
    # "…but terminate if exceeding 150 seconds." wording, Cortex-A9 at ~0.75 s per inference.
    run = tflite.parse(fixture("tflite_benchmark_model_10.txt"))
    assert run.count == 50
    assert run.avg_us == 747733
    assert (run.min_us, run.max_us, run.std_us) == (747331, 748577, 293)
    assert run.first_inference_us == 751932 == run.warmup_avg_us
    assert run.init_us == 21039
    assert run.extra["params"]["Max runs duration (seconds)"] == "150"
    assert run.layers == [] and run.layers_total_us is None
    assert run.warnings == []


def test_recent_build_prints_averages_in_exponent_notation() -> None:
    # TI AM62x, CPU only: "avg=1.24027e+06" and "Warmup (avg): 1.3576e+06".
    run = tflite.parse(fixture("tflite_benchmark_model_11.txt"))
    assert run.count == 50
    assert run.avg_us == approx(1.24027e6)
    assert run.min_us == 1238588 and run.max_us == 1252566 and run.std_us == 2565
    assert run.median_us == 1239807 and run.p95_us == 1247415
    assert run.extra["p5_us"] == 1238753
    assert run.warmup_avg_us == approx(1.3576e6)
    assert run.first_inference_us == 1357602
    assert run.init_us == 5579
    assert run.extra["memory_delta_mb"] == {"init": approx(6.36328), "overall": approx(109.832)}
    assert run.extra["model_size_mb"] == approx(67.3128)
    assert run.warnings == []


def test_xnnpack_partial_delegation_is_still_cpu_and_not_a_decline() -> None:
    # "Explicitly applied XNNPACK delegate, and the model graph will be partially executed by
    # the delegate w/ 1 delegate kernels." XNNPACK is the CPU path: no delegate warning.
    run = tflite.parse(fixture("tflite_benchmark_model_12.txt"))
    assert run.count == 50
    assert run.avg_us == 899641
    assert run.median_us == 899281 and run.p95_us == 904305
    assert run.init_us == 614333
    assert run.first_inference_us == 905463
    assert run.extra["memory_delta_mb"] == {"init": approx(146.363), "overall": approx(150.141)}
    assert run.warnings == []


def test_a_capture_of_two_runs_reads_as_two_runs() -> None:
    # tflite_benchmark_model_13.txt: a script runs benchmark_model on the CPU, then with
    # --use_gpu=true, into one log ("+ ./benchmark_model ..." trace lines between them)
    runs = parse_log("tflite", fixture("tflite_benchmark_model_13.txt"))
    assert list(runs) == ["run 1", "run 2"]
    cpu, gpu = runs["run 1"], runs["run 2"]
    # "Init: 87639, First inference: 106436, Warmup (avg): 106065, Inference (avg): 105784"
    assert (cpu.avg_us, cpu.init_us, cpu.first_inference_us) == (105784, 87639, 106436)
    assert (cpu.count, cpu.median_us, cpu.min_us, cpu.max_us) == (50, 105718, 105416, 106528)
    # "Init: 1361236, First inference: 125113, Warmup (avg): 115344, Inference (avg): 115246"
    assert (gpu.avg_us, gpu.init_us, gpu.warmup_avg_us) == (115246, 1361236, 115344)
    # "Explicitly applied GPU delegate, and the model graph will be completely executed"
    assert not any(CPU_NUMBERS in warning for warning in gpu.warnings)


def test_times_called_zero_on_every_row_is_one_call_per_run() -> None:
    # tflite_benchmark_model_14.txt (TF README sample, TF 2.1 era): every Run Order row has
    # [times called] 0; "[avg ms] 4.269 ... [MobilenetV1/MobilenetV1/Conv2d_0/Relu6]". The 31
    # rows' [avg ms] add up to 79.449 ms, the profiler's "Timings ... first=79449".
    run = tflite.parse(fixture("tflite_benchmark_model_14.txt"))
    assert run.avg_us == approx(79760.9) and run.init_us == 38467
    assert len(run.layers) == 31
    assert run.layers[0].name == "MobilenetV1/MobilenetV1/Conv2d_0/Relu6"
    assert run.layers[0].mean_us == approx(4269)
    assert run.layers[6].mean_us == approx(6652)  # Conv2d_3_pointwise
    assert run.layers_total_us == approx(79449, abs=1)
    assert run.latency_keys()[LAYERS_TIME][1] == approx(79449, abs=1)


def test_a_build_that_prints_its_version() -> None:
    # tflite_benchmark_model_15.txt (Synaptics SyNAP, NNAPI): "INFO: Tensorflow Version :
    # 2.15.0"; "count=520 ... avg=1885.74", "Replacing 31 out of 31 node(s) with delegate"
    run = tflite.parse(fixture("tflite_benchmark_model_15.txt"))
    assert run.tool_version == "2.15.0"
    assert (run.count, run.avg_us, run.init_us) == (520, approx(1885.74), 66002)
    assert not any(CPU_NUMBERS in warning for warning in run.warnings)
