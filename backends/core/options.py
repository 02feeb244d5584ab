"""Benchmark options declared once, as data: the CLI renders them as flags, the TUI as fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.core.records import JobSettings


@dataclass(frozen=True)
class Option:
    """One measurement setting: its ``JobSettings`` field, flag, type and help text."""

    field: str
    flag: str
    kind: type
    help: str
    metavar: str | None = None
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    dialog: bool = True  # offered in the TUI's add dialog (advanced ones stay CLI/config)


BENCH_OPTIONS: tuple[Option, ...] = (
    Option("warmup", "--warmup", int, "untimed runs before timing (default %(default)s)", "N", 0),
    Option("runs", "--runs", int, "timed runs per job (default %(default)s)", "N", 1),
    Option(
        "min_seconds",
        "--min-seconds",
        float,
        "time for at least S seconds instead of a fixed number of runs",
        "S",
        0.001,
    ),
    Option(
        "threads",
        "--threads",
        int,
        "intra-op threads where the runtime has them (default %(default)s)",
        "N",
        1,
    ),
    Option(
        "rounds",
        "--rounds",
        int,
        "split the timed runs into R rounds (default %(default)s)",
        "R",
        1,
    ),
    Option(
        "min_round_s",
        "--min-round-seconds",
        float,
        "where the runtime runs in devlab's measurement process (host CPU), every round runs "
        "at least S seconds, as many runs as fit (default %(default)s; 0: exactly the runs)",
        "S",
        0.0,
        dialog=False,
    ),
    Option(
        "pin",
        "--pin",
        int,
        "pin the measurement process to CPU core N (recorded in the conditions)",
        "CORE",
        0,
        dialog=False,
    ),
    Option(
        "round_stat",
        "--round-stat",
        str,
        "headline from the round medians: median (default) or min",
        "STAT",
        choices=("median", "min"),
        dialog=False,
    ),
    Option(
        "precision_pct",
        "--precision",
        float,
        "run more rounds until the 95%% bootstrap interval of the median is within +-P%% "
        "(default %(default)s; 0 turns the gate off)",
        "P",
        0.0,
    ),
    Option(
        "max_rounds",
        "--max-rounds",
        int,
        "the precision gate's cap on rounds in all (default %(default)s)",
        "R",
        1,
        dialog=False,
    ),
    Option(
        "precision_time_cap_s",
        "--precision-time-cap",
        float,
        "the precision gate's cap on seconds of extra rounds (default %(default)s)",
        "S",
        0.0,
        dialog=False,
    ),
    Option(
        "skip_canary",
        "--no-canary",
        bool,
        "do not measure the reference canary before each round (no drift normalisation)",
        dialog=False,
    ),
    Option(
        "skip_parity",
        "--no-parity",
        bool,
        "do not compare one output with host ONNX Runtime",
        dialog=False,
    ),
    Option(
        "settle_c",
        "--settle",
        float,
        "before timing, wait until the battery is within C degrees C of its idle temperature",
        "C",
        0.0,
    ),
    Option(
        "perf_profile",
        "--perf-profile",
        str,
        "SNPE performance profile (burst, high_performance, sustained_high_performance...)",
        "NAME",
    ),
    Option(
        "clip_ranges",
        "--quantization-overrides",
        str,
        "SNPE: an MQBench/SNPE clip-range JSON for quantized (DSP) runs",
        "FILE",
    ),
    Option(
        "accuracy_set",
        "--accuracy",
        str,
        "after timing, evaluate this set on the device (top-1/top-5, or output error; "
        "docs/accuracy.md)",
        "SET",
    ),
    Option(
        "power",
        "--power",
        bool,
        "capture power with the monitor that powers the device (energy per inference)",
    ),
    Option(
        "power_sync",
        "--power-sync",
        str,
        "how a --power job's rounds are placed in the monitor's trace: windows (default; the "
        "host's timestamps) or beacon (a sync beacon on the device and its clock's stamps; "
        "docs/power-sync.md)",
        "MODE",
        choices=("windows", "beacon"),
        dialog=False,
    ),
    Option(
        "power_beacons",
        "--power-beacons",
        str,
        "with --power-sync beacon: job (default; a beacon before the baseline and one after the "
        "last round) or round (one before every round and one after the last: drift resolved "
        "from more beacons, about 0.7 s more per round; docs/power-sync.md)",
        "WHEN",
        choices=("job", "round"),
        dialog=False,
    ),
    Option(
        "power_capture",
        "--power-capture",
        str,
        "with --power-sync beacon: job (default; each job's own trace) or queue (also one trace "
        "over the device's queue of such jobs, the clock fitted over all their beacons after "
        "each job: drift resolved; docs/power-sync.md); without beacon it has no effect",
        "SCOPE",
        choices=("job", "queue"),
        dialog=False,
    ),
    Option(
        "per_layer", "--per-layer", bool, "also measure per-layer times in a separate profiled pass"
    ),
)

# Not a measurement setting: the layout of the latency table a run writes (--table-format, or
# table_format in the config's [defaults]); backends/results/formats.py has each one's writer.
TABLE_FORMATS: tuple[str, ...] = ("devlab", "nnabla-nas")
DEFAULT_TABLE_FORMAT = "devlab"
TABLE_FORMAT_HELP = (
    "layout of the latency table: devlab (default) or nnabla-nas (what sony/nnabla-nas reads: "
    "SNPE runtime names, Layers Time for every module, its .meta; per-layer profiling on)"
)


def build_settings(values: Mapping[str, Any], defaults: JobSettings | None = None) -> JobSettings:
    """Settings from option values (None = not given), over ``defaults``; ValueError if bad.

    A job is timed by count or by duration, never both: ``min_seconds`` clears ``runs`` and
    an explicit ``runs`` clears a ``min_seconds`` that came from the defaults.
    """
    settings = dataclasses.replace(defaults or JobSettings())
    for option in BENCH_OPTIONS:
        value = values.get(option.field)
        if value is None:
            continue
        _check_type(option, value)
        if option.minimum is not None and option.kind is not str and value < option.minimum:
            raise ValueError(f"{option.flag} must be at least {option.minimum:g}, got {value}")
        if option.choices and value not in option.choices:
            allowed = ", ".join(option.choices)
            raise ValueError(f"{option.flag} must be one of {allowed}, got {value!r}")
        setattr(settings, option.field, option.kind(value))
    if values.get("min_seconds") is not None:
        if values.get("runs") is not None:
            raise ValueError("give either --runs or --min-seconds, not both")
        settings.runs = None
    elif values.get("runs") is not None:
        settings.min_seconds = None
    return settings


def _check_type(option: Option, value: Any) -> None:
    """Reject values of the wrong type (a config file's ``per_layer = "no"`` is not True)."""
    if option.kind is bool:
        ok = isinstance(value, bool)
    elif option.kind is str:
        ok = isinstance(value, str)
    elif option.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise ValueError(
            f"{option.flag} ({option.field}) must be {option.kind.__name__}, got {value!r}"
        )
