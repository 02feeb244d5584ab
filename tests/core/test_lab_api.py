"""The Lab API is a type: both labs satisfy it, and the front ends call nothing outside it.

``Lab`` runs on a real Store in ``tmp_path``; ``ClusterLab`` talks to a real Dask scheduler and
dispatcher on 127.0.0.1 (``support.cluster_fixtures.InProcessCluster``). The front ends' calls
are read from their sources with ``ast``, so a new call that bypasses the Protocol fails here.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.cluster.client import ClusterLab
from backends.core.lab import Lab
from backends.core.lab_api import LabApi
from backends.core.store import Store
from support.cluster_fixtures import InProcessCluster

ROOT = Path(__file__).resolve().parents[2]
# Where a lab is used through the API: both front ends, and the plan both of them queue with.
FRONT_ENDS = [*sorted((ROOT / "console").rglob("*.py")), ROOT / "backends" / "core" / "plan.py"]
LAB_NAMES = {"lab", "cluster_lab"}  # the names a lab goes by there (and ``self.lab``)
MEMBERS = sorted(name for name in vars(LabApi) if not name.startswith("_"))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    store = Store(tmp_path / "devlab.db")
    made = Lab(store, backends=[], log_dir=tmp_path / "logs")
    yield made
    made.shutdown()
    store.close()


def test_the_in_process_lab_is_a_lab_api(lab: Lab) -> None:
    assert isinstance(lab, LabApi)


def test_a_cluster_lab_is_a_lab_api(tmp_path: Path) -> None:
    cluster = InProcessCluster(tmp_path)
    try:
        assert isinstance(cluster.open_lab(), LabApi)
    finally:
        cluster.close()


@pytest.mark.parametrize("cls", [Lab, ClusterLab])
@pytest.mark.parametrize("name", MEMBERS)
def test_each_lab_has_the_protocols_signatures(cls: type, name: str) -> None:
    """``isinstance`` only checks names; the calls must also take and give the same things."""
    declared = inspect.getattr_static(LabApi, name)
    found = inspect.getattr_static(cls, name)
    if isinstance(declared, property):
        assert isinstance(found, property), f"{cls.__name__}.{name} is not a property"
        declared, found = declared.fget, found.fget
    assert inspect.signature(found) == inspect.signature(declared), f"{cls.__name__}.{name}"


def lab_attributes(path: Path) -> dict[str, list[int]]:
    """Attribute name -> the lines where ``lab.<name>`` (or ``self.lab.<name>``) is used."""
    used: dict[str, list[int]] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        direct = isinstance(owner, ast.Name) and owner.id in LAB_NAMES
        on_self = (
            isinstance(owner, ast.Attribute)
            and owner.attr in LAB_NAMES
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "self"
        )
        if direct or on_self:
            used.setdefault(node.attr, []).append(node.lineno)
    return used


def test_the_front_ends_use_only_the_lab_api() -> None:
    outside: list[str] = []
    seen: set[str] = set()
    for path in FRONT_ENDS:
        for name, lines in lab_attributes(path).items():
            seen.add(name)
            if name not in MEMBERS:
                outside.append(f"{path.relative_to(ROOT)}:{lines[0]}: lab.{name}")
    assert outside == [], "calls outside the LabApi Protocol (add them to it, or do not make them)"
    # the scan sees the calls it guards (an empty scan would pass whatever the front ends do)
    assert {"submit", "set_priority", "cancel", "rows", "wait_until_idle"} <= seen


def test_the_front_ends_take_a_lab_api_not_a_lab_class() -> None:
    """Every ``lab`` parameter is typed ``LabApi``, and no ``type: ignore`` sits beside a lab."""
    wrong: list[str] = []
    for path in FRONT_ENDS:
        source = path.read_text()
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in node.args.args + node.args.kwonlyargs:
                    if arg.arg in LAB_NAMES:
                        annotation = ast.unparse(arg.annotation) if arg.annotation else None
                        if annotation != "LabApi":
                            wrong.append(f"{path.name}:{node.lineno} {arg.arg}: {annotation}")
        for number, line in enumerate(source.splitlines(), 1):
            if "type: ignore" in line and "lab" in line.lower():
                wrong.append(f"{path.name}:{number} {line.strip()}")
    assert wrong == []
