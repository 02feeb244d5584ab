"""OpenVINO ``benchmark_app`` output parser (C++ and Python tools, 2019 to 2023+, MYRIAD too).

Layouts (``shared/specs/bench-tools.md`` section 5.3):

* up to 2021.4: ``Count:``, ``Duration:``, ``Latency:`` (the **median** per-request time) and
  ``Throughput:`` without an ``[ INFO ]`` prefix, padding after the colon varies;
* 2022.1 (Python tool): the statistics still without ``[ INFO ]``, ``Latency:`` alone followed
  by indented ``Median:`` (absent for dynamic shapes), ``AVG:``, ``MIN:``, ``MAX:`` in ms;
* 2022.3+: every line prefixed ``[ INFO ]``, ``Latency:`` alone followed by ``Median:``,
  ``Average:``, ``Min:``, ``Max:`` (or a percentile line) in ms. Stat names are
  case-insensitive.

No silent drops: an indented line of the latency block that names an unknown stat or unit
gives a warning quoting the line; a statistics report without a readable median or average
raises :class:`ToolOutputError`. Enum-style hints (``PerformanceMode.THROUGHPUT``) are read
whole and stored as the part after the last dot (``extra["performance_hint"] == "THROUGHPUT"``).

Times are ms in the tool and microseconds in the :class:`ToolRun`. "Total Inference Time" is
reported only where the tool printed an average (2022.1+); the old single ``Latency`` is a
median and lands in ``median_us``. In async mode with several infer requests the latency is
per request under queueing, not single-inference latency: a warning says so.
"""

from __future__ import annotations

import re

from backends.runtimes.common import (
    NUMBER,
    ToolOutputError,
    ToolRun,
    clean_log,
    summary,
    tail,
    to_us,
)

TOOL = "benchmark_app"

_PREFIX = re.compile(r"^\s*\[\s*(INFO|WARNING|ERROR)\s*\]\s?")
_STAT = re.compile(rf"^(Count|Duration|Latency|Throughput):\s*(?:({NUMBER})\s*(\S+)?)?\s*$")
# One line of the 2022.1+ latency block. Stat names are matched case-insensitively; the
# spellings seen across releases: Median, Average / AVG / Avg / Mean, Min / MIN / Minimum,
# Max / MAX / Maximum, and a percentile line ("90 percentile", "90th percentile", "P90").
_SUB = re.compile(
    r"^(median|average|avg|mean|min|minimum|max|maximum"
    r"|(\d+(?:\.\d+)?)(?:th)?\s*percentile|p(\d+(?:\.\d+)?)):\s*"
    rf"({NUMBER})\s*(\S+)?\s*$",
    re.IGNORECASE,
)
_SUB_FIELDS = {
    "median": "median_us",
    "average": "avg_us",
    "avg": "avg_us",
    "mean": "avg_us",
    "min": "min_us",
    "minimum": "min_us",
    "max": "max_us",
    "maximum": "max_us",
}
_VERSION = re.compile(r"OpenVINO Runtime version\s*\.*\s*(\S+)")
_BUILD = re.compile(r"^Build\s*\.+\s*(\S+)")
_API = re.compile(r"^API version\s*\.+\s*(\S+)")
_PLUGIN = re.compile(r"^(\S*(?:[Pp]lugin|myriad\w*))\s+version\s*\.+\s*(\S+)")
_TOOK = re.compile(
    r"^(Read network|Read model|Load network|Compile model|First inference) took\s+"
    rf"({NUMBER})\s*(\S+)"
)
_MEASURING = re.compile(
    r"Measuring performance \(Start inference (a?synchronously|asyncronously)"
    # 2022.1 puts "using N streams for CPU, inference only: True" before the limits.
    r"(?:, (\d+) inference requests)?(?:[^)]*?, limits: ([^)]*))?"
)
# "Execution Devices:['CPU']" (2023+ Python tool) or "Execution Devices:NPU.3720": the device(s)
# that ran the model, which matters for AUTO/MULTI.
_EXEC_DEVICES = re.compile(r"^Execution Devices:\s*(.+)$")
# Hints are printed bare (``THROUGHPUT``) or as a Python enum (``PerformanceMode.THROUGHPUT``,
# 2023+): the whole dotted token is read and the part after the last dot is kept, upper case.
_HINT = re.compile(r"performance hint will be set to ([\w.]*\w)", re.IGNORECASE)
_HINT_CONFIG = re.compile(r"^PERFORMANCE_HINT:\s*([\w.]*\w)\s*$")
_ERRORISH = re.compile(r"^\[\s*ERROR\s*\]|\bException\b|\berror\b", re.IGNORECASE)
_TOOK_KEYS = {
    "Read network": "read_us",
    "Read model": "read_us",
    "Load network": "init_us",
    "Compile model": "init_us",
    "First inference": "first_inference_us",
}


_STEP_ONE = re.compile(r"\[Step 1/\d+\]")
_COUNT_LINE = re.compile(r"^\s*(?:\[\s*INFO\s*\]\s*)?Count:\s", re.IGNORECASE)
_THROUGHPUT_LINE = re.compile(r"^\s*(?:\[\s*INFO\s*\]\s*)?Throughput:", re.IGNORECASE)


def split_runs(text: str) -> list[str]:
    """A capture of several ``benchmark_app`` runs (a script over CPU and GPU into one log, or
    their result blocks pasted together) cut into one text per run: at each ``[Step 1/11]``,
    else after the ``Throughput:`` line that ends each run's statistics."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _STEP_ONE.search(line)]
    if len(starts) >= 2:
        bounds = [0, *starts[1:]]
    else:
        counts = [i for i, line in enumerate(lines) if _COUNT_LINE.match(line)]
        if len(counts) < 2:
            return [text]
        bounds = [0]
        for previous, following in zip(counts, counts[1:], strict=False):
            ends = [i for i in range(previous, following) if _THROUGHPUT_LINE.match(lines[i])]
            bounds.append(ends[-1] + 1 if ends else following)
    bounds.append(len(lines))
    parts = ["\n".join(lines[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    return [part for part in parts if part.strip()]


def parse_capture(text: str) -> ToolRun | dict[str, ToolRun]:
    """A capture as a user saves it: one run, or several keyed ``run 1``, ``run 2``, … in
    order, each read on its own (one run's settings never fill in another's)."""
    text = clean_log(text)
    parts = split_runs(text)
    if len(parts) == 1:
        return parse_benchmark_app(text)
    return {f"run {number}": parse_benchmark_app(part) for number, part in enumerate(parts, 1)}


def parse_benchmark_app(text: str, require_stats: bool = True) -> ToolRun:
    """One ``benchmark_app`` run. ToolOutputError when no statistics were printed (a failed or
    hung run), unless ``require_stats`` is false (then the header information is returned)."""
    text = clean_log(text)
    run = ToolRun(tool=TOOL)
    raw_lines = text.splitlines()
    device_next = False
    in_latency = False
    build = None
    latency_seen = False
    unread: list[str] = []
    for raw in raw_lines:
        body = _PREFIX.sub("", raw)
        line = body.strip()
        if in_latency and line and body[:1].isspace() and not _SUB.match(line):
            # An indented line of the latency block that is not a known stat or unit.
            unread.append(raw.strip())
            continue
        if device_next:
            if line:
                run.extra["device"] = line
                device_next = False
            continue
        if line.startswith("Device info"):
            device_next = True
            continue
        if match := _VERSION.search(line):
            run.tool_version = match.group(1)
        elif match := _API.match(line):
            run.extra["api_version"] = match.group(1)
        elif match := _PLUGIN.match(line):
            run.extra["plugin"] = match.group(1)
            run.extra["plugin_version"] = match.group(2)
        elif match := _BUILD.match(line):
            build = build or match.group(1)
        elif match := _TOOK.match(line):
            setattr_or_extra(
                run, _TOOK_KEYS[match.group(1)], to_us(float(match.group(2)), match.group(3))
            )
        elif match := _MEASURING.search(line):
            run.extra["api"] = "sync" if match.group(1) == "synchronously" else "async"
            if match.group(2):
                run.extra["infer_requests"] = int(match.group(2))
            if match.group(3):
                run.extra["limits"] = match.group(3)
        elif match := _EXEC_DEVICES.match(line):
            names = re.split(r"[,\s]+", match.group(1).strip("[] "))
            run.extra["execution_devices"] = [name.strip("'\"") for name in names if name]
        elif match := _HINT.search(line):
            run.extra["performance_hint"] = hint_value(match.group(1))
            run.warnings.append(line)
        elif match := _HINT_CONFIG.match(line):
            run.extra.setdefault("performance_hint", hint_value(match.group(1)))
        elif match := _STAT.match(line):
            name, value, unit = match.groups()
            in_latency = name == "Latency" and value is None
            latency_seen = latency_seen or name == "Latency"
            if value is None:
                continue
            number = float(value)
            if name == "Count":
                run.count = int(number)
            elif name == "Duration":
                run.extra["duration_us"] = to_us(number, unit)
            elif name == "Latency":
                run.median_us = to_us(number, unit)
            else:
                run.extra["throughput_fps"] = number
        elif in_latency and (match := _SUB.match(line)):
            label, percentile, p_name, value, unit = match.groups()
            try:
                us = to_us(float(value), unit)
            except ValueError:
                unread.append(raw.strip())
                continue
            percentile = percentile or p_name
            if percentile:
                key = f"p{percentile}_us"
                if hasattr(run, key):
                    setattr(run, key, us)
                run.extra[key] = us
            else:
                setattr(run, _SUB_FIELDS[label.lower()], us)
        elif line and not body[:1].isspace():
            in_latency = False  # the block is the indented lines under "Latency:"
    if build:
        run.extra["build"] = build
        run.tool_version = run.tool_version or build
    for bad in unread:
        run.warnings.append(f"latency line not read (unknown stat name or unit): {bad}")
    if (
        require_stats
        and (latency_seen or run.count is not None)
        and run.median_us is None
        and run.avg_us is None
    ):
        raise ToolOutputError(
            TOOL,
            unread or tail(raw_lines),
            reason="statistics report without a readable latency (median or average)",
        )
    if run.count is None and run.median_us is None and run.avg_us is None:
        if require_stats:
            errors = _error_lines(raw_lines)
            raise ToolOutputError(
                TOOL, errors or tail(raw_lines), reason="no statistics report in the output"
            )
        return run
    run.total_inference = (
        summary(min=run.min_us, mean=run.avg_us, max=run.max_us, count=run.count)
        if run.avg_us is not None
        else None
    )
    if run.extra.get("api") == "async" and run.extra.get("infer_requests", 1) > 1:
        run.warnings.append(
            f"async with {run.extra['infer_requests']} infer requests: the latency is per request "
            "under queueing, not single-inference latency (use -api sync or -hint latency)"
        )
    return run


def _error_lines(raw_lines: list[str]) -> list[str]:
    """The error lines, each ``[ ERROR ]`` message with its continuation lines: the Python tool
    prints the cause of a failure on the lines after ``[ ERROR ] Check 'false' failed at …``,
    up to the next blank, ``[ … ]``-prefixed or ``[Step`` line."""
    errors: list[str] = []
    in_error = False
    for raw in raw_lines:
        line = raw.strip()
        if re.match(r"^\[\s*ERROR\s*\]", line):
            in_error = True
            errors.append(line)
        elif in_error and line and not line.startswith("["):
            errors.append(line)
        else:
            in_error = False
            if _ERRORISH.search(raw):
                errors.append(line)
    return errors


def hint_value(token: str) -> str:
    """``PerformanceMode.THROUGHPUT`` → ``THROUGHPUT``; ``latency`` → ``LATENCY``."""
    return token.rpartition(".")[2].upper()


def setattr_or_extra(run: ToolRun, key: str, value: float) -> None:
    if hasattr(run, key):
        setattr(run, key, value)
    else:
        run.extra[key] = value
