"""What the phone runtimes' benchmark tools report, in one shape, and the helpers the parsers share.

Every parser in this package turns one captured tool output into a :class:`ToolRun` whose times
are **microseconds**, whatever unit the tool printed. A failed run raises
:class:`ToolOutputError`, which quotes the tool's own error lines.

The nnabla-nas latency keys (see :meth:`ToolRun.latency_keys`):

* ``Total Inference Time``: the end-to-end latency of one inference as the tool's app sees it.
* ``Forward Propagate``: the time inside the runtime only (SNPE); other tools have no such
  number and do not report the key.
* ``Layers Time``: the sum of the per-layer times of one inference, except the input layer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.core.records import LayerTime

TOTAL_INFERENCE_TIME = "Total Inference Time"
FORWARD_PROPAGATE = "Forward Propagate"
LAYERS_TIME = "Layers Time"

#: A number as the tools print it: integers, decimals, C++ default float formatting with
#: exponents (``2.95034e+06``).
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(NUMBER)

#: Factor from a printed time unit to microseconds.
_UNIT_TO_US: dict[str, float] = {
    "ns": 1e-3,
    "us": 1.0,
    "µs": 1.0,
    "usec": 1.0,
    "microseconds": 1.0,
    "ms": 1e3,
    "msec": 1e3,
    "milliseconds": 1e3,
    "s": 1e6,
    "sec": 1e6,
    "seconds": 1e6,
}


class ToolOutputError(Exception):
    """A benchmark tool reported a failure (or produced no measurement at all).

    ``lines`` are the tool's own error lines, quoted verbatim in the message so the operator
    sees the cause; ``exit_code`` is the exit status when the caller knew it.
    """

    def __init__(
        self,
        tool: str,
        lines: Sequence[str],
        exit_code: int | None = None,
        reason: str | None = None,
    ) -> None:
        self.tool = tool
        self.lines = [line.strip() for line in lines if line.strip()]
        self.exit_code = exit_code
        self.reason = reason
        head = f"{tool} failed"
        if exit_code not in (None, 0):
            head += f" (exit code {exit_code})"
        if reason:
            head += f": {reason}"
        if self.lines:
            head += ": " + " | ".join(self.lines)
        super().__init__(head)


@dataclass
class ToolRun:
    """What one invocation of a benchmark tool reported. All times are in microseconds.

    ``count`` and the ``*_us`` statistics describe the timed iterations (warm-up excluded);
    fields the tool did not print stay ``None``. ``total_inference``, ``forward_us`` are
    Stats-like dicts (``min``/``mean``/``max`` and whatever else is known, e.g. ``count``,
    ``runs``) for the nnabla-nas keys; ``layers`` holds the mean time of each layer per
    inference and ``layers_total_us`` their sum except the input layer ("Layers Time").
    ``layers_total_range_us`` is ``(min, max)`` of that sum when the tool gives per-layer
    minima/maxima (snpe_bench). ``warnings`` are things the operator should know (a delegate
    that declined the graph, an incomplete layer list); ``extra`` is everything else the tool
    printed that may matter (memory, CPU use, throughput, per-runtime rows).
    """

    tool: str
    tool_version: str = ""
    count: int | None = None
    avg_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    std_us: float | None = None
    median_us: float | None = None
    p90_us: float | None = None
    p95_us: float | None = None
    p99_us: float | None = None
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    forward_us: dict[str, float] | None = None
    total_inference: dict[str, float] | None = None
    layers: list[LayerTime] = field(default_factory=list)
    layers_total_us: float | None = None
    layers_total_range_us: tuple[float, float] | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def latency_keys(self) -> dict[str, tuple[float | None, float, float | None]]:
        """The nnabla-nas keys this run has, as ``(min, avg, max)`` in microseconds.

        Keys the tool did not measure are absent; a ``min``/``max`` the tool did not print is
        ``None`` (the average is always there when the key is).
        """
        keys: dict[str, tuple[float | None, float, float | None]] = {}
        for name, stats in (
            (TOTAL_INFERENCE_TIME, self.total_inference),
            (FORWARD_PROPAGATE, self.forward_us),
        ):
            if stats and stats.get("mean") is not None:
                keys[name] = (stats.get("min"), stats["mean"], stats.get("max"))
        if self.layers_total_us is not None:
            low, high = self.layers_total_range_us or (None, None)
            keys[LAYERS_TIME] = (low, self.layers_total_us, high)
        return keys

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summary(**values: float | int | None) -> dict[str, float] | None:
    """A Stats-like dict of the given values, without the ``None`` ones (``None`` if empty)."""
    kept = {key: value for key, value in values.items() if value is not None}
    return kept or None


def to_float(text: str) -> float:
    """A number as printed by the tools (accepts exponents, surrounding spaces, a ``%``)."""
    return float(text.strip().rstrip("%"))


def to_us(value: float, unit: str | None) -> float:
    """``value`` in ``unit`` converted to microseconds; ValueError on a non-time unit. Rounded
    to 1e-6 us so that 40.6483 ms reads 40648.3, not 40648.299999999996 (no tool prints more
    than nanoseconds)."""
    key = (unit or "").strip()
    factor = _UNIT_TO_US.get(key, _UNIT_TO_US.get(key.lower()))
    if factor is None:
        raise ValueError(f"not a time unit: {unit!r} (known: {', '.join(_UNIT_TO_US)})")
    return round(value * factor, 6)


def key_values(text: str) -> dict[str, float]:
    """``count=50 first=1 avg=2.95e+06`` → ``{"count": 50.0, ...}`` (non-numbers skipped)."""
    pairs: dict[str, float] = {}
    for key, value in re.findall(r"([A-Za-z_][\w]*)=\s*(\S+)", text):
        if _NUMBER_RE.fullmatch(value):
            pairs[key] = float(value)
    return pairs


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def decode_log(data: bytes) -> str:
    """A captured log's bytes as text, whatever wrote the file: UTF-8 with or without a BOM,
    or UTF-16 as Windows PowerShell's ``>`` and ``Tee-Object`` write it (with a BOM, or
    without one when every other byte is NUL). Undecodable bytes become U+FFFD."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if len(data) >= 4 and data[1::2].count(0) > len(data) // 4 and not data[::2].count(0):
        return data.decode("utf-16-le", errors="replace")
    if len(data) >= 4 and data[::2].count(0) > len(data) // 4 and not data[1::2].count(0):
        return data.decode("utf-16-be", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def clean_log(text: str) -> str:
    """A tool's output as the parsers read it: no byte-order mark, no terminal colour codes
    (``adb logcat -v color``, coloured loggers), and ``\\n`` line ends whether the capture
    came through a PTY (``\\r\\n``, old ``adb shell``) or overwrote a progress line (``\\r``)."""
    text = _ANSI_ESCAPE.sub("", text.lstrip("\ufeff"))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def error_lines(lines: Iterable[str], pattern: re.Pattern[str]) -> list[str]:
    """The lines matching ``pattern``, stripped, in order."""
    return [line.strip() for line in lines if pattern.search(line)]


def tail(lines: Sequence[str], n: int = 5) -> list[str]:
    """The last ``n`` non-blank lines: the context quoted when a tool failed without saying why."""
    return [line for line in lines if line.strip()][-n:]


def check_choice(name: str, value: str, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``, else ValueError listing them."""
    options = list(allowed)
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(options)}")
    return value


def check_int(name: str, value: int, minimum: int) -> int:
    """``value`` if it is an int (not a bool) ≥ ``minimum``, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_args(name: str, values: Iterable[str]) -> list[str]:
    """Extra argv items, each a string (they are passed as-is, one argv item each)."""
    items = list(values)
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{name} items must be strings, got {item!r}")
    return items


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_prefix(env: Mapping[str, str] | None) -> list[str]:
    """``["env", "K=V", ...]`` so environment variables stay part of an argv list."""
    if not env:
        return []
    argv = ["env"]
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"invalid environment variable name {key!r}")
        argv.append(f"{key}={value}")
    return argv
