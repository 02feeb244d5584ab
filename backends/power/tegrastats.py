"""NVIDIA Jetson ``tegrastats`` as a power source: its power rails, read from the lines it prints.

A Jetson measures its own rails (INA3221 monitors), so energy per inference needs no Monsoon
there. tegrastats prints one line per ``--interval`` (ms); the rails come last, in one of the
formats JetPack has used, all in milliwatts, ``current/average`` (the average since tegrastats
started):

* Nano / TX1 (JetPack 4): ``POM_5V_IN 2132/2170 POM_5V_GPU 78/78 POM_5V_CPU 236/262``
* TX2 (JetPack 4): ``VDD_SYS_GPU 153/158 … VDD_IN 3140/3208 …``
* AGX Xavier (JetPack 4.2): bare names, ``GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0
  VDDRQ 309/309 SYS5V 3306/3306`` (no input rail: the board total is their sum)
* Xavier NX / Orin (JetPack 5, 6): ``VDD_IN 5704mW/5704mW VDD_CPU_GPU_CV 831mW/831mW …``, newer
  versions with a ``MM-DD-YYYY HH:MM:SS`` prefix
* TX1 on L4T 28 prints no rail at all (then there is nothing to measure, and the parser says so).

The board's power is ``VDD_IN`` (or ``POM_5V_IN``), else the sum of the rails
(:func:`board_power_mw`). A rail-like token whose value cannot be read is never dropped
silently: it becomes a warning naming the line.

Pure and dependency-free (Python 3.8 too): the board agent parses with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
SUM_OF_RAILS = "sum of rails"

_STAMP = re.compile(r"^\s*(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s+")
_IS_TEGRASTATS = re.compile(r"\bRAM \d+/\d+[MKG]B\b")
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# a token that is meant to be a rail's value: digits with mW or a slash
_VALUE_LIKE = re.compile(r"^[\d.]+(?:mW)?(?:/[\d.]*(?:mW)?)?$|^[\d.]*mW")
_VALUE = re.compile(r"^(\d+)(mW)?(?:/(\d+)(mW)?)?$")
_RAIL_PREFIXES = ("VDD_", "POM_", "VIN_")


@dataclass
class Rail:
    """One rail's reading in milliwatts; ``average_mw`` is tegrastats' own running average."""

    name: str
    current_mw: float
    average_mw: float | None = None


@dataclass
class TegraLine:
    """One tegrastats line: its rails (in the order printed) and the board's power."""

    rails: dict[str, Rail]
    stamp: str | None = None  # the tool's own "MM-DD-YYYY HH:MM:SS", when printed
    warnings: list[str] = field(default_factory=list)

    def board(self) -> tuple[str, float] | None:
        """``(rail name, mW)`` of the board's input power, or None without rails."""
        return board_power_mw(self.rails)


@dataclass
class TegraOutput:
    """Everything read from a stretch of tegrastats output."""

    lines: list[TegraLine]
    ignored: list[str] = field(default_factory=list)  # non-tegrastats lines (a shell's ^C)
    warnings: list[str] = field(default_factory=list)


def is_tegrastats_line(line: str) -> bool:
    return bool(_IS_TEGRASTATS.search(line))


def parse_line(line: str) -> TegraLine | None:
    """The rails of one line, or None when the line is not tegrastats output."""
    if not is_tegrastats_line(line):
        return None
    stamp_match = _STAMP.match(line)
    stamp = stamp_match.group(1) if stamp_match else None
    tokens = line.split()
    rails: dict[str, Rail] = {}
    warnings: list[str] = []
    for name, value in zip(tokens, tokens[1:]):
        if not _NAME.match(name) or name == "RAM" or name == "SWAP":
            continue
        railish = name.startswith(_RAIL_PREFIXES)
        if not railish and not _VALUE_LIKE.match(value):
            continue
        if not railish and "/" not in value and "mW" not in value:
            continue  # "APE 25", "VIC_FREQ 601": a clock, not a rail
        found = _VALUE.match(value)
        if found is None or (found.group(2) != found.group(4) and found.group(3) is not None):
            warnings.append(f"tegrastats: unreadable rail {name} {value!r} in line: {line.strip()}")
            continue
        average = float(found.group(3)) if found.group(3) is not None else None
        rails[name] = Rail(name, float(found.group(1)), average)
    return TegraLine(rails, stamp, warnings)


def parse_output(text: str) -> TegraOutput:
    """Every tegrastats line of ``text``; a capture without any rail is a warning."""
    output = TegraOutput([])
    for raw in text.splitlines():
        if not raw.strip():
            continue
        parsed = parse_line(raw)
        if parsed is None:
            output.ignored.append(raw)
            continue
        output.lines.append(parsed)
        output.warnings.extend(parsed.warnings)
    if output.lines and not any(line.rails for line in output.lines):
        output.warnings.append(
            "tegrastats printed no power rail (an old L4T, or it needs sudo on this board): "
            "no energy can be measured from it"
        )
    return output


def board_power_mw(rails: dict[str, Rail]) -> tuple[str, float] | None:
    """The board's input power: ``VDD_IN`` or ``POM_5V_IN``, else the sum of all rails (AGX
    Xavier on JetPack 4 has no input rail); None without rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return name, rails[name].current_mw
    if not rails:
        return None
    return SUM_OF_RAILS, sum(rail.current_mw for rail in rails.values())


def interval_argv(tegrastats: str, interval_ms: int) -> list[str]:
    """``tegrastats --interval N`` (N in milliseconds)."""
    if interval_ms < 1:
        raise ValueError(f"the tegrastats interval must be at least 1 ms, got {interval_ms}")
    return [tegrastats, "--interval", str(int(interval_ms))]
