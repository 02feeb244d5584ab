"""Pure parsers of what a phone's shell prints (getprop, dumpsys battery, thermal zones).

Kept apart from the transport so they are tested on text alone.
"""

from __future__ import annotations

import re
from typing import Any

_GETPROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]$")
_GETPROP_OPEN = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)$")  # a multi-line value
_BATTERY_LINE = re.compile(r"^\s*(?P<key>[A-Za-z ]+):\s*(?P<value>.*)$")

PROPERTY_KEYS = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "abi": "ro.product.cpu.abi",
    "sdk": "ro.build.version.sdk",
    "release": "ro.build.version.release",
    "board_platform": "ro.board.platform",
}
SOC_KEYS = ("ro.soc.model", "ro.hardware.chipname", "ro.board.platform", "ro.hardware")


def parse_getprop(text: str) -> dict[str, str]:
    """``[key]: [value]`` lines into a dict (multi-line values keep their first line)."""
    props = {}
    continued = False  # inside the continuation lines of a multi-line value
    for line in text.splitlines():
        line = line.strip()
        match = _GETPROP_LINE.match(line)
        if match:
            props[match["key"]] = match["value"]
            continued = False
        elif continued:
            continued = not line.endswith("]")
        elif match := _GETPROP_OPEN.match(line):
            props[match["key"]] = match["value"]
            continued = True
    return props


def device_properties(props: dict[str, str]) -> dict[str, Any]:
    """The properties devlab shows and records, from a getprop dump."""
    found: dict[str, Any] = {
        name: props[key] for name, key in PROPERTY_KEYS.items() if props.get(key)
    }
    soc = next((props[key] for key in SOC_KEYS if props.get(key)), None)
    if soc:
        found["soc"] = soc
    return found


def parse_battery(text: str) -> dict[str, Any]:
    """``dumpsys battery``: level (%), temperature (°C; the tool prints tenths), status."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = _BATTERY_LINE.match(line)
        if match:
            fields[match["key"].strip().lower()] = match["value"].strip()
    battery: dict[str, Any] = {}
    if fields.get("level", "").lstrip("-").isdigit():
        battery["battery_level"] = int(fields["level"])
    if fields.get("temperature", "").lstrip("-").isdigit():
        battery["battery_temperature_c"] = int(fields["temperature"]) / 10.0
    for key in ("status", "health", "voltage"):
        if key in fields:
            battery[f"battery_{key}"] = fields[key]
    return battery


def parse_thermal(text: str) -> dict[str, float]:
    """Lines ``<type> <millidegrees>`` (as devlab's one-line shell loop prints them) to °C."""
    zones: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            value = int(parts[1])
            zones[parts[0]] = value / 1000.0 if abs(value) >= 1000 else float(value)
    return zones


THERMAL_COMMAND = (
    "for z in /sys/class/thermal/thermal_zone*; do "
    'echo "$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"; done'
)
GOVERNOR_COMMAND = "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
