"""``devlab lab --virtual`` (also ``devlab virtual lab``): a whole virtual lab, then the console
on it; quitting the console stops every piece. ``--no-console`` keeps it up until Ctrl-C.

Thin glue: the pieces and their order live in ``backends.virtual.lab``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from console.cli.exit_codes import ExitCode, UsageError

if TYPE_CHECKING:
    from backends.virtual.lab import VirtualLab

#: How the lab starts ``devlab agent``: this interpreter, this installation.
DEVLAB_COMMAND = [sys.executable, "-m", "console.entry"]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Opens the console on ``--config`` / ``--out`` options and returns its exit code.
LabConsole = Callable[[argparse.Namespace], int]


def build_lab_parser(prog: str, needs_virtual: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Start a virtual lab (a private adb server from the adbutils wheel, a "
        "virtual phone on it, a virtual Monsoon powering the phone, a loopback agent as a DPU "
        "endpoint, and a config naming them), then the console on it. Quitting the console "
        "stops every piece.",
    )
    if needs_virtual:
        parser.add_argument(
            "--virtual", action="store_true", help="the virtual lab (the only one devlab starts)"
        )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="start the lab, print the config and the pieces (one JSON line on stdout), "
        "wait until Ctrl-C",
    )
    parser.add_argument("--phone-name", metavar="NAME", help="the virtual phone's model name")
    parser.add_argument(
        "--jetson",
        action="store_true",
        help="also a virtual Jetson: an agent with the stand-in trtexec and tegrastats "
        "(docs/devices/jetson.md)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the console's store and tables (default: inside the lab's temp "
        "folder, removed with it)",
    )
    return parser


def run_lab_tool(args: list[str], err: Console, console: LabConsole | None) -> int:
    """``lab --virtual ...`` or ``virtual lab ...``; ``console`` opens the console on the
    options it is given (``--config``, ``--out``), None where there is no console."""
    if args[:1] == ["lab"]:
        parsed = build_lab_parser("devlab lab", needs_virtual=True).parse_args(args[1:])
        if not parsed.virtual:
            raise UsageError("devlab lab needs --virtual: the virtual lab is the one it starts")
    else:
        parsed = build_lab_parser("devlab virtual lab", needs_virtual=False).parse_args(args[2:])
    if not parsed.no_console and console is None:
        raise UsageError("the interactive console is not available here: use --no-console")
    from backends.virtual.lab import VirtualLab, VirtualLabError

    virtual_lab = VirtualLab(DEVLAB_COMMAND, phone_name=parsed.phone_name, jetson=parsed.jetson)
    try:
        with _stop_signals() as stop:
            config_path = virtual_lab.start()
            _report(virtual_lab, config_path, err)
            if parsed.no_console:
                err.print("Ctrl-C stops the lab", highlight=False)
                while not stop.wait(0.5):
                    pass
                return ExitCode.OK
        if stop.is_set() or console is None:  # Ctrl-C while it started: no console
            return ExitCode.OK
        with _interrupt_on_terminate():
            out = parsed.out or str(config_path.parent / "results")
            return console(argparse.Namespace(config=str(config_path), out=out, cluster=None))
        return ExitCode.INTERRUPTED  # SIGTERM or SIGHUP ended the console
    except VirtualLabError as error:
        raise UsageError(str(error)) from None
    finally:
        with _stop_signals():  # a second Ctrl-C or a hang-up must not cut the teardown short
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                err.print("stopping the virtual lab", highlight=False)
            virtual_lab.close()


def _report(virtual_lab: VirtualLab, config_path: Path, err: Console) -> None:
    """One JSON line on stdout for scripts; the same for people on stderr."""
    record = {
        "config": str(config_path),
        "pieces": [piece.to_dict() for piece in virtual_lab.pieces],
        "pids": virtual_lab.pids,
        "reaper_pid": virtual_lab.reaper_pid,  # ends the pids if the lab itself is killed
    }
    print(json.dumps(record), flush=True)
    lines = [f"virtual lab, config {config_path}"]
    for piece in virtual_lab.pieces:
        pid = f"  (pid {piece.pid})" if piece.pid is not None else ""
        lines.append(f"  {piece.name:<16} {piece.address}  {piece.detail}{pid}")
    err.print("\n".join(lines), markup=False, highlight=False)


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """SIGINT, SIGTERM and SIGHUP set an event instead of unwinding half-started pieces."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_interrupt(*_: object) -> None:
    """As if Ctrl-C: inside the console, asyncio's SIGINT handler cancels the app, which then
    restores the terminal, and KeyboardInterrupt follows."""
    signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def _interrupt_on_terminate() -> Iterator[None]:
    """While the console runs, SIGTERM and SIGHUP unwind like Ctrl-C, so the lab still stops
    (their default action would end the process and leave the pieces running)."""
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
