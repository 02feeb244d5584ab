"""A small blocking HTTP client for the devlab agent's v1 API (``devlab agent``).

It runs inside a device worker thread, so it is plain ``http.client``: no event loop, no extra
dependency on the console side. Failures come in two kinds the caller treats differently:
:class:`AgentUnreachable` (connection refused or reset, timeouts, 502/503/504: worth a retry
with backoff) and :class:`AgentRefused` (the agent answered with a 4xx: retrying cannot help).
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TRANSIENT_STATUS = (502, 503, 504)


class AgentUnreachable(ConnectionError):
    """The agent did not answer (worth retrying: it may be restarting or the link flapped)."""


class AgentRefused(Exception):
    """The agent answered with an error that retrying cannot fix (bad token, bad input...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event; ``kind`` is ``ping`` for the keep-alive comments."""

    kind: str
    data: dict[str, Any]


def normalise_url(url: str) -> str:
    """``http://host:port`` without a trailing slash or path: the stable part of a device id."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"not an agent URL: {url!r} (expected http://HOST:PORT)")
    return f"{parsed.scheme}://{parsed.netloc}"


class AgentClient:
    """Requests to one agent, each on its own connection (the agent may restart at any time)."""

    def __init__(self, url: str, token: str, timeout_s: float = 5.0) -> None:
        self.url = normalise_url(url)
        self._token = token
        self.timeout_s = timeout_s
        parsed = urllib.parse.urlsplit(self.url)
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (443 if self._https else 80)

    # -- the API ----------------------------------------------------------------------------

    def info(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self._json("GET", "/v1/info", timeout_s=timeout_s)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{_quote(job_id)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/jobs/{_quote(job_id)}")

    def submit(self, model_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
        """Upload the model with its settings; the agent answers with the job (new or reused)."""
        boundary = "devlab-" + secrets.token_hex(12)
        body = _multipart(
            boundary,
            [
                ("settings", "settings.json", "application/json", json.dumps(settings).encode()),
                ("model", model_path.name, "application/octet-stream", model_path.read_bytes()),
            ],
        )
        return self._json(
            "POST",
            "/v1/jobs",
            body=body,
            content_type=f"multipart/form-data; boundary={boundary}",
            timeout_s=max(self.timeout_s, 60.0),  # a big model takes a while to upload
        )

    def events(self, job_id: str, read_timeout_s: float = 5.0) -> Iterator[SseEvent]:
        """The job's event stream until the agent closes it. A silent link (no event and no
        ping within ``read_timeout_s``) raises AgentUnreachable, as does a broken one."""
        yield from self._stream(f"/v1/jobs/{_quote(job_id)}/events", read_timeout_s)

    def power_stream(self, read_timeout_s: float = 5.0) -> Iterator[SseEvent]:
        """The board's rails live (``GET /v1/power/stream``, an agent with ``--tegrastats``):
        ``samples`` events until the agent ends the stream; failures as for :meth:`events`."""
        yield from self._stream("/v1/power/stream", read_timeout_s)

    def _stream(self, path: str, read_timeout_s: float) -> Iterator[SseEvent]:
        connection = self._connection(read_timeout_s)
        try:
            try:
                connection.request(
                    "GET", path, headers=self._headers({"Accept": "text/event-stream"})
                )
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                raise AgentUnreachable(f"{self.url}: {_describe(error)}") from error
            if response.status != 200:
                _raise_for(response.status, response.read(), self.url)
            yield from _read_events(response, self.url)
        finally:
            connection.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", **(extra or {})}

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout_s)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)

    def _json(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        headers = self._headers({"Accept": "application/json"})
        if content_type:
            headers["Content-Type"] = content_type
        connection = self._connection(timeout_s or self.timeout_s)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise AgentUnreachable(f"{self.url}: {_describe(error)}") from error
        finally:
            connection.close()
        if response.status >= 300:
            _raise_for(response.status, payload, self.url)
        try:
            data = json.loads(payload)
        except ValueError as error:
            raise AgentUnreachable(f"{self.url}: the answer is not JSON") from error
        if not isinstance(data, dict):
            raise AgentUnreachable(f"{self.url}: unexpected answer {str(data)[:80]}")
        return data


def with_retries(
    call: Callable[[], T],
    budget_s: float,
    between: Callable[[], None] = lambda: None,
    first_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
) -> T:
    """``call()``, retried with exponential backoff while it raises AgentUnreachable and the
    time budget lasts. ``between`` runs before each wait (it may raise to abandon)."""
    deadline = time.monotonic() + budget_s
    delay = first_delay_s
    while True:
        try:
            return call()
        except AgentUnreachable:
            if time.monotonic() + delay > deadline:
                raise
        between()
        time.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def _read_events(response: http.client.HTTPResponse, url: str) -> Iterator[SseEvent]:
    """Parse ``text/event-stream``: ``event:`` and ``data:`` lines, a blank line ends one."""
    kind, data_lines = "message", []
    while True:
        try:
            raw = response.readline()
        except (OSError, http.client.HTTPException) as error:
            raise AgentUnreachable(f"{url}: event stream: {_describe(error)}") from error
        if not raw:
            return  # the agent closed the stream
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith(":"):
            yield SseEvent("ping", {})
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data_lines.append(line[5:].strip())
        elif not line and data_lines:
            try:
                data = json.loads("\n".join(data_lines))
            except ValueError:
                data = {}
            yield SseEvent(kind, data if isinstance(data, dict) else {})
            kind, data_lines = "message", []


def _raise_for(status: int, payload: bytes, url: str) -> None:
    try:
        message = str(json.loads(payload).get("error", ""))
    except (ValueError, AttributeError):
        message = payload[:200].decode("utf-8", "replace")
    if status in TRANSIENT_STATUS:
        raise AgentUnreachable(f"{url}: HTTP {status} {message}".rstrip())
    raise AgentRefused(status, message or http.client.responses.get(status, "error"))


def _multipart(boundary: str, parts: list[tuple[str, str, str, bytes]]) -> bytes:
    chunks: list[bytes] = []
    for name, filename, content_type, payload in parts:
        safe_filename = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks.append(
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{name}"; filename="{safe_filename}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
        )
        chunks.append(payload)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def _quote(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "no answer (timed out)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the agent running?)"
    return str(error) or type(error).__name__
