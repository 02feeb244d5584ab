"""schemathesis against a real agent: the document the agent serves, checked against what it does.

One function, ``run_schemathesis``, used by the bounded run in ``make test``
(tests/agent/test_agent_contract.py) and the long one (tests/perf/agent_fuzz.py). It runs the
schemathesis CLI (a subprocess: its own event loop, its own HTTP client) on the document the
agent serves (fetched with the token and written to a file, so a run without the token, or with
a deliberately altered document, reads it too) and reads the counts from its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# DELETE /v1/jobs/{id} cancels; the job stays readable (as cancelled), which the document says.
# schemathesis's use_after_free check expects a 404 after any DELETE, so it does not apply.
EXCLUDED_CHECKS = ("use_after_free",)
PHASES = ("examples", "coverage", "fuzzing", "stateful")
SERVER_ERROR_CODE = "ST101"
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")  # why: see that module


@dataclass
class FuzzRun:
    """What one schemathesis run found. ``failures`` counts unique failures, every kind."""

    version: str
    exit_code: int
    cases: int
    failures: int
    server_errors: int
    errors: int
    stop_reason: str
    report: dict[str, Any]
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.failures or self.server_errors or self.errors)


def served_document(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url + "/v1/openapi.json", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def run_schemathesis(
    url: str,
    token: str,
    work: Path,
    *,
    with_token: bool = True,
    seed: int = 1,
    max_examples: int = 10,
    max_time_s: float = 20.0,
    phases: tuple[str, ...] = PHASES,
    alter: Callable[[dict[str, Any]], None] | None = None,
    max_failures: int | None = None,
    timeout_s: float | None = None,
) -> FuzzRun:
    """Run ``schemathesis run`` on the agent at ``url``; ``alter`` may change the document
    first (to show that a wrong document fails the run)."""
    work.mkdir(parents=True, exist_ok=True)
    document = served_document(url, token)
    if alter is not None:
        alter(document)
    schema_file = work / "openapi.json"
    schema_file.write_text(json.dumps(document), encoding="utf-8")
    report_file = work / "schemathesis-report.json"
    report_file.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        str(schema_file),
        "--url",
        url,
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        "--phases",
        ",".join(phases),
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--max-time",
        str(max(1, round(max_time_s))),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report_file),
        "--no-color",
    ]
    if max_failures is not None:
        command += ["--max-failures", str(max_failures)]
    if with_token:
        command[3:3] = ["--header", f"Authorization: Bearer {token}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOKS.parent), env.get("PYTHONPATH")]))
    done = subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s or max_time_s * 2 + 60,
    )
    output = done.stdout + done.stderr
    if not report_file.is_file():
        raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}):\n{output}")
    report = json.loads(report_file.read_text(encoding="utf-8"))
    failures = report.get("failures") or []
    return FuzzRun(
        version=report.get("schemathesis_version", "?"),
        exit_code=done.returncode,
        cases=int(report["test_cases"]["generated"]),
        failures=len(failures),
        server_errors=sum(1 for failure in failures if _is_server_error(failure)),
        errors=len(report.get("errors") or []),
        stop_reason=str(report.get("stop_reason")),
        report=report,
        output=output,
    )


def _is_server_error(failure: Any) -> bool:
    text = json.dumps(failure)
    return SERVER_ERROR_CODE in text or "Server error" in text
