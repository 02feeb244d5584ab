"""The per-layer table trtexec prints with ``--dumpProfile`` (``=== Profile (N iterations ) ===``).

Two layouts are in use. TensorRT 8.6 prints numbers first::

    [I]    Time(ms)     Avg.(ms)   Median(ms)   Time(%)   Layer
    [I]      486.12       0.3390       0.3389      21.0   {ForeignNode[...]}
    [I]     2309.39       1.6105       1.6100     100.0   Total

TensorRT 8.5 prints the layer's name first, right-aligned (and older releases without the
median column)::

    [I]                 Layer   Time (ms)   Avg. Time (ms)   Median Time (ms)   Time %
    [I]  [HostToDeviceCopy 0]       16.77           0.0543             0.0285      0.5
    [I]                 Total     3068.65           9.9309             9.1586    100.0

The table is read by its header's column names; a row that does not fit is a warning quoting it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from backends.runtimes.common import NUMBER

# trtexec's line prefix: "[10/21/2025-15:16:16] [I] " (both parts optional)
LOG_PREFIX = re.compile(r"^\s*(?:\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\]\s*)?(?:\[[IWEVF]\]\s*)?")


def strip_log_prefix(line: str) -> str:
    """A trtexec log line without its time stamp and severity, right-stripped."""
    return LOG_PREFIX.sub("", line, count=1).rstrip()


_TITLE = re.compile(r"=== Profile \((\d+) iterations? ?\) ===")
_COLUMN = re.compile(
    r"Time\s*\(ms\)|Avg\.?\s*(?:Time\s*)?\(ms\)|Median\s*(?:Time\s*)?\(ms\)|Time\s*\(?%\)?"
)


@dataclass
class PrintedProfile:
    """A printed profile: every layer's total, mean and median per iteration (ms as printed)
    and the Total row."""

    iterations: int
    columns: list[str]
    layers: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def _column_names(header: str) -> list[str]:
    names = []
    for found in _COLUMN.finditer(header):
        text = found.group(0).lower()
        if text.startswith("avg"):
            names.append("avg_ms")
        elif text.startswith("median"):
            names.append("median_ms")
        elif "%" in text:
            names.append("percent")
        else:
            names.append("total_ms")
    return names


def read_printed_profile(lines: list[str]) -> PrintedProfile | None:
    """The profile table in a trtexec log's ``lines``, or None when it printed none."""
    bodies = [strip_log_prefix(line) for line in lines]
    start = next((i for i, body in enumerate(bodies) if _TITLE.search(body)), None)
    if start is None or start + 1 >= len(bodies):
        return None
    title = _TITLE.search(bodies[start])
    assert title is not None
    header = bodies[start + 1]
    columns = _column_names(header)
    name_first = header.strip().startswith("Layer")
    profile = PrintedProfile(int(title.group(1)), columns)
    numbers = r"\s+".join(rf"({NUMBER})" for _ in columns)
    row = re.compile(rf"^\s*(.+?)\s+{numbers}\s*$" if name_first else rf"^\s*{numbers}\s+(.+?)\s*$")
    for body in bodies[start + 2 :]:
        if not body.strip():
            break
        found = row.match(body)
        if found is None:
            profile.warnings.append(f"trtexec: unreadable profile row: {body.strip()}")
            continue
        groups = list(found.groups())
        name = groups.pop(0) if name_first else groups.pop()
        entry: dict[str, Any] = {"name": name.strip()}
        entry.update({key: float(value) for key, value in zip(columns, groups)})  # 3.8: no strict
        if entry["name"] == "Total":
            profile.total = entry
            break
        profile.layers.append(entry)
    return profile


__all__ = ["LOG_PREFIX", "PrintedProfile", "read_printed_profile", "strip_log_prefix"]
