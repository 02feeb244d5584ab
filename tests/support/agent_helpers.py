"""Shared helpers for the agent tests: a real agent on 127.0.0.1 (AgentThread), a small
blocking HTTP client (``http.client``, no mocking of the HTTP layer), hand-built multipart
bodies, an SSE reader, checks against the OpenAPI document and stand-in tool scripts.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs

from backends.agent.config import AgentConfig
from backends.agent.openapi import openapi_spec
from backends.agent.runners import OnnxRuntimeRunner, Runner
from support.helpers import bench_output
from support.waiting import wait_until

TOKEN = "test-token-0123456789"
REPO_ROOT = Path(__file__).resolve().parents[2]
MLP = REPO_ROOT / "assets" / "models" / "mlp.onnx"
TERMINAL = ("done", "failed", "cancelled")


def make_config(workdir: Path, runners: dict[str, Runner] | None = None, **options: Any):
    return AgentConfig(
        token=TOKEN,
        workdir=workdir,
        board="test-board",
        runners=runners or {"onnxruntime": OnnxRuntimeRunner()},
        **options,
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    data: Any = field(default=None)


def split_url(url: str) -> tuple[str, int]:
    match = re.fullmatch(r"http://([^:/]+):(\d+)", url)
    assert match, url
    return match.group(1), int(match.group(2))


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
    timeout: float = 30.0,
) -> Reply:
    host, port = split_url(url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    all_headers = dict(headers or {})
    if token is not None:
        all_headers.setdefault("Authorization", f"Bearer {token}")
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        payload = response.read()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
    finally:
        connection.close()
    if payload and reply.headers.get("content-type", "").startswith("application/json"):
        reply.data = json.loads(payload)
    return reply


def multipart(
    parts: list[tuple[str, str | None, bytes]], boundary: str = "devlabTestBoundary7f3a"
) -> tuple[bytes, str]:
    """``(name, filename or None, payload)`` parts → (body, content type)."""
    chunks = []
    for name, filename, payload in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        chunks += [payload, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def submit(
    url: str,
    settings: dict[str, Any] | str | None = None,
    model: bytes | None = None,
    filename: str = "mlp.onnx",
    token: str | None = TOKEN,
) -> Reply:
    parts: list[tuple[str, str | None, bytes]] = [
        ("model", filename, MLP.read_bytes() if model is None else model)
    ]
    if settings is not None:
        text = settings if isinstance(settings, str) else json.dumps(settings)
        parts.append(("settings", None, text.encode()))
    body, content_type = multipart(parts)
    return request(url, "POST", "/v1/jobs", body, {"Content-Type": content_type}, token)


def job(url: str, job_id: str) -> dict[str, Any]:
    reply = request(url, "GET", f"/v1/jobs/{job_id}")
    assert reply.status == 200, reply
    return reply.data


def wait_for(url: str, job_id: str, states: tuple[str, ...], timeout: float = 30.0) -> dict:
    """The job's view once it is in one of ``states``; a timeout names the state it is stuck in."""
    try:
        return wait_until(
            lambda: (view := job(url, job_id))["state"] in states and view,
            timeout,
            what=f"job {job_id} to reach {'/'.join(states)}",
        )
    except AssertionError as error:
        view = job(url, job_id)
        raise AssertionError(f"job {job_id} stuck in {view['state']}: {view}") from error


def events(url: str, job_id: str, timeout: float = 30.0) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` pairs of the job's SSE stream; pings as ``("ping", None)``."""
    host, port = split_url(url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        event, data = "message", None
        while raw := response.readline():
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                yield "ping", None
            elif line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
            elif not line and data is not None:
                yield event, data
                event, data = "message", None
    finally:
        connection.close()


def raw_http(url: str, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw request bytes; (status, body) of the answer (the server closes after it)."""
    host, port = split_url(url)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
    assert match, f"no HTTP status line in {received[:200]!r}"
    return int(match.group(1)), body


# ---------------------------------------------------------------------------- OpenAPI check

SPEC = openapi_spec(["onnxruntime"])  # what an agent with the onnxruntime runner serves


def check_schema(value: Any, schema: dict[str, Any], spec: dict[str, Any] | None = None) -> None:
    """Assert ``value`` matches ``schema`` of the document (JSON Schema 2020-12, OpenAPI 3.2's
    dialect; ``$ref`` resolved within the document)."""
    document = spec or SPEC
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(value)]
    assert not errors, "schema violation:\n" + "\n".join(errors[:5])


def check_events(pairs: list[tuple[str, Any]], spec: dict[str, Any] | None = None) -> None:
    """Assert each ``(event, data)`` of a stream is one the document's ``itemSchema`` allows."""
    document = spec or SPEC
    operation = document["paths"]["/v1/jobs/{id}/events"]["get"]
    kinds = operation["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]["oneOf"]
    by_name = {kind["properties"]["event"]["const"]: kind for kind in kinds}
    for name, data in pairs:
        if name == "ping":
            continue
        assert name in by_name, f"event {name!r} is not documented"
        check_schema(data, by_name[name]["properties"]["data"]["contentSchema"], document)


def check_response(path: str, method: str, reply: Reply) -> None:
    """Assert ``reply`` is a response the spec documents for ``method path`` (a template)."""
    operation = SPEC["paths"][path][method.lower()]
    documented = operation["responses"].get(str(reply.status))
    assert documented, f"{method} {path}: status {reply.status} is not documented"
    content = documented.get("content", {})
    if "application/json" in content:
        assert reply.data is not None, f"{method} {path}: not JSON: {reply.body[:200]!r}"
        check_schema(reply.data, content["application/json"]["schema"])


# ---------------------------------------------------------------------------- stand-in tools

GLOG = re.compile(r"^(?:[IWEF]\d{4} |WARNING: Logging before|\*\*\* |/usr/bin/)")
PROMPT = re.compile(r"^(?:\S+@\S+[#$]|[%$]) ")


def standin_script(
    path: Path,
    fixture: str,
    exit_code: int = 0,
    delay_s: float = 0.02,
    pid_file: Path | None = None,
    hang_s: float = 0.0,
    argv_file: Path | None = None,
) -> Path:
    """A Python script at ``path`` that replays a fixture like the real tool: glog lines to
    stderr, the rest to stdout, a pause after each progress line, then ``exit_code``."""
    lines = [line for line in bench_output(fixture).splitlines() if not PROMPT.match(line)]
    script = f"""#!{sys.executable}
import os, re, sys, time
LINES = {lines!r}
GLOG = re.compile({GLOG.pattern!r})
PID_FILE = {str(pid_file) if pid_file else None!r}
ARGV_FILE = {str(argv_file) if argv_file else None!r}
if ARGV_FILE:
    with open(ARGV_FILE, "w") as handle:
        handle.write(repr(sys.argv[1:]))
if PID_FILE:
    with open(PID_FILE, "w") as handle:
        handle.write(str(os.getpid()))
for line in LINES:
    stream = sys.stderr if GLOG.match(line) else sys.stdout
    print(line, file=stream, flush=True)
    if "% ..." in line or "waiting for" in line:
        time.sleep({delay_s!r})
        if {hang_s!r}:
            time.sleep({hang_s!r})
sys.exit({exit_code})
"""
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
