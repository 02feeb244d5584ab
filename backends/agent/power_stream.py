"""``GET /v1/power/stream``: the board's rails live, whether a job runs or not, so the console's
Power view shows a Jetson like a Monsoon (only on an agent started with ``--tegrastats``).

One ``tegrastats --interval N`` serves every subscriber: it starts with the first and is killed
(its process group) when the last one leaves. A job's own sampler runs a tegrastats of its own
(its samples are the job's energy), so two may run at once; both only read the rail monitors.
Each connection is a :class:`RailSubscriber` holding what it has not been sent yet, bounded, so
a slow client never holds up the reader. Runs on Python 3.8 (the board agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections import deque
from typing import Any, Dict, Sequence  # typing's: runtime aliases on 3.8

from aiohttp import web

from backends.agent.process import kill_group
from backends.agent.tegrastats_sampler import open_tegrastats
from backends.power.tegrastats import is_tegrastats_line, parse_line

PING_INTERVAL_S = 1.0
MIN_EVENT_GAP_S = 0.2  # samples go out in batches, at most ~5 a second
PENDING_LIMIT = 600  # per subscriber: a minute at 100 ms; older ones are dropped and counted

Sample = Dict[str, Any]


class RailSubscriber:
    """What one stream client has not been sent yet. Used on the event loop only."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.pending: deque[Sample] = deque(maxlen=PENDING_LIMIT)
        self.dropped = 0
        self.ended: str | None = None  # why tegrastats stopped, when it did

    def add(self, sample: Sample) -> None:
        if len(self.pending) == PENDING_LIMIT:
            self.dropped += 1
        self.pending.append(sample)
        self.wake.set()

    def take(self) -> tuple[list[Sample], int]:
        samples, dropped = list(self.pending), self.dropped
        self.pending.clear()
        self.dropped = 0
        return samples, dropped


class RailStream:
    """The shared tegrastats process and its subscribers (``argv``: ``tegrastats --interval``)."""

    def __init__(self, argv: Sequence[str], interval_ms: int) -> None:
        self.argv = list(argv)
        self.interval_ms = interval_ms
        self.subscribers: set[RailSubscriber] = set()
        self._proc: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self) -> RailSubscriber:
        """A new subscriber; the first starts tegrastats (OSError: it cannot be started)."""
        subscriber = RailSubscriber()
        if self._proc is None:
            self._start()
        self.subscribers.add(subscriber)
        return subscriber

    async def unsubscribe(self, subscriber: RailSubscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            await self.stop()

    async def stop(self) -> None:
        """Kill tegrastats (off the event loop: killing waits for it)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await asyncio.get_event_loop().run_in_executor(None, kill_group, proc)

    def _start(self) -> None:
        self._loop = asyncio.get_event_loop()
        proc = open_tegrastats(self.argv)
        self._proc = proc
        threading.Thread(target=self._read, args=(proc,), name="rail-stream", daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        """The reader thread: each rail line becomes a sample handed to the event loop."""
        assert proc.stdout is not None and self._loop is not None
        last_other = ""
        with contextlib.suppress(OSError, ValueError):
            for raw in proc.stdout:
                now = time.time()
                line = raw.rstrip("\r\n")
                parsed = parse_line(line) if is_tegrastats_line(line) else None
                board = parsed.board() if parsed is not None else None
                if parsed is None or board is None:
                    last_other = line.strip()[:300] or last_other
                    continue
                sample = {
                    "t": now,
                    "rail": board[0],
                    "mw": board[1],
                    "rails": {name: rail.current_mw for name, rail in parsed.rails.items()},
                }
                self._loop.call_soon_threadsafe(self._deliver, proc, sample)
        reason = "tegrastats stopped" + (f" (it said: {last_other})" if last_other else "")
        self._loop.call_soon_threadsafe(self._ended, proc, reason)

    def _deliver(self, proc: subprocess.Popen, sample: Sample) -> None:
        if proc is self._proc:
            for subscriber in self.subscribers:
                subscriber.add(sample)

    def _ended(self, proc: subprocess.Popen, reason: str) -> None:
        if proc is not self._proc:
            return  # stopped on purpose
        self._proc = None
        for subscriber in self.subscribers:
            subscriber.ended = reason
            subscriber.wake.set()


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_rails(request: web.Request, rails: RailStream, closing: Any) -> web.StreamResponse:
    """``samples`` events (``{"interval_ms", "dropped", "samples": [{t, rail, mw, rails}]}``)
    until the client leaves or the agent stops; ``: ping`` every second while none come.
    ``closing()`` says the agent is stopping."""
    try:
        subscriber = rails.subscribe()
    except OSError as error:
        return web.json_response(
            {"error": f"cannot start {rails.argv[0]}: {error.strerror or error}"}, status=503
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        while not closing() and subscriber.ended is None:
            try:
                await asyncio.wait_for(subscriber.wake.wait(), PING_INTERVAL_S)
            except asyncio.TimeoutError:
                await response.write(b": ping\n\n")
                continue
            subscriber.wake.clear()
            samples, dropped = subscriber.take()
            if samples or dropped:
                body = {"interval_ms": rails.interval_ms, "dropped": dropped, "samples": samples}
                await response.write(sse("samples", body))
            await asyncio.sleep(MIN_EVENT_GAP_S)
        if subscriber.ended is not None:
            await response.write(sse("end", {"reason": subscriber.ended}))
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away
    finally:
        await rails.unsubscribe(subscriber)
    return response
