"""Small text charts drawn with rich: people would rather look than read a column of numbers."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(value: float, maximum: float, width: int) -> str:
    """A horizontal bar with eighth-of-a-cell resolution."""
    if maximum <= 0 or width <= 0:
        return ""
    eighths = round(max(0.0, min(value / maximum, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (BLOCKS[part] if part else "")


def latency_bars(
    rows: Sequence[tuple[str, float, float | None]], width: int = 40, title: str = ""
) -> Table:
    """One bar per (label, median us, p90 us), scaled to the largest p90 (or median)."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    if title:
        table.title = title
    if not rows:
        table.add_row(Text("no results yet", style="dim"), "", "")
        return table
    maximum = max(max(median, p90 or 0.0) for _, median, p90 in rows)
    for label, median, p90 in rows:
        drawn = Text(bar(median, maximum, width), style="bold")
        if p90 is not None and p90 > median:
            extra = len(bar(p90, maximum, width)) - len(drawn)
            drawn.append("─" * max(extra, 0), style="dim")
        table.add_row(Text(label), drawn, format_us(median))
    return table


def format_us(value: float | None) -> str:
    """Microseconds as people read them: us below 10 ms, ms above."""
    if value is None:
        return "-"
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.1f} us"
