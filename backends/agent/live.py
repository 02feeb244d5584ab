"""Live job updates for ``GET /v1/jobs/{id}/events``: each SSE connection is a Subscriber
that collects what happened since its last event, so a fast runner never floods a slow
client (recent latencies and log lines are bounded, the rest counted as skipped)."""

from __future__ import annotations

import asyncio
from collections import deque

RECENT_LIMIT = 500
LOG_LIMIT = 200


class Subscriber:
    """What one event-stream client has not been sent yet. Used on the event loop only."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.progress_changed = False
        self.recent_us: deque[float] = deque(maxlen=RECENT_LIMIT)
        self.lines: deque[str] = deque(maxlen=LOG_LIMIT)
        self.skipped_lines = 0

    def add_progress(self, recent_us: list[float], lines: list[str]) -> None:
        self.progress_changed = True
        self.recent_us.extend(recent_us)
        overflow = len(self.lines) + len(lines) - LOG_LIMIT
        if overflow > 0:
            self.skipped_lines += overflow
        self.lines.extend(lines)
        self.wake.set()

    def take_recent(self) -> list[float]:
        recent = list(self.recent_us)
        self.recent_us.clear()
        self.progress_changed = False
        return recent

    def take_lines(self, limit: int) -> tuple[list[str], int]:
        """Up to ``limit`` pending lines and how many were dropped before them."""
        taken = [self.lines.popleft() for _ in range(min(limit, len(self.lines)))]
        skipped, self.skipped_lines = self.skipped_lines, 0
        return taken, skipped
