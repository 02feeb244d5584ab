"""Lay out a virtual phone's sandbox from its profile, and keep its sensors plausible.

Layout (device path -> what is there)::

    /system/build.prop                  key=value, one property per line (from the profile)
    /system/bin/getprop                 sh script: `getprop`, `getprop KEY [DEFAULT]`
    /system/bin/dumpsys                 sh script: `dumpsys battery`, `dumpsys thermalservice`
    /system/bin/onnxruntime_perf_test   wrapper: python -m backends.virtual.tools....
    /system/bin/benchmark_model         wrapper: python -m backends.virtual.tools....
    /system/bin/power_beacon            wrapper: the power sync beacon (docs/power-sync.md)
    /system/bin/date                    sh script, only for a profile with a clock offset/drift
    /sys/class/thermal/thermal_zoneN/   type, temp (millidegrees C)
    /sys/class/power_supply/battery/    capacity (%), temp (tenths of deg C), voltage_now (uV)
    /sys/devices/system/cpu/            online, possible, present, cpuN/cpufreq/scaling_governor
    /data/local/tmp/, /sdcard/, /vendor/  empty folders

The stand-in tools heat the thermal files while they run (``tools/_common.Heater``);
``cool_down`` moves every reading back towards the profile's value, a step per call.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from pathlib import Path

from backends.virtual.profile import PhoneProfile
from backends.virtual.tools._common import CLOCK_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_ENV = "DEVLAB_VIRTUAL_SANDBOX"  # the sandbox root, for the stand-in tools
SHELL_ROOT_ENV = "DEVLAB_VIRTUAL_SHELL_ROOT"  # the root as rewritten into shell commands

# Wrapper name on the phone -> module under backends.virtual.tools
TOOLS = {
    "onnxruntime_perf_test": "backends.virtual.tools.onnxruntime_perf_test",
    "benchmark_model": "backends.virtual.tools.benchmark_model",
    "power_beacon": "backends.virtual.tools.power_beacon",
}

THERMAL_DIR = "sys/class/thermal"
BATTERY_DIR = "sys/class/power_supply/battery"
CPU_DIR = "sys/devices/system/cpu"

_GETPROP = r"""#!/bin/sh
# getprop stand-in written by devlab's virtual phone: reads /system/build.prop.
props="${0%/*}/../build.prop"
if [ "$#" -eq 0 ]; then
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        printf '[%s]: [%s]\n' "${line%%=*}" "${line#*=}"
    done < "$props"
    exit 0
fi
while IFS= read -r line; do
    case "$line" in
        "$1="*) printf '%s\n' "${line#*=}"; exit 0 ;;
    esac
done < "$props"
printf '%s\n' "${2-}"
"""

_DUMPSYS = r"""#!/bin/sh
# dumpsys stand-in written by devlab's virtual phone (battery and thermalservice only).
sys="${0%/*}/../../sys"
bat="$sys/class/power_supply/battery"
case "$1" in
battery)
    level=$(cat "$bat/capacity")
    temp=$(cat "$bat/temp")
    microvolts=$(cat "$bat/voltage_now")
    echo "Current Battery Service state:"
    echo "  AC powered: false"
    echo "  USB powered: true"
    echo "  Wireless powered: false"
    echo "  Dock powered: false"
    echo "  Max charging current: 500000"
    echo "  Max charging voltage: 5000000"
    echo "  Charge counter: $((level * 45000))"
    echo "  status: 2"
    echo "  health: 2"
    echo "  present: true"
    echo "  level: $level"
    echo "  scale: 100"
    echo "  voltage: $((microvolts / 1000))"
    echo "  temperature: $temp"
    echo "  technology: Li-ion"
    ;;
thermalservice)
    echo "IsStatusOverride: false"
    echo "ThermalEventListeners:"
    echo "	callbacks: 0"
    echo "ThermalStatusListeners:"
    echo "	callbacks: 0"
    echo "Thermal Status: 0"
    echo "Cached temperatures:"
    echo "HAL Ready: true"
    echo "HAL connection:"
    echo "	ThermalHAL 2.0 connected: yes"
    echo "Current temperatures from HAL:"
    for zone in "$sys"/class/thermal/thermal_zone*; do
        [ -f "$zone/temp" ] || continue
        name=$(cat "$zone/type")
        milli=$(cat "$zone/temp")
        printf '\tTemperature{mValue=%d.%03d, mType=0, mName=%s, mStatus=0}\n' \
            $((milli / 1000)) $((milli % 1000)) "$name"
    done
    printf '\tTemperature{mValue=%d.%d, mType=2, mName=battery, mStatus=0}\n' \
        $(($(cat "$bat/temp") / 10)) $(($(cat "$bat/temp") % 10))
    ;;
''|-l)
    echo "Currently running services:"
    echo "  battery"
    echo "  thermalservice"
    ;;
*)
    echo "Can't find service: $1"
    ;;
esac
"""


_DATE = r"""#!/bin/sh
# date stand-in written by devlab's virtual phone: the host's clock moved by the phone's offset
# and drift ($CLOCK_ENV = "offset_ns drift_ppb ref_ns", set by the phone's shell).
clock() { offset=$1 drift=$2 ref=$3; }
clock ${CLOCK_ENV:-0 0 0}
now=$(HOST_DATE +%s%N)
t=$((now + offset + (now - ref) / 1000 * drift / 1000000))
exec HOST_DATE -d "@$((t / 1000000000)).$(printf %09d $((t % 1000000000)))" "$@"
"""


def _date_script() -> str | None:
    """The ``date`` stand-in, or None when the host has no ``date`` to build it on."""
    host = shutil.which("date", path="/usr/bin:/bin")
    if host is None:
        return None
    return _DATE.replace("HOST_DATE", shlex.quote(host)).replace("CLOCK_ENV", CLOCK_ENV)


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so a concurrent reader sees the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.chmod(temp, mode)
    os.replace(temp, path)


def _wrapper(module: str, root: Path) -> str:
    python = [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
    return (
        "#!/bin/sh\n"
        "# Stand-in written by devlab's virtual phone: runs the model with ONNX Runtime on the\n"
        "# host and prints what the real tool prints.\n"
        f"PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        f"{SANDBOX_ENV}={shlex.quote(str(root))}\n"
        f"export PYTHONPATH {SANDBOX_ENV}\n"
        f'exec {shlex.join(python)} -m {module} "$@"\n'
    )


def provision(root: Path, profile: PhoneProfile, tools: bool = True) -> None:
    """Create (or refresh) the sandbox layout for ``profile`` under ``root``."""
    for folder in ("data/local/tmp", "sdcard", "vendor/lib64", "system/bin"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    props = "".join(f"{key}={value}\n" for key, value in profile.props().items())
    write_text_atomic(root / "system/build.prop", props)
    write_text_atomic(root / "system/bin/getprop", _GETPROP, 0o755)
    write_text_atomic(root / "system/bin/dumpsys", _DUMPSYS, 0o755)
    date = _date_script() if profile.clock_offset_s or profile.clock_drift_ppm else None
    if date is not None:
        write_text_atomic(root / "system/bin/date", date, 0o755)
    else:
        (root / "system/bin/date").unlink(missing_ok=True)
    if tools:
        for name, module in TOOLS.items():
            write_text_atomic(root / "system/bin" / name, _wrapper(module, root), 0o755)

    thermal = root / THERMAL_DIR
    if thermal.is_dir():  # drop zones of an earlier profile
        for old in thermal.glob("thermal_zone*"):
            if old.name[len("thermal_zone") :].isdigit():
                for child in old.iterdir():
                    child.unlink()
                old.rmdir()
    for index, zone in enumerate(profile.thermal_zones):
        folder = thermal / f"thermal_zone{index}"
        write_text_atomic(folder / "type", f"{zone.type}\n")
        write_text_atomic(folder / "temp", f"{round(zone.temp_c * 1000)}\n")

    battery = root / BATTERY_DIR
    write_text_atomic(battery / "capacity", f"{profile.battery_level}\n")
    write_text_atomic(battery / "temp", f"{profile.battery_temp_tenths()}\n")
    write_text_atomic(battery / "voltage_now", f"{profile.battery_voltage_mv * 1000}\n")
    write_text_atomic(battery / "status", "Charging\n")
    write_text_atomic(battery / "health", "Good\n")
    write_text_atomic(battery / "present", "1\n")
    write_text_atomic(battery / "technology", "Li-ion\n")

    cpus = root / CPU_DIR
    span = f"0-{profile.cpu_count - 1}\n" if profile.cpu_count > 1 else "0\n"
    for name in ("online", "possible", "present"):
        write_text_atomic(cpus / name, span)
    for cpu in range(profile.cpu_count):
        freq = cpus / f"cpu{cpu}" / "cpufreq"
        write_text_atomic(freq / "scaling_governor", f"{profile.cpu_governor}\n")
        write_text_atomic(freq / "scaling_available_governors", "performance powersave schedutil\n")


def _baselines(root: Path, profile: PhoneProfile) -> list[tuple[Path, int]]:
    files = [
        (root / THERMAL_DIR / f"thermal_zone{i}" / "temp", round(zone.temp_c * 1000))
        for i, zone in enumerate(profile.thermal_zones)
    ]
    files.append((root / BATTERY_DIR / "temp", profile.battery_temp_tenths()))
    return files


def cool_down(root: Path, profile: PhoneProfile, keep: float = 0.85) -> None:
    """One cooling step: every reading above the profile's value keeps ``keep`` of its excess."""
    for path, base in _baselines(root, profile):
        with contextlib.suppress(OSError, ValueError):
            value = int(path.read_text().strip())
            if value <= base:
                continue
            cooled = base + int((value - base) * keep)
            write_text_atomic(path, f"{cooled}\n")
