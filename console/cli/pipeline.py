"""``devlab pipeline MODEL... --calibration SET --accuracy SET``: quantize -> bench fp32 and
int8 -> accuracy fp32 and int8, on this machine or on a cluster (``--cluster ADDRESS``).

A thin front end over ``backends.pipeline``: it opens the lab, runs the stages, writes the
usual result tables plus ``pipeline.csv`` and ``pipeline_stages.csv``. Imports rich, never
textual.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from backends.core.config import Config
from backends.core.lab import discover_devices
from backends.core.lab_api import LabApi
from backends.core.records import Model
from backends.core.store import STORE_FILE
from backends.models.intake import ModelError, collect_models
from backends.pipeline.plan import ORDERS, SCHEMES, PipelineRequest, Stage
from backends.pipeline.run import HostStages, LocalHostStages, PipelineReport, PipelineRun
from console.cli.exit_codes import ExitCode, UsageError
from console.cli.run import (
    backends_from_config,
    device_ids,
    job_settings,
    load_config_or_usage,
    power_links,
    table_format_of,
)
from console.cli.shared import add_bench_options, open_store

QUANTIZED_DIR = "quantized"  # under --out: the int8 models, by content address


def build_pipeline_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab pipeline",
        description="For each MODEL: quantize it (host-only, any lab host), bench the float and "
        "the int8 model on the device, then score both on the --accuracy set. A failed stage "
        "fails the stages after it with its reason. See docs/accuracy.md.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help=".onnx files or folders")
    parser.add_argument("--calibration", required=True, metavar="SET", help="calibration set")
    parser.add_argument("--scheme", choices=SCHEMES, default=SCHEMES[0], help="what to make")
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8, help="default 8")
    parser.add_argument("--device", metavar="ID", help="the device (default host:cpu)")
    parser.add_argument("--runtime", metavar="NAME", help="runtime (default: the device's first)")
    parser.add_argument(
        "--priority", type=int, default=0, metavar="N", help="lower runs first (default 0)"
    )
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="fifo",
        help="fifo: every stage at --priority; quicker-better: int8 stages of the models whose "
        "fp32 bench was quicker (and more accurate) first",
    )
    parser.add_argument("--out", metavar="DIR", default="results", help="default: results")
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("--cluster", metavar="ADDRESS", help="a devlab scheduler, tcp://HOST:PORT")
    parser.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    parser.add_argument(
        "--json", action="store_true", help="print pipeline.csv's rows as JSON on stdout"
    )
    add_bench_options(parser)
    parser.set_defaults(input_shape=[])
    return parser


def run_pipeline_tool(args: list[str], err: Console) -> int:
    """``pipeline MODEL ...`` (``args[0] == "pipeline"``): 0 all stages done, 1 some failed."""
    parsed = build_pipeline_parser().parse_args(args[1:])
    config = load_config_or_usage(parsed.config)
    settings = job_settings(parsed, config)  # resolves and checks --accuracy
    if not settings.accuracy_set:
        raise UsageError("a pipeline scores both models: give --accuracy SET")
    calibration = _checked_set(parsed.calibration)
    models, skipped = _models(parsed.models, err)
    out = Path(parsed.out)
    with _lab(parsed, config, out) as (lab, host_stages, device):
        try:
            request = PipelineRequest(
                models=models,
                device_id=device,
                calibration=calibration,
                accuracy_set=settings.accuracy_set,
                scheme=parsed.scheme,
                bits=parsed.bits,
                runtime=parsed.runtime,
                settings=settings,
                priority=parsed.priority,
                order=parsed.order,
            )
            run = PipelineRun(lab, request, host_stages, on_stage=_show(err))
        except ValueError as error:
            raise UsageError(str(error)) from None
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            report = run.run(timeout=parsed.timeout)
        except KeyboardInterrupt:
            err.print("interrupted: finished stages are kept, run again to resume")
            return ExitCode.INTERRUPTED
        except TimeoutError as error:
            err.print(f"devlab pipeline: {error}", highlight=False)
            return ExitCode.JOBS_FAILED
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
        written = _write(out, report, lab, table_format_of(parsed, config))
    if parsed.json:
        from backends.pipeline.tables import summary_rows

        print(json.dumps(summary_rows(report), indent=2))
    else:
        Console(width=160).print(_summary(report))
    err.print(f"tables written to {out}: {', '.join(p.name for p in written)}", highlight=False)
    return ExitCode.JOBS_FAILED if report.failed or skipped else ExitCode.OK


@contextlib.contextmanager
def _lab(
    parsed: argparse.Namespace, config: Config, out: Path
) -> Iterator[tuple[LabApi, HostStages, str]]:
    """This machine's Lab and host stages, or the cluster's, and the device id asked for."""
    cache = out / QUANTIZED_DIR
    if parsed.cluster:
        from backends.cluster.host_stages import ClusterHostStages
        from console.cli.cluster import client_security, open_cluster_lab

        cluster_lab = open_cluster_lab(parsed.cluster, config, own_jobs_only=True)
        try:
            stages = ClusterHostStages(parsed.cluster, cache, client_security(config))
        except (OSError, TimeoutError) as error:
            cluster_lab.shutdown()
            raise UsageError(f"cannot reach {parsed.cluster}: {error}") from None
        try:
            asked = config.resolve_device(parsed.device) if parsed.device else None
            yield cluster_lab, stages, _cluster_device(cluster_lab, asked)
        finally:
            stages.close()
            cluster_lab.shutdown()
        return
    backends = backends_from_config(config)
    found = discover_devices(backends)
    (device,) = device_ids(argparse.Namespace(device=[parsed.device or "host:cpu"]), config, found)
    store = open_store(out / STORE_FILE)
    from backends.core.lab import Lab
    from backends.measure.canary_store import CanaryStore

    lab = Lab(store, backends, power_links=power_links(config), canaries=CanaryStore())
    try:
        yield lab, LocalHostStages(cache), device
    finally:
        lab.shutdown(interrupt=True)
        store.close()


def _cluster_device(lab: LabApi, device: str | None) -> str:
    known = {d.id for d in lab.devices}
    if not device or device not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise UsageError(f"with --cluster name a cluster device: --device ID (devices: {listed})")
    return device


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _checked_set(path: str) -> str:
    from backends.accuracy.sets import SetError, open_set

    try:
        return str(open_set(path).path.resolve())
    except SetError as error:
        raise UsageError(f"--calibration: {error}") from None


def _models(paths: list[str], err: Console) -> tuple[list[Model], int]:
    """The models that could be read and how many could not (each is named); none at all is
    a usage error."""
    models: list[Model] = []
    skipped = 0
    for item in collect_models(paths):
        if isinstance(item, ModelError):
            err.print(f"skipped {item}", markup=False, highlight=False)
            skipped += 1
        else:
            models.append(item)
    if not models:
        raise UsageError("no valid input: no model could be read")
    return models, skipped


def _show(err: Console) -> Any:
    def show(stage: Stage) -> None:
        where = f" on {stage.host}" if stage.host else ""
        reason = f": {stage.error}" if stage.error else ""
        err.print(
            f"{stage.model}: {stage.label} {stage.state.value}{where}{reason}",
            markup=False,
            highlight=False,
        )

    return show


def _write(out: Path, report: PipelineReport, lab: LabApi, table_format: str) -> list[Path]:
    from backends.pipeline.tables import write_pipeline_tables
    from backends.results.formats import write_all

    devices = {d.id: d for d in lab.devices}
    written = write_all(out, report.rows, devices, table_format=table_format)
    return written + write_pipeline_tables(out, report)


def _summary(report: PipelineReport) -> Table:
    from backends.pipeline.tables import summary_rows

    table = Table(title="pipeline")
    for column in ("model", "variant", "state", "median us", "top-1", "quantized on", "bench on"):
        table.add_column(column)
    for row in summary_rows(report):
        latency, score = row["latency_us"], row["accuracy_top1"]
        table.add_row(
            row["model"],
            row["variant"],
            row["state"] if not row["error"] else f"failed: {row['error']}",
            f"{latency:.1f}" if latency is not None else "-",
            f"{score:.3f}" if score is not None else "-",
            row["quantized_on"] or "-",
            row["bench_on"] or "-",
        )
    return table
