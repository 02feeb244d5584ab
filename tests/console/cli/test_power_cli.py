"""``devlab power`` records a real pty-served virtual Monsoon; ``devlab virtual monsoon``
injects faults the driver survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from backends.power.trace import window_stats
from backends.virtual.monsoon import VirtualMonsoon

REPO = Path(__file__).resolve().parents[3]


def devlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.entry", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_devlab_power_records_a_trace(tmp_path: Path) -> None:
    monsoon = VirtualMonsoon(serial_number=777, baseline_w=0.8, noise_w=0.002).start()
    try:
        out = tmp_path / "trace.csv"
        run = devlab("power", "--port", monsoon.port, "--seconds", "2", "--out", str(out))
    finally:
        monsoon.stop()
    assert run.returncode == 0, run.stderr
    trace = pd.read_csv(out)
    assert list(trace.columns) == ["t_s", "amps", "volts", "watts"]
    assert 8_000 <= len(trace) <= 12_000  # 5 kHz for about 2 s
    mean_w, energy_j, _ = window_stats(out, 0.0, float("inf"))
    assert mean_w == pytest.approx(0.8, rel=0.02)
    assert f"written to {out}" in run.stderr and "0 dropped" in run.stderr


def test_devlab_power_names_a_dead_port(tmp_path: Path) -> None:
    run = devlab("power", "--port", str(tmp_path / "no-such-tty"), "--seconds", "1")
    assert run.returncode == 2
    assert "no-such-tty" in run.stderr


def test_virtual_monsoon_command_injects_faults_the_driver_survives(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "console.entry",
            "virtual",
            "monsoon",
            "--faults",
            "garbage,drop",
            "--fault-every",
            "0.4",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = server.stdout.readline().strip()
        assert port.startswith("/dev/"), port
        out = tmp_path / "faulty.csv"
        run = devlab("power", "--port", port, "--seconds", "2.5", "--out", str(out))
        assert run.returncode == 0, run.stderr
        dropped = int(run.stderr.split(" dropped")[0].rsplit("(", 1)[1])
        assert dropped > 0  # the dropped packets were counted from the sequence numbers
        assert len(pd.read_csv(out)) > 8_000  # and the stream went on after every fault
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=20)


def test_virtual_monsoon_command_refuses_unknown_faults() -> None:
    run = devlab("virtual", "monsoon", "--faults", "lightning", timeout=30)
    assert run.returncode == 2 and "lightning" in run.stderr


def test_devlab_virtual_needs_what_to_start() -> None:
    run = devlab("virtual", timeout=30)
    said = " ".join(run.stderr.split())  # rich may wrap the message
    assert run.returncode == 2 and "phone, monsoon or lab" in said, run.stderr


def test_virtual_phone_without_an_adb_server_says_what_to_start(tmp_path: Path) -> None:
    config = tmp_path / "devlab.toml"
    config.write_text('[android]\nadb_server = "127.0.0.1:9"\n')
    run = devlab("virtual", "phone", "--config", str(config), timeout=30)
    assert run.returncode == 2
    assert "no adb server at 127.0.0.1:9" in run.stderr and "start-server" in run.stderr
