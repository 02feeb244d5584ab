"""A virtual Jetson: a ``devlab agent --runner trtexec`` on 127.0.0.1 whose ``trtexec`` and
``tegrastats`` are the stand-ins (the model runs with ONNX Runtime; the rails are the virtual
board's and rise while the stand-in trtexec runs).

Layout under its folder::

    bin/trtexec, bin/tegrastats    wrappers: python -m backends.virtual.tools.<tool>
    sandbox/sys/devlab/load.d/     one marker per running stand-in (what tegrastats reads)
    agent/                         the agent's token, log and work folder (engines/)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.virtual.loopback_agent import LoopbackAgent
from backends.virtual.provision import _wrapper, write_text_atomic

TOOLS = {
    "trtexec": "backends.virtual.tools.trtexec",
    "tegrastats": "backends.virtual.tools.tegrastats",
}


@dataclass(frozen=True)
class JetsonTools:
    trtexec: Path
    tegrastats: Path
    sandbox: Path


def provision_jetson(folder: Path) -> JetsonTools:
    """Write the stand-in wrappers and the sandbox (idempotent)."""
    sandbox = folder / "sandbox"
    (sandbox / "sys/devlab/load.d").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, module in TOOLS.items():
        paths[name] = folder / "bin" / name
        write_text_atomic(paths[name], _wrapper(module, sandbox), 0o755)
    return JetsonTools(paths["trtexec"], paths["tegrastats"], sandbox)


def jetson_agent(
    devlab: Sequence[str],
    folder: Path,
    board: str = "virtual-jetson",
    precision: str = "fp16",
    interval_ms: int = 100,
    baseline_s: float = 1.0,
) -> LoopbackAgent:
    """The agent of a virtual Jetson in ``folder`` (not started: call ``start()``)."""
    tools = provision_jetson(folder)
    runner_args = [
        "--runner", "trtexec",
        "--trtexec", str(tools.trtexec),
        "--trt-precision", precision,
        "--tegrastats", str(tools.tegrastats),
        "--tegrastats-interval-ms", str(interval_ms),
        "--power-baseline-s", str(baseline_s),
    ]  # fmt: skip
    return LoopbackAgent(devlab, folder / "agent", board, runner_args)
