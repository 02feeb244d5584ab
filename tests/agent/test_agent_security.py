"""The agent's defences: the token on every route, upload limits, file names that never become
paths, strict settings, and a property-based run that throws random requests at a real server
and checks that nothing ends in a 5xx or a traceback.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.agent.jobs import JobQueue
from backends.agent.runners import OnnxRuntimeRunner
from backends.agent.serve import AgentThread
from backends.agent.upload import display_name
from support.agent_helpers import (
    TOKEN,
    check_response,
    make_config,
    multipart,
    raw_http,
    request,
    split_url,
    submit,
    wait_for,
)
from support.helpers import make_mlp

ROUTES = [
    ("GET", "/v1/info"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/0123456789abcdef"),
    ("DELETE", "/v1/jobs/0123456789abcdef"),
    ("GET", "/v1/jobs/0123456789abcdef/events"),
    ("GET", "/no/such/route"),
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("secure") / "agent"
    config = make_config(workdir, max_upload_bytes=4096, keep_models=True)
    with AgentThread(config) as running:
        yield running


def job_folders(agent: AgentThread) -> set[str]:
    return {p.name for p in (agent.config.workdir / "jobs").iterdir()}


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"bearer {TOKEN}x"]
)
def test_every_route_needs_the_token(
    agent: AgentThread, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    reply = request(agent.url, method, path, b"" if method == "POST" else None, headers, None)
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert set(reply.data) == {"error"}
    if path != "/no/such/route":
        check_response(path.replace("0123456789abcdef", "{id}"), method, reply)


def test_scheme_is_case_insensitive(agent: AgentThread) -> None:
    reply = request(agent.url, "GET", "/v1/info", headers={"Authorization": f"bearer {TOKEN}"})
    assert reply.status == 200


def test_oversized_upload_is_413_and_leaves_nothing(agent: AgentThread) -> None:
    before = job_folders(agent)
    # streamed and counted (Content-Length within the slack for the other parts)
    reply = submit(agent.url, {"rounds": [1]}, model=b"x" * 5000)
    assert reply.status == 413 and "4096 bytes" in reply.data["error"]
    check_response("/v1/jobs", "POST", reply)
    assert job_folders(agent) == before

    # refused up front from Content-Length, before any body is sent
    host, port = split_url(agent.url)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest("POST", "/v1/jobs")
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Content-Type", "multipart/form-data; boundary=b")
    connection.putheader("Content-Length", str(10 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    connection.close()

    # chunked, no Content-Length at all: counted while streaming
    body, content_type = multipart([("model", "big.onnx", b"y" * 10_000)])
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request(
        "POST",
        "/v1/jobs",
        body=iter([body[:3000], body[3000:]]),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 413
    connection.close()
    assert job_folders(agent) == before


@pytest.mark.parametrize(
    ("filename", "shown", "stored"),
    [
        ("../../etc/passwd", "passwd", "model.bin"),
        ("/abs/x.onnx", "x.onnx", "model.onnx"),
        ("..\\..\\x", "x", "model.bin"),
        (".hidden.xmodel", "hidden.xmodel", "model.xmodel"),
        ("..", "model", "model.bin"),
        ("a b;$(rm -rf).ONNX", "a_b___rm_-rf_.ONNX", "model.onnx"),
        ("é" * 300 + ".onnx", "_" * 95 + ".onnx", "model.onnx"),
        ("m" * 5000 + ".onnx", "m" * 95 + ".onnx", "model.onnx"),
        ("m" * 5000 + ".XModel", "m" * 93 + ".XModel", "model.xmodel"),
    ],
)
def test_file_names_never_become_paths(
    agent: AgentThread, filename: str, shown: str, stored: str
) -> None:
    reply = submit(agent.url, {"rounds": [1], "warmup": 0}, model=b"data", filename=filename)
    assert reply.status == 201, reply.data
    folder = agent.config.workdir / "jobs" / reply.data["id"]
    assert reply.data["model"]["name"] == shown
    assert reply.data["model"]["bytes"] == 4
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        ["job.json", stored]
    )
    assert (folder / stored).read_bytes() == b"data"
    assert folder.stat().st_mode & 0o777 == 0o700
    wait_for(agent.url, reply.data["id"], ("failed",))
    # nothing was written outside the agent's workdir
    root = agent.config.workdir.parent
    outside = [p for p in root.rglob("*") if agent.config.workdir not in (p, *p.parents)]
    assert outside == []


def test_display_name_rules() -> None:
    assert display_name(None) == "model"
    assert display_name("...onnx") == "onnx"
    assert len(display_name("a" * 500)) == 100
    assert display_name("a" * 500 + ".onnx") == "a" * 95 + ".onnx"
    assert display_name("a" * 500 + "." + "b" * 30) == ("a" * 500 + ".")[:100]
    assert set(display_name("".join(map(chr, range(32, 500))))) <= set(
        string.ascii_letters + string.digits + "._-"
    )


@pytest.mark.parametrize(
    ("settings_text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "the 'settings' part is empty"),
        (" \n", "the 'settings' part is empty"),
        ("[1, 2]", "must be a JSON object"),
        ('{"warmup": NaN}', "not valid JSON"),
        ('{"runs": 5, "per_layer": true}', "unknown settings field(s): 'per_layer', 'runs'"),
        ('{"runner": "tflite"}', "settings.runner must be one of"),
        ('{"runner": 5}', "settings.runner"),
        ('{"warmup": "10"}', "settings.warmup must be an integer"),
        ('{"warmup": 1.5}', "settings.warmup must be an integer"),
        ('{"warmup": true}', "settings.warmup must be an integer"),
        ('{"warmup": -1}', "settings.warmup must be between 0 and 100000"),
        ('{"rounds": 50}', "settings.rounds must be a list"),
        ('{"rounds": []}', "settings.rounds must hold 1 to 1000"),
        ('{"rounds": [10, 0]}', "settings.rounds[1] must be between 1 and 1000000"),
        ('{"rounds": [1e3]}', "settings.rounds[0] must be an integer"),
        ('{"rounds": [' + "1," * 1000 + "1]}", "settings.rounds must hold 1 to 1000"),
        ('{"threads": 0}', "settings.threads must be between 1 and 256"),
        ('{"threads": 99999999999999999999999999999999999}', "settings.threads"),
        ('{"seconds": 0}', "settings.seconds must be > 0"),
        ('{"seconds": "5"}', "settings.seconds must be a number"),
        ('{"seconds": 1e999}', "settings.seconds"),
        ('{"client_key": "has space"}', "settings.client_key"),
        ('{"client_key": "' + "k" * 129 + '"}', "settings.client_key"),
        ('{"client_key": "ok\\n"}', "settings.client_key"),
        ('{"client_key": 7}', "settings.client_key"),
    ],
)
def test_bad_settings_are_400_naming_the_field(
    agent: AgentThread, settings_text: str, message: str
) -> None:
    before = job_folders(agent)
    reply = submit(agent.url, settings_text, model=b"tiny")
    assert reply.status == 400, reply.data
    assert message in reply.data["error"]
    check_response("/v1/jobs", "POST", reply)
    assert job_folders(agent) == before


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b'{"rounds": [5]}', "application/json", 415, "multipart/form-data"),
        (b"", None, 415, "multipart/form-data"),
        (
            multipart([("settings", None, b"{}")])[0],
            "multipart/form-data; boundary=devlabTestBoundary7f3a",
            400,
            "'model' part",
        ),
        (
            multipart([("model", "m.onnx", b"")])[0],
            "multipart/form-data; boundary=devlabTestBoundary7f3a",
            400,
            "is empty",
        ),
        (
            multipart([("model", "a", b"1"), ("model", "b", b"2")])[0],
            "multipart/form-data; boundary=devlabTestBoundary7f3a",
            400,
            "exactly one",
        ),
        (
            multipart([("model", "a", b"1"), ("evil", None, b"2")])[0],
            "multipart/form-data; boundary=devlabTestBoundary7f3a",
            400,
            "unknown part",
        ),
        (
            multipart([("settings", None, b"\xff\xfe")])[0],
            "multipart/form-data; boundary=devlabTestBoundary7f3a",
            400,
            "not UTF-8",
        ),
        (b"garbage without boundaries", "multipart/form-data; boundary=zzz", 400, ""),
        (b"--x\r\n", "multipart/form-data", 400, ""),
    ],
)
def test_bad_bodies(
    agent: AgentThread, body: bytes, content_type: str | None, status: int, message: str
) -> None:
    before = job_folders(agent)
    headers = {"Content-Type": content_type} if content_type else {}
    reply = request(agent.url, "POST", "/v1/jobs", body, headers)
    assert reply.status == status, reply.data
    assert message in reply.data["error"]
    assert job_folders(agent) == before


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/0123456789abcdef",
        "/v1/jobs/ABCDEF0123456789",
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/v1/jobs/0123456789abcdef0",
        "/v1/jobs/%00",
        "/v1/jobs/0123456789abcdef/events",
    ],
)
def test_unknown_or_malformed_ids_are_404(agent: AgentThread, path: str) -> None:
    for method in ("GET", "DELETE") if not path.endswith("events") else ("GET",):
        reply = request(agent.url, method, path)
        assert reply.status == 404, (method, path, reply)
        assert reply.data == {"error": "no such job on this agent"}


def test_wrong_method_is_json_405(agent: AgentThread) -> None:
    reply = request(agent.url, "PUT", "/v1/info")
    assert reply.status == 405 and "error" in reply.data


def test_default_bind_is_loopback(tmp_path: Path) -> None:
    with AgentThread(make_config(tmp_path / "a")) as agent:
        assert agent.url.startswith("http://127.0.0.1:")
    from console.cli.agent import build_agent_parser

    assert build_agent_parser().parse_args(["--runner", "x", "--token-file", "t"]).host == (
        "127.0.0.1"
    )


# ------------------------------------------------------------------------------ fuzzing

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
SETTINGS_KEYS = ["runner", "warmup", "rounds", "threads", "seconds", "client_key", "other"]
SETTINGS = st.one_of(
    st.dictionaries(st.sampled_from(SETTINGS_KEYS), JSON, max_size=6).map(json.dumps),
    JSON.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=60),
)
TOKEN_HEADER = f"Authorization: Bearer {TOKEN}\r\n".encode()
HEADER_TEXT = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
PATHS = st.one_of(
    st.sampled_from(["/v1/info", "/v1/jobs", "/v1/openapi.json", "/v1/jobs/", "/v1//jobs"]),
    st.builds(lambda s: "/v1/jobs/" + s, st.text(string.hexdigits + "./%", max_size=20)),
    st.builds(lambda s: "/v1/jobs/" + s + "/events", st.text(string.hexdigits, max_size=17)),
    st.text(string.printable.strip(), min_size=1, max_size=30).map(lambda s: "/" + s),
)
METHODS = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "FOO"])


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    boundary = draw(st.text(string.ascii_letters + string.digits + "-'", min_size=1, max_size=30))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["model", "settings", "x", ""]))
        filename = draw(st.one_of(st.none(), st.text(max_size=30)))
        payload = draw(st.one_of(SETTINGS.map(str.encode), st.binary(max_size=300)))
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode(
                "utf-8", "surrogateescape"
            )
            + payload
            + b"\r\n"
        )
    body = b"".join(parts)
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n".encode()
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, max(len(body), 0)))]
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/mixed; boundary=" + boundary,
                "text/plain",
            ]
        )
    )
    return body, content_type.encode()


def send(agent: AgentThread, method: str, path: str, headers: bytes, body: bytes) -> None:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
        + headers
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    status, reply = raw_http(agent.url, head + body)
    assert status < 500, (status, reply[:300])
    assert b"Traceback" not in reply and b'File "' not in reply


@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
@settings(
    max_examples=150,
    database=None,  # no .hypothesis folder in the repository
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=multipart_bodies(), settings_text=SETTINGS, with_token=st.booleans())
def test_fuzz_job_submissions(
    agent: AgentThread, body: tuple[bytes, bytes], settings_text: str, with_token: bool
) -> None:
    payload, content_type = body
    headers = b"Content-Type: " + content_type + b"\r\n"
    if with_token:
        headers += TOKEN_HEADER
    send(agent, "POST", "/v1/jobs", headers, payload)
    # the same settings in a well-formed body with a (non-model) file
    parts, ctype = multipart(
        [("model", "m.onnx", os.urandom(8)), ("settings", None, settings_text.encode())]
    )
    send(agent, "POST", "/v1/jobs", TOKEN_HEADER + f"Content-Type: {ctype}\r\n".encode(), parts)


@settings(
    max_examples=150,
    database=None,  # no .hypothesis folder in the repository
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    method=METHODS,
    path=PATHS,
    extra=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    b"Authorization",
                    b"Content-Type",
                    b"Accept",
                    b"X-Any",
                    b"Transfer-Encoding",
                    b"Content-Encoding",
                    b"Range",
                    b"Cookie",
                ]
            ),
            HEADER_TEXT,
        ),
        max_size=3,
    ),
    with_token=st.booleans(),
    body=st.binary(max_size=200),
)
def test_fuzz_routes_methods_headers(
    agent: AgentThread, method: str, path: str, extra: list, with_token: bool, body: bytes
) -> None:
    headers = TOKEN_HEADER if with_token else b""
    for name, value in extra:
        if name == b"Transfer-Encoding":
            continue  # conflicts with the Content-Length sent: a 400 either way, not interesting
        headers += name + b": " + value + b"\r\n"
    send(agent, method, path, headers, body)


def test_fuzzed_agent_still_serves(agent: AgentThread, tmp_path: Path) -> None:
    """After everything above, the agent still runs a real job (a model under 4 KiB)."""
    model = make_mlp(tmp_path / "tiny.onnx", hidden=4, in_features=8).read_bytes()
    assert len(model) < 4096
    reply = submit(agent.url, {"rounds": [3], "warmup": 0}, model=model)
    assert reply.status == 201
    assert wait_for(agent.url, reply.data["id"], ("done",), timeout=60)["state"] == "done"


class CrashingRunner(OnnxRuntimeRunner):
    name = "crashing"

    def run(self, model_path, settings, progress, cancel):
        raise RuntimeError("secret internal detail")


def test_unexpected_errors_are_500_without_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path / "agent", {"crashing": CrashingRunner()})
    with AgentThread(config) as agent:
        # a runner bug fails its job, with the type but no details, and the queue goes on
        first = submit(agent.url, {"rounds": [1]}, model=b"m").data
        failed = wait_for(agent.url, first["id"], ("failed",))
        assert failed["error"] == "the crashing runner failed unexpectedly: RuntimeError"
        second = submit(agent.url, {"rounds": [1]}, model=b"m").data
        assert wait_for(agent.url, second["id"], ("failed",))["state"] == "failed"

        # a handler bug: 500 {"error": "internal error"}, the traceback only in the log
        def boom(self, job):
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(JobQueue, "view", boom)
        reply = request(agent.url, "GET", "/v1/jobs")
        assert reply.status == 500
        assert reply.data == {"error": "internal error"}
        assert b"secret" not in reply.body and b"Traceback" not in reply.body
        assert "secret internal detail" in caplog.text
        monkeypatch.undo()
        assert request(agent.url, "GET", "/v1/jobs").status == 200


def test_head_is_not_served(agent: AgentThread) -> None:
    for path in ("/v1/info", "/v1/jobs/0123456789abcdef/events"):
        assert request(agent.url, "HEAD", path).status == 405


def test_malformed_requests_are_a_warning_without_a_traceback(
    agent: AgentThread, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL byte in a header is the client's mistake: 400, one WARNING line, no traceback."""
    caplog.set_level(logging.DEBUG)
    head = (
        f"GET /v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{TOKEN_HEADER.decode()}"
    )
    status, _ = raw_http(agent.url, head.encode() + b"X-Probe: a\x00b\r\n\r\n")
    assert status == 400
    refused = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.WARNING], caplog.text
    assert not any(r.levelno >= logging.ERROR or r.exc_info for r in caplog.records), caplog.text
    assert "a\x00b" not in caplog.text and "Traceback" not in caplog.text
    assert request(agent.url, "GET", "/v1/info").status == 200
