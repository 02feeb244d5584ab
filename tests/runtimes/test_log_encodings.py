"""Every parser reads a real captured log the same however the capture was saved: UTF-16 from
Windows PowerShell (``>``/``Tee-Object``, with or without a BOM), UTF-8 with a BOM, CRLF line
ends from a PTY or old ``adb shell``, terminal colour codes, and progress lines overwritten
with a bare carriage return. The inputs are the real fixtures, re-encoded the way those
tools write them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backends.runtimes.common import ToolOutputError, decode_log
from backends.runtimes.parsers import parse_log, run_to_dict
from support.helpers import BENCH_OUTPUT as FIXTURES
from support.helpers import REPO_ROOT, devlab_cmd, devlab_env

TOOL_OF_PREFIX = {
    "tflite_benchmark_model": "tflite",
    "ort_perf_test": "ort",
    "openvino_benchmark_app": "openvino",
    "snpe_diagview": "snpe-diagview",
    "snpe_diagcsv": "snpe-diagview-csv",
    "snpe_bench_results": "snpe-bench",
    "xdputil_benchmark": "xdputil",
    "vitis_ai_test_performance": "test-performance",
    "mvnc_profile": "mvnc",
    "trtexec": "trtexec",
    "snpe_throughput_net_run": "snpe-throughput",
}
COLOUR = "\x1b[0;32m"
RESET = "\x1b[0m"


def fixtures() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(FIXTURES.iterdir()):
        for prefix, tool in TOOL_OF_PREFIX.items():
            if path.name.startswith(prefix):
                found.append((tool, path))
    return found


def coloured(text: str) -> str:
    """Each line wrapped in an SGR colour code, as a coloured logger or ``logcat -v color``."""
    return "\n".join(f"{COLOUR}{line}{RESET}" if line else line for line in text.split("\n"))


ENCODINGS: dict[str, Callable[[str], bytes]] = {
    "utf-16 with BOM (PowerShell 5 >)": lambda text: text.replace("\n", "\r\n").encode("utf-16"),
    "utf-16-le without BOM": lambda text: text.encode("utf-16-le"),
    "utf-8 with BOM": lambda text: text.encode("utf-8-sig"),
    "crlf": lambda text: text.replace("\n", "\r\n").encode(),
    "colour codes": lambda text: coloured(text).encode(),
}


def read(tool: str, text: str) -> dict[str, object] | str:
    try:
        return {name: run_to_dict(run) for name, run in parse_log(tool, text).items()}
    except ToolOutputError as error:
        return f"error: {error}"


@pytest.mark.parametrize(
    ("tool", "path"), fixtures(), ids=lambda value: getattr(value, "name", value)
)
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_capture_reads_the_same_however_it_was_saved(
    tool: str, path: Path, encoding: str
) -> None:
    original = path.read_text(encoding="utf-8")
    saved = ENCODINGS[encoding](original)
    assert read(tool, decode_log(saved)) == read(tool, original)


def test_the_fixture_list_covers_every_parser() -> None:
    assert {tool for tool, _ in fixtures()} == set(TOOL_OF_PREFIX.values())
    assert len(fixtures()) >= 50


def test_a_progress_bar_overwritten_by_carriage_returns_does_not_hide_the_report() -> None:
    # openvino_benchmark_app_1.txt (2019 R3 era) as a terminal capture of its progress bar:
    # the bar's updates end in "\r", the last one in "\n", then the report follows.
    original = (FIXTURES / "openvino_benchmark_app_1.txt").read_text(encoding="utf-8")
    bar = "".join(f"Progress: [{'.' * k}{' ' * (20 - k)}] {k * 5:6.2f}% done\r" for k in range(21))
    captured = original.replace("[Step 11/11]", bar + "\n[Step 11/11]", 1)
    assert captured != original
    assert read("openvino", captured) == read("openvino", original)


def devlab_parse_json(home: Path, tool: str, path: Path) -> str:
    """``devlab parse TOOL PATH --json``'s output, with the file's path as ``FILE``."""
    proc = subprocess.run(
        devlab_cmd("parse", tool, str(path), "--json"),
        cwd=REPO_ROOT,
        env=devlab_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.replace(str(path), "FILE")


def test_devlab_parse_reads_a_powershell_capture(tmp_path: Path) -> None:
    # tflite_benchmark_model_6.txt saved by PowerShell's ">" (UTF-16 LE with a BOM, CRLF).
    original = (FIXTURES / "tflite_benchmark_model_6.txt").read_text(encoding="utf-8")
    capture = tmp_path / "benchmark.txt"
    capture.write_bytes(original.replace("\n", "\r\n").encode("utf-16"))
    plain = tmp_path / "plain.txt"
    plain.write_text(original, encoding="utf-8")
    read_back = devlab_parse_json(tmp_path, "tflite", capture)
    assert read_back == devlab_parse_json(tmp_path, "tflite", plain)
    assert '"avg_us": 464.545' in read_back
