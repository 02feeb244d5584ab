"""Does the agent keep its OpenAPI contract under a long schemathesis run? (target: failures=0,
server_errors=0)

Starts a real ``devlab agent`` process on 127.0.0.1 (onnxruntime runner), then runs schemathesis
on the document it serves: with the token (examples, coverage, fuzzing and stateful phases:
jobs are submitted, read, streamed and cancelled through the document's links) and without it
(every operation must answer a documented 401). Every check schemathesis has is on, except
use_after_free (a cancelled job stays readable, as documented). The agent's own log must stay
free of ERROR lines and tracebacks: a refused request is a WARNING, nothing more.

Prints each run's counts and failures and ends with
``RESULT cases=<n> failures=<n> server_errors=<n>`` (failures include server errors and the
agent's logged errors).
Usage: python tests/perf/agent_fuzz.py [--seed 1] [--max-examples 100] [--max-time 100]
       [--max-time-anonymous 30] [--smoke]
--smoke: 3 examples per operation, 8 s with the token and 4 s without (make test runs it so).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.agent_fixtures import TOKEN, start_agent  # noqa: E402
from support.agent_fuzzing import FuzzRun, run_schemathesis  # noqa: E402

SMOKE = {"max_examples": 3, "max_time": 8.0, "max_time_anonymous": 4.0}
LOG_TROUBLE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--max-time", type=float, default=100.0, help="seconds, with the token")
    parser.add_argument(
        "--max-time-anonymous", type=float, default=30.0, help="seconds, without the token"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds (make test)")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    return args


def show(name: str, run: FuzzRun) -> None:
    print(
        f"{name}: schemathesis {run.version}, exit {run.exit_code}, {run.cases} cases, "
        f"{run.failures} failures ({run.server_errors} server errors), {run.errors} errors, "
        f"stopped by {run.stop_reason}",
        flush=True,
    )
    for failure in run.report.get("failures") or []:
        print(f"  {failure.get('code')} {failure.get('title')}: {failure.get('operations')}")
    if not run.ok:
        print(run.output[-4000:], flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="devlab-agent-fuzz-") as scratch:
        home = Path(scratch)
        agent = start_agent(home / "home")
        try:
            runs = {
                "with token": run_schemathesis(
                    agent.url,
                    TOKEN,
                    home / "with-token",
                    seed=args.seed,
                    max_examples=args.max_examples,
                    max_time_s=args.max_time,
                ),
                "without token": run_schemathesis(
                    agent.url,
                    TOKEN,
                    home / "without-token",
                    with_token=False,
                    seed=args.seed,
                    max_examples=args.max_examples,
                    max_time_s=args.max_time_anonymous,
                    phases=("examples", "coverage", "fuzzing"),
                ),
            }
            alive = agent.proc.poll() is None and agent.request("/v1/info")["api"] == 1
        finally:
            agent.stop()
        trouble = [line for line in agent.log.read_text().splitlines() if LOG_TROUBLE.search(line)]
    for name, run in runs.items():
        show(name, run)
    if trouble:
        print(f"the agent logged {len(trouble)} error line(s):", *trouble[:20], sep="\n  ")
    if not alive:
        print("the agent did not survive the run")
    cases = sum(run.cases for run in runs.values())
    server_errors = sum(run.server_errors for run in runs.values())
    failures = sum(run.failures + run.errors for run in runs.values()) + len(trouble)
    failures += 0 if alive else 1
    print(f"RESULT cases={cases} failures={failures} server_errors={server_errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
