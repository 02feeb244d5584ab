"""adb throughput and latency against a virtual phone, through adbutils and a real adb server.

It starts a PRIVATE adb server (the ``adb`` binary of the adbutils wheel, on a free port, never
5037; see ``tests/support/adb_fixtures.py``), starts a ``VirtualPhone`` with a temp sandbox,
connects it and measures through ``DevlabAdbClient`` (an AdbClient that never starts a server by
itself):

- push of a random file (``--mib``, 20 MiB) to /data/local/tmp/devlab/bench.bin and pull back
  (``--runs`` each, MB/s with MB = 1e6 bytes); every pulled copy must equal the original;
- the median round trip of ``device.shell("echo hi")`` over ``--calls`` calls, the device
  addressed by serial, and also by transport id.

Every figure is printed; the last line is
``RESULT push_mb_s=<median> pull_mb_s=<median> shell_ms=<median> shell_ms_transport_id=<median>``.
Cleanup always runs: disconnect, stop the phone, end the adb server started here (by its pid)
and remove the temp folders.
Usage: python tests/perf/adb_push.py [--runs 3] [--calls 100] [--mib 20] [--smoke]
--smoke: one push/pull of 2 MiB and 10 shell calls each way, the same path (make test).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from adbutils import AdbDevice  # noqa: E402

from backends.devices.android.adb import WORKDIR, DevlabAdbClient  # noqa: E402
from backends.virtual import VirtualPhone  # noqa: E402
from support.adb_fixtures import connect_phone, private_adb_server  # noqa: E402

DEFAULT_ADB_PORT = 5037
MIB = 1024 * 1024
REMOTE_PATH = f"{WORKDIR}/bench.bin"
SMOKE = {"runs": 1, "calls": 10, "mib": 2}


def transfer(device: AdbDevice, source: Path, pulled: Path, runs: int) -> tuple[list, list]:
    """Push ``source`` and pull it back ``runs`` times; MB/s lists (push, pull)."""
    original = source.read_bytes()
    size = len(original)
    push_rates: list[float] = []
    pull_rates: list[float] = []
    for run in range(1, runs + 1):
        pulled.unlink(missing_ok=True)
        start = time.perf_counter()
        pushed = device.sync.push(str(source), REMOTE_PATH)
        push_s = time.perf_counter() - start
        start = time.perf_counter()
        received = device.sync.pull(REMOTE_PATH, pulled)
        pull_s = time.perf_counter() - start
        if pushed != size or received != size:
            raise RuntimeError(f"run {run}: pushed {pushed} and pulled {received} bytes")
        if pulled.read_bytes() != original:
            raise RuntimeError(f"run {run}: the pulled file differs from the original")
        push_rates.append(size / push_s / 1e6)
        pull_rates.append(size / pull_s / 1e6)
        print(
            f"run {run}: push {push_s:.3f} s = {push_rates[-1]:.1f} MB/s, "
            f"pull {pull_s:.3f} s = {pull_rates[-1]:.1f} MB/s, pulled bytes equal",
            flush=True,
        )
    return push_rates, pull_rates


def shell_round_trips(device: AdbDevice, calls: int) -> list[float]:
    """Milliseconds of each ``device.shell("echo hi")`` (after one untimed warm-up call)."""
    if device.shell("echo hi") != "hi":
        raise RuntimeError("echo hi did not answer hi")
    times: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        output = device.shell("echo hi")
        times.append((time.perf_counter() - start) * 1e3)
        if output != "hi":
            raise RuntimeError(f"echo hi answered {output!r}")
    return times


def transport_id_of(client: DevlabAdbClient, serial: str) -> int | None:
    for info in client.list(extended=True):
        if info.serial == serial:
            return info.transport_id
    return None


def describe(name: str, values: list[float], unit: str) -> float:
    median = statistics.median(values)
    print(
        f"{name}: median {median:.2f} {unit} (min {min(values):.2f}, max {max(values):.2f}, "
        f"n={len(values)})",
        flush=True,
    )
    return median


def benchmark(client: DevlabAdbClient, phone: VirtualPhone, work: Path, args) -> str:
    """Run every measurement on the connected ``phone``; the RESULT line."""
    device = client.device(serial=phone.serial)
    source = work / "bench.bin"
    size = args.mib * MIB
    source.write_bytes(os.urandom(size))
    print(f"file: {size} random bytes -> {REMOTE_PATH}", flush=True)
    push_rates, pull_rates = transfer(device, source, work / "pulled.bin", args.runs)
    push = describe("push", push_rates, "MB/s")
    pull = describe("pull", pull_rates, "MB/s")

    shell = describe(
        f'shell("echo hi") by serial {phone.serial}', shell_round_trips(device, args.calls), "ms"
    )
    result = f"RESULT push_mb_s={push:.1f} pull_mb_s={pull:.1f} shell_ms={shell:.2f}"
    transport_id = transport_id_of(client, phone.serial)
    if transport_id:
        by_id = client.device(transport_id=transport_id)
        shell_id = describe(
            f'shell("echo hi") by transport_id {transport_id}',
            shell_round_trips(by_id, args.calls),
            "ms",
        )
        result += f" shell_ms_transport_id={shell_id:.2f}"
    else:
        print("no transport_id in `adb devices -l`: skipped the transport_id figure")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="push/pull runs (default 3)")
    parser.add_argument("--calls", type=int, default=100, help="timed shell calls (default 100)")
    parser.add_argument("--mib", type=int, default=20, help="size of the file in MiB (default 20)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k}={v}" for k, v in SMOKE.items()),
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.calls < 1 or args.mib < 1:
        parser.error("--runs, --calls and --mib must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="devlab-perf-adb-"))
    result = None
    try:
        # The adb server runs as our child with HOME/TMPDIR in its own temp folder; leaving
        # this block terminates exactly that process (by its pid) and removes the folder.
        with (
            pytest.MonkeyPatch.context() as patch,
            private_adb_server(patch) as (_, port, server),
        ):
            if port == DEFAULT_ADB_PORT:
                raise RuntimeError("the private adb server got port 5037; run again")
            print(f"adb server: pid {server.pid}, port {port}", flush=True)
            client = DevlabAdbClient("127.0.0.1", port)
            print(f"adb server version: {client.server_version()}", flush=True)
            phone = VirtualPhone(work / "phone")
            phone.start()
            try:
                connect_phone(client, phone)
                print(f"virtual phone: {phone.serial}, sandbox {phone.sandbox.root}", flush=True)
                result = benchmark(client, phone, work, args)
            finally:
                with contextlib.suppress(Exception):
                    client.disconnect(phone.serial)
                phone.stop()
    except (pytest.skip.Exception, pytest.fail.Exception) as error:
        # adb_fixtures reports a missing binary or a dead server the pytest way
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
