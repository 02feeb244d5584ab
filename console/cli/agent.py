"""``devlab agent``: serve this machine's benchmark runners over HTTP (see docs/agent.md).

Imports rich but never textual. Usage errors exit with code 2 and name the fix.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shutil
import stat
from pathlib import Path

from rich.console import Console

from backends.core.extras import require
from console.cli.exit_codes import ExitCode, UsageError

RUNNER_NAMES = ("onnxruntime", "xdputil", "vitis-test-performance", "command")
DPU_RUNNERS = ("xdputil", "vitis-test-performance")
MIB = 1024 * 1024


def build_agent_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab agent",
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests and jobs")
    return parser


def run_agent_tool(args: list[str], err: Console) -> int:
    """``devlab agent ARGS``: serve until Ctrl-C or SIGTERM; 0 then, 2 on usage errors."""
    try:
        parsed = build_agent_parser().parse_args(args)
        config = build_config(parsed)
    except UsageError as error:
        err.print(f"devlab agent: error: {error}", markup=False, highlight=False)
        return ExitCode.USAGE
    except SystemExit as exit_:  # argparse's own usage errors
        return int(exit_.code or 0)
    logging.basicConfig(
        level=logging.INFO if parsed.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    require("aiohttp", "agent", "Agent commands (devlab agent)")
    from backends.agent.serve import serve

    try:
        serve(config, host=parsed.host, port=parsed.port)
    except OSError as error:
        err.print(
            f"devlab agent: error: cannot listen on {parsed.host}:{parsed.port}: "
            f"{error.strerror or error}",
            markup=False,
            highlight=False,
        )
        return ExitCode.USAGE
    return ExitCode.OK


def build_config(parsed: argparse.Namespace):
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
    options = {
        "workdir": Path(parsed.workdir),
        "kind": kind,
        "runners": runners,
        "max_upload_bytes": int(parsed.max_upload_mb * MIB),
        "advertise": parsed.advertise,
        "keep_models": parsed.keep_models,
    }
    if parsed.board:
        options["board"] = parsed.board
    workdir = Path(parsed.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir} is not a folder")
    return AgentConfig(token=token, **options)


def read_token(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"token file {path} does not exist: write a secret into it, e.g. "
            f'\'python -c "import secrets; print(secrets.token_urlsafe(32))" '
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


def build_runners(parsed: argparse.Namespace) -> dict:
    from backends.agent.runners import OnnxRuntimeRunner
    from backends.agent.tool_runners import CommandRunner, TestPerformanceRunner, XdputilRunner

    names: list[str] = []
    for name in parsed.runner:
        if name not in RUNNER_NAMES:
            raise UsageError(f"unknown runner {name!r}: choose from {', '.join(RUNNER_NAMES)}")
        if name not in names:
            names.append(name)
    _unused("--xdputil", parsed.xdputil, "xdputil", names)
    _unused("--test-performance", parsed.test_performance, "vitis-test-performance", names)
    _unused("--image-list", parsed.image_list, "vitis-test-performance", names)
    _unused("--command", parsed.command, "command", names)
    runners = {}
    for name in names:
        if name == "onnxruntime":
            runners[name] = OnnxRuntimeRunner()
        elif name == "xdputil":
            runners[name] = XdputilRunner(_program(parsed.xdputil or "xdputil", "--xdputil"))
        elif name == "vitis-test-performance":
            if not parsed.test_performance or not parsed.image_list:
                raise UsageError(
                    "--runner vitis-test-performance needs --test-performance "
                    "PROGRAM and --image-list FILE"
                )
            image_list = Path(parsed.image_list)
            if not image_list.is_file():
                raise UsageError(f"--image-list {image_list} is not a file")
            program = _program(parsed.test_performance, "--test-performance")
            runners[name] = TestPerformanceRunner(program, str(image_list.resolve()))
        else:
            if not parsed.command:
                raise UsageError(
                    '--runner command needs --command "TEMPLATE" '
                    '(e.g. --command "./bench {model} --threads {threads}")'
                )
            try:
                runners[name] = CommandRunner(parsed.command)
            except ValueError as error:
                raise UsageError(f"--command: {error}") from None
    return runners


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


def _unused(option: str, value: str | None, runner: str, names: list[str]) -> None:
    if value is not None and runner not in names:
        raise UsageError(
            f"{option} is only used by --runner {runner}: add --runner {runner} or drop {option}"
        )


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost" and not host.replace("-", "").replace(".", "").isalnum():
            raise UsageError(f"--host {host!r} is not an address or host name") from None
