"""Build ``devlab-agent.pyz``: the agent as one file for boards (``make agent``).

It packs the very modules ``devlab agent`` runs (backends/agent and what it imports of
backends/, found by reading their imports), never a copy, plus ``agent/requirements.txt``. It
runs with ``python3 devlab-agent.pyz --token-file F --runner ...`` on Python 3.8 and newer
with only those requirements installed (docs/agent-board.md).

``python -m backends.agent.zipapp [--out dist/devlab-agent.pyz]``
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
import tempfile
import zipapp
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: backends/ and agent/ live here
PACKAGE = "backends.agent"
REQUIREMENTS = Path("agent") / "requirements.txt"
DEFAULT_OUT = Path("dist") / "devlab-agent.pyz"
PROG = "devlab-agent.pyz"
INSTALL_HINT = "python3 -m pip install -r requirements.txt (docs/agent-board.md)"

MAIN = f'''"""{PROG}: the devlab agent for boards (docs/agent-board.md)."""
import sys

if sys.version_info < (3, 8):
    sys.exit("{PROG} needs Python 3.8 or newer; this is " + sys.version.split()[0])

from backends.agent.cli import run_agent


def report(message):
    print(message, file=sys.stderr)


sys.exit(run_agent(sys.argv[1:], report, prog={PROG!r}, install_hint={INSTALL_HINT!r}))
'''


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source of module ``name`` in ``root`` (a package's ``__init__.py``), or None."""
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_modules(name: str, root: Path = ROOT) -> set[str]:
    """The ``backends`` modules ``name`` imports anywhere in its source (lazy imports in
    functions too: a runner chosen at run time must be in the archive), with their packages."""
    source = module_file(name, root)
    if source is None:
        raise FileNotFoundError(f"module {name} not found under {root}")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules: set[str] = set()
    for module in found:
        parts = module.split(".")
        if parts[0] != "backends":
            continue
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if module_file(prefix, root) is not None:
                modules.add(prefix)
    return modules


def agent_modules(root: Path = ROOT) -> list[str]:
    """Every module the agent may import: its package and, transitively, what that imports."""
    package_dir = root.joinpath(*PACKAGE.split("."))
    todo = [PACKAGE] + [
        f"{PACKAGE}.{p.stem}" for p in package_dir.glob("*.py") if p.stem != "__init__"
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(name, root) - seen)
    return sorted(seen)


def agent_files(root: Path = ROOT) -> list[Path]:
    """The source files of :func:`agent_modules`, relative to ``root``."""
    files = (module_file(name, root) for name in agent_modules(root))
    return [path.relative_to(root) for path in files if path is not None]


def build(out: Path, root: Path = ROOT) -> Path:
    """Write the archive to ``out`` (its folder is created) and return ``out``."""
    requirements = root / REQUIREMENTS
    if not requirements.is_file():
        raise FileNotFoundError(f"{requirements} is missing: the archive ships it")
    version = project_version(root)
    with tempfile.TemporaryDirectory(prefix="devlab-agent-") as staging:
        stage = Path(staging)
        _copy(root, agent_files(root), stage)
        shutil.copyfile(requirements, stage / "requirements.txt")
        (stage / "__main__.py").write_text(MAIN, encoding="utf-8")
        # importlib.metadata finds this on the archive's path: /v1/info shows devlab's version
        info = stage / f"devlab-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: devlab\nVersion: {version}\n", encoding="utf-8"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        zipapp.create_archive(stage, out, interpreter="/usr/bin/env python3", compressed=True)
    return out


def project_version(root: Path = ROOT) -> str:
    """devlab's version from ``pyproject.toml`` (read with a pattern: no tomllib on 3.8)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    if match is None:
        raise ValueError(f"no [project] version in {root / 'pyproject.toml'}")
    return match.group(1)


def _copy(root: Path, files: Iterable[Path], stage: Path) -> None:
    for relative in files:
        target = stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backends.agent.zipapp", description="Build the agent's zipapp for boards."
    )
    parser.add_argument("--out", type=Path, default=ROOT / DEFAULT_OUT, help="archive to write")
    args = parser.parse_args(argv)
    try:
        out = build(args.out)
    except (OSError, ValueError) as error:
        print(f"devlab-agent build: error: {error}", file=sys.stderr)
        return 2
    print(f"{out} ({out.stat().st_size // 1024} KiB): copy it and {REQUIREMENTS} to the board")
    return 0


if __name__ == "__main__":
    sys.exit(main())
