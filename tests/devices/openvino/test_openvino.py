"""The OpenVINO runner and backend with real OpenVINO on the host CPU (skipped without it)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.core.lab import Lab
from backends.core.records import Job, JobSettings, JobState, Model
from backends.core.store import Store
from backends.devices.base import BenchError
from backends.devices.openvino.backend import (
    RUNNER_PATH,
    OpenVinoBackend,
    parse_runner_output,
    runner_command,
)
from backends.models.intake import load_model
from support.helpers import MODELS_DIR

MLP = MODELS_DIR / "mlp.onnx"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except Exception:
        return False
    return True


needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


def test_runner_source_is_python_3_6_grammar() -> None:
    source = RUNNER_PATH.read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 6))
    assert "from __future__ import annotations" not in source
    imports = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
        if alias.name
    }
    assert imports <= {"argparse", "json", "os", "platform", "sys", "time", "numpy", "openvino"}


def run_runner_raw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER_PATH), *args], capture_output=True, text=True, timeout=300
    )


@needs_openvino
def test_runner_prints_one_json_object_with_every_iteration() -> None:
    proc = run_runner_raw("--model", str(MLP), "--device", "CPU", "--warmup", "2", "--runs", "7")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert len(payload["latencies_us"]) == 7
    assert all(value > 0 for value in payload["latencies_us"])
    assert payload["load_us"] > 0 and payload["first_inference_us"] > 0
    assert payload["device"] == "CPU" and payload["api"] == "core"
    assert payload["device_full_name"]
    import openvino

    assert payload["openvino_version"] == str(openvino.get_version())
    parsed = parse_runner_output(proc.stdout)
    assert parsed.latencies_us == payload["latencies_us"]


@needs_openvino
def test_runner_min_seconds_and_threads() -> None:
    argv = runner_command(sys.executable, str(MLP), "CPU", 1, None, 0.2, threads=1)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    payload = json.loads(proc.stdout)
    assert proc.returncode == 0 and len(payload["latencies_us"]) >= 1


@needs_openvino
def test_runner_bad_model_is_json_error_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(MLP.read_bytes()[:40])
    proc = run_runner_raw("--model", str(bad), "--device", "CPU", "--runs", "2")
    assert proc.returncode == 2
    payload = json.loads(proc.stdout)
    assert payload["stage"] == "read_model" and "cannot read the model" in payload["error"]
    with pytest.raises(BenchError, match=r"OpenVINO \(read_model\): cannot read the model"):
        parse_runner_output(proc.stdout, proc.stderr, proc.returncode)


@needs_openvino
def test_runner_unknown_device_is_json_error_exit_2() -> None:
    proc = run_runner_raw("--model", str(MLP), "--device", "NOSUCH", "--runs", "2")
    assert proc.returncode == 2
    payload = json.loads(proc.stdout)
    assert payload["stage"] == "compile_model" and "NOSUCH" in payload["error"]


def test_runner_missing_file_and_garbage_output(tmp_path: Path) -> None:
    proc = run_runner_raw("--model", str(tmp_path / "none.onnx"), "--device", "CPU")
    assert proc.returncode == 2
    assert "no such model file" in json.loads(proc.stdout)["error"]
    with pytest.raises(BenchError, match="printed no result.*boom"):
        parse_runner_output("", "Traceback...\nboom", 1)


@needs_openvino
def test_backend_discovers_openvino_cpu() -> None:
    devices = OpenVinoBackend().discover()
    cpu = next(d for d in devices if d.id == "openvino:CPU")
    assert cpu.runtimes == ["openvino"]
    assert cpu.properties["openvino_device"] == "CPU" and cpu.properties["openvino"]
    assert all(d.id.split(":", 1)[1].split(".")[0] in ("CPU", "GPU", "NPU") for d in devices)


@needs_openvino
def test_session_on_a_corrupt_model_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    backend = OpenVinoBackend()
    (cpu,) = [d for d in backend.discover() if d.id == "openvino:CPU"]
    model = Model(path=str(bad), name="corrupt", sha256="0" * 64)
    job = Job(id="j", model=model, device_id=cpu.id, runtime="openvino")
    with pytest.raises(BenchError, match=r"corrupt\.onnx on CPU: OpenVINO \(read_model\)"):
        backend.open_session(cpu, job, model)


@needs_openvino
def test_lab_job_on_openvino_cpu_keeps_every_iteration(tmp_path: Path) -> None:
    store = Store(tmp_path / "lab" / "devlab.db")
    lab = Lab(store, backends=[OpenVinoBackend()], log_dir=tmp_path / "logs")
    try:
        lab.discover()
        lab.start()
        settings = JobSettings(warmup=2, runs=6, rounds=2, threads=1, precision_pct=0)
        job = lab.submit(load_model(MLP), "openvino:CPU", settings=settings)
        assert job.runtime == "openvino"
        assert lab.wait_until_idle(timeout=120)
        ((finished, result),) = lab.rows()
        assert finished.state is JobState.DONE, finished.error
        assert result is not None
        assert len(result.latencies_us) == 6 and result.round_sizes == [3, 3]
        assert result.stats_source == "iterations"
        assert result.stats.count == 6
        # output parity: the device's outputs for the fixed input against host ONNX Runtime
        parity = result.parity
        assert parity is not None and parity["top1_agree"] is True
        assert parity["cosine"] > 0.999 and parity["max_abs_diff"] is not None
        differ = [w for w in result.warnings if w.startswith("outputs differ")]
        # a CPU with bf16 makes OpenVINO compute in bf16 by default: flagged, with the figures
        assert bool(differ) is (parity["ok"] is False)
    finally:
        lab.shutdown(interrupt=True, timeout=10)
        store.close()
