"""Neural Compute Stick discovery over sysfs trees built in tmp_path, and the config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.core.records import Job, JobSettings, Model
from backends.devices.base import BenchError
from backends.devices.openvino.ncs import NcsBackend, NcsConfig, scan_sysfs


def plug(root: Path, name: str, vendor: str, product: str, serial: str | None = None) -> None:
    entry = root / name
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "idVendor").write_text(vendor + "\n")
    (entry / "idProduct").write_text(product + "\n")
    (entry / "busnum").write_text(name.split("-")[0] + "\n")
    (entry / "devnum").write_text("7\n")
    if serial:
        (entry / "serial").write_text(serial + "\n")
    (root / f"{name}:1.0").mkdir(exist_ok=True)  # an interface folder, to be skipped


def unplug(root: Path, name: str) -> None:
    for entry in (root / name, root / f"{name}:1.0"):
        for child in entry.iterdir():
            child.unlink()
        entry.rmdir()


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "usb-devices"
    plug(root, "usb1", "1d6b", "0002")  # root hub
    plug(root, "1-3", "046d", "c52b")  # some other USB device
    return root


def test_ncs1_and_ncs2_unbooted(sysfs: Path) -> None:
    plug(sysfs, "1-1.2", "03e7", "2150")
    plug(sysfs, "2-4", "03e7", "2485", serial="03e72485")
    sticks = scan_sysfs(sysfs)
    assert [(s.device_id, s.model, s.usb_state) for s in sticks] == [
        ("ncs:1-1.2", "NCS1", "unbooted"),
        ("ncs:2-4", "NCS2", "unbooted"),
    ]
    assert sticks[1].serial == "03e72485" and sticks[1].busnum == 2
    devices = NcsBackend(NcsConfig(sysfs_root=str(sysfs))).discover()
    assert [d.id for d in devices] == ["ncs:1-1.2", "ncs:2-4"]
    assert devices[0].runtimes == ["openvino-myriad"]
    assert devices[1].properties["usb_id"] == "03e7:2485"
    assert "Neural Compute Stick 2" in devices[1].name


def test_booted_stick_keeps_its_id_and_remembered_model(sysfs: Path) -> None:
    backend = NcsBackend(NcsConfig(sysfs_root=str(sysfs), pyusb=False))
    plug(sysfs, "1-1.2", "03e7", "2485")
    (before,) = backend.discover()
    assert before.properties["usb_state"] == "unbooted"
    unplug(sysfs, "1-1.2")  # firmware upload: the stick re-enumerates as 03e7:f63b
    plug(sysfs, "1-1.2", "03e7", "f63b")
    (after,) = backend.discover()
    assert after.id == before.id == "ncs:1-1.2"
    assert after.properties["usb_state"] == "booted"
    assert after.properties["usb_id"] == "03e7:f63b"
    assert after.properties["model"] == "NCS2"


def test_booted_stick_never_seen_unbooted_has_unknown_model(sysfs: Path) -> None:
    plug(sysfs, "3-2", "03e7", "F63B")
    (stick,) = scan_sysfs(sysfs)
    assert stick.booted and stick.model is None and stick.device_id == "ncs:3-2"
    (device,) = NcsBackend(NcsConfig(sysfs_root=str(sysfs), pyusb=False)).discover()
    assert device.properties["model"] == "unknown"


def test_hot_plug_between_two_discover_calls(sysfs: Path) -> None:
    backend = NcsBackend(NcsConfig(sysfs_root=str(sysfs), pyusb=False))
    assert backend.discover() == []
    plug(sysfs, "1-1", "03e7", "2485")
    assert [d.id for d in backend.discover()] == ["ncs:1-1"]
    plug(sysfs, "1-2", "03e7", "2150")
    unplug(sysfs, "1-1")
    assert [d.id for d in backend.discover()] == ["ncs:1-2"]


def test_missing_sysfs_root_gives_no_sticks(tmp_path: Path) -> None:
    assert scan_sysfs(tmp_path / "nothing") == []
    backend = NcsBackend(NcsConfig(sysfs_root=str(tmp_path / "nothing"), pyusb=False))
    assert backend.discover() == []


def _job(runtime: str = "openvino-myriad") -> tuple[Job, Model]:
    model = Model(path="m.onnx", name="m", sha256="0" * 64)
    return Job(id="j", model=model, device_id="ncs:1-1", runtime=runtime), model


def test_without_an_interpreter_the_error_names_the_setting(sysfs: Path) -> None:
    plug(sysfs, "1-1", "03e7", "2485")
    backend = NcsBackend(NcsConfig(sysfs_root=str(sysfs), pyusb=False))
    (device,) = backend.discover()
    job, model = _job()
    with pytest.raises(BenchError, match=r"\[ncs\] python") as caught:
        backend.open_session(device, job, model)
    assert "openvino==2021.4.2" in str(caught.value)


def test_a_missing_interpreter_path_is_named(sysfs: Path, tmp_path: Path) -> None:
    plug(sysfs, "1-1", "03e7", "2485")
    config = NcsConfig.from_raw(
        {"python": str(tmp_path / "py39/bin/python"), "sysfs_root": str(sysfs)}
    )
    backend = NcsBackend(config)
    (device,) = backend.discover()
    job, model = _job()
    with pytest.raises(BenchError, match=r"\[ncs\] python does not exist"):
        backend.open_session(device, job, model)
    with pytest.raises(BenchError, match="openvino-myriad"):
        backend.open_session(device, _job("onnxruntime")[0], model)
    job.settings = JobSettings()


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        NcsConfig.from_raw({"pyhton": "/x"})
