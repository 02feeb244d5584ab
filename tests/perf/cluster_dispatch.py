"""What does the cluster cost per job, and how busy does it keep the devices?
(targets: overhead_ms <= 20, utilisation_pct >= 95)

Real processes on 127.0.0.1: ``devlab scheduler`` (with its dispatcher and store) and four
workers, each offering one device whose sessions sleep ``--iteration-ms`` per iteration (a
stand-in device: the figure is devlab's and Dask's overhead, not a model's speed). A console
(``ClusterLab``) uploads ``--jobs / 4`` distinct models and queues each on every device with
dispatch paused, then resumes dispatch and waits for the last result.

Measures:
- ``busy`` of a job: from the worker opening the job's session to its result being built on
  the worker (``Result.conditions_start["t"]`` .. ``conditions_end["t"]``, wall clock).
- ``makespan``: from resuming dispatch to the console receiving the last JobFinished event.
- ``utilisation_pct`` = 100 x (sum of busy) / (devices x makespan).
- ``overhead_ms`` = (devices x makespan - sum of busy) / jobs: the device time per job spent
  outside the job (claiming it from the store, Dask scheduling, fetching its model once per
  host, returning its result, writing it to the store), including the start and the tail.

Last line: ``RESULT overhead_ms=<x> utilisation_pct=<y>``. With too few jobs (``--smoke``) the
start and the tail dominate, so the figures only show that the path works.
Usage: python tests/perf/cluster_dispatch.py [--jobs 200] [--workers 4] [--job-ms 250]
       [--iteration-ms 10] [--prefetch 2] [--stall-s 120] [--smoke]
--smoke: the scheduler and two workers, 8 jobs of 8 x 5 ms (make test runs it so).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from backends.cluster.client import ClusterLab  # noqa: E402
from backends.core.events import JobFailed, JobFinished  # noqa: E402
from backends.core.records import JobSettings, Model  # noqa: E402
from support.fakes import StampedSleepBackend  # noqa: E402

SMOKE = {"jobs": 8, "workers": 2, "job_ms": 40.0, "iteration_ms": 5.0}
TOOL = (
    "import sys; from rich.console import Console; "
    "from console.cli.cluster import run_cluster_tool; "
    "sys.exit(run_cluster_tool(sys.argv[1:], Console(stderr=True)))"
)


def serve_worker(address: str, name: str, work_dir: Path, iteration_s: float) -> None:
    """The ``--worker`` mode: a devlab worker whose only device is a StampedSleepBackend's."""
    import logging

    from backends.cluster.lab_host import DeviceHost
    from backends.cluster.services import lab_worker

    logging.getLogger("distributed").setLevel(logging.WARNING)
    host = DeviceHost(name, [StampedSleepBackend(name, iteration_s)], work_dir)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with lab_worker(address, host, nthreads=4):
            print("ready", flush=True)
            await stop.wait()

    try:
        asyncio.run(run())
    finally:
        host.close()


def start(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115 - the child keeps it
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        raise SystemExit(f"{args[:4]} did not start:\n{log.read_text()}")
    return proc, line


def measure(options: argparse.Namespace, folder: Path) -> tuple[float, float]:
    processes: list[subprocess.Popen] = []
    try:
        scheduler, line = start(
            [
                sys.executable,
                "-c",
                TOOL,
                "scheduler",
                "--port",
                "0",
                "--out",
                str(folder / "cluster"),
                "--prefetch",
                str(options.prefetch),
            ],
            folder / "scheduler.log",
        )
        processes.append(scheduler)
        address = line.rsplit(" ", 1)[1]
        for index in range(options.workers):
            worker, _ = start(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    address,
                    "--name",
                    f"w{index}",
                    "--work-dir",
                    str(folder / f"w{index}"),
                    "--iteration-ms",
                    str(options.iteration_ms),
                ],
                folder / f"w{index}.log",
            )
            processes.append(worker)
        return run_jobs(options, folder, address)
    finally:
        for proc in reversed(processes):
            proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_jobs(options: argparse.Namespace, folder: Path, address: str) -> tuple[float, float]:
    lab = ClusterLab(address)
    finished: list[float] = []
    done = threading.Condition()

    def on_event(event: object) -> None:
        if isinstance(event, JobFinished):
            with done:
                finished.append(time.monotonic())
                done.notify_all()
        elif isinstance(event, JobFailed):
            print(f"job {event.job.id} failed: {event.error}", file=sys.stderr, flush=True)

    lab.subscribe(on_event)
    try:
        devices = [f"bench:w{i}" for i in range(options.workers)]
        while not set(devices) <= {d.id for d in lab.discover()}:
            time.sleep(0.05)
        runs = max(1, round(options.job_ms / options.iteration_ms))
        settings = JobSettings(
            warmup=0, runs=runs, rounds=1, precision_pct=0, skip_canary=True, skip_parity=True
        )
        lab.pause()
        per_device = options.jobs // options.workers
        for index in range(per_device):
            model = model_file(folder / "models", index)
            for device in devices:
                lab.submit(model, device, settings=settings)
        total = per_device * len(devices)
        started = time.monotonic()
        lab.resume()
        seen, last_progress = 0, started
        with done:
            while len(finished) < total:
                done.wait(timeout=1)
                now = time.monotonic()
                if len(finished) > seen:
                    seen, last_progress = len(finished), now
                elif now - last_progress > options.stall_s:
                    # a failed or lost job never finishes: stop instead of waiting forever
                    raise SystemExit(
                        f"stalled: {seen} of {total} jobs finished, none in the last "
                        f"{options.stall_s:g} s"
                    )
        makespan = max(finished) - started
        busy = {device: 0.0 for device in devices}
        for job, result in lab.rows():
            assert result is not None, job
            busy[job.device_id] += result.conditions_end["t"] - result.conditions_start["t"]
        capacity = len(devices) * makespan
        total_busy = sum(busy.values())
        print(f"jobs {total} on {len(devices)} devices, {runs} x {options.iteration_ms} ms each")
        print(
            f"makespan {makespan:.2f} s; busy per device: "
            + ", ".join(f"{d} {b:.2f} s" for d, b in busy.items())
        )
        return (capacity - total_busy) / total * 1e3, 100.0 * total_busy / capacity
    finally:
        lab.shutdown()


def model_file(folder: Path, index: int) -> Model:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"m{index}.onnx"
    data = f"stand-in model {index}".encode()
    path.write_bytes(data)
    return Model(path=str(path), name=path.stem, sha256=hashlib.sha256(data).hexdigest())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs in all (default 200)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument(
        "--job-ms", type=float, default=250.0, help="ms of device time per job (default 250)"
    )
    parser.add_argument(
        "--iteration-ms", type=float, default=10.0, help="ms per stand-in iteration (default 10)"
    )
    parser.add_argument(
        "--prefetch", type=int, default=2, help="the scheduler's --prefetch (default 2)"
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=120.0,
        help="give up when no job finishes for this long (default 120)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k.replace('_', '-')}={v:g}" for k, v in SMOKE.items()),
    )
    parser.add_argument("--worker", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)
    options = parser.parse_args()
    if options.worker:
        serve_worker(
            options.worker, options.name, Path(options.work_dir), options.iteration_ms / 1e3
        )
        return
    with tempfile.TemporaryDirectory(prefix="devlab-cluster-perf-") as tmp:
        overhead_ms, utilisation = measure(options, Path(tmp))
    print(
        f"dispatch overhead per job: {overhead_ms:.1f} ms; device utilisation: {utilisation:.1f} %"
    )
    print(f"RESULT overhead_ms={overhead_ms:.1f} utilisation_pct={utilisation:.1f}")


if __name__ == "__main__":
    main()
