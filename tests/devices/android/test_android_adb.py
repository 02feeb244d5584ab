"""The adb plumbing's pure parts (backends.devices.android.adb): what an ``adb devices`` line
stands for, before anything is asked of the phone."""

from __future__ import annotations

from backends.core.records import STATE_HINT, DeviceState
from backends.devices.android.adb import listed_device, serial_of


def test_an_unauthorized_phone_says_what_to_do() -> None:
    device = listed_device("R5CT00000LK", "unauthorized", "android", [])
    assert device.id == "adb:R5CT00000LK" and device.kind == "android"
    assert device.state is DeviceState.UNAUTHORIZED
    assert "Allow USB debugging" in device.properties[STATE_HINT]
    assert device.properties["adb_state"] == "unauthorized"


def test_listed_states_and_remembered_runtimes() -> None:
    online = listed_device("emulator-5554", "device", "android", ["ort"])
    assert online.state is DeviceState.ONLINE and online.runtimes == ["ort"]
    assert STATE_HINT not in online.properties
    for adb_state in ("offline", "recovery", "bootloader"):
        device = listed_device("X", adb_state, "android", [])
        assert device.state is DeviceState.OFFLINE, adb_state
        assert STATE_HINT not in device.properties
    assert serial_of("adb:127.0.0.1:5555") == "127.0.0.1:5555"
