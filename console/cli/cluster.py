"""``devlab scheduler``, ``devlab worker`` and the console side of ``--cluster``.

``devlab scheduler`` runs a Dask scheduler with devlab's dispatcher beside it (the store
lives in its ``--out``); ``devlab worker tcp://HOST:PORT`` on each lab host advertises that
host's devices and runs their jobs. Both bind 127.0.0.1 unless told otherwise and stop on
Ctrl-C or SIGTERM. This module imports rich but never textual.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import platform
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
from rich.console import Console

from backends.core.config import Config
from backends.core.store import STORE_FILE, StoreLocked
from console.cli.exit_codes import ExitCode, UsageError
from console.cli.run import (
    device_ids,
    job_settings,
    load_config_or_usage,
    run_jobs,
    table_format_of,
)
from console.cli.shared import open_store

if TYPE_CHECKING:
    from backends.cluster.client import ClusterLab

SCHEMES = ("tcp://", "tls://")


def build_scheduler_parser() -> argparse.ArgumentParser:
    from backends.cluster.dispatcher import DEFAULT_GRACE_S, DEFAULT_PREFETCH
    from backends.cluster.services import DEFAULT_PORT

    parser = argparse.ArgumentParser(
        prog="devlab scheduler",
        description="Run a Dask scheduler with devlab's dispatcher: it queues jobs from every "
        "console and hands them to the lab hosts (devlab worker). Its store is the record.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0: a free one)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the cluster's store and models (default: <user data dir>/cluster)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="S",
        help="seconds a job waits for a lab host that offers its device before it fails "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        metavar="N",
        help="jobs handed to each holder of a device at once, so the next starts the moment "
        "one ends (default %(default)s; 1: hand out only what runs)",
    )
    _add_tls(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Dask's messages")
    return parser


def build_worker_parser() -> argparse.ArgumentParser:
    from backends.cluster.remote import DEFAULT_POLL_S
    from backends.cluster.services import DEFAULT_NTHREADS

    parser = argparse.ArgumentParser(
        prog="devlab worker",
        description="Serve this lab host's devices to a devlab scheduler: they become Dask "
        "resources (device:<id>) and their jobs run here with devlab's device code.",
    )
    parser.add_argument("address", help="the scheduler, e.g. tcp://127.0.0.1:8786")
    parser.add_argument(
        "--name", help="this lab host's name, unique in the cluster (default: the host name)"
    )
    parser.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="ID=LOCAL",
        help="also offer the local device LOCAL under the shared id ID (repeatable); every "
        "host offering ID may run its jobs, e.g. pixel7=adb:R5CT00000LK",
    )
    parser.add_argument(
        "--no-devices",
        action="store_true",
        help="offer no device: run only host-only pipeline stages (quantize) here",
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--nthreads",
        type=int,
        default=DEFAULT_NTHREADS,
        metavar="N",
        help="task threads (default %(default)s; a device runs one job at a time regardless)",
    )
    parser.add_argument(
        "--work-dir",
        metavar="DIR",
        help="folder for this host's model cache, canary history and logs "
        "(default: <user cache dir>/worker-<name>)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=DEFAULT_POLL_S,
        metavar="S",
        help="seconds between device discoveries (default %(default)s)",
    )
    _add_tls(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Dask's messages")
    return parser


def _add_tls(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS (all three turn it on; see docs/cluster.md)")
    group.add_argument("--tls-ca-file", metavar="FILE", help="CA bundle that signed the peers")
    group.add_argument("--tls-cert", metavar="FILE", help="this process's certificate (PEM)")
    group.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")


def run_cluster_tool(args: list[str], err: Console) -> int:
    """``devlab scheduler ...`` or ``devlab worker ...`` (``args[0]`` names which)."""
    try:
        if args[:1] == ["scheduler"]:
            return scheduler_command(build_scheduler_parser().parse_args(args[1:]), err)
        if args[:1] == ["worker"]:
            return worker_command(build_worker_parser().parse_args(args[1:]), err)
        raise UsageError("expected 'devlab scheduler ...' or 'devlab worker ...'")
    except UsageError as error:
        err.print(
            f"devlab {args[0] if args else ''}: error: {error}", markup=False, highlight=False
        )
        return ExitCode.USAGE
    except SystemExit as exit_:  # argparse's own usage errors
        return int(exit_.code or 0)


# -- devlab scheduler -------------------------------------------------------------------------


def scheduler_command(parsed: argparse.Namespace, err: Console) -> int:
    from backends.cluster.services import cluster_security

    _quiet_dask(parsed.verbose)
    if parsed.grace < 0:
        raise UsageError("--grace must be 0 or more seconds")
    if parsed.prefetch < 1:
        raise UsageError("--prefetch must be 1 or more")
    security = cluster_security(_tls(parsed), "scheduler")
    out = Path(parsed.out) if parsed.out else Path(platformdirs.user_data_dir("devlab")) / "cluster"
    store = open_store(out / STORE_FILE)
    try:
        asyncio.run(_serve_scheduler(store, parsed, security))
    except OSError as error:
        raise UsageError(
            f"cannot listen on {parsed.host}:{parsed.port}: {error.strerror or error}"
        ) from None
    finally:
        store.close()
    return ExitCode.OK


async def _serve_scheduler(store: Any, parsed: argparse.Namespace, security: Any) -> None:
    from backends.cluster.services import lab_scheduler

    stop = _stop_event()
    async with lab_scheduler(
        store,
        host=parsed.host,
        port=parsed.port,
        grace_s=parsed.grace,
        prefetch=parsed.prefetch,
        security=security,
    ) as dispatcher:
        print(f"devlab scheduler listening on {dispatcher.scheduler.address}", flush=True)
        await stop.wait()
        # Workers' pending cancel-watch waits end with the scheduler; that is not an error.
        logging.getLogger("distributed.event").setLevel(logging.CRITICAL)


# -- devlab worker ----------------------------------------------------------------------------


def worker_command(parsed: argparse.Namespace, err: Console) -> int:
    from backends.cluster.lab_host import DeviceHost
    from backends.cluster.resources import parse_aliases
    from backends.cluster.services import cluster_security
    from backends.devices.registry import default_backends
    from backends.power.capture import links_from_config

    _quiet_dask(parsed.verbose)
    _check_address(parsed.address)
    if parsed.nthreads < 1 or parsed.poll <= 0:
        raise UsageError("--nthreads must be 1 or more and --poll a positive number of seconds")
    security = cluster_security(_tls(parsed), "worker")
    config = load_config_or_usage(parsed.config)
    name = parsed.name or platform.node() or "lab-host"
    try:
        aliases = parse_aliases(parsed.alias)
        backends = [] if parsed.no_devices else default_backends(config)
        power_links = [] if parsed.no_devices else links_from_config(config.raw)
    except ValueError as error:
        raise UsageError(str(error)) from None
    work_dir = (
        Path(parsed.work_dir)
        if parsed.work_dir
        else Path(platformdirs.user_cache_dir("devlab")) / f"worker-{name}"
    )
    try:
        host = DeviceHost(name, backends, work_dir, aliases, power_links)
    except StoreLocked as error:
        raise UsageError(f"another devlab worker named {name!r} runs here: {error}") from None
    try:
        return asyncio.run(_serve_worker(host, parsed, security, err))
    except (OSError, TimeoutError) as error:
        raise UsageError(f"cannot join the scheduler at {parsed.address}: {error}") from None
    finally:
        host.close()


async def _serve_worker(host: Any, parsed: argparse.Namespace, security: Any, err: Console) -> int:
    """Join the scheduler (it may not be up yet), serve until a signal or its loss."""
    stop = _stop_event()
    ready = asyncio.Event()
    serving = asyncio.ensure_future(_join(host, parsed, security, err, stop, ready))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not serving.done() and not ready.is_set():  # stopped while still joining
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return ExitCode.OK
    return await serving


async def _join(
    host: Any,
    parsed: argparse.Namespace,
    security: Any,
    err: Console,
    stop: asyncio.Event,
    ready: asyncio.Event,
) -> int:
    from backends.cluster.services import lab_worker

    async with lab_worker(
        parsed.address,
        host,
        listen=parsed.host,
        nthreads=parsed.nthreads,
        security=security,
        poll_s=parsed.poll,
    ) as worker:
        ready.set()
        devices = ", ".join(sorted(host.devices)) or "none"
        print(f"devlab worker {host.name} ready with devices: {devices}", flush=True)
        for alias in host.missing_aliases():
            err.print(f"warning: --alias {alias}: no such local device (yet)", highlight=False)
        stopped = asyncio.ensure_future(stop.wait())
        finished = asyncio.ensure_future(worker.finished())
        await asyncio.wait([stopped, finished], return_when=asyncio.FIRST_COMPLETED)
        for task in (stopped, finished):
            task.cancel()
        if not stop.is_set():
            err.print(
                f"devlab worker: the scheduler at {parsed.address} went away", highlight=False
            )
            return ExitCode.JOBS_FAILED
    return ExitCode.OK


# -- the console side: devlab --cluster ------------------------------------------------------


def open_cluster_lab(address: str, config: Config, own_jobs_only: bool = False) -> ClusterLab:
    """A ClusterLab on the scheduler at ``address``, its devices discovered; TLS files come
    from the config's ``[cluster]`` table. ``own_jobs_only``: follow, wait for and tabulate
    only the jobs this console queues (the headless run). UsageError when the scheduler
    cannot be reached."""
    from backends.cluster.client import ClusterLab

    _check_address(address)
    security = client_security(config)
    try:
        lab = ClusterLab(address, security=security, own_jobs_only=own_jobs_only)
    except (OSError, TimeoutError) as error:
        raise UsageError(f"cannot reach the devlab scheduler at {address}: {error}") from None
    lab.discover()
    return lab


def client_security(config: Config) -> Any:
    """A console's Dask Security from the config's ``[cluster]`` TLS files (None without)."""
    from backends.cluster.services import TlsFiles, cluster_security

    table = config.raw.get("cluster", {})
    try:
        tls = TlsFiles.from_options(
            table.get("tls_ca_file"), table.get("tls_cert"), table.get("tls_key")
        )
    except ValueError as error:
        raise UsageError(f"config [cluster]: {error}".replace("--tls-", "tls_")) from None
    return cluster_security(tls, "client")


def run_cluster_command(args: argparse.Namespace, err: Console) -> int:
    """``devlab --run ... --cluster ADDRESS``: the headless run, queued on the cluster.

    ``args`` is ``console.cli.main.build_parser()``'s namespace with a ``cluster`` attribute; the
    tables are written to ``--out`` here, the store is the dispatcher's.
    """
    if args.fresh:
        raise UsageError(
            "--fresh forgets a local store; with --cluster the store is the scheduler's "
            "(start devlab scheduler with a new --out instead)"
        )
    config = load_config_or_usage(args.config)
    settings = job_settings(args, config)
    lab = open_cluster_lab(args.cluster, config, own_jobs_only=True)
    try:
        found = {device.id: device for device in lab.devices}
        if not args.device:
            known = ", ".join(sorted(found)) or "none"
            raise UsageError(f"with --cluster name the devices: --device ID (devices: {known})")
        wanted = device_ids(args, config, found)
        out_dir = Path(args.out or "results")
        fmt = table_format_of(args, config)
        return run_jobs(lab, args, wanted, settings, out_dir, err, fmt)
    finally:
        lab.shutdown()


# -- helpers ----------------------------------------------------------------------------------


def _tls(parsed: argparse.Namespace) -> Any:
    from backends.cluster.services import TlsFiles

    try:
        return TlsFiles.from_options(parsed.tls_ca_file, parsed.tls_cert, parsed.tls_key)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_address(address: str) -> None:
    if not address.startswith(SCHEMES):
        raise UsageError(f"{address!r} is not a scheduler address: use tcp://HOST:PORT (or tls://)")


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (the running loop's handlers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def _quiet_dask(verbose: bool) -> None:
    """Dask logs every connection at INFO; devlab shows warnings unless asked."""
    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.WARNING)
