"""The pure parsers of what a phone's shell prints (backends.devices.android.props), on text alone.

The samples follow real captures: ``getprop`` of an Android 14 phone (with a multi-line value,
CRLF line ends of old ``adb shell`` and stray lines), ``dumpsys battery`` of a Pixel, and the
``<type> <millidegrees>`` lines of devlab's thermal loop.
"""

from __future__ import annotations

import pytest

from backends.devices.android.props import (
    device_properties,
    parse_battery,
    parse_getprop,
    parse_thermal,
)

GETPROP = """\
[aaudio.mmap_policy]: [2]
[dalvik.vm.heapsize]: [512m]
[init.svc.adbd]: [running]
[persist.sys.boot.reason.history]: [reboot,factory_reset,1700000000
reboot,ota,1700000123
reboot,1700000456]
[ro.board.platform]: [zuma]
[ro.build.description]: [husky-user 14 AP1A.240505.004 11583682 release-keys]
[ro.build.fingerprint]: [google/husky/husky:14/AP1A.240505.004/11583682:user/release-keys]
[ro.build.version.release]: [14]\r
[ro.build.version.sdk]: [34]\r
[ro.empty.value]: []
[ro.hardware]: [husky]
[ro.hardware.chipname]: [Tensor G3]
[ro.odd.value]: [a [bracketed] value]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.cpu.abilist]: [arm64-v8a,armeabi-v7a,armeabi]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [Pixel 8 Pro]
[ro.soc.model]: [Tensor G3]

getprop: warning: unreadable property ro.secret
WARNING: linker: something odd
[ro.vendor.build.date]: [Tue Apr 30 12:00:00 UTC 2024]
"""

DUMPSYS_BATTERY = """\
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3856000
  status: 2
  health: 2
  present: true
  level: 85
  scale: 100
  voltage: 4237
  temperature: 291
  technology: Li-ion
  Charging state: 1
  Charging policy: 1
  Capacity level: 4
"""


# --- getprop --------------------------------------------------------------------------------


def test_parse_getprop_reads_every_property_line() -> None:
    props = parse_getprop(GETPROP)
    assert props["ro.product.model"] == "Pixel 8 Pro"
    assert props["ro.build.fingerprint"] == (
        "google/husky/husky:14/AP1A.240505.004/11583682:user/release-keys"
    )
    assert props["ro.build.description"] == "husky-user 14 AP1A.240505.004 11583682 release-keys"
    assert props["ro.vendor.build.date"] == "Tue Apr 30 12:00:00 UTC 2024"  # after stray lines
    assert props["dalvik.vm.heapsize"] == "512m"


def test_parse_getprop_handles_crlf_empty_and_bracketed_values() -> None:
    props = parse_getprop(GETPROP)
    assert props["ro.build.version.sdk"] == "34"  # the CR of old adb shells is gone
    assert props["ro.build.version.release"] == "14"
    assert props["ro.empty.value"] == ""
    assert props["ro.odd.value"] == "a [bracketed] value"


def test_parse_getprop_multi_line_value_keeps_its_first_line() -> None:
    props = parse_getprop(GETPROP)
    assert props["persist.sys.boot.reason.history"] == "reboot,factory_reset,1700000000"
    # the continuation lines are no properties of their own, and the next property is intact
    assert not any(key.startswith("reboot") for key in props)
    assert props["ro.board.platform"] == "zuma"


def test_parse_getprop_ignores_lines_that_are_no_properties() -> None:
    props = parse_getprop(GETPROP)
    assert all(key.startswith(("ro.", "persist.", "dalvik.", "init.", "aaudio.")) for key in props)
    assert parse_getprop("") == {}
    assert parse_getprop("/system/bin/sh: getprop: not found\n") == {}


def test_device_properties_picks_the_shown_fields() -> None:
    found = device_properties(parse_getprop(GETPROP))
    assert found == {
        "model": "Pixel 8 Pro",
        "manufacturer": "Google",
        "abi": "arm64-v8a",
        "sdk": "34",
        "release": "14",
        "board_platform": "zuma",
        "soc": "Tensor G3",
    }


@pytest.mark.parametrize(
    ("props", "soc"),
    [
        ({"ro.soc.model": "SM8550", "ro.board.platform": "kalama"}, "SM8550"),
        ({"ro.hardware.chipname": "exynos2100", "ro.hardware": "exynos"}, "exynos2100"),
        ({"ro.soc.model": "", "ro.board.platform": "msmnile", "ro.hardware": "qcom"}, "msmnile"),
        ({"ro.hardware": "ranchu"}, "ranchu"),
    ],
)
def test_device_properties_soc_falls_back_in_order(props: dict[str, str], soc: str) -> None:
    assert device_properties(props)["soc"] == soc


def test_device_properties_leaves_out_what_is_missing_or_empty() -> None:
    assert device_properties({"ro.product.model": "", "ro.build.version.sdk": "30"}) == {
        "sdk": "30"
    }
    assert device_properties({}) == {}


# --- dumpsys battery ------------------------------------------------------------------------


def test_parse_battery_of_a_real_dump() -> None:
    battery = parse_battery(DUMPSYS_BATTERY)
    assert battery["battery_level"] == 85
    assert battery["battery_temperature_c"] == pytest.approx(29.1)  # tenths of a degree
    assert battery["battery_status"] == "2"
    assert battery["battery_health"] == "2"
    assert battery["battery_voltage"] == "4237"
    assert set(battery) == {
        "battery_level",
        "battery_temperature_c",
        "battery_status",
        "battery_health",
        "battery_voltage",
    }


def test_parse_battery_below_zero_and_overridden_state() -> None:
    dump = (
        "Current Battery Service state:\n"
        "  (UPDATES STOPPED -- use 'reset' to restart)\n"
        "  AC powered: true\n"
        "  level: 5\n"
        "  temperature: -45\n"
    )
    assert parse_battery(dump) == {"battery_level": 5, "battery_temperature_c": -4.5}


def test_parse_battery_without_a_battery_service() -> None:
    assert parse_battery("Can't find service: battery\n") == {}
    assert parse_battery("") == {}
    assert parse_battery("  level: unknown\n  temperature: n/a\n") == {}


# --- thermal zones --------------------------------------------------------------------------


def test_parse_thermal_millidegrees_to_celsius() -> None:
    text = "cpu-0-0-usr 41500\ngpuss-0-usr 35000\nbattery 29100\nskin therm 33250\n"
    assert parse_thermal(text) == {
        "cpu-0-0-usr": 41.5,
        "gpuss-0-usr": 35.0,
        "battery": 29.1,
        "skin therm": 33.25,  # a type with a space keeps it
    }


def test_parse_thermal_odd_lines() -> None:
    text = (
        "tsens_tz_sensor0 38\n"  # a kernel that reports whole degrees
        "pm8550_tz \n"  # unreadable temp
        " 45000\n"  # unreadable type
        "cpuss-1 -40000\n"
        "sdm-therm n/a\n"
        "\n"
    )
    assert parse_thermal(text) == {"tsens_tz_sensor0": 38.0, "cpuss-1": -40.0}
    assert parse_thermal("") == {}
