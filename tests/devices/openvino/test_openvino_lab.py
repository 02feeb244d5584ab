"""OpenVINO and NCS devices in a real Lab: the CLI on openvino:CPU, the [ncs] python setting
honoured with a second interpreter made here, and clear per-job errors while the queue goes on.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from backends.core.lab import Lab
from backends.core.records import JobSettings, JobState
from backends.core.store import Store
from backends.devices.host import HostBackend
from backends.devices.openvino.backend import OpenVinoBackend
from backends.devices.openvino.ncs import NcsBackend, NcsConfig
from backends.models.intake import load_model

pytest.importorskip("openvino")

REPO = Path(__file__).resolve().parents[3]
FAST = JobSettings(warmup=1, runs=5, rounds=1, precision_pct=0)


def make_venv(folder: Path, with_devlab_packages: bool) -> Path:
    """A second interpreter; with ``with_devlab_packages`` it sees this venv's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    if with_devlab_packages:
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(purelib, "devlab-parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def stick_sysfs(root: Path) -> Path:
    """A sysfs tree with one booted NCS2 (03e7:f63b) on bus path 1-2."""
    entry = root / "1-2"
    entry.mkdir(parents=True)
    for name, value in (
        ("idVendor", "03e7"),
        ("idProduct", "f63b"),
        ("busnum", "1"),
        ("devnum", "5"),
    ):
        (entry / name).write_text(value + "\n")
    return root


def unsupported_op_model(path: Path) -> Path:
    """A valid ONNX model whose op lives in a domain no runtime implements."""
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.devlab.test")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.devlab.test", 1)],
    )
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_cli_runs_the_sample_models_on_openvino_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "console.entry",
            "--run",
            str(REPO / "assets" / "models"),
            "--device",
            "openvino:CPU",
            "--runs",
            "10",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(list((REPO / "assets" / "models").glob("*.onnx")))
    assert {row["status"] for row in rows} == {"done"}
    assert {row["device"] for row in rows} == {"openvino:CPU"}
    assert all(float(row["median_us"]) > 0 and row["stats_source"] == "iterations" for row in rows)


def test_ncs_python_setting_is_honoured_and_errors_are_per_job(tmp_path: Path) -> None:
    """Two interpreters made here: one without OpenVINO, one with it (but no stick)."""
    bare = make_venv(tmp_path / "bare", with_devlab_packages=False)
    mlp = tmp_path / "mlp.onnx"
    shutil.copy(REPO / "assets" / "models" / "mlp.onnx", mlp)
    model = load_model(mlp)
    store = Store(tmp_path / "lab" / "devlab.sqlite")
    ncs = NcsBackend(NcsConfig(python=str(bare), sysfs_root=str(stick_sysfs(tmp_path / "usb"))))
    lab = Lab(store, [HostBackend(), ncs])
    try:
        lab.discover()
        stick = next(d.id for d in lab.devices if d.id.startswith("ncs:"))
        lab.start()
        on_stick = lab.submit(model, stick, "openvino-myriad", FAST)
        on_host = lab.submit(model, "host:cpu", settings=FAST)
        assert lab.wait_until_idle(timeout=120)
        failed = lab.store.job(on_stick.id)
        assert failed.state is JobState.FAILED
        # the runner ran under the configured interpreter, which has no OpenVINO
        assert "not importable" in failed.error and str(bare) in failed.error, failed.error
        assert lab.store.job(on_host.id).state is JobState.DONE  # the queue went on

        with_openvino = make_venv(tmp_path / "with-ov", with_devlab_packages=True)
        ncs.config = NcsConfig(python=str(with_openvino), sysfs_root=ncs.config.sysfs_root)
        retried = lab.retry(on_stick.id)
        assert lab.wait_until_idle(timeout=120)
        again = lab.store.job(retried.id)
        # this interpreter imports OpenVINO, so it gets as far as the missing MYRIAD device
        assert again.state is JobState.FAILED and "MYRIAD" in again.error, again.error
        assert str(bare) not in again.error
    finally:
        lab.shutdown()
        store.close()


def test_an_op_the_device_cannot_run_fails_that_job_only(tmp_path: Path) -> None:
    bad = load_model(unsupported_op_model(tmp_path / "frobnicate.onnx"))
    good_path = tmp_path / "mlp.onnx"
    shutil.copy(REPO / "assets" / "models" / "mlp.onnx", good_path)
    store = Store(tmp_path / "lab" / "devlab.sqlite")
    lab = Lab(store, [OpenVinoBackend()])
    try:
        lab.discover()
        lab.start()
        first = lab.submit(bad, "openvino:CPU", settings=FAST)
        second = lab.submit(load_model(good_path), "openvino:CPU", settings=FAST)
        assert lab.wait_until_idle(timeout=120)
        failed = lab.store.job(first.id)
        assert failed.state is JobState.FAILED and failed.error
        assert "Frobnicate" in failed.error or "frobnicate" in failed.error, failed.error
        assert lab.store.job(second.id).state is JobState.DONE
    finally:
        lab.shutdown()
        store.close()
