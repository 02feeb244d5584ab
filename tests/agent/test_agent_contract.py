"""The agent keeps the contract its OpenAPI document states: schemathesis (examples, coverage,
fuzzing and stateful phases; seeded, a few examples per operation, a time cap) against a real
agent on 127.0.0.1, with and without the token. Any 5xx, any response that the document does
not describe (status, headers, body, each event of the event stream) or any request the
document allows that the agent refuses fails the test. The long run is tests/perf/agent_fuzz.py.

A check that cannot fail proves nothing, so two deliberately wrong documents must fail the run:
one whose job events promise a field the agent never sends, and the document before issue 21,
which declared ``settings`` as any string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backends.agent.openapi import openapi_spec
from backends.agent.serve import AgentThread
from support.agent_fuzzing import FuzzRun, run_schemathesis
from support.agent_helpers import TOKEN, check_schema, make_config

SEED = 21


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    with AgentThread(make_config(tmp_path_factory.mktemp("contract") / "agent")) as running:
        yield running


def explain(run: FuzzRun) -> str:
    return f"exit {run.exit_code}, {run.failures} failure(s):\n{run.output[-6000:]}"


def test_schemathesis_finds_nothing_with_the_token(agent: AgentThread, tmp_path: Path) -> None:
    run = run_schemathesis(agent.url, TOKEN, tmp_path, seed=SEED, max_examples=8, max_time_s=20)
    assert run.ok, explain(run)
    assert run.cases > 100, explain(run)
    phases = run.report["phases"]
    assert all(phases[name]["status"] == "success" for name in phases), phases
    operations = run.report["operations"]
    assert operations["selected"] == 8 and operations["errored"] == 0, operations


def test_schemathesis_finds_nothing_without_the_token(agent: AgentThread, tmp_path: Path) -> None:
    run = run_schemathesis(
        agent.url,
        TOKEN,
        tmp_path,
        with_token=False,
        seed=SEED,
        max_examples=5,
        max_time_s=6,
        phases=("examples", "coverage", "fuzzing"),
    )
    assert run.ok, explain(run)
    assert run.cases > 20, explain(run)


def job_events_promise_an_eta(document: dict[str, Any]) -> None:
    """The job event's data schema requires a field the agent does not send."""
    events = document["paths"]["/v1/jobs/{id}/events"]["get"]["responses"]["200"]
    job_event = events["content"]["text/event-stream"]["itemSchema"]["oneOf"][0]
    job_event["properties"]["data"]["contentSchema"] = {
        "allOf": [{"$ref": "#/components/schemas/Job"}, {"required": ["eta_s"]}]
    }


def settings_as_any_string(document: dict[str, Any]) -> None:
    """The document before issue 21: ``settings`` as text, which the agent (rightly) refuses."""
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    body["schema"]["properties"]["settings"] = {"type": "string"}
    del body["encoding"]["settings"]


@pytest.mark.parametrize(
    ("alter", "code"),
    [(job_events_promise_an_eta, "ST108"), (settings_as_any_string, "ST202")],
    ids=["event-data-schema", "settings-as-string"],
)
def test_a_wrong_document_fails_the_run(
    agent: AgentThread, tmp_path: Path, alter: Any, code: str
) -> None:
    run = run_schemathesis(
        agent.url,
        TOKEN,
        tmp_path,
        seed=SEED,
        max_examples=8,
        max_time_s=15,
        phases=("fuzzing", "stateful"),
        alter=alter,
        max_failures=1,
    )
    assert not run.ok and run.exit_code != 0, explain(run)
    assert code in run.output, explain(run)


def test_every_example_in_the_document_matches_its_schema() -> None:
    """The examples schemathesis sends first, and the docs show, are true to the schemas."""
    spec = openapi_spec(["onnxruntime", "xdputil", "trtexec"])  # the examples' runners
    seen = 0
    for item in spec["paths"].values():
        for parameter in item.get("parameters", []):
            for example in parameter.get("examples", {}).values():
                check_schema(example["value"], parameter["schema"], spec)
                seen += 1
        for key, operation in item.items():
            if key == "parameters":
                continue
            for media in operation.get("requestBody", {}).get("content", {}).values():
                for example in media.get("examples", {}).values():
                    check_schema(example["value"], media["schema"], spec)
                    seen += 1
            for response in operation["responses"].values():
                for media in response.get("content", {}).values():
                    if "example" in media:
                        check_schema(media["example"], media["schema"], spec)
                        seen += 1
    assert seen >= 20
