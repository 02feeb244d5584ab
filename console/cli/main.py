"""The ``devlab`` command: the headless ``--run`` mode and the small subcommands.

This module imports rich but never textual, so scripts and CI run without the TUI stack.
All the work happens in ``backends``; this file parses arguments and renders events.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from backends.core.config import Config, ConfigError, load_config
from backends.core.lab import Lab, LabError, default_backends, discover_devices
from backends.core.options import BENCH_OPTIONS, build_settings
from backends.core.records import JobSettings, JobState
from backends.core.store import STORE_FILE, Store, StoreLocked
from console.cli.exit_codes import ExitCode, UsageError

EPILOG = """\
exit codes: 0 all jobs done, 1 some jobs or inputs failed, 2 usage error or no valid input,
130 interrupted (run the same command again to resume).
examples:
  devlab --run assets/models --out results
  devlab --run model.onnx --input-shape input=1x3x224x224 --runs 200 --per-layer
  devlab devices --json
  devlab virtual phone            (an emulated phone on 127.0.0.1 for demos and tests)
  devlab agent --token-file F --runner onnxruntime   (serve this machine to other consoles)
  devlab --run assets/models --device dpu:http://board:8055   (a configured agent)
  devlab scheduler / devlab worker tcp://HOST:8786   (a lab on several hosts, Dask)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    err = Console(stderr=True, soft_wrap=True)
    try:
        if args[:1] == ["devices"]:
            return devices_command(build_devices_parser().parse_args(args[1:]))
        if args[:1] == ["power"] or args[:1] == ["virtual"]:
            from console.cli.devices import run_device_tool

            return run_device_tool(args, err)
        if args[:1] == ["agent"]:
            from console.cli.agent import run_agent_tool

            return run_agent_tool(args[1:], err)
        if args[:1] in (["space"], ["estimator"]):
            from console.cli.space import run_space_tool

            return run_space_tool(args, err)
        if args[:1] in (["scheduler"], ["worker"]):
            from console.cli.cluster import run_cluster_tool

            return run_cluster_tool(args, err)
        if args[:1] == ["compare"]:
            from console.cli.compare import run_compare_tool

            return run_compare_tool(args, err)
        parsed = build_parser().parse_args(args)
        if parsed.cluster:
            from console.cli.cluster import run_cluster_command, run_cluster_tui

            if parsed.run:
                return run_cluster_command(parsed, err)
            return run_cluster_tui(parsed.cluster, parsed.out, _config(parsed.config))
        if not parsed.run:
            from console.tui.launch import run_tui  # the only path that loads textual

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
    from backends.measure.canary_store import CanaryStore

    lab = Lab(store, backends, power_links=power_links, canaries=CanaryStore())
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
            hint = ""
            if device_id.startswith("dpu:"):
                hint = (
                    "; add the agent to the config: [[dpu.endpoints]] with "
                    f'url = "{device_id[4:]}" and token_file = "..."'
                )
            raise UsageError(f"unknown device {device_id!r} (devices: {known}){hint}")
    return device_ids


def _run(
    lab: Lab,
    args: argparse.Namespace,
    device_ids: list[str],
    settings: JobSettings,
    out_dir: Path,
    err: Console,
) -> int:
    from backends.core.plan import queue_paths
    from backends.results.tables import write_all
    from console.cli.progress import ProgressView, summary_table

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
        from backends.results.tables import results_records

        print(json.dumps(results_records(rows, {d.id: d for d in lab.devices}), indent=2))
    else:
        stdout = Console()
        if not stdout.is_terminal:  # logs and pipes: do not squeeze names to 80 columns
            stdout = Console(width=160)
        stdout.print(summary_table(rows))
    _report_unconverged(rows, err)
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


def _report_unconverged(rows: list, err: Console) -> None:
    """Name the results whose precision gate stopped at a cap (their numbers are less sure)."""
    unconverged = [
        (job, result) for job, result in rows if result is not None and result.converged is False
    ]
    if not unconverged:
        return
    err.print(
        f"{len(unconverged)} result(s) did not reach the precision target "
        "(more --runs or --max-rounds, or a quieter machine, would help):",
        highlight=False,
    )
    for job, result in unconverged:
        width = result.ci_half_width_pct
        shown = f"+-{width:.1f}%" if width is not None else "no interval"
        err.print(
            f"  {job.model.name} on {job.device_id}: {shown} after "
            f"{len(result.round_sizes)} rounds (target +-{job.settings.precision_pct:g}%)",
            highlight=False,
        )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _backends(config: Config) -> list:
    try:
        return default_backends(config)
    except ValueError as error:  # a bad [android] table
        raise UsageError(f"config: {error}") from None


def _power_links(config: Config) -> list:
    from backends.power.capture import links_from_config

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
    from backends.models.intake import parse_input_shape_arg

    values = {option.field: getattr(args, option.field) for option in BENCH_OPTIONS}
    try:
        settings = build_settings(values, config.defaults)
        settings.input_shapes = dict(parse_input_shape_arg(text) for text in args.input_shape)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return settings


if __name__ == "__main__":
    sys.exit(main())
