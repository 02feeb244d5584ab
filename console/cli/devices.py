"""``devlab power`` and ``devlab virtual phone|monsoon``: the device tools of the CLI.

Thin wrappers: the recorder and the emulated devices live in ``backends``.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

from rich.console import Console

from console.cli.exit_codes import ExitCode, UsageError
from console.cli.run import load_config_or_usage


def run_device_tool(args: list[str], err: Console) -> int:
    """``power ...``, ``virtual phone ...`` or ``virtual monsoon ...`` (``virtual lab`` is
    dispatched before this, to ``console.cli.lab``)."""
    if args[:1] == ["power"]:
        return power_command(build_power_parser().parse_args(args[1:]), err)
    if args[:2] == ["virtual", "phone"]:
        return virtual_phone_command(build_virtual_phone_parser().parse_args(args[2:]), err)
    if args[:2] == ["virtual", "monsoon"]:
        return virtual_monsoon_command(build_virtual_monsoon_parser().parse_args(args[2:]), err)
    raise UsageError(
        "devlab virtual needs what to start: phone, monsoon or lab (the whole virtual lab, "
        "as devlab lab --virtual)"
    )


def build_virtual_phone_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab virtual phone",
        description="Start an emulated phone (adbd on 127.0.0.1) and attach it to the running "
        "adb server; Ctrl-C detaches it.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--name", help="the phone's model name")
    parser.add_argument("--profile", metavar="FILE", help="phone profile (JSON or TOML)")
    parser.add_argument("--sandbox", metavar="DIR", help="the phone's storage (default: temp)")
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    return parser


def build_power_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab power",
        description="Record a Monsoon power monitor into a trace file, with a live readout.",
    )
    parser.add_argument("--port", required=True, help="the monitor's serial port")
    parser.add_argument("--seconds", type=float, help="stop after S seconds (default: Ctrl-C)")
    parser.add_argument("--voltage", type=float, help="set the output voltage first (V)")
    parser.add_argument("--out", help="trace file, .csv or .parquet (default: power-<time>.csv)")
    return parser


def build_virtual_monsoon_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab virtual monsoon",
        description="Serve an emulated Monsoon power monitor on a pseudo-terminal; with "
        "--powers, it draws more while that virtual phone runs a benchmark.",
    )
    parser.add_argument(
        "--powers",
        metavar="DEVICE",
        help="the virtual phone it powers (adb:127.0.0.1:PORT, attached with devlab virtual phone)",
    )
    parser.add_argument("--serial", type=int, default=12345, help="serial number")
    parser.add_argument("--baseline-w", type=float, default=0.5, help="idle power in W")
    parser.add_argument("--active-w", type=float, default=2.5, help="power under load in W")
    parser.add_argument("--voltage", type=float, default=3.7, help="output voltage in V")
    parser.add_argument(
        "--faults",
        default="",
        metavar="LIST",
        help="inject faults in turn: any of garbage,drop,stall (comma-separated)",
    )
    parser.add_argument(
        "--fault-every",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between injected faults (default 5)",
    )
    return parser


def virtual_phone_command(args: argparse.Namespace, err: Console) -> int:
    from backends.devices.android.backend import AndroidConfig
    from backends.virtual.attach import AttachError, attach_virtual_phone
    from backends.virtual.profile import ProfileError

    config = load_config_or_usage(args.config)
    try:
        android = AndroidConfig.from_raw(config.raw.get("android", {}))
        attached = attach_virtual_phone(android, args.port, args.name, args.profile, args.sandbox)
    except (AttachError, ProfileError, ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    print(f"adb:{attached.serial}", flush=True)
    err.print(
        f"virtual phone attached as adb:{attached.serial}; Ctrl-C detaches it", highlight=False
    )
    try:
        _wait_for_stop_signal()
    finally:
        attached.detach()
    return ExitCode.OK


def power_command(args: argparse.Namespace, err: Console) -> int:
    from rich.live import Live

    from backends.power.capture import record_trace
    from backends.power.monsoon.protocol import MonsoonError
    from backends.power.trace import RollingPower, window_stats

    out = Path(args.out or time.strftime("power-%Y%m%d-%H%M%S.csv"))
    rolling = RollingPower(bucket_s=0.1, window_s=60.0)
    dropped = [0]
    started = time.monotonic()

    def readout() -> str:
        peaks = rolling.series()[3]
        return (
            f"{time.monotonic() - started:6.1f} s   now {rolling.mean_w(0.5):.3f} W   "
            f"mean(60 s) {rolling.mean_w():.3f} W   "
            f"peak {peaks.max() if peaks.size else float('nan'):.3f} W   "
            f"samples {rolling.samples}   dropped {dropped[0]}"
        )

    def on_batch(batch) -> None:
        rolling.add_batch(batch)
        dropped[0] += batch.dropped

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with Live(readout(), console=err, refresh_per_second=4) as live:

            def tick() -> None:
                while not stop.wait(0.25):
                    live.update(readout())

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            counts = record_trace(args.port, out, stop, args.seconds, args.voltage, on_batch)
            stop.set()
            live.update(readout())
    except MonsoonError as error:
        raise UsageError(str(error)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    mean_w, energy_j, samples = window_stats(out, 0.0, float("inf"))
    err.print(
        f"{samples} samples ({counts.dropped} dropped) written to {out}: "
        f"mean {mean_w:.4f} W, energy {energy_j:.4f} J",
        highlight=False,
    )
    return ExitCode.OK


def virtual_monsoon_command(args: argparse.Namespace, err: Console) -> int:
    from backends.virtual import registry
    from backends.virtual.monsoon import VirtualMonsoon, start_fault_schedule

    load = None
    if args.powers:
        sandbox = registry.lookup(args.powers)
        if sandbox is None:
            raise UsageError(
                f"{args.powers} is not a virtual phone attached on this machine; "
                "start one with: devlab virtual phone"
            )
        load = registry.phone_load(sandbox)
    try:
        monsoon = VirtualMonsoon(
            serial_number=args.serial,
            load=load,
            baseline_w=args.baseline_w,
            active_w=args.active_w,
            voltage=args.voltage,
        ).start()
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    print(monsoon.port, flush=True)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    try:
        start_fault_schedule(monsoon, faults, args.fault_every)
    except ValueError as error:
        monsoon.stop()
        raise UsageError(str(error)) from None
    if args.powers:
        err.print(
            f"virtual Monsoon {args.serial} on {monsoon.port} powers {args.powers}; "
            "add to your config:\n"
            f'[[power.monitors]]\npowers = "{args.powers}"\nport = "{monsoon.port}"',
            highlight=False,
            markup=False,
        )
    try:
        _wait_for_stop_signal()
    finally:
        monsoon.stop()
    return ExitCode.OK


def _wait_for_stop_signal() -> None:
    """Block until Ctrl-C or SIGTERM (our own handlers: a background job may ignore SIGINT)."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
