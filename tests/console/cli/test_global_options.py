"""Global options (``--config``, ``--out``, ``--json``, ``-v``) before or after a subcommand:
every ``devlab`` subcommand, both ways, the same outcome (exit code, stdout and stderr).

The subcommands are read from the dispatch in ``console/cli/main.py``, so a new one without a
probe here fails the walk instead of going unchecked.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from backends.agent.serve import AgentThread
from console.cli.global_options import GLOBAL, after_subcommand
from console.cli.main import main
from support.agent_fixtures import write_config
from support.agent_helpers import make_config
from support.helpers import REPO_ROOT, run_devlab

MAIN = REPO_ROOT / "console" / "cli" / "main.py"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "bench-output" / "tflite_benchmark_model_1.txt"
SPACE = REPO_ROOT / "assets" / "spaces" / "mobilenetv2_cifar10.json"

# One quick invocation per subcommand (real work where it is cheap; no server is started).
PROBES: dict[str, list[str]] = {
    "devices": ["devices"],
    "lab": ["lab"],
    "virtual lab": ["virtual", "lab", "--no-console", "--help"],
    "virtual": ["virtual", "phone", "--help"],
    "adb": ["adb", "stop"],
    "power": ["power"],
    "parse": ["parse", "tflite", str(FIXTURE)],
    "agent": ["agent", "--runner", "onnxruntime"],
    "space": ["space", "show", str(SPACE)],
    "estimator": ["estimator", "predict", "no-such-estimator.json", "--model", "m.onnx"],
    "scheduler": ["scheduler", "--help"],
    "worker": ["worker"],
    "quantize": ["quantize", "m.onnx"],
    "pipeline": ["pipeline", "m.onnx", "--calibration", "no-such-set", "--accuracy", "no-such"],
    "compare": ["compare", "no-such-a", "no-such-b"],
    "report": ["report", "no-such-results"],
}


def dispatched_subcommands() -> set[str]:
    """The first words main() dispatches on (``args[:1] == ["devices"]`` and the like)."""
    words: set[str] = set()
    for line in MAIN.read_text(encoding="utf-8").splitlines():
        if "args[:" in line and line.strip().startswith("if "):
            words.update(re.findall(r'\["([a-z-]+)"', line))
    return words


def outcome(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(argv)
    captured = capsys.readouterr()
    return code, out.getvalue() + captured.out, captured.err


@pytest.fixture
def quiet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user configuration, data or adb server of this machine's user in the way."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "9")  # discovery finds no phone, fast
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_dispatched_subcommand_has_a_probe() -> None:
    words = dispatched_subcommands()
    assert {"devices", "agent", "parse", "compare"} <= words  # the reader still works
    assert words <= {probe.split()[0] for probe in PROBES}, words - set(PROBES)


@pytest.mark.parametrize("subcommand", list(PROBES))
def test_global_options_before_or_after_every_subcommand(
    subcommand: str, quiet_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = quiet_home / "devlab.toml"
    config.write_text('[dpu]\n\n[[dpu.endpoints]]\nurl = "http://127.0.0.1:9"\n')
    probe = PROBES[subcommand]
    for option in (["--config", str(config)], ["--out", str(quiet_home / "out")], ["--json"]):
        before = outcome([*option, *probe], capsys)
        after = outcome([*probe, *option], capsys)
        assert before == after, f"devlab {option[0]} {subcommand}: {before} != {after}"
    for flag in ("-v", "--verbose"):
        assert outcome([flag, *probe], capsys) == outcome([*probe, flag], capsys)


def test_leading_global_options_move_behind_the_subcommand() -> None:
    assert after_subcommand(["--config", "F", "devices"]) == ["devices", "--config", "F"]
    assert after_subcommand(["--config=F", "--json", "devices", "--x"]) == [
        "devices",
        "--x",
        "--config=F",
        "--json",
    ]
    assert after_subcommand(["-v", "agent", "--runner", "r"]) == ["agent", "--runner", "r", "-v"]
    # no subcommand: the top-level parser takes them (--run, the console)
    for argv in (["--out", "D", "--run", "m.onnx"], ["--config", "F"], ["--json"], []):
        assert after_subcommand(argv) == argv
    # a value that looks like a subcommand is still the option's value
    assert after_subcommand(["--out", "devices", "devices"]) == ["devices", "--out", "devices"]
    # a missing value or a flag given a value is left to argparse to report
    assert after_subcommand(["--config"]) == ["--config"]
    assert after_subcommand(["--json=1", "devices"]) == ["--json=1", "devices"]
    assert set(GLOBAL) == {"--config", "--out", "--json", "-v", "--verbose"}


def test_devices_with_config_before_and_after_give_the_same_output(tmp_path: Path) -> None:
    """The issue's case, as a user types it: a real agent named by the config file."""
    with AgentThread(make_config(tmp_path / "agent")) as agent:
        token = tmp_path / "agent.token"
        token.write_text(agent.config.token + "\n")
        config = write_config(tmp_path / "devlab.toml", [(agent.url, token)])
        before = run_devlab("--config", config, "devices", "--json", home=tmp_path)
        after = run_devlab("devices", "--json", "--config", config, home=tmp_path)
    assert before.returncode == after.returncode == 0, before.describe() + after.describe()
    assert before.stdout == after.stdout
    assert agent.url in before.stdout  # the config was read, not ignored
