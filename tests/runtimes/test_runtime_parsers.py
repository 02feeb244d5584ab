"""The phone runtimes' command builders and parsers, against real captured tool outputs.

Fixtures in ``tests/fixtures/bench-output/`` are verbatim copies of public tool outputs
(provenance in ``SOURCES.md`` there). Expected values were read from the files by eye; the few
"derived" inputs below are a real fixture with one documented edit (tabs turned into spaces,
a logcat prefix added, a column removed) to cover format variants the spec describes.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from backends.core.records import LayerTime
from backends.runtimes import ort_perf, snpe, tflite
from backends.runtimes.common import (
    FORWARD_PROPAGATE,
    LAYERS_TIME,
    TOTAL_INFERENCE_TIME,
    ToolOutputError,
    ToolRun,
    to_us,
)
from support.helpers import bench_output as fixture

approx = pytest.approx


# ------------------------------------------------------------------------------ TFLite


def test_tflite_1_old_summary_and_op_profiling() -> None:
    run = tflite.parse(fixture("tflite_benchmark_model_1.txt"))

    assert run.tool == "benchmark_model"
    # timed line: count=50 first=390368 curr=390936 min=389982 max=417669 avg=394183 std=4373
    assert run.count == 50
    assert run.avg_us == 394183
    assert run.min_us == 389982
    assert run.max_us == 417669
    assert run.std_us == 4373
    assert run.median_us is None and run.p95_us is None
    assert run.extra["timed_first_us"] == 390368
    # "Average inference timings in us: Warmup: 395037, Init: 18764, no stats: 394183"
    assert run.warmup_avg_us == 395037
    assert run.init_us == 18764  # = "Initialized session in 18.764ms"
    # no "First inference" in this version: the first warm-up iteration (first=393500)
    assert run.first_inference_us == 393500
    assert run.extra["warmup_count"] == 2
    assert run.extra["params"]["Num threads"] == "2"
    assert run.extra["params"]["Graph"].endswith("mobilenet_v1_1.0_224_quant.tflite")

    # Run Order table: 31 nodes, op names without ":N", times in ms → us
    assert len(run.layers) == 31 == run.extra["nodes_executed"]
    assert run.layers[0] == LayerTime(
        "MobilenetV1/MobilenetV1/Conv2d_0/Relu6", "CONV_2D", approx(22697)
    )
    assert run.layers[2].name == "MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6"
    assert run.layers[2].mean_us == approx(37559)
    assert run.layers[-1] == LayerTime("MobilenetV1/Predictions/Reshape_1", "SOFTMAX", approx(77))
    assert "node_index" not in run.extra["op_profile"][0]
    assert run.extra["op_profile"][0]["start"] == 0.0
    assert run.extra["op_profile"][1]["%"] == approx(3.945)
    # Summary by node type: 322.055 + 71.644 + 0.267 + 0.076 + 0.005 ms
    assert run.layers_total_us == approx(394_047, abs=20)
    types = {row["node type"]: row for row in run.extra["node_type_summary"]}
    assert types["CONV_2D"]["count"] == 15 and types["CONV_2D"]["avg ms"] == approx(322.055)
    # the profiler's own Timings line is kept apart from the main statistics
    assert run.extra["profiled_timings_us"]["avg"] == 394059
    assert run.extra["profiled_timings_us"]["count"] == 50

    keys = run.latency_keys()
    assert keys[TOTAL_INFERENCE_TIME] == (389982, 394183, 417669)
    assert keys[LAYERS_TIME] == (None, approx(394_047, abs=20), None)
    assert FORWARD_PROPAGATE not in keys
    assert run.warnings == []


def test_tflite_2_new_summary_memory_and_node_index_suffix() -> None:
    run = tflite.parse(fixture("tflite_benchmark_model_2.txt"))

    # num_runs=50 but min_secs=1 made it run 114 times
    assert run.extra["params"]["Min num runs"] == "50"
    assert run.count == 114
    assert run.avg_us == approx(8677.03)
    assert (run.min_us, run.max_us, run.std_us) == (8355, 10438, 280)
    # "Init: 250, First inference: 25428, Warmup (avg): 9007.27, Inference (avg): 8677.03"
    assert run.init_us == 250  # = "Initialized session in 0.25ms."
    assert run.first_inference_us == 25428
    assert run.warmup_avg_us == approx(9007.27)
    assert run.extra["warmup_count"] == 56
    assert run.extra["peak_memory_mb"] == {"init": approx(4.80859), "overall": approx(41.0625)}
    assert run.extra["model_size_mb"] == approx(16.9008)

    # init profile (AllocateTensors) is not an operator of the inference
    assert [row["name"] for row in run.extra["init_profile"]] == ["AllocateTensors/0"]
    assert run.extra["init_profile"][0]["avg ms"] == approx(0.030)
    assert run.extra["init_profiled_timings_us"] == {"count": 1, "curr": 30}

    assert len(run.layers) == 31
    assert run.layers[0] == LayerTime(
        "MobilenetV1/MobilenetV1/Conv2d_0/Relu6", "CONV_2D", approx(571)
    )
    assert run.layers[1].op_type == "DEPTHWISE_CONV_2D"
    assert run.layers[1].mean_us == approx(609)
    assert run.extra["op_profile"][0]["node_index"] == 0
    assert run.extra["op_profile"][-1]["node_index"] == 30
    assert run.layers[-1].name == "MobilenetV1/Predictions/Reshape_1"  # ":30" stripped
    # cross-check: the last op starts at 8.673 ms and takes 0.003 ms
    assert run.layers_total_us == approx(8675, abs=2)
    assert run.extra["profiled_timings_us"]["avg"] == approx(8672.96)


def test_tflite_3_partial_capture_with_nnapi_delegate_rows() -> None:
    run = tflite.parse(fixture("tflite_benchmark_model_3.txt"))

    # the author pasted only the profiling part: no main statistics
    assert run.avg_us is None and run.count is None and run.total_inference is None
    assert any("no timed statistics" in warning for warning in run.warnings)

    init = {row["node type"]: row for row in run.extra["init_profile"]}
    assert init["ModifyGraphWithDelegate"]["avg ms"] == approx(413.346)
    assert init["AllocateTensors"]["times called"] == 2
    # [avg ms] is per call: 158.023 ms x 2 calls = the node-type summary's 316.045 ms
    assert init["AllocateTensors"]["avg ms"] == approx(158.023)
    assert init["AllocateTensors"]["time_us"] == approx(316_045, abs=2)
    assert run.extra["init_profiled_timings_us"] == {"count": 1, "curr": 729391}

    assert len(run.layers) == 11 == run.extra["nodes_executed"]
    assert run.layers[0] == LayerTime(
        "model/tf.strided_slice/StridedSlice", "STRIDED_SLICE", approx(2118)
    )
    delegated = [layer for layer in run.layers if layer.op_type == "TfLiteNnapiDelegate"]
    assert len(delegated) == 3
    assert delegated[0].name == (
        "model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul"
    )
    assert delegated[0].mean_us == approx(79010)
    assert delegated[2] == LayerTime(
        "Identity, Identity_1, Identity_2", "TfLiteNnapiDelegate", approx(56058)
    )
    assert run.extra["op_profile"][6]["node_index"] == 231
    # Summary by node type: 149.483 + 8.347 + 0.879 ms
    assert run.layers_total_us == approx(158_709, abs=20)
    assert run.extra["profiled_timings_us"]["avg"] == 158715
    assert set(run.latency_keys()) == {LAYERS_TIME}


def test_tflite_4_failure_quotes_the_tool() -> None:
    with pytest.raises(ToolOutputError) as info:
        tflite.parse(fixture("tflite_benchmark_model_4.txt"))

    err = info.value
    message = str(err)
    assert "Benchmarking failed." in message
    assert "Failed to apply NNAPI delegate." in message
    assert "ERROR: Node number 248 (TfLiteNnapiDelegate) failed to prepare." in message
    assert "ANEURALNETWORKS_OP_FAILED" in message
    assert err.lines[-1] == "Benchmarking failed."
    assert err.tool == "benchmark_model"
    assert "INFO: Created TensorFlow Lite delegate for NNAPI." not in err.lines


def test_tflite_5_newest_info_prefix_and_percentiles() -> None:
    run = tflite.parse(fixture("tflite_benchmark_model_5.txt"))

    # INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716
    #       p5=49620 median=51891 p95=68628   (after 9 empty lines)
    assert run.count == 1000
    assert run.avg_us == approx(63743.2)
    assert (run.min_us, run.max_us, run.std_us) == (49088, 686105, 60716)
    assert run.median_us == 51891
    assert run.p95_us == 68628
    assert run.extra["p5_us"] == 49620
    assert run.p90_us is None and run.p99_us is None
    assert run.extra["warmup_count"] == 9
    assert run.warmup_avg_us == approx(58147.4)
    assert run.init_us == 119515
    assert run.first_inference_us == 87112
    assert run.extra["memory_delta_mb"] == {"init": approx(55.4961), "overall": approx(55.4961)}
    assert run.extra["model_size_mb"] == approx(24.6229)
    assert run.extra["delegation"] == {
        "delegate": "TfLiteXNNPackDelegate",
        "replaced_nodes": 2168,
        "total_nodes": 2168,
        "partitions": 1,
    }
    assert run.extra["params"]["Min warmup runs"] == "5"
    assert run.layers == [] and run.layers_total_us is None
    assert run.total_inference == {
        "count": 1000,
        "min": 49088,
        "mean": approx(63743.2),
        "max": 686105,
        "std": 60716,
        "median": 51891,
    }
    assert run.latency_keys() == {TOTAL_INFERENCE_TIME: (49088, approx(63743.2), 686105)}


def test_tflite_nonzero_exit_is_a_failure_even_with_numbers() -> None:
    with pytest.raises(ToolOutputError, match=r"exit code 137"):
        tflite.parse(fixture("tflite_benchmark_model_5.txt"), exit_code=137)


def test_tflite_empty_output_is_a_failure() -> None:
    with pytest.raises(ToolOutputError, match="no timing statistics"):
        tflite.parse("STARTING!\nNum threads: [4]\n")


def test_tflite_scientific_notation() -> None:
    text = fixture("tflite_benchmark_model_1.txt")
    text = text.replace("avg=394183 std=4373", "avg=2.95034e+06 std=4373")
    run = tflite.parse(text)
    assert run.avg_us == approx(2_950_340)

    # summary-only capture with exponent (the timed count= line missing)
    only_summary = (
        "Inference timings in us: Init: 250, First inference: 1.5e+06, "
        "Warmup (avg): 1.3e+06, Inference (avg): 1.24027e+06"
    )
    run = tflite.parse(only_summary)
    assert run.avg_us == approx(1_240_270)
    assert run.first_inference_us == approx(1_500_000)


def test_tflite_single_iteration_count_line() -> None:
    run = tflite.parse(
        "Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
        "count=1 curr=1200\n"
        "Running benchmark for at least 1 iterations and at least 1 seconds\n"
        "count=1 curr=1100\n"
    )
    assert run.count == 1
    assert run.avg_us == 1100
    assert run.min_us is None
    assert run.extra["warmup_count"] == 1
    assert run.warmup_avg_us is None  # a one-iteration warm-up line has no avg=


def test_tflite_tables_with_spaces_instead_of_tabs() -> None:
    """Derived: fixture 3 with every tab turned into spaces (blog copies)."""
    run = tflite.parse(fixture("tflite_benchmark_model_3.txt").replace("\t", "  "))
    assert len(run.layers) == 11
    assert run.layers[6].name == (
        "model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul"
    )
    assert run.layers[6].mean_us == approx(79010)
    assert run.layers_total_us == approx(158_709, abs=20)


def test_tflite_tables_without_start_column() -> None:
    """Derived: fixture 2 with the ``[start]`` column removed (newest builds drop it)."""
    lines = []
    for line in fixture("tflite_benchmark_model_2.txt").splitlines():
        cells = line.split("\t")
        if len(cells) == 10 and ("[start]" in line or re.match(r"\s*\d", cells[2])):
            del cells[2]
        lines.append("\t".join(cells))
    text = "\n".join(lines)
    assert "[start]" not in text
    run = tflite.parse(text)
    assert len(run.layers) == 31
    assert "start" not in run.extra["op_profile"][0]
    assert run.layers[0] == LayerTime(
        "MobilenetV1/MobilenetV1/Conv2d_0/Relu6", "CONV_2D", approx(571)
    )
    assert run.extra["op_profile"][0]["first"] == approx(0.669)
    assert run.layers_total_us == approx(8675, abs=2)


def test_tflite_logcat_prefix_is_stripped() -> None:
    """Derived: fixture 5 as the benchmark APK would log it (logcat threadtime prefix)."""
    prefix = "01-02 03:04:05.678  4321  4321 I tflite  : "
    text = "\n".join(prefix + line for line in fixture("tflite_benchmark_model_5.txt").splitlines())
    run = tflite.parse(text)
    assert run.count == 1000
    assert run.avg_us == approx(63743.2)
    assert run.median_us == 51891


def test_tflite_several_runs_in_one_capture() -> None:
    text = fixture("tflite_benchmark_model_1.txt") + fixture("tflite_benchmark_model_2.txt")
    with pytest.raises(ValueError, match="parse_blocks"):
        tflite.parse(text)
    runs = tflite.parse_blocks(text)
    assert [run.count for run in runs] == [50, 114]
    assert [run.avg_us for run in runs] == [394183, approx(8677.03)]


def test_tflite_declined_delegate_is_flagged() -> None:
    text = fixture("tflite_benchmark_model_5.txt").replace(
        "INFO: The input model file size",
        "WARNING: Though GPU delegate is explicitly applied, the model graph will not be "
        "executed by the delegate.\nINFO: The input model file size",
    )
    run = tflite.parse(text)
    assert any("CPU numbers" in warning for warning in run.warnings)


# ------------------------------------------------------------------------------ SNPE diagview


def test_snpe_diagview_1_dsp_cycles_layers() -> None:
    run = snpe.parse_diagview(fixture("snpe_diagview_1.txt"))

    assert run.tool_version == "2.9.0.4462"
    assert run.avg_us == 3318
    assert run.min_us is None and run.max_us is None  # diagview prints averages only
    assert run.forward_us == {"min": 3244, "mean": 3244, "max": 3244, "runs": 1}
    assert run.init_us == 283050
    assert run.extra["init"]["load"] == 369
    assert run.extra["init"]["rpc_init"] == 3212
    assert run.extra["execute"]["rpc_execute"] == 1777
    assert run.extra["execute"]["accelerator"] == 603
    assert run.extra["execute"]["misc_accelerator"] == 0
    assert run.extra["create_network"] == 254629
    # "0: 0 cycles : DSP", "1: 162014 cycles : DSP", "..", "..", "100: 18292 cycles : DSP"
    cycles = run.extra["layer_cycles"]
    assert [(row["index"], row["value"]) for row in cycles] == [(0, 0), (1, 162014), (100, 18292)]
    assert all(row["unit"] == "cycles" and row["runtime"] == "DSP" for row in cycles)
    assert run.layers == [] and run.layers_total_us is None
    assert run.latency_keys() == {
        TOTAL_INFERENCE_TIME: (3318, 3318, 3318),
        FORWARD_PROPAGATE: (3244, 3244, 3244),
    }


def test_snpe_diagview_2_cpu_none_unit_and_elided_layers() -> None:
    run = snpe.parse_diagview(fixture("snpe_diagview_2.txt"))

    assert run.avg_us == 26458
    assert run.forward_us["mean"] == 26448
    assert run.init_us == 48856
    # "RPC Init Time: 0 NONE", "Accelerator Init Time: 0 NONE": not measured on CPU, no value
    assert "rpc_init" not in run.extra["init"] and "accelerator_init" not in run.extra["init"]
    assert {"rpc_init", "accelerator_init"} <= set(run.extra["not_recorded"])
    assert run.layers == [LayerTime("layer_000", "", 1419), LayerTime("layer_100", "", 21)]
    # the author's ".." elision leaves a gap: no Layers Time from a partial list
    assert run.layers_total_us is None
    assert any("incomplete" in warning for warning in run.warnings)
    assert LAYERS_TIME not in run.latency_keys()


def test_snpe_diagview_3_new_layout_htp() -> None:
    run = snpe.parse_diagview(fixture("snpe_diagview_3.txt"))

    assert run.tool_version == "2.37.0.250724175447_124859"
    assert run.avg_us == 1328
    assert run.forward_us["mean"] == 1315
    assert run.init_us == 158658
    assert run.extra["init"]["create_networks"] == 152110
    assert run.extra["execute"]["snpe_accelerator"] == 250
    assert run.extra["execute"]["accelerator"] == 59
    assert run.extra["yield_count"] == 0
    # "Subnet 0 (DSP) : 13545 cycles": kept in cycles, no µs figure
    assert run.extra["subnets"] == [
        {
            "index": 0,
            "runtime": "DSP",
            "value": 13545,
            "unit": "cycles",
            "us": None,
            "block": "Per-Subnet Execution Times",
        }
    ]
    rows = run.extra["layer_cycles"]
    assert len(rows) == 8
    assert rows[0]["name"] == "Input" and rows[0]["op_id"] == 2 and rows[0]["value"] == 2142
    assert rows[2]["name"] == "sequential_1/dense_1/Relu"
    assert rows[2]["op_id"] == 20 and rows[2]["value"] == 1252
    assert rows[7]["name"] == "Output" and rows[7]["value"] == 6038
    assert run.extra["input_layer_indices"] == [0]
    assert run.layers == [] and run.layers_total_us is None
    assert any("cycles" in warning for warning in run.warnings)


def test_snpe_diagview_4_new_layout_cpu_layers_time() -> None:
    run = snpe.parse_diagview(fixture("snpe_diagview_4.txt"))

    assert run.avg_us == 69
    assert run.forward_us["mean"] == 67
    assert run.init_us == 4009
    # "RPC Init Time: 0 " (no unit) and "RPC Execute Time: 0 ": not measured on CPU, no value
    assert "rpc_init" not in run.extra["init"] and "rpc_execute" not in run.extra["execute"]
    assert {"rpc_init", "rpc_execute"} <= set(run.extra["not_recorded"])
    assert run.extra["subnets"] == [
        {
            "index": 0,
            "runtime": "CPU",
            "value": 61,
            "unit": "us",
            "us": 61,
            "block": "Per-Subnet Execution Times",
        }
    ]
    assert len(run.layers) == 6
    assert run.layers[0] == LayerTime("_sequential_1/dense_1/MatMul", "", 23)
    assert run.layers[2] == LayerTime("_sequential_1/dense_1_2/MatMul", "", 27)
    # no input layer in this DLC: 23 + 1 + 27 + 1 + 1 + 1
    assert run.layers_total_us == 54
    assert run.latency_keys() == {
        TOTAL_INFERENCE_TIME: (69, 69, 69),
        FORWARD_PROPAGATE: (67, 67, 67),
        LAYERS_TIME: (54, 54, 54),
    }


def test_snpe_diagview_input_layer_excluded_from_layers_time() -> None:
    """1.x layout (unnamed rows): index 0 is the DLC's input layer unless told otherwise."""
    text = (
        "Average SNPE Statistics:\n------------------------------\n"
        "Total Inference Time: 900 us\nForward Propagate Time: 850 us\n\n"
        "Layer Times: \n---------------\n0: 100 us : CPU\n1: 300 us : CPU\n2: 400 us : CPU\n"
    )
    run = snpe.parse_diagview(text)
    assert run.layers_total_us == 700
    assert snpe.parse_diagview(text, input_layer_indices=()).layers_total_us == 800


def test_snpe_diagview_failures() -> None:
    with pytest.raises(ToolOutputError, match="exit code 1"):
        snpe.parse_diagview(fixture("snpe_diagview_4.txt"), exit_code=1)
    # synthetic error text (no real diagview failure was captured)
    with pytest.raises(ToolOutputError, match="Could not open"):
        snpe.parse_diagview("Error: Could not open input log SNPEDiag_0.log\n")


def test_snpe_aggregate_runs_like_snpe_bench() -> None:
    first = snpe.parse_diagview(fixture("snpe_diagview_4.txt"))
    slower = fixture("snpe_diagview_4.txt").replace(
        "Total Inference Time: 69 us", "Total Inference Time: 75 us"
    )
    slower = slower.replace(
        "0: _sequential_1/dense_1/MatMul : 23 us", "0: _sequential_1/dense_1/MatMul : 29 us"
    )
    second = snpe.parse_diagview(slower)

    combined = snpe.aggregate_runs([first, second])
    assert combined.extra["runs"] == 2
    assert combined.total_inference == {"min": 69, "mean": 72, "max": 75, "runs": 2}
    assert combined.forward_us["mean"] == 67
    assert combined.layers[0] == LayerTime("_sequential_1/dense_1/MatMul", "", 26)
    assert combined.latency_keys()[LAYERS_TIME] == (54, 57, 60)


def test_snpe_bench_csv() -> None:
    runs = snpe.parse_bench_csv(fixture("snpe_bench_results_1.csv"))

    assert list(runs) == [
        "GPU",
        "GPU_ub_float",
        "CPU",
        "CPU_ub_float",
        "DSP",
        "DSP_ub_float",
        "DSP_ub_tf8",
    ]
    gpu = runs["GPU"]
    assert gpu.tool == "snpe_bench" and gpu.tool_version == "1.63.0.3523"
    assert gpu.extra["runs"] == 2
    assert gpu.extra["config"]["PerfProfile"] == "high_performance"
    assert gpu.extra["config"]["Model:InputDimensions"] == "images:1,640,640,3"
    assert gpu.extra["device_info"]["ro.product.model"] == "unknown"
    # ",,Total Inference Time,99115,99256,98974,CPU|GPU,..." (avg, max, min, runtime)
    assert (gpu.avg_us, gpu.max_us, gpu.min_us) == (99115, 99256, 98974)
    assert gpu.extra["rows"]["Total Inference Time"]["runtime"] == "CPU|GPU"
    assert gpu.forward_us == {"min": 98914, "mean": 99054, "max": 99195, "runs": 2}
    assert gpu.init_us == 589193
    assert len(gpu.layers) == 203
    assert gpu.layers[0] == LayerTime("images", "data", 0)
    assert gpu.layers[1] == LayerTime("Conv_0", "convolutional", 2825)
    assert gpu.layers[-1] == LayerTime("Sigmoid_203", "neuron", 0)

    cpu = runs["CPU"]
    assert (cpu.avg_us, cpu.max_us, cpu.min_us) == (560723, 625434, 496012)
    assert cpu.init_us == 61943
    assert cpu.layers[2] == LayerTime("Sigmoid_1", "neuron", 29390)

    dsp = runs["DSP_ub_tf8"]
    assert dsp.extra["rows"]["RPC Execute"] == {
        "avg": 102520,
        "max": 102944,
        "min": 102097,
        "runtime": "CPU|DSP",
    }
    assert dsp.layers[0] == LayerTime("images", "data", 105)
    assert dsp.extra["layer_rows"][-1]["runtime"] == "DSP"

    # Layers Time excludes the input (Type:data) layer, whose DSP time is 527 us
    keys = runs["DSP"].latency_keys()
    assert keys[TOTAL_INFERENCE_TIME] == (105284, 105305, 105327)
    assert keys[FORWARD_PROPAGATE] == (105247, 105269, 105291)
    assert keys[LAYERS_TIME] == (88479, 88955, 89533)
    assert sum(layer.mean_us for layer in runs["DSP"].layers) == 88955 + 527
    assert gpu.latency_keys()[LAYERS_TIME] == (81655, 81913, 82280)


def test_snpe_bench_csv_without_table_fails() -> None:
    with pytest.raises(ToolOutputError, match="no timing table"):
        snpe.parse_bench_csv("SNPE SDK version:,1.63.0.3523\n\nConfiguration used:\nName,x\n")


def test_snpe_throughput() -> None:
    run = snpe.parse_throughput(fixture("snpe_throughput_net_run_1.txt"))
    assert run.extra["throughput_ips"] == approx(1581.96)
    (thread,) = run.extra["threads"]
    assert thread["label"] == "dsp_fixed8_tf"
    assert thread["number_of_images_processed"] == 15803
    assert thread["build_time_us"] == 657077
    assert thread["elapsed_time_us"] == 10000188
    assert thread["teardown_time_us"] == 10750
    assert thread["batch"] == 1
    assert run.count == 15803
    assert run.init_us == 657077
    assert run.latency_keys() == {}


# ------------------------------------------------------------------------------ ORT perf test


def test_ort_1_newest_wording_and_percentiles_in_seconds() -> None:
    run = ort_perf.parse(fixture("ort_perf_test_1.txt"))

    assert run.count == 5
    assert run.avg_us == approx(98961.997)  # "Average inference time cost total: 98.961997 ms"
    assert run.init_us == approx(217932)  # "Session creation time cost: 0.217932 s"
    assert run.first_inference_us == approx(196000)  # "First inference time cost: 196 ms"
    assert run.min_us == approx(95820.4)  # "Min Latency: 0.0958204 s"
    assert run.max_us == approx(101519)
    assert run.median_us == approx(99508.6)
    assert run.p90_us == approx(101519) and run.p95_us == approx(101519)
    assert run.p99_us == approx(101519)
    assert run.extra["p999_us"] == approx(101519)
    assert run.extra["total_cost_us"] == approx(494810)
    assert run.extra["run_time_us"] == approx(494854)
    assert run.extra["throughput_ips"] == approx(10.104)
    assert run.extra["avg_cpu_usage_pct"] == 11
    assert run.extra["peak_working_set_bytes"] == 271122432
    assert run.extra["stats_runs"] == 5
    assert run.extra["intra_op_threads"] == 1
    assert run.latency_keys() == {
        TOTAL_INFERENCE_TIME: (approx(95820.4), approx(98961.997), approx(101519))
    }


def test_ort_2_old_average_wording_with_stats_block() -> None:
    run = ort_perf.parse(fixture("ort_perf_test_2.txt"))

    assert run.count == 100
    assert run.avg_us == approx(19918)
    assert run.init_us == approx(50838.2)
    assert run.first_inference_us is None
    assert run.min_us == approx(19781.2)
    assert run.max_us == approx(20270.4)
    assert run.median_us == approx(19904.7)
    assert run.p90_us == approx(20025.1)
    assert run.p95_us == approx(20153.4)
    assert run.p99_us == approx(20270.4)
    assert run.extra["throughput_ips"] == approx(50.2002)  # trailing space in the file
    assert run.extra["peak_working_set_bytes"] == 109531136


def test_ort_3_oldest_layout() -> None:
    run = ort_perf.parse(fixture("ort_perf_test_3.txt"))

    assert run.count == 10
    assert run.avg_us == approx(144871)
    assert run.init_us == approx(127918)
    assert run.min_us is None and run.median_us is None and run.p99_us is None
    assert run.extra["total_cost_us"] == approx(1448710)
    assert run.extra["avg_cpu_usage_pct"] == 68
    assert "throughput_ips" not in run.extra
    assert run.latency_keys() == {TOTAL_INFERENCE_TIME: (None, approx(144871), None)}


def test_ort_4_no_space_after_colon_and_interleaved_warning() -> None:
    run = ort_perf.parse(fixture("ort_perf_test_4.txt"))

    assert run.init_us == approx(1_841_490)  # "Session creation time cost:1.84149 s"
    assert run.count == 1
    assert run.avg_us == approx(734606)  # "Average inference time cost:734.606 ms"
    assert run.extra["run_time_us"] == approx(734761)
    assert run.extra["intra_op_threads"] == 0
    assert len(run.warnings) == 1 and "[W:onnxruntime" in run.warnings[0]


def test_ort_failures_quote_the_tool() -> None:
    with pytest.raises(ToolOutputError, match="exit code 1"):
        ort_perf.parse(fixture("ort_perf_test_1.txt"), exit_code=1)
    text = (
        "Setting intra_op_num_threads to 1\n"
        "2024-01-01 00:00:00.0 [E:onnxruntime:, inference_session.cc:1 Load] model.onnx failed:"
        "Protobuf parsing failed.\n"
    )
    with pytest.raises(ToolOutputError, match="Protobuf parsing failed"):
        ort_perf.parse(text)


# ------------------------------------------------------------------------------ units


def test_unit_conversions() -> None:
    assert to_us(1.5, "ms") == 1500
    assert to_us(0.217932, "s") == approx(217932)
    assert to_us(42, "us") == 42
    assert to_us(10, "microseconds") == 10
    with pytest.raises(ValueError, match="not a time unit"):
        to_us(1, "cycles")


def test_tool_run_latency_keys_empty() -> None:
    assert ToolRun(tool="x").latency_keys() == {}


# ------------------------------------------------------------------------------ commands

NASTY = '/data/local/tmp/my model\'s "v2" $(reboot).tflite'


def round_trips(argv: list[str]) -> bool:
    return shlex.split(shlex.join(argv)) == argv


def test_tflite_command() -> None:
    argv = tflite.build_command(
        "/data/local/tmp/benchmark_model",
        NASTY,
        num_runs=50,
        warmup_runs=5,
        num_threads=4,
        use_nnapi=True,
        nnapi_accelerator="qti-gpu",
        use_xnnpack=False,
        op_profiling=True,
        cpu_mask="f0",
        extra=["--max_secs=60"],
    )
    assert argv[:3] == ["taskset", "f0", "/data/local/tmp/benchmark_model"]
    assert f"--graph={NASTY}" in argv  # one argv item despite spaces and quotes
    for flag in (
        "--num_runs=50",
        "--warmup_runs=5",
        "--num_threads=4",
        "--use_nnapi=true",
        "--nnapi_accelerator_name=qti-gpu",
        "--use_xnnpack=false",
        "--enable_op_profiling=true",
        "--max_secs=60",
    ):
        assert flag in argv
    assert "--use_gpu=true" not in argv
    assert round_trips(argv)

    plain = tflite.build_command("bm", "m.tflite", num_runs=1, warmup_runs=0, num_threads=-1)
    assert plain == [
        "bm",
        "--graph=m.tflite",
        "--num_runs=1",
        "--warmup_runs=0",
        "--num_threads=-1",
    ]
    assert "--use_gpu=true" in tflite.build_command(
        "bm", "m", num_runs=1, warmup_runs=0, num_threads=1, use_gpu=True
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_runs": 0, "warmup_runs": 1, "num_threads": 1},
        {"num_runs": 1, "warmup_runs": -1, "num_threads": 1},
        {"num_runs": 1, "warmup_runs": 1, "num_threads": -2},
        {"num_runs": 1, "warmup_runs": 1, "num_threads": 1, "use_gpu": True, "use_nnapi": True},
        {"num_runs": 1, "warmup_runs": 1, "num_threads": 1, "cpu_mask": "f0; reboot"},
        {"num_runs": "5", "warmup_runs": 1, "num_threads": 1},
    ],
)
def test_tflite_command_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        tflite.build_command("bm", "m.tflite", **kwargs)


def test_ort_command() -> None:
    argv = ort_perf.build_command(
        "/data/local/tmp/onnxruntime_perf_test",
        NASTY,
        runs=100,
        threads=1,
        execution_provider="qnn",
        inter_op_threads=1,
        provider_options={"backend_path": "libQnnHtp.so"},
        disable_spinning=True,
        profile_file="/data/local/tmp/prof",
    )
    assert argv[0] == "/data/local/tmp/onnxruntime_perf_test"
    joined = " ".join(argv)
    for fragment in ("-m times", "-r 100", "-e qnn", "-x 1", "-y 1", "-p /data/local/tmp/prof"):
        assert fragment in joined
    assert argv[argv.index("-i") + 1] == "backend_path|libQnnHtp.so"
    assert {"-I", "-s", "-Z"} <= set(argv)
    assert argv[-1] == NASTY  # the model is the last positional argument, one item
    assert round_trips(argv)

    with_result = ort_perf.build_command("t", "m.onnx", runs=5, threads=0, result_file="r.csv")
    assert with_result[-2:] == ["m.onnx", "r.csv"]


def test_ort_command_validation() -> None:
    with pytest.raises(ValueError, match="allowed: cpu, nnapi"):
        ort_perf.build_command("t", "m.onnx", runs=5, threads=1, execution_provider="tpu")
    with pytest.raises(ValueError):
        ort_perf.build_command("t", "m.onnx", runs=0, threads=1)
    with pytest.raises(ValueError, match="no spaces"):
        ort_perf.build_command(
            "t", "m.onnx", runs=1, threads=1, provider_options={"backend_path": "a b.so"}
        )


def test_snpe_net_run_command() -> None:
    dlc = "/data/local/tmp/snpebm/my net.dlc"
    argv = snpe.build_net_run_command(
        "/data/local/tmp/snpebm/bin/snpe-net-run",
        dlc,
        "input list.txt",
        runtime="GPU_FP16",
        perf_profile="burst",
        output_dir="/data/local/tmp/out",
        buffer_mode="tf8",
        env={"LD_LIBRARY_PATH": "/data/local/tmp/snpebm/lib", "ADSP_LIBRARY_PATH": "/a;/b"},
    )
    assert argv[:3] == [
        "env",
        "LD_LIBRARY_PATH=/data/local/tmp/snpebm/lib",
        "ADSP_LIBRARY_PATH=/a;/b",
    ]
    assert argv[argv.index("--container") + 1] == dlc
    assert argv[argv.index("--input_list") + 1] == "input list.txt"
    assert argv[argv.index("--output_dir") + 1] == "/data/local/tmp/out"
    assert argv[argv.index("--perf_profile") + 1] == "burst"
    assert argv[argv.index("--profiling_level") + 1] == "detailed"
    assert argv[argv.index("--gpu_mode") + 1] == "float16"
    assert "--use_gpu" in argv and "--userbuffer_tf8" in argv
    assert round_trips(argv)
    # the ";" in ADSP_LIBRARY_PATH stays inside one quoted word for adb shell
    assert "'ADSP_LIBRARY_PATH=/a;/b'" in shlex.join(argv)

    dsp = snpe.build_net_run_command("n", "m.dlc", "l.txt", runtime="DSP", output_dir="o")
    assert "--use_dsp" in dsp and "--use_gpu" not in dsp and dsp[0] == "n"
    cpu = snpe.build_net_run_command("n", "m.dlc", "l.txt", runtime="CPU", output_dir="o")
    assert not {"--use_dsp", "--use_gpu"} & set(cpu)


def test_snpe_net_run_command_validation() -> None:
    with pytest.raises(ValueError, match="allowed: CPU, GPU, GPU_FP16, DSP"):
        snpe.build_net_run_command("n", "m.dlc", "l.txt", runtime="NPU", output_dir="o")
    with pytest.raises(ValueError, match="perf_profile"):
        snpe.build_net_run_command(
            "n", "m.dlc", "l.txt", runtime="CPU", output_dir="o", perf_profile="turbo"
        )
    with pytest.raises(ValueError, match="buffer_mode"):
        snpe.build_net_run_command(
            "n", "m.dlc", "l.txt", runtime="CPU", output_dir="o", buffer_mode="int4"
        )
    with pytest.raises(ValueError, match="environment variable"):
        snpe.build_net_run_command(
            "n", "m.dlc", "l.txt", runtime="CPU", output_dir="o", env={"A B": "x"}
        )


def test_snpe_host_tool_commands(tmp_path: Path) -> None:
    assert snpe.build_diagview_command("snpe-diagview", "out dir/SNPEDiag_0.log") == [
        "snpe-diagview",
        "--input_log",
        "out dir/SNPEDiag_0.log",
    ]
    overrides = tmp_path / "snpe clip ranges.json"
    overrides.write_text(
        json.dumps(
            {
                "activation_encodings": {"x": [{"bitwidth": 8, "min": -1.0, "max": 1.0}]},
                "param_encodings": {"conv.weight": [{"bitwidth": 8, "min": -0.5, "max": 0.5}]},
            }
        )
    )
    convert = snpe.build_onnx_to_dlc_command(
        "/sdk/bin/x86_64-linux-clang", "a.onnx", "a.dlc", overrides
    )
    assert convert == [
        "/sdk/bin/x86_64-linux-clang/snpe-onnx-to-dlc",
        "--input_network",
        "a.onnx",
        "--output_path",
        "a.dlc",
        "--quantization_overrides",
        str(overrides),
    ]
    assert round_trips(convert)
    assert snpe.build_onnx_to_dlc_command(None, "a.onnx", "a.dlc")[0] == "snpe-onnx-to-dlc"

    quantize = snpe.build_quantize_command("/sdk/bin", "a.dlc", "data.txt", "a_q.dlc")
    assert quantize == [
        "/sdk/bin/snpe-dlc-quantize",
        "--input_dlc",
        "a.dlc",
        "--input_list",
        "data.txt",
        "--output_dlc",
        "a_q.dlc",
        "--override_params",
        "--bias_bitwidth",
        "32",
    ]
    no_override = snpe.build_quantize_command(
        None, "a.dlc", "d.txt", "q.dlc", override_params=False
    )
    assert "--override_params" not in no_override
    with pytest.raises(ValueError, match="bias_bitwidth"):
        snpe.build_quantize_command(None, "a.dlc", "d.txt", "q.dlc", bias_bitwidth=16)


def test_load_clip_ranges(tmp_path: Path) -> None:
    good = tmp_path / "ranges.json"
    content = {
        "activation_encodings": {"input": [{"bitwidth": 8, "min": 0.0, "max": 6.0}]},
        "param_encodings": {},
    }
    good.write_text(json.dumps(content))
    assert snpe.load_clip_ranges(good) == content

    cases = {
        "missing.json": ({"activation_encodings": {}}, "param_encodings"),
        "list.json": ([1, 2], "expected a JSON object"),
        "notlist.json": (
            {"activation_encodings": {"x": {"min": 0, "max": 1}}, "param_encodings": {}},
            "non-empty list",
        ),
        "minmax.json": (
            {"activation_encodings": {"x": [{"min": 2, "max": 1}]}, "param_encodings": {}},
            "min 2 > max 1",
        ),
        "text.json": (
            {"activation_encodings": {"x": [{"min": "0", "max": 1}]}, "param_encodings": {}},
            "must be a number",
        ),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(data))
        with pytest.raises(snpe.ClipRangesError, match=re.escape(expected)) as info:
            snpe.load_clip_ranges(path)
        assert str(path) in str(info.value)

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(snpe.ClipRangesError, match="not valid JSON") as info:
        snpe.load_clip_ranges(broken)
    assert str(broken) in str(info.value)
    # the converter command validates the overrides file up front
    with pytest.raises(snpe.ClipRangesError, match="broken.json"):
        snpe.build_onnx_to_dlc_command(None, "a.onnx", "a.dlc", broken)
