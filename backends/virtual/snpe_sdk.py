"""A **stand-in** Qualcomm SNPE SDK for demos and tests (no Qualcomm software in it).

:func:`make_standin_sdk` lays out a folder shaped like the real SDK, so ``[snpe] sdk`` can
point at it and ``backends.devices.android.snpe`` runs its whole workflow (convert, quantize, push,
``snpe-net-run`` on the virtual phone, ``snpe-diagview`` on the host)::

    <sdk>/DEVLAB_STANDIN_README.txt
    <sdk>/bin/x86_64-linux-clang/snpe-onnx-to-dlc     host: ONNX -> stand-in "DLC" container
    <sdk>/bin/x86_64-linux-clang/snpe-dlc-quantize    host: records the options, quantizes nothing
    <sdk>/bin/x86_64-linux-clang/snpe-diagview        host: stand-in log -> SNPE 2.x text report
    <sdk>/bin/aarch64-android/snpe-net-run            phone: runs the model with ONNX Runtime
    <sdk>/lib/aarch64-android/libSNPE.so              placeholder text, not a library
    <sdk>/lib/dsp/libsnpe_dsp_domains_v2_skel.so      placeholder text (so DSP jobs find a dir)
    <sdk>/standin-calls.log                           one line per host-tool call (tests, demos)

Every tool is a small executable Python script (shebang: this interpreter; the devlab repo
root is put on its import path) around a module in ``backends.virtual.tools`` (``snpe_*``).
The stand-in ``snpe-net-run`` only works on the virtual phone (or the host): its shebang is a
host interpreter. The "DLC" files and diag logs are stand-in formats that real SNPE tools
cannot read, and vice versa.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST_ARCH = "x86_64-linux-clang"
DEVICE_ARCH = "aarch64-android"
CALLS_LOG = "standin-calls.log"

HOST_TOOLS = {
    "snpe-onnx-to-dlc": "backends.virtual.tools.snpe_onnx_to_dlc",
    "snpe-dlc-quantize": "backends.virtual.tools.snpe_dlc_quantize",
    "snpe-diagview": "backends.virtual.tools.snpe_diagview",
}
DEVICE_TOOLS = {"snpe-net-run": "backends.virtual.tools.snpe_net_run"}

README = """\
devlab STAND-IN SNPE SDK - not Qualcomm software and not the SNPE SDK.

The tools here have the real tools' names and options but are small Python scripts around
devlab's backends/virtual/tools/snpe_*.py: snpe-onnx-to-dlc wraps the ONNX model in a zip
"container" (NOT a real DLC), snpe-dlc-quantize records its options, snpe-net-run (for the
virtual phone) runs the model with ONNX Runtime and writes a stand-in diag log, and
snpe-diagview prints that log in the SNPE 2.x text layout. The .so files are placeholders.
Use a real SDK (Qualcomm Neural Processing SDK) for real phones.
"""
PLACEHOLDER = "devlab stand-in placeholder: not a shared library\n"

_SHEBANG_SAFE = re.compile(r"[A-Za-z0-9_./+@%-]+")


def _interpreter_line() -> str:
    """The first line(s) of a wrapper: a plain shebang when the interpreter path allows it,
    else a sh/Python polyglot that execs the interpreter (paths with spaces, long paths)."""
    python = sys.executable
    if _SHEBANG_SAFE.fullmatch(python) and len(python) < 120:
        return f"#!{python}\n"
    quoted = "'" + python.replace("'", "'\"'\"'") + "'"
    return f"#!/bin/sh\n''''exec {quoted} \"$0\" \"$@\" # '''\n"


def _wrapper(name: str, module: str, calls_log: Path | None) -> str:
    call = f"main(sys.argv[1:], calls_log={str(calls_log)!r})" if calls_log else "main()"
    return (
        _interpreter_line()
        + f'"""devlab STAND-IN for the SNPE tool {name} (not Qualcomm software): '
        + f'runs {module}."""\n'
        + "import sys\n"
        + f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        + f"from {module} import main\n"
        + f"sys.exit({call})\n"
    )


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.chmod(temp, mode)
    os.replace(temp, path)


def make_standin_sdk(folder: str | os.PathLike[str]) -> Path:
    """Create (or refresh) a stand-in SNPE SDK in ``folder``; returns its root (the folder).

    Point ``[snpe] sdk`` (``SnpeConfig(sdk=...)``) at the result. The host tools append each
    call to ``<sdk>/standin-calls.log``.
    """
    root = Path(folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "DEVLAB_STANDIN_README.txt", README, 0o644)
    calls = root / CALLS_LOG
    for name, module in HOST_TOOLS.items():
        _write(root / "bin" / HOST_ARCH / name, _wrapper(name, module, calls), 0o755)
    for name, module in DEVICE_TOOLS.items():
        _write(root / "bin" / DEVICE_ARCH / name, _wrapper(name, module, None), 0o755)
    _write(root / "lib" / DEVICE_ARCH / "libSNPE.so", PLACEHOLDER, 0o644)
    _write(root / "lib" / "dsp" / "libsnpe_dsp_domains_v2_skel.so", PLACEHOLDER, 0o644)
    return root
