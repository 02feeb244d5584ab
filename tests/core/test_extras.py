"""The guard for optional packages: a missing extra is one clear error naming the pip extra, and
only the package's own absence is (a broken or half-installed package keeps its own error)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from backends.core.extras import (
    MissingExtra,
    available,
    ensure,
    install_command,
    missing_message,
    require,
)

ABSENT = "devlab_test_no_such_package"


def test_require_returns_the_module() -> None:
    import json

    assert require("json", "none", "Tests") is json
    assert require("importlib.util", "none", "Tests") is sys.modules["importlib.util"]


def test_require_names_the_extra_for_a_missing_package() -> None:
    with pytest.raises(MissingExtra) as caught:
        require(ABSENT, "openvino", "OpenVINO devices")
    error = caught.value
    assert str(error) == (
        "OpenVINO devices need the openvino extra: pip install 'devlab[openvino]' "
        f"(the {ABSENT} package is not installed)"
    )
    assert (error.module, error.extra, error.feature) == (ABSENT, "openvino", "OpenVINO devices")
    assert isinstance(error, ImportError) and error.name == ABSENT  # old fallbacks still work
    assert error.__cause__ is None and error.__suppress_context__  # no chained traceback


def test_require_names_the_extra_for_a_submodule_of_a_missing_package() -> None:
    with pytest.raises(MissingExtra, match=rf"the {ABSENT} package is not installed"):
        require(f"{ABSENT}.figure", "plots", "Estimator plots")


def test_a_package_hidden_in_sys_modules_counts_as_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "json", None)  # how tests hide an installed package
    assert not available("json")
    with pytest.raises(MissingExtra, match=r"pip install 'devlab\[parquet\]'"):
        require("json", "parquet", "Parquet files")


def test_a_broken_package_keeps_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed, but one of its own dependencies is missing: that is not a missing extra."""
    package = tmp_path / "devlab_test_broken_package"
    package.mkdir()
    (package / "__init__.py").write_text(f"import {ABSENT}_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("devlab_test_broken_package", "plots", "Estimator plots")
    assert not isinstance(caught.value, MissingExtra)
    assert caught.value.name == f"{ABSENT}_dependency"


def test_a_failing_import_is_not_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "devlab_test_failing_module.py").write_text("raise ImportError('no libfoo.so')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="libfoo") as caught:
        require("devlab_test_failing_module", "openvino", "OpenVINO devices")
    assert not isinstance(caught.value, MissingExtra)


def test_available_imports_nothing() -> None:
    assert available("json") and available("importlib.util")
    assert not available(ABSENT) and not available(f"{ABSENT}.sub")
    assert "this" not in sys.modules  # importing it prints the Zen of Python
    assert available("this") and "this" not in sys.modules


def test_ensure_raises_only_when_missing() -> None:
    ensure("json", "none", "Tests")
    with pytest.raises(MissingExtra, match=r"^Cluster commands need the cluster extra"):
        ensure(ABSENT, "cluster", "Cluster commands")


def test_messages() -> None:
    assert install_command("all") == "pip install 'devlab[all]'"
    assert missing_message("pyarrow.parquet", "parquet", "Parquet files") == (
        "Parquet files need the parquet extra: pip install 'devlab[parquet]' "
        "(the pyarrow package is not installed)"
    )


def test_estimator_plots_name_the_plots_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.space import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "matplotlib.figure", raising=False)
    with pytest.raises(MissingExtra, match=r"pip install 'devlab\[plots\]'"):
        plots._figure()


def test_parquet_outputs_name_the_parquet_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.power.trace import TraceWriter
    from backends.results.tables import write_results

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtra, match=r"pip install 'devlab\[parquet\]'"):
        write_results(tmp_path, [], {}, formats=("parquet",))
    with pytest.raises(MissingExtra, match=r"pip install 'devlab\[parquet\]'"):
        TraceWriter(tmp_path / "trace.parquet")
    TraceWriter(tmp_path / "trace.csv").close()  # CSV needs no extra


def test_the_cluster_package_names_the_cluster_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.startswith("backends.cluster")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtra, match=r"pip install 'devlab\[cluster\]'"):
        import backends.cluster.client  # noqa: F401


def test_browsing_for_agents_names_the_agent_extra(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from backends.devices.dpu import watch

    monkeypatch.setattr(watch, "available", lambda module: module != "zeroconf")
    agents = watch.AnnouncedAgents([], wait_s=0.0, token=None)
    agents.start()
    assert agents.endpoints() == []
    assert "pip install 'devlab[agent]'" in caplog.text
    assert "Traceback" not in caplog.text
