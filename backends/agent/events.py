"""``GET /v1/jobs/{id}/events``: a job's progress as Server-Sent Events.

First the job view (``event: job``), then ``progress`` (at most ~5 a second, with the
latencies measured since the previous one) and ``log`` events (tool output, rate-limited),
and a final ``job`` event with the terminal view, after which the stream ends. ``: ping``
comments every second while nothing else is sent let a client notice a dead connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from backends.agent.jobs import Job, JobQueue
from backends.agent.live import Subscriber

PING_INTERVAL_S = 1.0
MIN_EVENT_GAP_S = 0.2
LOG_LINES_PER_EVENT_BATCH = 50


def sse(event: str, data: Any) -> bytes:
    """One event: ``event:`` line, one-line JSON ``data:``, blank line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_events(request: web.Request, queue: JobQueue, job: Job) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    subscriber = Subscriber()
    job.subscribers.add(subscriber)
    try:
        await response.prepare(request)
        finished_at_start = job.finished
        await response.write(sse("job", queue.view(job)))
        while not job.finished and not queue.closing:
            try:
                await asyncio.wait_for(subscriber.wake.wait(), PING_INTERVAL_S)
            except asyncio.TimeoutError:  # not the builtin one before Python 3.11
                await response.write(b": ping\n\n")
                continue
            subscriber.wake.clear()
            await _send_pending(response, job, subscriber)
            if not job.finished:
                await asyncio.sleep(MIN_EVENT_GAP_S)
        if job.finished and not finished_at_start:
            await _send_pending(response, job, subscriber)
            await response.write(sse("job", queue.view(job)))
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away
    finally:
        job.subscribers.discard(subscriber)
    return response


async def _send_pending(response: web.StreamResponse, job: Job, subscriber: Subscriber) -> None:
    if subscriber.progress_changed:
        body = {**job.progress, "recent_us": subscriber.take_recent()}
        await response.write(sse("progress", body))
    lines, skipped = subscriber.take_lines(LOG_LINES_PER_EVENT_BATCH)
    if skipped:
        await response.write(sse("log", {"line": f"[{skipped} lines not sent: too many]"}))
    for line in lines:
        await response.write(sse("log", {"line": line}))
    if subscriber.lines:
        subscriber.wake.set()  # more lines wait: send them after the pause
