"""SNPE parsers across tool versions and layouts (issue 16): diagview subnet/graph blocks of
1.x and 2.x in ``us`` and ``cycles``, HTP linting rows, no silent drops, and snpe_bench CSV
configuration blocks that repeat a key.

Expected values are written by hand from the fixture files (``tests/fixtures/bench-output``,
provenance in ``SOURCES.md``). Inputs marked DERIVED are a real fixture with one documented
edit; inputs marked SYNTHETIC are typed here because no real published output of that case was
found (said so in SOURCES.md).
"""

from __future__ import annotations

import pytest

from backends.core.records import LayerTime
from backends.runtimes import snpe
from backends.runtimes.common import LAYERS_TIME, ToolOutputError
from support.helpers import BENCH_OUTPUT
from support.helpers import bench_output as fixture


def cannot_read(run: snpe.ToolRun) -> list[str]:
    return [warning for warning in run.warnings if "cannot read line" in warning]


# Fixture 3 (SNPE 2.37, HTP) up to its per-subnet block: a real statistics head.
HEAD_2_37 = fixture("snpe_diagview_3.txt").split("  Per-Subnet Execution Times:")[0]


# ------------------------------------------------------------------ diagview subnet/graph blocks


def test_per_graph_block_htp_cycles_with_linting_rows() -> None:
    """snpe_diagview_5.txt (third-party published sample, see SOURCES.md) has only the
    "Per-Graph Execution Times" and linting "Layer Times" blocks: alone it has no headline."""
    with pytest.raises(ToolOutputError, match="no 'Total Inference Time' line"):
        snpe.parse_diagview(fixture("snpe_diagview_5.txt"))

    # DERIVED: fixture 3's statistics head + fixture 5's blocks
    run = snpe.parse_diagview(HEAD_2_37 + fixture("snpe_diagview_5.txt"))
    assert run.avg_us == 1328 and run.forward_us["mean"] == 1315
    # "HTP Subnet 0: 4327266 cycles": kept in cycles, no µs figure
    assert run.extra["subnets"] == [
        {
            "index": 0,
            "runtime": "HTP",
            "value": 4327266,
            "unit": "cycles",
            "us": None,
            "block": "Per-Graph Execution Times",
        }
    ]
    assert cannot_read(run) == []
    rows = run.extra["layer_cycles"]
    assert [row["index"] for row in rows] == [0, 1, 2, 8, 9]
    assert [row["value"] for row in rows] == [0, 8036, 147075, 2165162, 525971]
    assert rows[0]["name"] == "Input" and rows[0]["op_id"] == 2
    assert rows[0]["linting"] == {
        "wait_cycles": 0,
        "overlap_cycles": 0,
        "overlap_ops": [],
        "overlap_wait_cycles": 0,
        "overlap_wait_ops": [],
        "resources": [],
    }
    conv = rows[2]
    assert conv["name"] == "model_convStart_Conv2D" and conv["op_id"] == 21
    assert conv["linting"] == {
        "wait_cycles": 32,
        "overlap_cycles": 85292,
        "overlap_ops": ["model_sub_sub:OpId_57", "Output OpId_3"],
        "overlap_wait_cycles": 32,
        "overlap_wait_ops": ["model_convStart_Conv2D:OpId_21"],
        "resources": ["HVX", "HMX", "DMA"],
    }
    assert rows[3]["name"] == "model_sub_sub" and rows[3]["linting"]["overlap_cycles"] == 465046
    assert rows[3]["linting"]["resources"] == ["HVX"]
    assert rows[4]["linting"]["overlap_cycles"] == 481468
    assert run.layers == [] and run.layers_total_us is None


def test_per_graph_block_cpu_us() -> None:
    """SYNTHETIC layout (no real 2.x CPU "Per-Graph" output found): fixture 4 (SNPE 2.37 CPU)
    with its "Subnet 0 (CPU) : 61 us" block rewritten in the Per-Graph spelling."""
    text = fixture("snpe_diagview_4.txt").replace(
        "  Per-Subnet Execution Times: \n  ------------------------------\n"
        "    Subnet 0 (CPU) : 61 us\n",
        "  Per-Graph Execution Times:\n  ---------------\n    CPU Subnet 0: 61 us\n",
    )
    assert "CPU Subnet 0: 61 us" in text
    run = snpe.parse_diagview(text)
    assert run.extra["subnets"] == [
        {
            "index": 0,
            "runtime": "CPU",
            "value": 61,
            "unit": "us",
            "us": 61,
            "block": "Per-Graph Execution Times",
        }
    ]
    assert run.warnings == []
    assert run.latency_keys()[LAYERS_TIME] == (54, 54, 54)


def test_every_subnet_spelling_in_one_block() -> None:
    """SYNTHETIC lines in all spellings (case, runtime prefix or suffix, Graph, ms)."""
    text = HEAD_2_37 + (
        "  Per-Graph Execution Times:\n"
        "    HTP Subnet 0: 1000 cycles\n"
        "    CPU Subnet 1: 250 us\n"
        "    subnet 2 (gpu) : 1.5 ms\n"
        "    Graph 3 (DSP): 7 CYCLES\n"
    )
    run = snpe.parse_diagview(text)
    got = [(s["index"], s["runtime"], s["unit"], s["us"]) for s in run.extra["subnets"]]
    assert got == [
        (0, "HTP", "cycles", None),
        (1, "CPU", "us", 250),
        (2, "gpu", "ms", 1500),
        (3, "DSP", "cycles", None),
    ]
    assert cannot_read(run) == []


def test_per_subnet_block_1x_and_2x_fixtures_unchanged() -> None:
    # snpe_diagview_3.txt: "    Subnet 0 (DSP) : 13545 cycles"
    (subnet,) = snpe.parse_diagview(fixture("snpe_diagview_3.txt")).extra["subnets"]
    assert (subnet["runtime"], subnet["value"], subnet["unit"], subnet["us"]) == (
        "DSP",
        13545,
        "cycles",
        None,
    )
    # snpe_diagview_1.txt (2.9, old layout): no subnet block, nothing unreadable
    run = snpe.parse_diagview(fixture("snpe_diagview_1.txt"))
    assert "subnets" not in run.extra and cannot_read(run) == []


# ------------------------------------------------------------------ no silent drops


def test_unreadable_subnet_line_is_a_warning_naming_it() -> None:
    text = HEAD_2_37 + (
        "  Per-Graph Execution Times:\n"
        "    HTP Subnet 0 - 4327266 cycles\n"
        "    HTP Subnet 1: 99 ticks\n"
    )
    run = snpe.parse_diagview(text)
    warnings = cannot_read(run)
    assert len(warnings) == 2
    assert "'HTP Subnet 0 - 4327266 cycles'" in warnings[0]
    assert "Per-Graph Execution Times" in warnings[0]
    assert "'HTP Subnet 1: 99 ticks'" in warnings[1]
    # the readable part of the second line is kept, without a µs figure
    assert run.extra["subnets"] == [
        {
            "index": 1,
            "runtime": "HTP",
            "value": 99,
            "unit": "ticks",
            "us": None,
            "block": "Per-Graph Execution Times",
        }
    ]


def test_unreadable_layer_row_is_a_warning_and_stops_layers_time() -> None:
    text = fixture("snpe_diagview_4.txt").replace(
        "1: _sequential_1/dense_1/Relu : 1 us : CPU",
        "1: _sequential_1/dense_1/Relu : 1 ticks : CPU",
    )
    run = snpe.parse_diagview(text)
    (warning,) = cannot_read(run)
    assert "1: _sequential_1/dense_1/Relu : 1 ticks : CPU" in warning
    assert run.layers_total_us is None
    assert LayerTime("_sequential_1/dense_1/Relu", "", 1) not in run.layers
    assert len(run.layers) == 5

    garbled = fixture("snpe_diagview_4.txt").replace(
        "    5: _sequential_1/dense_2_1/Softmax : 1 us : CPU\n",
        "    5: _sequential_1/dense_2_1/Softmax : 1 us : CPU\n    Softmax took 1 us\n",
    )
    (warning,) = cannot_read(snpe.parse_diagview(garbled))
    assert "'Softmax took 1 us'" in warning and "Per-Layer Execution Times" in warning


def test_statistics_block_unknown_spelling_unit_and_name() -> None:
    head = fixture("snpe_diagview_4.txt")
    # a headline in an unknown unit: an error naming the line, not a run without a median
    with pytest.raises(ToolOutputError, match="Total Inference Time: 69 parsecs"):
        snpe.parse_diagview(
            head.replace("Total Inference Time: 69 us", "Total Inference Time: 69 parsecs")
        )
    with pytest.raises(ToolOutputError, match="Total Inference Time = 69 us"):
        snpe.parse_diagview(
            head.replace("Total Inference Time: 69 us", "Total Inference Time = 69 us")
        )
    # another statistic in an unknown unit: warning naming it
    run = snpe.parse_diagview(head.replace("Load: 494 us", "Load: 494 furlongs"))
    (warning,) = cannot_read(run)
    assert "'Load: 494 furlongs'" in warning and "SNPE Create Statistics" in warning
    assert "load" not in run.extra["init"]
    # a statistic in cycles is kept as cycles; an unknown statistic name is kept as printed
    run = snpe.parse_diagview(
        head.replace("\n  Accelerator Time: 0 \n", "\n  Accelerator Time: 5000 cycles\n").replace(
            "Num times yield occurred: 0",
            "Num times yield occurred: 0\n  Graph Prepare Time: 12 us",
        )
    )
    assert run.extra["stat_cycles"] == {"accelerator": 5000}
    assert "accelerator" not in run.extra["execute"]
    assert run.extra["other_stats"] == {"Graph Prepare Time": {"value": 12, "unit": "us"}}
    assert cannot_read(run) == []


def test_statistic_names_are_case_insensitive() -> None:
    text = fixture("snpe_diagview_4.txt").replace(
        "Total Inference Time: 69 us", "TOTAL INFERENCE TIME: 69 us"
    )
    assert snpe.parse_diagview(text).avg_us == 69


def test_1x_layer_rows_without_runtime() -> None:
    """SYNTHETIC 1.x layout with layer rows that print no runtime column."""
    text = (
        "Average SNPE Statistics:\n------------------------------\n"
        "Total Inference Time: 900 us\nForward Propagate Time: 850 us\n\n"
        "Layer Times: \n---------------\n0: 100 us\n1: 300 us\n2: 400 us\n"
    )
    run = snpe.parse_diagview(text)
    assert run.layers_total_us == 700 and cannot_read(run) == []
    assert [row["runtime"] for row in run.extra["layer_rows"]] == ["", "", ""]


# ------------------------------------------------------------------ snpe_bench CSV configuration


def test_bench_config_keeps_every_row_in_order() -> None:
    runs = snpe.parse_bench_csv(fixture("snpe_bench_results_1.csv"))
    gpu = runs["GPU"]
    rows = gpu.extra["config_rows"]
    # 21 rows between "Configuration used:" and "Device Info:" in the file
    assert len(rows) == 21
    assert rows[0] == ["Name", "YOLOv5s"]
    assert rows[9] == ["Model:UDO", ""]
    assert rows[11] == ["Model:Data", "./yolov5s/cropped"]
    assert rows[-1] == ["Date", "2022-07-11 19:28:56.005657"]
    assert gpu.extra["config"]["Model:Data"] == "./yolov5s/cropped"
    assert len(gpu.extra["device_info_rows"]) == 13
    assert gpu.extra["device_info"]["OS_Type"] == "unknown"


def test_bench_config_repeated_key() -> None:
    """SYNTHETIC (no real published CSV with a repeated key was found): fixture 1 with a
    second ``Model:Data`` row, as snpe_bench prints for a model with two inputs."""
    text = fixture("snpe_bench_results_1.csv").replace(
        "Model:Data,./yolov5s/cropped\n",
        "Model:Data,./yolov5s/cropped\nModel:Data,./yolov5s/cropped_second_input\n",
    )
    runs = snpe.parse_bench_csv(text)
    for run in runs.values():
        config = run.extra["config"]
        assert config["Model:Data"] == ["./yolov5s/cropped", "./yolov5s/cropped_second_input"]
        assert config["PerfProfile"] == "high_performance"  # single keys stay strings
        data_rows = [value for key, value in run.extra["config_rows"] if key == "Model:Data"]
        assert data_rows == ["./yolov5s/cropped", "./yolov5s/cropped_second_input"]
        assert len(run.extra["config_rows"]) == 22
    # the timing table is unaffected
    assert runs["GPU"].avg_us == 99115


def test_config_dict() -> None:
    pairs = [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")]
    assert snpe.config_dict(pairs) == {"a": ["1", "3", "4"], "b": "2"}
    assert list(snpe.config_dict(pairs)) == ["a", "b"]


# ------------------------------------------------------------------ damaged and unknown names


def test_2_9_gpu_block_with_a_damaged_name_is_read_and_flagged() -> None:
    # snpe_diagview_6.txt (SNPE 2.9, GPU, pasted in a README): the author's paste broke one
    # name, "Forward Propagate ..Time: 11642 us"; Forward Propagate is still read, with a
    # warning quoting the line, never dropped without a word.
    run = snpe.parse_diagview(fixture("snpe_diagview_6.txt"))
    assert run.tool_version == "2.9.0.4462"
    assert run.avg_us == 11676 and run.init_us == 903746
    assert run.forward_us is not None and run.forward_us["mean"] == 11642
    assert run.extra["init"]["create_networks"] == 868051
    # "RPC Execute Time: 0 us" is a measured zero; "RPC Init Time: 0 NONE" is not measured
    assert run.extra["execute"]["rpc_execute"] == 0
    assert "rpc_init" in run.extra["not_recorded"]
    (damaged,) = [warning for warning in run.warnings if "spelled differently" in warning]
    assert "'Forward Propagate ..Time: 11642 us'" in damaged
    assert "other_stats" not in run.extra


def test_an_unknown_latency_statistic_is_flagged() -> None:
    """DERIVED: snpe221_runs/CPU_Run1 (SNPE 2.21) with its Total Inference Time line followed
    by one of a name no version printed; it is kept as printed and flagged."""
    text = (BENCH_OUTPUT / "snpe221_runs" / "CPU_Run1_diaglog_out.txt").read_text()
    edited = text.replace(
        "Total Inference Time: 117966 us\n",
        "Total Inference Time: 117966 us\nGraph Execute Latency: 117001 us\n",
    )
    assert edited != text
    run = snpe.parse_diagview(edited)
    assert run.avg_us == 117966
    assert run.extra["other_stats"] == {"Graph Execute Latency": {"value": 117001, "unit": "us"}}
    (warning,) = run.warnings
    assert "'Graph Execute Latency: 117001 us'" in warning and "other_stats" in warning
