"""The CLI turns a missing extra into one line naming it and the usage exit code, never an
ImportError traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.core.extras import MissingExtra
from backends.devices.openvino import backend as openvino_backend
from console.cli import cluster
from console.cli.exit_codes import ExitCode
from console.cli.main import main


def test_a_missing_extra_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def without_dask(args: list[str], err: object) -> int:
        raise MissingExtra("distributed", "cluster", "Cluster commands")

    monkeypatch.setattr(cluster, "run_cluster_tool", without_dask)
    assert main(["scheduler"]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert " ".join(captured.err.split()) == (
        "devlab: error: Cluster commands need the cluster extra: pip install 'devlab[cluster]' "
        "(the distributed package is not installed)"
    )
    assert "Traceback" not in captured.err and captured.out == ""


def test_devices_says_which_kinds_miss_their_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no user config
    monkeypatch.setattr(openvino_backend, "available", lambda module: module != "openvino")
    assert main(["devices"]) == ExitCode.OK
    captured = capsys.readouterr()
    assert "host:cpu" in captured.out and "openvino" not in captured.out
    assert "openvino: OpenVINO devices need the openvino extra" in " ".join(captured.err.split())
    assert main(["devices", "--json"]) == ExitCode.OK
    assert "extra" not in capsys.readouterr().err  # JSON output is only the devices
