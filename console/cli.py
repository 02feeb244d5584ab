"""The ``devlab`` command: the headless ``--run`` mode and the small subcommands.

This module imports rich but never textual, so scripts and CI run without the TUI stack.
All the work happens in ``backends``; this file parses arguments and renders events.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from backends.config import Config, ConfigError, load_config
from backends.lab import Lab, LabError, default_backends, discover_devices
from backends.options import BENCH_OPTIONS, build_settings
from backends.records import JobSettings, JobState
from backends.store import STORE_FILE, Store, StoreLocked
from console.exit_codes import ExitCode

EPILOG = """\
exit codes: 0 all jobs done, 1 some jobs or inputs failed, 2 usage error or no valid input,
130 interrupted (run the same command again to resume).
examples:
  devlab --run assets/models --out results
  devlab --run model.onnx --input-shape input=1x3x224x224 --runs 200 --per-layer
  devlab devices --json
  devlab virtual phone            (an emulated phone on 127.0.0.1 for demos and tests)
"""


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2 with the message."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab",
        description="Benchmark ONNX models on the devices of your lab.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run",
        nargs="+",
        metavar="PATH",
        help="benchmark these .onnx files or folders headless, then exit",
    )
    parser.add_argument(
        "--device",
        action="append",
        metavar="ID",
        help="device id or alias (repeatable; default host:cpu)",
    )
    parser.add_argument("--runtime", metavar="NAME", help="runtime (default: the device's first)")
    for option in BENCH_OPTIONS:
        if option.kind is bool:
            parser.add_argument(
                option.flag,
                dest=option.field,
                action="store_true",
                default=None,  # absent: keep the config's value
                help=option.help,
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.field,
                type=option.kind,
                metavar=option.metavar,
                help=option.help,
            )
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=SHAPE",
        help="fix a dynamic input shape, e.g. input=1x3x224x224 (repeatable)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=0,
        metavar="N",
        help="queue priority, lower runs first (default 0)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the store and the tables (default: results with --run; "
        "the user data folder for the console)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="forget earlier results in --out and start over"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON on stdout instead of a table"
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    return parser


def build_devices_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab devices", description="List the devices devlab can see."
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    err = Console(stderr=True, soft_wrap=True)
    try:
        if args[:1] == ["devices"]:
            return devices_command(build_devices_parser().parse_args(args[1:]))
        if args[:2] == ["virtual", "phone"]:
            return virtual_phone_command(build_virtual_phone_parser().parse_args(args[2:]), err)
        if args[:1] == ["power"]:
            return power_command(build_power_parser().parse_args(args[1:]), err)
        if args[:2] == ["virtual", "monsoon"]:
            parsed = build_virtual_monsoon_parser().parse_args(args[2:])
            return virtual_monsoon_command(parsed, err)
        parsed = build_parser().parse_args(args)
        if not parsed.run:
            from console.tui import run_tui  # the only path that loads textual

            return run_tui(parsed.out, _config(parsed.config))
        return run_command(parsed, err)
    except UsageError as error:
        err.print(f"devlab: error: {error}", markup=False, highlight=False)
        return ExitCode.USAGE
    except SystemExit as exit_:  # argparse's own usage errors
        return int(exit_.code or 0)


def devices_command(args: argparse.Namespace) -> int:
    config = _config(args.config)
    devices = [device for device, _ in discover_devices(_backends(config)).values()]
    out = Console()
    if args.json:
        print(json.dumps([device.to_dict() for device in devices], indent=2))
        return ExitCode.OK
    for device in devices:
        out.print(
            f"[bold]{device.id}[/]  {device.name}  ({device.state.value}; runtimes: "
            f"{', '.join(device.runtimes)})",
            highlight=False,
        )
        for key, value in device.properties.items():
            out.print(f"    {key}: {value}", markup=False, highlight=False)
    return ExitCode.OK


def virtual_phone_command(args: argparse.Namespace, err: Console) -> int:
    from backends.android import AndroidConfig
    from backends.virtual.attach import AttachError, attach_virtual_phone
    from backends.virtual.profile import ProfileError

    config = _config(args.config)
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

    from backends.monsoon import MonsoonError
    from backends.power import record_trace
    from backends.power_trace import RollingPower, window_stats

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

    def on_batch(batch) -> None:  # noqa: ANN001 - a SampleBatch
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


def run_command(args: argparse.Namespace, err: Console) -> int:
    config = _config(args.config)
    settings = _settings(args, config)
    backends = _backends(config)
    power_links = _power_links(config)
    device_ids = _device_ids(args, config, discover_devices(backends))
    out_dir = Path(args.out or "results")
    try:
        store = Store(out_dir / STORE_FILE, fresh=args.fresh)
    except StoreLocked as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"cannot use --out {out_dir}: {error.strerror or error}") from None
    lab = Lab(store, backends, power_links=power_links)
    try:
        return _run(lab, args, device_ids, settings, out_dir, err)
    finally:
        lab.shutdown(interrupt=True)
        store.close()


def _device_ids(args: argparse.Namespace, config: Config, found: dict) -> list[str]:
    """The devices asked for (aliases resolved); a usage error names the known ones."""
    device_ids = [config.resolve_device(d) for d in (args.device or ["host:cpu"])]
    for device_id in device_ids:
        if device_id not in found:
            known = ", ".join(sorted(found)) or "none"
            raise UsageError(f"unknown device {device_id!r} (devices: {known})")
    return device_ids


def _run(
    lab: Lab,
    args: argparse.Namespace,
    device_ids: list[str],
    settings: JobSettings,
    out_dir: Path,
    err: Console,
) -> int:
    from backends.plan import queue_paths
    from backends.tables import write_all
    from console.progress import ProgressView, summary_table

    lab.discover()
    view = ProgressView(err, total_jobs=0)
    lab.subscribe(view)
    try:
        report = queue_paths(lab, args.run, device_ids, args.runtime, settings, args.priority)
    except LabError as error:
        raise UsageError(str(error)) from None
    if report.kept:
        err.print(
            f"{len(report.kept)} job(s) already measured in {out_dir}: results kept "
            "(use --fresh to measure again)",
            highlight=False,
        )
    view.set_total(
        len(report.failed) + len(report.kept) + len(lab.pending()), already_done=len(report.kept)
    )

    interrupted = False
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with view:
            lab.start()
            lab.wait_until_idle()
    except KeyboardInterrupt:
        interrupted = True
        err.print(
            "interrupted: stopping; finished results are kept, run again to resume", highlight=False
        )
        lab.shutdown(interrupt=True)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)

    rows = lab.rows()
    written = write_all(out_dir, rows, {d.id: d for d in lab.devices})
    if args.json:
        from backends.tables import results_records

        print(json.dumps(results_records(rows, {d.id: d for d in lab.devices}), indent=2))
    else:
        stdout = Console()
        if not stdout.is_terminal:  # logs and pipes: do not squeeze names to 80 columns
            stdout = Console(width=160)
        stdout.print(summary_table(rows))
    err.print(f"tables written to {out_dir}: {', '.join(p.name for p in written)}", highlight=False)

    planned = {job.id for job in report.jobs}
    states = {job.id: job.state for job, _ in rows}
    if interrupted:
        return ExitCode.INTERRUPTED
    if not report.queued and not report.kept:
        err.print("devlab: no valid input: no model could be read", highlight=False)
        return ExitCode.USAGE
    if view.failures or any(states.get(job_id) is not JobState.DONE for job_id in planned):
        return ExitCode.JOBS_FAILED
    return ExitCode.OK


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _backends(config: Config) -> list:
    try:
        return default_backends(config)
    except ValueError as error:  # a bad [android] table
        raise UsageError(f"config: {error}") from None


def _power_links(config: Config) -> list:
    from backends.power import links_from_config

    try:
        return links_from_config(config.raw)
    except ValueError as error:
        raise UsageError(f"config: {error}") from None


def _config(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def _settings(args: argparse.Namespace, config: Config) -> JobSettings:
    from backends.models import parse_input_shape_arg

    values = {option.field: getattr(args, option.field) for option in BENCH_OPTIONS}
    try:
        settings = build_settings(values, config.defaults)
        settings.input_shapes = dict(parse_input_shape_arg(text) for text in args.input_shape)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return settings


if __name__ == "__main__":
    sys.exit(main())
