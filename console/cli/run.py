"""The shared pieces of a headless run: config, settings and devices from the command line,
and ``run_jobs``, which queues, shows progress, writes the tables and picks the exit code.

Used by ``devlab --run`` on this machine and with ``--cluster``; imports rich, never textual.
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from pathlib import Path

import platformdirs
from rich.console import Console

from backends.core.config import Config, ConfigError, load_config
from backends.core.lab import LabError
from backends.core.lab_api import LabApi
from backends.core.options import BENCH_OPTIONS, DEFAULT_TABLE_FORMAT, build_settings
from backends.core.records import Device, Job, JobSettings, JobState, Result
from backends.devices.registry import default_backends, hint_for_unknown
from backends.models.input_shapes import InputShapes, InputShapesError, read_input_shapes
from console.cli.exit_codes import ExitCode, UsageError

# Runs the interactive console on an open lab and returns the exit code; console.entry passes the
# Textual one, so that this package never imports textual.
ConsoleOpener = Callable[[LabApi, Config, Path], int]


def default_lab_folder() -> Path:
    """Where the console keeps its store when no ``--out`` is given."""
    return Path(platformdirs.user_data_dir("devlab"))


def device_ids(args: argparse.Namespace, config: Config, found: dict) -> list[str]:
    """The devices asked for (aliases resolved); a usage error names the known ones."""
    device_ids = [config.resolve_device(d) for d in (args.device or ["host:cpu"])]
    for device_id in device_ids:
        if device_id not in found:
            known = ", ".join(sorted(found)) or "none"
            hint = hint_for_unknown(device_id)
            advice = f"; {hint}" if hint else ""
            raise UsageError(f"unknown device {device_id!r} (devices: {known}){advice}")
    return device_ids


def run_jobs(
    lab: LabApi,
    args: argparse.Namespace,
    device_ids: list[str],
    settings: JobSettings,
    out_dir: Path,
    err: Console,
    table_format: str = DEFAULT_TABLE_FORMAT,
) -> int:
    from backends.core.plan import queue_paths
    from backends.results.formats import write_all
    from backends.results.nnabla_nas import settings_for_table
    from console.cli.progress import ProgressView, summary_table

    lab.discover()
    if table_format == "nnabla-nas":  # nnabla-nas adds up Layers Time: profile per layer
        asked = [device for device in lab.devices if device.id in device_ids]
        settings = settings_for_table(settings, asked, args.runtime)
    view = ProgressView(err, total_jobs=0)
    lab.subscribe(view)
    try:
        report = queue_paths(
            lab, args.run, device_ids, args.runtime, settings, args.priority, args.input_shapes
        )
    except (LabError, InputShapesError) as error:
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
    written = write_all(out_dir, rows, {d.id: d for d in lab.devices}, table_format=table_format)
    written += write_exports(args.export, out_dir, rows, {d.id: d for d in lab.devices})
    if args.json:
        from backends.results.tables import results_records

        print(json.dumps(results_records(rows, {d.id: d for d in lab.devices}), indent=2))
    else:
        stdout = Console()
        if not stdout.is_terminal:  # logs and pipes: do not squeeze names to 80 columns
            stdout = Console(width=160)
        stdout.print(summary_table(rows))
    written += _fast_but_wrong(out_dir, rows, lab, None if args.json else stdout, err)
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


def _fast_but_wrong(
    out_dir: Path,
    rows: list[tuple[Job, Result | None]],
    lab: LabApi,
    out: Console | None,
    err: Console,
) -> list[Path]:
    """The "fast but wrong" table and plot, when the run scored accuracy (docs/accuracy.md)."""
    from backends.results.tables import results_records
    from console.cli.report import after_run

    return after_run(out_dir, results_records(rows, {d.id: d for d in lab.devices}), out, err)


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


def backends_from_config(config: Config) -> list:
    try:
        return default_backends(config)
    except ValueError as error:  # a bad [android] table
        raise UsageError(f"config: {error}") from None


def power_links(config: Config) -> list:
    from backends.power.capture import links_from_config

    try:
        return links_from_config(config.raw)
    except ValueError as error:
        raise UsageError(f"config: {error}") from None


def load_config_or_usage(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def input_shapes_file(text: str) -> InputShapes:
    """``--input-shapes FILE``, read while the arguments are parsed: a bad file is a usage
    error before anything is opened or measured."""
    try:
        return read_input_shapes(text)
    except InputShapesError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


EXPORT_FORMATS = ("aw_nas", "archai")


def export_formats(text: str) -> list[str]:
    """``--export aw_nas,archai``: the NAS tools whose tables are written beside devlab's."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown export format(s) {', '.join(map(repr, unknown)) or repr(text)}; "
            f"choose from {', '.join(EXPORT_FORMATS)}"
        )
    return names


def write_exports(
    names: list[str],
    out_dir: Path,
    rows: list[tuple[Job, Result | None]],
    devices: dict[str, Device],
) -> list[Path]:
    """The tables of the NAS tools asked for with ``--export`` (docs/nas-tools.md)."""
    from backends.results.archai import write_archai_status
    from backends.results.awnas import write_awnas_tables

    writers = {"aw_nas": write_awnas_tables, "archai": write_archai_status}
    written: list[Path] = []
    for name in dict.fromkeys(names):
        written += writers[name](out_dir, rows, devices)
    return written


def table_format_of(args: argparse.Namespace, config: Config) -> str:
    """``--table-format``, else the config's ``[defaults] table_format``."""
    return getattr(args, "table_format", None) or config.table_format


def job_settings(args: argparse.Namespace, config: Config) -> JobSettings:
    from backends.models.intake import parse_input_shape_arg

    values = {option.field: getattr(args, option.field) for option in BENCH_OPTIONS}
    try:
        settings = build_settings(values, config.defaults)
        settings.input_shapes = dict(parse_input_shape_arg(text) for text in args.input_shape)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if settings.accuracy_set:  # a missing or malformed set is a usage error before any job
        from backends.accuracy.sets import SetError, open_set

        try:
            settings.accuracy_set = str(open_set(settings.accuracy_set).path.resolve())
        except SetError as error:
            raise UsageError(f"--accuracy: {error}") from None
    return settings
