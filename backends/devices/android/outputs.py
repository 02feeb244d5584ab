"""A phone's ONNX Runtime outputs for the parity input, through ``onnxruntime_perf_test``.

The release tool cannot write outputs. A build made with ``--cmake_extra_defines
onnxruntime_DEBUG_NODE_INPUTS_OUTPUTS=1`` can: with the ``ORT_DEBUG_NODE_IO_*`` environment
variables below it writes node outputs (the graph's among them) as TensorProto files named
after the tensor, non-alphanumerics replaced by ``_``. Without ``-I`` the tool feeds
``test_data_set_0/input_<i>.pb`` found beside the model, so one run on a folder holding a copy
of the model and the parity input gives the phone's outputs for exactly that input.

A release build ignores the variables and writes nothing: :func:`ort_outputs` then returns
None (no parity for that row, nothing fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from adbutils import AdbDevice, AdbError

from backends.core.records import Model
from backends.devices.base import BenchError
from backends.models.intake import graph_output_specs
from backends.runtimes import ort_perf

DUMP_ENV = {
    "ORT_DEBUG_NODE_IO_DUMP_OUTPUT_DATA": "1",
    "ORT_DEBUG_NODE_IO_DUMP_DATA_DESTINATION": "files",
    "ORT_DEBUG_NODE_IO_DUMPING_DATA_TO_FILES_FOR_ALL_NODES_IS_OK": "1",
    "ORT_DEBUG_NODE_IO_DUMP_SHAPE_DATA": "0",
    "ORT_DEBUG_NODE_IO_DUMP_NODE_PLACEMENT": "0",
}


def tensor_file_name(tensor: str) -> str:
    """The file a debug-I/O build writes ``tensor`` to."""
    return "".join(c if c.isalnum() else "_" for c in tensor) + ".tensorproto"


def ort_outputs(
    adb: AdbDevice,
    *,
    tool: str,
    remote_model: str,
    model: Model,
    feeds: Mapping[str, np.ndarray],
    workdir: str,
    threads: int,
    execution_provider: str,
    timeout_s: float,
) -> list[np.ndarray] | None:
    """The phone's outputs for ``feeds`` (graph order), or None when its tool cannot dump."""
    from onnx import TensorProto, numpy_helper

    digest = hashlib.sha256(model.sha256.encode())
    for name in sorted(feeds):
        digest.update(name.encode() + np.ascontiguousarray(feeds[name]).tobytes())
    folder = f"{workdir}/parity/{digest.hexdigest()[:24]}"
    out_dir = f"{folder}/out"
    copy = f"{folder}/model.onnx"
    with tempfile.TemporaryDirectory(prefix="devlab-parity-") as scratch:
        local = Path(scratch)
        adb.shell(shlex.join(["mkdir", "-p", f"{folder}/test_data_set_0", out_dir]), timeout=30)
        adb.shell(shlex.join(["cp", remote_model, copy]), timeout=timeout_s)
        for index, (name, value) in enumerate(feeds.items()):
            file = local / f"input_{index}.pb"
            file.write_bytes(numpy_helper.from_array(np.asarray(value), name).SerializeToString())
            adb.sync.push(str(file), f"{folder}/test_data_set_0/input_{index}.pb")
        env = {**DUMP_ENV, "ORT_DEBUG_NODE_IO_OUTPUT_DIR": out_dir}
        argv = ["env", *(f"{key}={value}" for key, value in env.items())]
        argv += ort_perf.build_command(
            tool,
            copy,
            runs=1,
            threads=threads,
            execution_provider=execution_provider,
            random_inputs=False,
        )
        try:
            result = adb.shell2(shlex.join(argv), timeout=timeout_s)
            if result.returncode != 0:
                lines = [line for line in result.output.splitlines() if line.strip()]
                raise BenchError(
                    f"onnxruntime_perf_test could not run the parity input (exit "
                    f"{result.returncode}): {' | '.join(lines[-3:])}"
                )
            written = {entry.path for entry in adb.sync.list(out_dir)}
            values: list[np.ndarray] = []
            for name, _ in graph_output_specs(model):
                file_name = tensor_file_name(name)
                if file_name not in written:
                    return None  # a release build: it wrote no outputs
                target = local / file_name
                adb.sync.pull(f"{out_dir}/{file_name}", str(target))
                tensor = TensorProto()
                tensor.ParseFromString(target.read_bytes())
                values.append(numpy_helper.to_array(tensor))
            return values
        finally:
            with contextlib.suppress(AdbError, OSError):
                adb.shell(shlex.join(["rm", "-rf", folder]), timeout=30)
