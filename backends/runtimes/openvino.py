"""OpenVINO ``benchmark_app`` output parser (C++ and Python tools, 2019 to 2023+, MYRIAD too).

Layouts (``shared/specs/bench-tools.md`` section 5.3):

* up to 2021.4: ``Count:``, ``Duration:``, ``Latency:`` (the **median** per-request time) and
  ``Throughput:`` without an ``[ INFO ]`` prefix, padding after the colon varies;
* 2022.1+: every line prefixed ``[ INFO ]``, ``Latency:`` alone followed by ``Median:``,
  ``Average:``, ``Min:``, ``Max:`` (or a percentile line) in ms.

Times are ms in the tool and microseconds in the :class:`ToolRun`. "Total Inference Time" is
reported only where the tool printed an average (2022.1+); the old single ``Latency`` is a
median and lands in ``median_us``. In async mode with several infer requests the latency is
per request under queueing, not single-inference latency: a warning says so.
"""

from __future__ import annotations

import re

from backends.runtimes.common import NUMBER, ToolOutputError, ToolRun, summary, tail, to_us

TOOL = "benchmark_app"

_PREFIX = re.compile(r"^\s*\[\s*(INFO|WARNING|ERROR)\s*\]\s?")
_STAT = re.compile(rf"^(Count|Duration|Latency|Throughput):\s*(?:({NUMBER})\s*(\S+)?)?\s*$")
_SUB = re.compile(
    r"^(Median|Average|Avg|Min|Max|(\d+(?:\.\d+)?)\s*percentile):\s*"
    rf"({NUMBER})\s*(\S+)"
)
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
    r"(?:, (\d+) inference requests)?(?:, limits: ([^)]*))?"
)
_HINT = re.compile(r"performance hint will be set to (\w+)", re.IGNORECASE)
_ERRORISH = re.compile(r"^\[\s*ERROR\s*\]|\bException\b|\berror\b", re.IGNORECASE)
_TOOK_KEYS = {
    "Read network": "read_us",
    "Read model": "read_us",
    "Load network": "init_us",
    "Compile model": "init_us",
    "First inference": "first_inference_us",
}


def parse_benchmark_app(text: str, require_stats: bool = True) -> ToolRun:
    """One ``benchmark_app`` run. ToolOutputError when no statistics were printed (a failed or
    hung run), unless ``require_stats`` is false (then the header information is returned)."""
    run = ToolRun(tool=TOOL)
    raw_lines = text.splitlines()
    device_next = False
    in_latency = False
    build = None
    for raw in raw_lines:
        line = _PREFIX.sub("", raw).strip()
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
        elif match := _HINT.search(line):
            run.extra["performance_hint"] = match.group(1).upper()
            run.warnings.append(line)
        elif match := _STAT.match(line):
            name, value, unit = match.groups()
            in_latency = name == "Latency" and value is None
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
            label, percentile, value, unit = match.groups()
            us = to_us(float(value), unit)
            if percentile:
                run.extra[f"p{percentile}_us"] = us
            elif label == "Median":
                run.median_us = us
            elif label in ("Average", "Avg"):
                run.avg_us = us
            elif label == "Min":
                run.min_us = us
            else:
                run.max_us = us
        else:
            in_latency = False if line.endswith(":") and not line.startswith(" ") else in_latency
    if build:
        run.extra["build"] = build
        run.tool_version = run.tool_version or build
    if run.count is None and run.median_us is None and run.avg_us is None:
        if require_stats:
            errors = [line.strip() for line in raw_lines if _ERRORISH.search(line)]
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


def setattr_or_extra(run: ToolRun, key: str, value: float) -> None:
    if hasattr(run, key):
        setattr(run, key, value)
    else:
        run.extra[key] = value
