"""The headless path never imports textual: scripts and CI run without the TUI stack.

Each check runs in a fresh interpreter (``sys.executable -c``), because this pytest process
may already have textual loaded by other tests or plugins.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from support.helpers import MODELS_DIR, REPO_ROOT, devlab_env

MARKER = "IMPORT-HYGIENE:"


def run_python(code: str, home: Path) -> dict:
    """Run ``code`` in a fresh interpreter from the repo root; return the JSON it printed."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=devlab_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert len(lines) == 1, f"no result line\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[0].removeprefix(MARKER))


def test_textual_is_installed() -> None:
    """Otherwise 'textual not in sys.modules' below would hold for the wrong reason."""
    code = "import importlib.util; print(importlib.util.find_spec('textual') is not None)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "True", proc.stderr


def test_backends_and_headless_run_never_import_textual(tmp_path: Path) -> None:
    model = Path(shutil.copy(MODELS_DIR / "mlp.onnx", tmp_path / "mlp.onnx"))
    out = tmp_path / "out"
    code = f"""
        import importlib, json, pkgutil, sys

        import backends

        modules = []
        for info in pkgutil.walk_packages(backends.__path__, "backends."):
            importlib.import_module(info.name)
            modules.append(info.name)
        after_imports = [m for m in sys.modules if m.split(".")[0] == "textual"]

        from console.cli.main import main

        code = main(["--run", {str(model)!r}, "--out", {str(out)!r}, "--runs", "5",
                     "--warmup", "1"])
        print({MARKER!r} + json.dumps({{
            "modules": modules,
            "after_imports": after_imports,
            "exit": code,
            "textual": "textual" in sys.modules,
            "textual_modules": [m for m in sys.modules if m.split(".")[0] == "textual"],
        }}))
    """

    result = run_python(code, tmp_path)

    # every module of the package was imported (the walk found them all)
    root = REPO_ROOT / "backends"
    expected = sorted(
        ".".join(("backends", *path.relative_to(root).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for path in root.rglob("*.py")
        if path.relative_to(root) != Path("__init__.py")
    )
    assert sorted(result["modules"]) == expected
    assert result["after_imports"] == []
    # the headless run really happened, in this interpreter
    assert result["exit"] == 0
    assert (out / "results.csv").is_file()
    assert (out / "latency_table.csv").is_file()
    assert result["textual"] is False, result["textual_modules"]


def test_importing_console_cli_does_not_import_textual(tmp_path: Path) -> None:
    code = f"""
        import json, sys

        import console.cli.main

        print({MARKER!r} + json.dumps({{
            "rich": "rich" in sys.modules,
            "textual": "textual" in sys.modules,
        }}))
    """

    result = run_python(code, tmp_path)

    assert result["rich"] is True  # the import did happen
    assert result["textual"] is False
