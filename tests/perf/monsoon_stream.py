"""Can the Monsoon path keep up at 5 kHz, cheaply? (targets: 0 dropped, cpu_pct <= 10,
rss_growth_mb <= 20)

A ``VirtualMonsoon`` serves the LVPM protocol on a pty at 5,000 samples/s (paced by the wall
clock, a load burst of 0.5 s every 2 s); the real driver
(``backends.power.monsoon.driver.Monsoon``, pyserial)
reads it and its batches go into a ``TraceWriter`` (Parquet by default). All in this process,
on loopback (a pty), for ``--seconds`` (default 600).

Measured:
- samples sent by the simulator and received by the driver, and the driver's dropped count
  (sequence gaps, device-reported drops, undelivered batches) and garbage bytes;
- the reader thread's CPU as % of one core: the driver's reader thread (it only reads the port
  and parses) measures its own ``time.thread_time()``; divided by the wall time of the capture.
  The simulator's thread, the delivery thread (which runs the trace writer here) and the main
  thread are reported separately and not included;
- RSS growth: VmRSS from /proc/self/status (psutil if installed), sampled every second; the
  baseline is taken after ``--warmup`` seconds of streaming, so that one-off allocations
  (imports, first buffers, the Parquet writer) are not counted; growth = peak - baseline;
- the energy in the trace (``window_stats``) against the simulator's ground truth.

The last line is ``RESULT dropped=<n> cpu_pct=<x> rss_growth_mb=<y>``.

Usage: python tests/perf/monsoon_stream.py [--seconds 600] [--warmup 5] [--format parquet|csv]
       [--batch 250] [--keep DIR] [--smoke]
--smoke: 3 s of the same stream, the RSS base after 1 s (make test runs it so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.power.monsoon.driver import Monsoon  # noqa: E402
from backends.power.monsoon.stream import SampleBatch  # noqa: E402
from backends.power.trace import TraceWriter, window_stats  # noqa: E402
from backends.virtual.monsoon import VirtualMonsoon, periodic_load  # noqa: E402

MIB = 1024 * 1024
SMOKE = {"seconds": 3.0, "warmup": 1.0}


def rss_bytes() -> int:
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, Linux units


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--seconds", type=float, default=600.0, help="capture (default 600)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds before the RSS base (default 5)"
    )
    parser.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="trace (default parquet)"
    )
    parser.add_argument(
        "--batch", type=int, default=250, help="samples per driver batch (default 250)"
    )
    parser.add_argument("--keep", type=Path, help="write the trace into this folder and keep it")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny arguments, so the script cannot rot (make test runs it so): "
        + " ".join(f"--{k}={v:g}" for k, v in SMOKE.items()),
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="monsoon-perf-"))
    folder.mkdir(parents=True, exist_ok=True)
    trace_path = folder / f"trace.{args.format}"
    sim = VirtualMonsoon(load=periodic_load(2.0, 0.25), baseline_w=0.5, active_w=2.5)
    sim.start()
    monitor = Monsoon(sim.port)
    monitor.set_voltage(3.7)
    writer = TraceWriter(trace_path)
    writer_cpu = [0.0]

    def on_batch(batch: SampleBatch) -> None:
        cpu0 = time.thread_time()
        writer.write(batch)
        writer_cpu[0] += time.thread_time() - cpu0

    print(
        f"virtual Monsoon on {sim.port}; {args.seconds:g} s at 5 kHz into {trace_path}",
        flush=True,
    )
    rss_start = rss_bytes()
    rss_base: int | None = None
    rss_peak = 0
    t_start = time.monotonic()
    monitor.start_sampling(on_batch, batch_samples=args.batch)
    next_report = 10.0
    try:
        while True:
            elapsed = time.monotonic() - t_start
            if elapsed >= args.seconds:
                break
            time.sleep(min(1.0, args.seconds - elapsed))
            elapsed = time.monotonic() - t_start
            rss = rss_bytes()
            if rss_base is None and elapsed >= args.warmup:
                rss_base = rss
            if rss_base is not None:
                rss_peak = max(rss_peak, rss)
            if elapsed >= next_report:
                next_report += 10.0
                counts = monitor.counts
                print(
                    f"{elapsed:6.0f} s  received {counts.received:>9,}  dropped {counts.dropped}"
                    f"  garbage {counts.garbage_bytes}  reader cpu"
                    f" {100 * monitor.reader_cpu_s / elapsed:5.2f} %  rss {rss / MIB:6.1f} MiB",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("interrupted: reporting what was measured", flush=True)
    counts = monitor.stop_sampling()
    wall = time.monotonic() - t_start
    reader_cpu_s = monitor.reader_cpu_s
    monitor.close()
    writer.close()
    sim.stop()
    sent = sim.counters()
    rss_end = rss_bytes()
    if rss_base is None:
        rss_base = rss_start
    rss_peak = max(rss_peak, rss_end)

    mean_w, energy_j, samples = window_stats(trace_path, float("-inf"), float("inf"))
    cpu_pct = 100.0 * reader_cpu_s / wall
    growth_mb = (rss_peak - rss_base) / MIB
    print()
    print(f"capture         {wall:.1f} s")
    print(f"samples sent    {sent['samples_sent']:,} ({sent['samples_sent'] / wall:,.0f}/s)")
    print(f"received        {counts.received:,}; in the trace {samples:,}")
    print(
        f"dropped         {counts.dropped} (lost packets {counts.lost_packets}, device-reported"
        f" {counts.device_dropped}, undelivered {counts.undelivered}); simulator back-pressure"
        f" drops {sent['backpressure_dropped_samples']}"
    )
    print(f"garbage bytes   {counts.garbage_bytes} (resyncs {counts.resyncs})")
    print(
        f"reader thread   {reader_cpu_s:.2f} s CPU = {cpu_pct:.2f} % of one core"
        f" (trace writer {100 * writer_cpu[0] / wall:.2f} %, simulator"
        f" {100 * sim.thread_cpu_s / wall:.2f} %)"
    )
    print(
        f"RSS             start {rss_start / MIB:.1f} MiB, after warm-up {rss_base / MIB:.1f},"
        f" peak {rss_peak / MIB:.1f}, end {rss_end / MIB:.1f} MiB"
    )
    truth_j = sent["energy_sent_j"]
    print(
        f"energy          trace {energy_j:.3f} J (mean {mean_w:.4f} W), ground truth"
        f" {truth_j:.3f} J, error {100 * (energy_j - truth_j) / truth_j:+.3f} %"
    )
    print(f"trace           {trace_path} ({trace_path.stat().st_size / MIB:.1f} MiB)")
    if args.keep is None:
        trace_path.unlink()
        folder.rmdir()
    ok = counts.dropped == 0 and cpu_pct <= 10 and growth_mb <= 20
    print(f"{'OK' if ok else 'TARGET MISSED'}: targets dropped=0 cpu_pct<=10 rss_growth_mb<=20")
    print(f"RESULT dropped={counts.dropped} cpu_pct={cpu_pct:.2f} rss_growth_mb={growth_mb:.1f}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "monsoon-perf"
    sys.exit(main())
