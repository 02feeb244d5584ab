"""Stand-in for NVIDIA Jetson's ``tegrastats`` on the virtual Jetson.

Prints one line every ``--interval`` milliseconds (default 1000) until it is stopped, in the
format of a Jetson Orin Nano on JetPack 6 (a ``MM-DD-YYYY HH:MM:SS`` prefix, rails as
``VDD_IN 5704mW/5704mW VDD_CPU_GPU_CV 831mW/831mW VDD_SOC 1624mW/1624mW``: current/average
since start). The board draws more while a stand-in ``trtexec`` runs on it: one marker file
per running tool under the sandbox's ``sys/devlab/load.d`` (``_common.Heater``), whose process
is alive. The values are the virtual board's, not a measurement of this machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from backends.virtual.tools._common import LOAD_DIR, SANDBOX_ENV

IDLE_MW = {"VDD_IN": 4800.0, "VDD_CPU_GPU_CV": 650.0, "VDD_SOC": 1400.0}
ACTIVE_MW = {"VDD_IN": 2600.0, "VDD_CPU_GPU_CV": 2100.0, "VDD_SOC": 350.0}
NOISE_MW = 25.0


def busy() -> bool:
    """Whether a stand-in tool runs on this virtual board now (a live pid's marker)."""
    root = os.environ.get(SANDBOX_ENV)
    if not root:
        return False
    folder = Path(root) / LOAD_DIR
    with contextlib.suppress(OSError):
        for marker in folder.iterdir():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(marker.name), 0)
                return True
    return False


def line(now: float, rails: dict[str, tuple[float, float]], load: float) -> str:
    stamp = time.strftime("%m-%d-%Y %H:%M:%S", time.localtime(now))
    gpu = int(99 * load)
    power = " ".join(f"{name} {cur:.0f}mW/{avg:.0f}mW" for name, (cur, avg) in rails.items())
    return (
        f"{stamp} RAM 2461/7620MB (lfb 3x2MB) SWAP 0/3810MB (cached 0MB) "
        "CPU [19%@729,14%@729,22%@729,8%@729,15%@729,17%@729] EMC_FREQ 4%@2133 "
        f"GR3D_FREQ {gpu}%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 "
        f"cpu@46.531C soc2@47.312C soc0@46.593C gpu@48.218C tj@48.843C soc1@48.843C {power}"
    )


def parse(argv: Sequence[str]) -> int:
    interval = 1000
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--interval" and args:
            value = args.pop(0)
        elif arg.startswith("--interval="):
            value = arg.split("=", 1)[1]
        elif arg == "--verbose":
            continue
        else:
            print(f"Unknown option: {arg}\nUsage: tegrastats [--interval <ms>]", file=sys.stderr)
            raise SystemExit(1)
        try:
            interval = int(value)
        except ValueError:
            print(f"Invalid interval: {value}", file=sys.stderr)
            raise SystemExit(1) from None
        if interval < 1:
            print(f"Invalid interval: {value}", file=sys.stderr)
            raise SystemExit(1)
    return interval


def main(argv: Sequence[str] | None = None) -> int:
    interval_s = parse(sys.argv[1:] if argv is None else argv) / 1000.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    rng = random.Random(os.getpid())
    sums = dict.fromkeys(IDLE_MW, 0.0)
    count = 0
    next_at = time.monotonic()
    try:
        while True:
            load = 1.0 if busy() else 0.0
            count += 1
            rails = {}
            for name, idle in IDLE_MW.items():
                current = idle + load * ACTIVE_MW[name] + rng.uniform(-NOISE_MW, NOISE_MW)
                sums[name] += current
                rails[name] = (current, sums[name] / count)
            print(line(time.time(), rails, load), flush=True)
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))
    except (KeyboardInterrupt, BrokenPipeError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
