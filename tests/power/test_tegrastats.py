"""tegrastats as a power source: the rails of real captures from several boards and JetPack
versions (Nano/TX1 ``POM_5V_IN a/b``, TX2 ``VDD_IN a/b``, AGX Xavier bare ``GPU a/b … SYS5V``,
Orin ``VDD_IN amW/bmW`` with a timestamp, an L4T 28 TX1 without rails), the stand-in's lines,
and energy per inference from rail samples with the baseline method.

Fixtures in ``tests/fixtures/bench-output/`` are verbatim public outputs (``SOURCES.md``);
expected numbers were read from the files by eye.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from backends.power.rails import rail_energy
from backends.power.tegrastats import SUM_OF_RAILS, interval_argv, parse_line, parse_output
from backends.virtual.jetson import provision_jetson
from support.helpers import bench_output as fixture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench-output"


def rails(line) -> dict[str, tuple[float, float | None]]:
    return {name: (r.current_mw, r.average_mw) for name, r in line.rails.items()}


def test_every_tegrastats_fixture_is_read_without_loss() -> None:
    files = sorted(FIXTURES.glob("tegrastats_*.txt"))
    assert len(files) == 6
    for path in files:
        output = parse_output(path.read_text())
        assert output.lines, path.name
        # only the shell's ^C is not tegrastats output
        assert output.ignored in ([], ["^C"]), path.name
        unreadable = [w for w in output.warnings if "unreadable" in w]
        assert unreadable == [], path.name


def test_nano_pom_rails_without_unit() -> None:
    output = parse_output(fixture("tegrastats_1.txt"))
    assert len(output.lines) == 3 and output.ignored == ["^C"]
    assert rails(output.lines[1]) == {
        "POM_5V_IN": (2247.0, 2189.0),
        "POM_5V_GPU": (78.0, 78.0),
        "POM_5V_CPU": (275.0, 275.0),
    }
    assert output.lines[2].board() == ("POM_5V_IN", 2132.0)
    assert output.lines[0].stamp is None


def test_xavier_bare_rail_names_sum_to_the_board() -> None:
    [line] = parse_output(fixture("tegrastats_2.txt")).lines
    assert rails(line) == {
        "GPU": (463.0, 463.0),
        "CPU": (618.0, 618.0),
        "SOC": (2936.0, 2936.0),
        "CV": (0.0, 0.0),
        "VDDRQ": (309.0, 309.0),
        "SYS5V": (3306.0, 3306.0),
    }  # "CPU [0%@1190,…]" and "GPU@30.5C" are not rails
    assert line.board() == (SUM_OF_RAILS, 7632.0)


def test_tx2_vdd_rails() -> None:
    [line] = parse_output(fixture("tegrastats_3.txt")).lines
    assert line.board() == ("VDD_IN", 3140.0)
    assert rails(line)["VDD_4V0_WIFI"] == (633.0, 527.0)
    assert len(line.rails) == 6


def test_orin_milliwatt_rails_with_timestamp() -> None:
    [line] = parse_output(fixture("tegrastats_4.txt")).lines
    assert line.stamp == "11-30-2025 13:26:01"
    assert rails(line) == {
        "VDD_IN": (5704.0, 5704.0),
        "VDD_CPU_GPU_CV": (831.0, 831.0),
        "VDD_SOC": (1624.0, 1624.0),
    }  # "APE 200", "NVDEC off", "GR3D_FREQ 0%@[305]" are not rails


def test_old_l4t_without_rails_says_so() -> None:
    output = parse_output(fixture("tegrastats_5.txt"))
    assert len(output.lines) == 2 and all(not line.rails for line in output.lines)
    assert output.lines[0].board() is None
    assert any("no power rail" in w for w in output.warnings)


def test_rail_order_does_not_matter() -> None:
    [line] = parse_output(fixture("tegrastats_6.txt")).lines
    assert line.board() == ("POM_5V_IN", 2956.0)
    assert rails(line)["POM_5V_GPU"] == (8633.0, 8742.0)


def test_an_unreadable_rail_is_flagged_with_its_line() -> None:
    """DERIVED from tegrastats_4.txt: VDD_SOC's average given a unit mismatch."""
    text = fixture("tegrastats_4.txt").replace("VDD_SOC 1624mW/1624mW", "VDD_SOC 1624mW/1624")
    line = parse_line(text.strip())
    assert line is not None and "VDD_SOC" not in line.rails
    assert line.board() == ("VDD_IN", 5704.0)
    assert len(line.warnings) == 1
    assert "VDD_SOC '1624mW/1624'" in line.warnings[0] and "RAM 2461/7620MB" in line.warnings[0]
    assert parse_line("not tegrastats") is None


def test_interval_argv() -> None:
    assert interval_argv("/usr/bin/tegrastats", 100) == ["/usr/bin/tegrastats", "--interval", "100"]
    with pytest.raises(ValueError, match="at least 1 ms"):
        interval_argv("tegrastats", 0)


def test_standin_tegrastats_prints_orin_lines_that_rise_under_load(tmp_path: Path) -> None:
    tools = provision_jetson(tmp_path / "jetson")
    proc = subprocess.Popen(
        [tools.tegrastats, "--interval", "50"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    marker = tools.sandbox / "sys/devlab/load.d" / str(os.getpid())
    try:
        assert proc.stdout is not None
        idle = [parse_line(proc.stdout.readline()) for _ in range(4)]
        marker.write_text("1\n")  # a live pid's marker: a stand-in tool is running
        time.sleep(0.2)
        busy = [parse_line(proc.stdout.readline()) for _ in range(12)][-4:]
    finally:
        marker.unlink(missing_ok=True)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    assert all(line is not None and line.stamp for line in idle + busy)
    idle_w = [line.board()[1] for line in idle]
    busy_w = [line.board()[1] for line in busy]
    assert max(idle_w) < 5000 < 7000 < min(busy_w)
    assert set(idle[0].rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}


# -- energy per inference from rail samples ----------------------------------------------------


def samples(interval_s: float = 0.1) -> dict:
    """SYNTHETIC rail samples: 5 W idle for 2 s, 8 W over a 1 s timed window of 100 runs."""
    t = [1000.0 + i * interval_s for i in range(int(3.5 / interval_s))]
    mw = [8000.0 if 1002.0 <= x < 1003.0 else 5000.0 for x in t]
    return {
        "source": "tegrastats",
        "rail": "VDD_IN",
        "interval_ms": interval_s * 1000,
        "t": t,
        "mw": mw,
        "rails": {"VDD_IN": mw},
        "baseline_window": [1000.0, 1002.0],
        "timed_windows": [[1002.0, 1002.5], [1002.5, 1003.0]],
        "iterations": 100,
    }


def test_energy_per_inference_with_the_baseline_method(tmp_path: Path) -> None:
    reading = rail_energy(samples(), tmp_path / "power.csv")
    assert reading.warning is None
    power = reading.power
    assert power["baseline_w"] == pytest.approx(5.0)
    assert power["mean_w"] == pytest.approx(8.0)
    assert power["energy_j"] == pytest.approx(8.0)
    assert power["net_energy_j"] == pytest.approx(3.0)
    assert power["energy_per_inference_mj"] == pytest.approx(30.0)
    assert power["window_s"] == pytest.approx(1.0)
    assert power["rails_mean_w"] == {"VDD_IN": pytest.approx(8.0)}
    assert (tmp_path / "power.csv").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"t": [], "mw": []}, "no rail sample"),
        ({"mw": [1.0]}, "equal length"),
        ({"timed_windows": [[2.0, 1.0]]}, "start <= end"),
        ({"iterations": 0}, "iteration count"),
        ({"baseline_window": [0.0, 1.0]}, "baseline window holds no rail sample"),
    ],
)
def test_unusable_samples_give_a_warning_not_an_error(
    tmp_path: Path, change: dict, message: str
) -> None:
    reading = rail_energy({**samples(), **change}, tmp_path / "power.csv")
    assert reading.warning is not None and message in reading.warning
    assert "energy_per_inference_mj" not in reading.power


def test_a_window_shorter_than_two_samples_is_measured_but_flagged(tmp_path: Path) -> None:
    data = {**samples(), "timed_windows": [[1002.2, 1002.35]], "iterations": 10}
    reading = rail_energy(data, tmp_path / "power.csv")
    assert reading.power["mean_w"] == pytest.approx(8.0)
    assert reading.warning is not None and "coarse" in reading.warning
