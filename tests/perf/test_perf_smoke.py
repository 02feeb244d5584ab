"""Every benchmark script of tests/perf runs with ``--smoke`` and ends with a well-formed RESULT.

The scripts print figures and are not timed asserts; what this checks is that none of them rots:
each one runs end to end with tiny arguments, exits 0 and makes its last stdout line
``RESULT key=value ...`` with values that are finite numbers or simple tokens. A script added
to the folder is picked up by the glob.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("test_"))
RESULT_LINE = re.compile(r"^RESULT( [A-Za-z_][A-Za-z0-9_]*=\S+)+$")
TOKEN = re.compile(r"^[A-Za-z0-9_.:/+-]+$")
TIMEOUT_S = 300.0
TAIL_LINES = 40


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def check_result_line(line: str) -> dict[str, str]:
    """The RESULT line's pairs; AssertionError when it is malformed or carries a non-finite
    number (a nan means the script measured nothing)."""
    assert RESULT_LINE.match(line), f"malformed RESULT line: {line!r}"
    pairs = dict(item.split("=", 1) for item in line.split()[1:])
    for key, value in pairs.items():
        try:
            number = float(value)
        except ValueError:
            assert TOKEN.match(value), f"{key}={value!r} is neither a number nor a simple token"
        else:
            assert math.isfinite(number), f"{key}={value} is not a finite number"
    return pairs


def run_smoke(script: Path, timeout_s: float = TIMEOUT_S) -> dict[str, str]:
    """Run ``script --smoke``; its RESULT pairs, or a failure that shows the output's tails."""
    # its own session, so a timeout ends the script's children too (cluster_dispatch's workers)
    with subprocess.Popen(
        [sys.executable, str(script), "--smoke"],
        cwd=HERE.parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(
                f"{script.name} --smoke did not finish in {timeout_s:g} s\n"
                + tails(stdout, stderr),
                pytrace=False,
            )
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    output = tails(done.stdout, done.stderr)
    if done.returncode != 0:
        pytest.fail(f"{script.name} --smoke exited {done.returncode}\n{output}", pytrace=False)
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    try:
        assert lines, "no output on stdout"
        return check_result_line(lines[-1])
    except AssertionError as error:
        pytest.fail(f"{script.name} --smoke: {error}\n{output}", pytrace=False)


def tails(stdout: str, stderr: str) -> str:
    return f"--- stdout (tail)\n{tail(stdout)}\n--- stderr (tail)\n{tail(stderr)}"


@pytest.mark.perf
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_perf_script_runs_in_smoke_mode_and_ends_with_a_result_line(script: Path) -> None:
    run_smoke(script)


def test_every_perf_script_has_a_smoke_mode() -> None:
    assert SCRIPTS, "no perf scripts found"
    missing = [p.name for p in SCRIPTS if "--smoke" not in p.read_text()]
    assert not missing, f"perf scripts without --smoke: {missing}"


@pytest.mark.parametrize(
    "body",
    [
        "raise RuntimeError('boom')",
        "print('RESULT x=1'); sys.exit(3)",
        "print('figures only')",
        "print('RESULT x=1'); print('trailing chatter')",
        "print('RESULT x=nan y=2')",
        "print('RESULT x=')",
        "print('RESULT')",
        "print('RESULT x=a,b')",
    ],
    ids=["crash", "exit-code", "no-result", "not-last", "nan", "empty", "no-pairs", "odd-token"],
)
def test_the_smoke_check_fails_a_broken_script(tmp_path: Path, body: str) -> None:
    script = tmp_path / "broken.py"
    script.write_text(f"import sys\n# --smoke\n{body}\n")
    with pytest.raises(pytest.fail.Exception):
        run_smoke(script, timeout_s=60)


def test_the_smoke_check_passes_a_good_script(tmp_path: Path) -> None:
    script = tmp_path / "good.py"
    script.write_text("print('figure 1')\nprint('RESULT a=1.5 b=-2 mode=parquet')\nprint()\n")
    assert run_smoke(script, timeout_s=60) == {"a": "1.5", "b": "-2", "mode": "parquet"}


def test_the_smoke_check_ends_a_script_that_hangs_and_its_children(tmp_path: Path) -> None:
    script = tmp_path / "hangs.py"
    marker = tmp_path / "child-survived"
    child = f"import time; time.sleep(1.5); open({str(marker)!r}, 'w').close()"
    script.write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "print('RESULT x=1', flush=True)\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(pytest.fail.Exception, match="did not finish"):
        run_smoke(script, timeout_s=1)
    time.sleep(2.0)
    assert not marker.exists()
