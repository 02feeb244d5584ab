"""Shared helpers for the CLI tests: run the real ``devlab`` in a subprocess, build small ONNX
models, read the tables and the SQLite store the way a user (or a script) would.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "assets" / "models"
BENCH_OUTPUT = REPO_ROOT / "tests" / "fixtures" / "bench-output"  # real tool outputs, SOURCES.md
from backends.core.store import STORE_FILE as STORE_NAME  # noqa: E402,F401

# rich wraps non-terminal output at 80 columns; a wide COLUMNS keeps each message on one line
# so assertions do not depend on the length of pytest's tmp paths (see test_cli's xfail test
# for the wrapping itself).
WIDE_COLUMNS = "400"


@dataclass
class Run:
    """A finished ``devlab`` subprocess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def err_text(self) -> str:
        """stderr with every run of whitespace (line breaks included) made one space."""
        return " ".join(self.stderr.split())

    def describe(self) -> str:
        return (
            f"devlab {' '.join(self.args)}\nexit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def devlab_env(home: Path, columns: str | None = WIDE_COLUMNS) -> dict[str, str]:
    """Environment for a devlab subprocess: no user config (XDG dirs inside ``home``)."""
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(home / "xdg-config")
    env["XDG_DATA_HOME"] = str(home / "xdg-data")  # the canary history, among others
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    return env


def devlab_cmd(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "console.entry", *map(str, args)]


def run_devlab(
    *args: str | os.PathLike[str],
    home: Path,
    columns: str | None = WIDE_COLUMNS,
    timeout: float = 120,
) -> Run:
    """Run ``devlab ARGS`` to completion from the repository root."""
    proc = subprocess.run(
        devlab_cmd(*args),
        cwd=REPO_ROOT,
        env=devlab_env(home, columns),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run([str(a) for a in args], proc.returncode, proc.stdout, proc.stderr)


# --- models ---------------------------------------------------------------------------------


def save_model(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
) -> Path:
    """Save a checked opset-17 / IR-9 model (what current onnxruntime builds load)."""
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def make_mlp(
    path: Path,
    hidden: int,
    *,
    in_features: int = 64,
    out_features: int = 10,
    batch: int | str = 1,
    input_name: str = "x",
    seed: int = 0,
) -> Path:
    """A two-layer MLP (MatMul, Add, Relu, MatMul, Add); ``batch`` may be a symbolic name."""
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", [input_name, "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["y"]),
    ]
    weights = [
        tensor("w1", in_features, hidden),
        tensor("b1", hidden),
        tensor("w2", hidden, out_features),
        tensor("b2", out_features),
    ]
    return save_model(
        path,
        nodes,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, out_features])],
        weights,
    )


def expected_module_uid(path: Path) -> str:
    """nnabla-nas ModuleUID of a whole model with static inputs: ``stem[[d,d],[d]]``."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    shapes = []
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        dims = [str(d.dim_value) for d in vi.type.tensor_type.shape.dim]
        shapes.append("[" + ",".join(dims) + "]")
    return f"{path.stem}[{','.join(shapes)}]"


# --- tables and store -----------------------------------------------------------------------


def read_results_csv(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_latency_csv(out: Path) -> list[list[str]]:
    with open(out / "latency_table.csv", newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def connect_ro(db_path: Path) -> sqlite3.Connection:
    """A read-only connection that never creates the file nor takes a write lock."""
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1.0)


def store_jobs(db_path: Path) -> list[dict[str, Any]]:
    """Every row of the jobs table, with its result_json (None unless a result exists)."""
    with contextlib.closing(connect_ro(db_path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT j.seq, j.id, j.key, j.state, j.attempts, j.started_at, j.finished_at, "
            "j.error, j.job_json, r.result_json FROM jobs j "
            "LEFT JOIN results r ON r.job_id = j.id ORDER BY j.seq"
        ).fetchall()
    jobs = [dict(row) for row in rows]
    for job in jobs:
        job["model_path"] = json.loads(job.pop("job_json"))["model"]["path"]
    return jobs


def bench_output(name: str) -> str:
    """A real captured tool output from ``tests/fixtures/bench-output`` (see its SOURCES.md)."""
    return (BENCH_OUTPUT / name).read_text(encoding="utf-8")


def measure_on_host(
    folder: Path, paths: Sequence[Path], settings: Any
) -> tuple[Any, list[Any], dict[str, Any]]:
    """Queue ``paths`` (unreadable files too) on host:cpu in a real Lab with its own SQLite store
    under ``folder`` and wait: (the open store, its rows, the devices by id). Close the store."""
    from backends.core.lab import Lab
    from backends.core.plan import queue_paths
    from backends.core.store import STORE_FILE, Store
    from backends.devices.host import HOST_DEVICE_ID, HostBackend

    store = Store(folder / "lab" / STORE_FILE)
    lab = Lab(store, [HostBackend()], log_dir=folder / "logs")
    lab.discover()
    lab.start()
    queue_paths(lab, list(paths), [HOST_DEVICE_ID], settings=settings)
    assert lab.wait_until_idle(timeout=120)
    lab.shutdown()
    return store, store.rows(), {device.id: device for device in lab.devices}
