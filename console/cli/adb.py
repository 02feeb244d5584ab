"""``devlab adb start [--port N]`` and ``devlab adb stop --port N``: the adbutils wheel's adb
server for an operator without the Android SDK. devlab itself never starts one unasked.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from console.cli.exit_codes import ExitCode, UsageError


def build_adb_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab adb",
        description="Start or stop an adb server from the adbutils wheel (no Android SDK "
        "needed). It runs on 127.0.0.1 until stopped.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="start|stop")
    start = actions.add_parser("start", help="start a server (default: on a free port)")
    start.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    stop = actions.add_parser("stop", help="stop the server on a port")
    stop.add_argument("--port", type=int, required=True, help="the server's TCP port")
    return parser


def run_adb_tool(args: list[str], err: Console) -> int:
    """``adb start ...`` or ``adb stop ...``; prints the port on stdout after a start."""
    from backends.devices.android.adb_server import (
        AdbServerError,
        free_port,
        kill_server,
        start_daemon,
    )

    parsed = build_adb_parser().parse_args(args)
    if parsed.port and not 0 < parsed.port <= 65535:
        raise UsageError(f"--port must be 1..65535, got {parsed.port}")
    try:
        if parsed.action == "stop":
            kill_server(parsed.port)
            err.print(f"adb server on 127.0.0.1:{parsed.port} stopped", highlight=False)
            return ExitCode.OK
        port = parsed.port or free_port()
        start_daemon(port)
    except AdbServerError as error:
        raise UsageError(str(error)) from None
    print(port, flush=True)
    err.print(
        f"adb server on 127.0.0.1:{port}. Point devlab at it with\n"
        f"  export ANDROID_ADB_SERVER_PORT={port}\n"
        f'or in the config: [android] adb_server = "127.0.0.1:{port}"\n'
        f"Stop it with: devlab adb stop --port {port}",
        markup=False,
        highlight=False,
    )
    return ExitCode.OK
