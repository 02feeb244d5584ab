"""``devlab parse TOOL FILE``: what a parser reads from real captured tool outputs, printed for a
person or as JSON; a failure log exits 1 with the tool's own reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from backends.runtimes.parsers import PARSERS
from support.helpers import BENCH_OUTPUT as FIXTURES
from support.helpers import REPO_ROOT, devlab_cmd, devlab_env


def parse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        devlab_cmd("parse", *args),
        cwd=REPO_ROOT,
        env=devlab_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_json_has_what_the_xdputil_log_says(tmp_path: Path) -> None:
    # xdputil_benchmark_1.txt: "FPS= 28.5485 number_of_frames= 1714 time= 60.0382 seconds.",
    # two threads (benchmark ... -i 1 2)
    proc = parse(tmp_path, "xdputil", str(FIXTURES / "xdputil_benchmark_1.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    run = document["runs"][""]
    assert document["tool"] == "xdputil"
    assert run["count"] == 1714
    assert run["extra"]["fps"] == pytest.approx(28.5485)
    assert run["extra"]["seconds"] == pytest.approx(60.0382)
    assert any("2 threads" in warning for warning in run["warnings"])


def test_text_output_shows_the_headline_and_figures(tmp_path: Path) -> None:
    # openvino_benchmark_app_1.txt: "Median: 9.44 ms", "Count: 24416 iterations",
    # "Throughput: 406.85 FPS", device MYRIAD
    proc = parse(tmp_path, "openvino", str(FIXTURES / "openvino_benchmark_app_1.txt"))
    assert proc.returncode == 0, proc.stderr
    assert "median_us" in proc.stdout and "9440.0 us" in proc.stdout
    assert "24416" in proc.stdout
    assert "406.85" in proc.stdout and "MYRIAD" in proc.stdout


def test_a_failure_log_exits_1_with_the_tools_reason(tmp_path: Path) -> None:
    # tflite_benchmark_model_4.txt: the NNAPI delegate fails; ends with "Benchmarking failed."
    proc = parse(tmp_path, "tflite", str(FIXTURES / "tflite_benchmark_model_4.txt"))
    assert proc.returncode == 1
    assert "Failed to apply NNAPI delegate." in proc.stderr
    assert "Benchmarking failed." in proc.stderr
    assert proc.stdout == ""


def test_unknown_tool_and_missing_file_are_usage_errors(tmp_path: Path) -> None:
    unknown = parse(tmp_path, "nope", str(FIXTURES / "xdputil_benchmark_1.txt"))
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
    missing = parse(tmp_path, "tflite", str(tmp_path / "absent.txt"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_every_tool_named_in_the_issue_has_a_parser() -> None:
    assert set(PARSERS) >= {
        "tflite",
        "ort",
        "openvino",
        "snpe-diagview",
        "snpe-bench",
        "xdputil",
        "test-performance",
        "mvnc",
    }


def test_a_binary_diag_log_is_refused_with_the_command_that_decodes_it(tmp_path: Path) -> None:
    # SNPEDiag_0.log is a flatbuffer, not text (a header then binary fields)
    log = tmp_path / "SNPEDiag_0.log"
    log.write_bytes(b"\x14\x00\x00\x00SNPE\x00\x00\x0c\x00" + bytes(range(256)) * 4)
    proc = parse(tmp_path, "snpe-diagview", str(log))
    assert proc.returncode == 1 and proc.stdout == ""
    assert "binary file" in proc.stderr
    assert "snpe-diagview --input_log" in proc.stderr
