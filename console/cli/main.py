"""The ``devlab`` command: the headless ``--run`` mode and the small subcommands.

This module imports rich but never textual, so scripts and CI run without the TUI stack.
All the work happens in ``backends``; this file parses arguments and renders events.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from backends.core.extras import MissingExtra
from backends.core.lab import Lab, discover_devices
from backends.core.options import TABLE_FORMAT_HELP, TABLE_FORMATS
from backends.core.store import STORE_FILE
from console.cli.exit_codes import ExitCode, UsageError
from console.cli.global_options import after_subcommand
from console.cli.run import (
    ConsoleOpener,
    backends_from_config,
    default_lab_folder,
    device_ids,
    export_formats,
    input_shapes_file,
    job_settings,
    load_config_or_usage,
    power_links,
    run_jobs,
    table_format_of,
)
from console.cli.shared import add_bench_options, open_store

EPILOG = """\
exit codes: 0 all jobs done, 1 some jobs or inputs failed, 2 usage error or no valid input,
130 interrupted (run the same command again to resume).
examples:
  devlab --run assets/models --out results
  devlab --run model.onnx --input-shape input=1x3x224x224 --runs 200 --per-layer
  devlab devices --json
  devlab parse tflite run.log --json   (what devlab reads from a tool's output)
  devlab virtual phone            (an emulated phone on 127.0.0.1 for demos and tests)
  devlab lab --virtual            (a whole virtual lab and the console on it)
  devlab adb start                (an adb server from the adbutils wheel, no SDK needed)
  devlab agent --token-file F --runner onnxruntime   (serve this machine to other consoles)
  devlab --run assets/models --device dpu:http://board:8055   (a configured agent)
  devlab scheduler / devlab worker tcp://HOST:8786   (a lab on several hosts, Dask)
  devlab quantize M.onnx --calibration SET --scheme ort-qdq --out Q   (docs/accuracy.md)
  devlab pipeline M.onnx --calibration SET --accuracy SET   (quantize, bench, score both)
  devlab report R                 (fast but wrong: int8 vs fp32 latency and top-1, a PNG)
  devlab --run assets/models --cluster tcp://HOST:8786 --device host:cpu@lab1
"""


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
    add_bench_options(parser)
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=SHAPE",
        help="fix a dynamic input shape, e.g. input=1x3x224x224 (repeatable)",
    )
    parser.add_argument(
        "--input-shapes",
        type=input_shapes_file,
        metavar="FILE",
        help='input shapes per model, JSON: {"model.onnx": {"x": [1, 3, 48, 192]}, "*": {...}}',
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
    parser.add_argument(
        "--export",
        type=export_formats,
        default=[],
        metavar="FORMATS",
        help="also write the tables other NAS tools read: aw_nas, archai (comma-separated; "
        "see docs/nas-tools.md)",
    )
    parser.add_argument(
        "--table-format", choices=TABLE_FORMATS, metavar="FORMAT", help=TABLE_FORMAT_HELP
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="queue on a devlab cluster (the tcp://HOST:PORT `devlab scheduler` prints)",
    )
    return parser


def build_devices_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab devices", description="List the devices devlab can see."
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    return parser


def main(argv: Sequence[str] | None = None, open_console: ConsoleOpener | None = None) -> int:
    """``devlab``: the tools, ``--run``, or (with ``open_console``, see ``console.entry``) the
    interactive console on a lab this function opens and closes."""
    args = after_subcommand(sys.argv[1:] if argv is None else argv)
    err = Console(stderr=True, soft_wrap=True)
    try:
        if args[:1] == ["devices"]:
            return devices_command(build_devices_parser().parse_args(args[1:]))
        if args[:1] == ["lab"] or args[:2] == ["virtual", "lab"]:
            from console.cli.lab import run_lab_tool

            return run_lab_tool(args, err, _console_on(open_console))
        if args[:1] == ["adb"]:
            from console.cli.adb import run_adb_tool

            return run_adb_tool(args[1:], err)
        if args[:1] == ["power"] or args[:1] == ["virtual"]:
            from console.cli.devices import run_device_tool

            return run_device_tool(args, err)
        if args[:1] == ["parse"]:
            from console.cli.parse import run_parse_tool

            return run_parse_tool(args[1:], err)
        if args[:1] == ["agent"]:
            from console.cli.agent import run_agent_tool

            return run_agent_tool(args[1:], err)
        if args[:1] in (["space"], ["estimator"]):
            from console.cli.space import run_space_tool

            return run_space_tool(args, err)
        if args[:1] in (["scheduler"], ["worker"]):
            from console.cli.cluster import run_cluster_tool

            return run_cluster_tool(args, err)
        if args[:1] == ["quantize"]:
            from console.cli.quantize import run_quantize_tool

            return run_quantize_tool(args, err)
        if args[:1] == ["pipeline"]:
            from console.cli.pipeline import run_pipeline_tool

            return run_pipeline_tool(args, err)
        if args[:1] == ["compare"]:
            from console.cli.compare import run_compare_tool

            return run_compare_tool(args, err)
        if args[:1] == ["report"]:
            from console.cli.report import run_report_tool

            return run_report_tool(args, err)
        parsed = build_parser().parse_args(args)
        if parsed.cluster and parsed.run:
            from console.cli.cluster import run_cluster_command

            return run_cluster_command(parsed, err)
        if not parsed.run:
            return console_command(parsed, open_console)
        return run_command(parsed, err)
    except (UsageError, MissingExtra) as error:  # MissingExtra: which pip extra to install
        err.print(f"devlab: error: {error}", markup=False, highlight=False)
        return ExitCode.USAGE
    except SystemExit as exit_:  # argparse's own usage errors
        return int(exit_.code or 0)


def console_command(args: argparse.Namespace, open_console: ConsoleOpener | None) -> int:
    """Open the lab (this machine's or a cluster's), hand it to the console, close it after."""
    if open_console is None:
        raise UsageError("the interactive console is not available here: use --run PATH")
    config = load_config_or_usage(args.config)
    folder = Path(args.out) if args.out else default_lab_folder()
    if args.cluster:
        from console.cli.cluster import open_cluster_lab

        cluster_lab = open_cluster_lab(args.cluster, config)
        try:
            return open_console(cluster_lab, config, folder)
        finally:
            cluster_lab.shutdown()
    store = open_store(folder / STORE_FILE)
    from backends.measure.canary_store import CanaryStore

    lab = Lab(
        store,
        backends_from_config(config),
        power_links=power_links(config),
        canaries=CanaryStore(),
    )
    try:
        return open_console(lab, config, folder)
    finally:
        lab.shutdown(interrupt=True)
        store.close()


def _console_on(open_console: ConsoleOpener | None) -> Callable[[argparse.Namespace], int] | None:
    """``console_command`` bound to the console, for commands that open it on their own lab
    config (``devlab lab --virtual``); None where there is no console."""
    if open_console is None:
        return None
    return lambda args: console_command(args, open_console)


def devices_command(args: argparse.Namespace) -> int:
    config = load_config_or_usage(args.config)
    backends = backends_from_config(config)
    devices = [device for device, _ in discover_devices(backends).values()]
    out = Console()
    if args.json:
        print(json.dumps([device.to_dict() for device in devices], indent=2))
        return ExitCode.OK
    for backend in backends:  # a kind without its extra: on stderr, the listing stays as it was
        reason = backend.unavailable()
        if reason:
            Console(stderr=True).print(f"{backend.kind}: {reason}", markup=False, highlight=False)
    for device in devices:
        out.print(
            f"[bold]{device.id}[/]  {device.name}  ({device.state.value}; runtimes: "
            f"{', '.join(device.runtimes)})",
            highlight=False,
        )
        for key, value in device.properties.items():
            out.print(f"    {key}: {value}", markup=False, highlight=False)
    return ExitCode.OK


def run_command(args: argparse.Namespace, err: Console) -> int:
    config = load_config_or_usage(args.config)
    settings = job_settings(args, config)
    backends = backends_from_config(config)
    links = power_links(config)
    wanted = device_ids(args, config, discover_devices(backends))
    out_dir = Path(args.out or "results")
    store = open_store(out_dir / STORE_FILE, fresh=args.fresh)
    from backends.measure.canary_store import CanaryStore

    lab = Lab(store, backends, power_links=links, canaries=CanaryStore())
    try:
        return run_jobs(lab, args, wanted, settings, out_dir, err, table_format_of(args, config))
    finally:
        lab.shutdown(interrupt=True)
        store.close()


if __name__ == "__main__":
    sys.exit(main())
