"""Without the ``openvino`` extra the OpenVINO backend has no devices and says which extra to
install, wherever someone asks for one; discovery never fails for it."""

from __future__ import annotations

import dataclasses

import pytest

from backends.core.lab import discover_devices
from backends.core.records import Device
from backends.devices import registry
from backends.devices.base import BenchError
from backends.devices.host import HostBackend
from backends.devices.openvino import backend as openvino_backend
from backends.devices.openvino.backend import OpenVinoBackend
from support.records import fake_model, make_job

INSTALL = "pip install 'devlab[openvino]'"


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO looks uninstalled (and would fail the test if imported anyway)."""
    monkeypatch.setattr(openvino_backend, "available", lambda module: module != "openvino")


@pytest.mark.usefixtures("no_openvino")
def test_without_the_extra_there_are_no_devices_and_the_reason() -> None:
    backend = OpenVinoBackend()
    assert backend.discover() == []
    reason = backend.unavailable()
    assert reason is not None and reason.startswith("OpenVINO devices need the openvino extra")
    assert INSTALL in reason
    found = discover_devices([HostBackend(), backend])
    assert list(found) == ["host:cpu"]  # the host is unaffected


@pytest.mark.usefixtures("no_openvino")
def test_asking_for_an_openvino_device_names_the_extra() -> None:
    assert INSTALL in (OpenVinoBackend.hint_for_unknown("openvino:CPU") or "")
    assert INSTALL in (registry.hint_for_unknown("openvino:GPU") or "")
    assert OpenVinoBackend.hint_for_unknown("host:cpu") is None


@pytest.mark.usefixtures("no_openvino")
def test_a_kept_job_fails_with_the_extra_to_install() -> None:
    device = Device(id="openvino:CPU", kind="openvino", name="CPU", runtimes=["openvino"])
    job = dataclasses.replace(make_job("m", device.id), runtime="openvino")
    with pytest.raises(BenchError, match=r"pip install 'devlab\[openvino\]'"):
        OpenVinoBackend().open_session(device, job, fake_model("m"))


def test_with_the_extra_the_backend_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openvino_backend, "available", lambda module: True)
    assert OpenVinoBackend().unavailable() is None
    assert OpenVinoBackend.hint_for_unknown("openvino:CPU") is None
