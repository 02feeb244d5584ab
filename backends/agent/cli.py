"""The agent's command line: options, runners and config, shared by ``devlab agent`` and the
board zipapp (``python3 devlab-agent.pyz``), so both serve exactly the same way.

Standard library only until a runner or the server is built (``--help`` works anywhere); runs
on Python 3.8 (docs/agent-board.md). Usage errors exit with code 2 and name the fix.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.agent.config import AgentConfig
    from backends.agent.runners import Runner

EXIT_OK = 0
EXIT_USAGE = 2
MIB = 1024 * 1024
DPU_RUNNERS = ("xdputil", "vitis-test-performance")
# (option, its argparse dest, the runner it configures): given without that runner is an error
RUNNER_OPTIONS = (
    ("--xdputil", "xdputil", "xdputil"),
    ("--test-performance", "test_performance", "vitis-test-performance"),
    ("--image-list", "image_list", "vitis-test-performance"),
    ("--command", "command", "command"),
    ("--trtexec", "trtexec", "trtexec"),
    ("--trt-precision", "trt_precision", "trtexec"),
    ("--trt-workspace-mib", "trt_workspace_mib", "trtexec"),
    ("--tegrastats", "tegrastats", "trtexec"),
    ("--tegrastats-interval-ms", "tegrastats_interval_ms", "trtexec"),
    ("--power-baseline-s", "power_baseline_s", "trtexec"),
)


class UsageError(ValueError):
    """Bad options: the message names the input and the fix; the command exits with 2."""


# -- the runners: a name and how to build it from the options (add a runner here) --------------


def _onnxruntime(parsed: argparse.Namespace) -> Runner:
    from backends.agent.runners import OnnxRuntimeRunner  # onnxruntime itself loads per job

    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:  # a board installs only what its runners need (docs/agent-board.md)
        raise UsageError(
            f"--runner onnxruntime needs {' and '.join(missing)}: "
            f"python3 -m pip install {' '.join(missing)}"
        )
    return OnnxRuntimeRunner()


def _xdputil(parsed: argparse.Namespace) -> Runner:
    from backends.agent.tool_runners import XdputilRunner

    return XdputilRunner(_program(parsed.xdputil or "xdputil", "--xdputil"))


def _test_performance(parsed: argparse.Namespace) -> Runner:
    from backends.agent.tool_runners import TestPerformanceRunner

    if not parsed.test_performance or not parsed.image_list:
        raise UsageError(
            "--runner vitis-test-performance needs --test-performance PROGRAM and --image-list FILE"
        )
    image_list = Path(parsed.image_list)
    if not image_list.is_file():
        raise UsageError(f"--image-list {image_list} is not a file")
    program = _program(parsed.test_performance, "--test-performance")
    return TestPerformanceRunner(program, str(image_list.resolve()))


def _command(parsed: argparse.Namespace) -> Runner:
    from backends.agent.tool_runners import CommandRunner

    if not parsed.command:
        raise UsageError(
            '--runner command needs --command "TEMPLATE" '
            '(e.g. --command "./bench {model} --threads {threads}")'
        )
    try:
        return CommandRunner(parsed.command)
    except ValueError as error:
        raise UsageError(f"--command: {error}") from None


def _trtexec(parsed: argparse.Namespace) -> Runner:
    from backends.agent.trtexec_runner import TrtexecRunner

    tegrastats = parsed.tegrastats
    for option, value in (
        ("--tegrastats-interval-ms", parsed.tegrastats_interval_ms),
        ("--power-baseline-s", parsed.power_baseline_s),
    ):
        if value is not None and tegrastats is None:
            raise UsageError(f"{option} is only used with --tegrastats: add --tegrastats PATH")
    program = _program(parsed.trtexec or "trtexec", "--trtexec")
    tegrastats = _program(tegrastats, "--tegrastats") if tegrastats else None
    try:
        return TrtexecRunner(
            program,
            Path(parsed.workdir).absolute(),
            precision=parsed.trt_precision or "fp16",
            workspace_mib=parsed.trt_workspace_mib,
            tegrastats=tegrastats,
            interval_ms=100
            if parsed.tegrastats_interval_ms is None
            else parsed.tegrastats_interval_ms,
            baseline_s=parsed.power_baseline_s if parsed.power_baseline_s is not None else 2.0,
        )
    except ValueError as error:
        raise UsageError(f"--runner trtexec: {error}") from None


RUNNERS: dict[str, Callable[[argparse.Namespace], Runner]] = {
    "onnxruntime": _onnxruntime,
    "xdputil": _xdputil,
    "vitis-test-performance": _test_performance,
    "command": _command,
    "trtexec": _trtexec,  # docs/devices/jetson.md
}
RUNNER_NAMES = tuple(RUNNERS)


def build_agent_parser(prog: str = "devlab agent") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve this machine's benchmark runners over HTTP: a console uploads a "
        "model and gets its latencies back. One job runs at a time; every request needs the "
        "token.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)",
    )
    parser.add_argument("--port", type=int, default=8055, help="TCP port (0: a free one)")
    parser.add_argument(
        "--token-file",
        required=True,
        metavar="FILE",
        help="file holding the bearer token clients must send",
    )
    parser.add_argument(
        "--runner",
        action="append",
        required=True,
        metavar="NAME",
        help=f"a runner to offer ({', '.join(RUNNER_NAMES)}); repeat for "
        "several; the first is the default",
    )
    parser.add_argument(
        "--workdir",
        default="devlab-agent",
        metavar="DIR",
        help="folder for uploaded models and job records (default ./devlab-agent)",
    )
    parser.add_argument("--board", help="name shown to consoles (default: the host name)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=512,
        metavar="N",
        help="largest model accepted, in MiB (default 512)",
    )
    parser.add_argument(
        "--advertise", action="store_true", help="announce the agent with zeroconf (_devlab._tcp)"
    )
    parser.add_argument(
        "--keep-models", action="store_true", help="keep uploaded models after their job finished"
    )
    parser.add_argument("--xdputil", metavar="PATH", help="xdputil program (default: on PATH)")
    parser.add_argument(
        "--test-performance", metavar="PROGRAM", help="a Vitis AI test_performance_<task> program"
    )
    parser.add_argument(
        "--image-list", metavar="FILE", help="image list file for --test-performance"
    )
    parser.add_argument(
        "--command",
        metavar="TEMPLATE",
        help="command line for --runner command, with {model} and optionally "
        "{threads} {runs} {warmup}",
    )
    jetson = parser.add_argument_group("trtexec (Jetson / TensorRT, docs/devices/jetson.md)")
    jetson.add_argument("--trtexec", metavar="PATH", help="trtexec program (default: on PATH)")
    jetson.add_argument(
        "--trt-precision", choices=("fp32", "fp16", "int8"), help="engine precision (default fp16)"
    )
    jetson.add_argument(
        "--trt-workspace-mib", type=int, metavar="N", help="builder workspace in MiB"
    )
    jetson.add_argument(
        "--tegrastats", metavar="PATH", help="tegrastats program: measure power with it"
    )
    jetson.add_argument(
        "--tegrastats-interval-ms", type=int, metavar="N", help="sample interval (default 100)"
    )
    jetson.add_argument(
        "--power-baseline-s", type=float, metavar="S", help="idle baseline (default 2 s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests and jobs")
    return parser


def run_agent(
    args: Sequence[str],
    report: Callable[[str], None],
    prog: str = "devlab agent",
    install_hint: str = "pip install 'devlab[agent]'",
) -> int:
    """Serve until Ctrl-C or SIGTERM: 0 then, 2 on usage errors (``report`` gets the message;
    ``install_hint`` is how this install gets a missing package)."""
    try:
        parsed = build_agent_parser(prog).parse_args(list(args))
    except SystemExit as exit_:  # argparse printed its own usage error (or --help)
        return int(exit_.code or 0)
    try:
        config = build_config(parsed)
        from backends.agent.serve import serve
    except UsageError as error:
        report(f"{prog}: error: {error}")
        return EXIT_USAGE
    except ModuleNotFoundError as error:
        report(f"{prog}: error: the agent needs the {error.name} package: {install_hint}")
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if parsed.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        serve(config, host=parsed.host, port=parsed.port)
    except OSError as error:
        report(
            f"{prog}: error: cannot listen on {parsed.host}:{parsed.port}: "
            f"{error.strerror or error}"
        )
        return EXIT_USAGE
    return EXIT_OK


def build_config(parsed: argparse.Namespace) -> AgentConfig:
    """The AgentConfig of the parsed options; UsageError naming the fix."""
    from backends.agent.config import AgentConfig

    if not 0 <= parsed.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {parsed.port}")
    if not parsed.max_upload_mb > 0:
        raise UsageError("--max-upload-mb must be a positive number")
    _check_host(parsed.host)
    token = read_token(Path(parsed.token_file))
    runners = build_runners(parsed)
    kind = "dpu" if any(name in DPU_RUNNERS for name in runners) else "host"
    workdir = Path(parsed.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir} is not a folder")
    options = {
        "workdir": workdir,
        "kind": kind,
        "runners": runners,
        "max_upload_bytes": int(parsed.max_upload_mb * MIB),
        "advertise": parsed.advertise,
        "keep_models": parsed.keep_models,
    }
    if parsed.board:
        options["board"] = parsed.board
    return AgentConfig(token=token, **options)


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (one printable line); warns when others may read it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"token file {path} does not exist: write a secret into it, e.g. "
            f'\'python3 -c "import secrets; print(secrets.token_urlsafe(32))" '
            f"> {path}'"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the token file {path}: {error}") from None
    token = text.strip()
    if not token:
        raise UsageError(f"token file {path} is empty: write a secret into it")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise UsageError(
            f"the token in {path} must be one line of printable characters without spaces"
        )
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logging.getLogger(__name__).warning(
                "token file %s is readable by others: chmod 600 %s", path, path
            )
    except OSError:
        pass
    return token


def build_runners(parsed: argparse.Namespace) -> dict[str, Runner]:
    """The runners ``--runner`` names, in order (the first is the default)."""
    names: list[str] = []
    for name in parsed.runner:
        if name not in RUNNERS:
            raise UsageError(f"unknown runner {name!r}: choose from {', '.join(RUNNER_NAMES)}")
        if name not in names:
            names.append(name)
    for option, dest, runner in RUNNER_OPTIONS:
        if getattr(parsed, dest, None) is not None and runner not in names:
            raise UsageError(
                f"{option} is only used by --runner {runner}: "
                f"add --runner {runner} or drop {option}"
            )
    return {name: RUNNERS[name](parsed) for name in names}


def _program(given: str, option: str) -> str:
    """An executable as an absolute path: a path that exists, or a name found on PATH."""
    if os.sep in given:
        path = Path(given)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise UsageError(f"{option} {given} is not an executable file")
        return str(path.resolve())
    found = shutil.which(given)
    if found is None:
        raise UsageError(f"{given} is not on PATH: pass {option} /path/to/{given}")
    return found


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost" and not host.replace("-", "").replace(".", "").isalnum():
            raise UsageError(f"--host {host!r} is not an address or host name") from None
