"""``pip install .`` without extras is a working headless devlab on the host CPU, and a feature
whose extra is missing names the extra instead of an ImportError traceback (the base install
and the extras of ``pyproject.toml``).

One fresh venv, no system site-packages. pip resolves to the versions this venv runs (pinned by
constraints), so its cache serves the wheels; ``--no-compile`` skips writing bytecode. The test
needs pip's index (a build backend and the base wheels): it is skipped only when pip cannot
reach it.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.helpers import MODELS_DIR, REPO_ROOT, devlab_env

pytestmark = pytest.mark.install

#: What only extras install: none of it may be in the base venv.
EXTRA_PACKAGES = ("openvino", "distributed", "dask", "matplotlib", "pyarrow", "aiohttp", "zeroconf")
FAST = ("--runs", "5", "--warmup", "1", "--precision", "0", "--min-round-seconds", "0")
SOURCES = ("pyproject.toml", "README.md", "backends", "console", "assets/reference")


def pip(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def index_reachable() -> bool:
    """Whether pip can list a base dependency's releases (its index, or a cache that answers)."""
    try:
        return pip("index", "versions", "onnxruntime").returncode == 0
    except subprocess.TimeoutExpired:
        return False


def pinned_constraints(path: Path) -> Path:
    """The versions this venv runs, as pip constraints: the fresh venv gets the same wheels
    (cached, and tested), whatever the index has published since."""
    pins = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() != "devlab"
    }
    path.write_text("\n".join(sorted(pins)) + "\n")
    return path


def source_copy(target: Path) -> Path:
    """What ``pip install .`` reads, copied so the build never writes into the repository."""
    target.mkdir()
    for name in SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, target / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding ``pip install .`` (no extras); its bin folder."""
    if not index_reachable():
        pytest.skip("pip cannot reach its package index")
    root = tmp_path_factory.mktemp("base-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    install = pip(
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--quiet",
        "--no-compile",
        "--constraint",
        str(pinned_constraints(root / "constraints.txt")),
        str(source_copy(root / "src")),
        timeout=600,
    )
    assert install.returncode == 0, f"pip install . failed:\n{install.stdout}\n{install.stderr}"
    return venv / "bin"


def devlab(bin_dir: Path, home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The base venv's ``devlab ARGS``, run outside the repository (nothing of it on the path)."""
    return subprocess.run(
        [bin_dir / "devlab", *map(str, args)],
        cwd=home,
        env=devlab_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_base_install_has_no_extras(base_venv: Path) -> None:
    probe = "import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m)])"
    found = subprocess.run(
        [base_venv / "python", "-c", probe, *EXTRA_PACKAGES],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == []


def test_base_install_runs_the_sample_models_on_the_host(base_venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = devlab(base_venv, tmp_path, "--run", MODELS_DIR, "--out", out, *FAST)
    assert run.returncode == 0, run.stderr
    rows = json.loads((out / "results.json").read_text())
    assert sorted(row["model"] for row in rows) == sorted(p.stem for p in MODELS_DIR.glob("*.onnx"))
    assert all(row["device"] == "host:cpu" and row["median_us"] > 0 for row in rows)
    assert (out / "results.csv").is_file()
    # the drift references travel with the install (data-files), so rows are normalised
    assert all(row["canary_median_us"] and row["canary_large_median_us"] for row in rows)
    assert not any("no reference canary" in str(row["warnings"]) for row in rows)


def test_base_install_names_the_openvino_extra(base_venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = devlab(base_venv, tmp_path, "--run", MODELS_DIR, "--device", "openvino:CPU", "--out", out)
    assert run.returncode == 2, run.stderr
    message = " ".join(run.stderr.split())
    assert "pip install 'devlab[openvino]'" in message
    assert "Traceback" not in run.stderr


def test_base_install_names_the_cluster_extra(base_venv: Path, tmp_path: Path) -> None:
    run = devlab(base_venv, tmp_path, "scheduler")
    assert run.returncode == 2, run.stderr
    assert "pip install 'devlab[cluster]'" in " ".join(run.stderr.split())
    assert "Traceback" not in run.stderr
