"""Issue 19's must-show, end to end through the real ``devlab`` command: the shipped digits
classifier quantized both ways (``--scheme ort-qdq`` and ``--scheme snpe``), benched and scored
on host:cpu and on the virtual phone (its ``ort`` runtime with the QDQ model; the stand-in SNPE
SDK with the encodings through ``--quantization-overrides`` on ``snpe-dsp`` against ``snpe-cpu``),
and the "fast but wrong" table, CSV and plot that the last run writes over all of them.

One ``--out`` folder collects the runs (a run keeps what the folder already measured), so the
last run's report pairs every float run with its quantized twin per device.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import adbutils
import numpy as np
import pytest

from backends.virtual import VirtualPhone
from backends.virtual.snpe_sdk import make_standin_sdk
from backends.virtual.tools.snpe_standin import read_container
from support.helpers import REPO_ROOT, read_results_csv

ASSETS = REPO_ROOT / "assets" / "accuracy"
DIGITS = ASSETS / "digits.onnx"
QUICK = ["--runs", "6", "--rounds", "1", "--warmup", "1", "--precision", "0", "--no-canary"]
PHONE_SAMPLES = 20  # every sample is one tool run on the phone
MAX_DROP = 0.02


def subset(tmp_path: Path, size: int) -> Path:
    """The first ``size`` samples of digits-test, stacked, with the same recipe."""
    folder = tmp_path / "digits-phone"
    folder.mkdir()
    source = ASSETS / "digits-test"
    np.save(folder / "inputs.npy", np.load(source / "inputs.npy")[:size])
    rows = list(csv.reader((source / "labels.csv").open()))[: size + 1]
    with (folder / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (folder / "set.json").write_text((source / "set.json").read_text())
    return folder


def devlab(*args: object, home: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_DATA_HOME=str(home / "data"),
        ANDROID_ADB_SERVER_PORT=str(port),
        PYTHONUNBUFFERED="1",
        COLUMNS="400",
    )
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "console.entry", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, f"{run.args}\n{run.stdout}\n{run.stderr}"
    return run.stdout


def test_both_quantizations_benched_and_scored_on_the_host_and_the_virtual_phone(
    tmp_path: Path,
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,
) -> None:
    port = adb_server[1]
    home, q_dir, out = tmp_path / "home", tmp_path / "Q", tmp_path / "R"
    sdk = make_standin_sdk(tmp_path / "snpe-sdk")
    config = tmp_path / "devlab.toml"
    config.write_text(
        f'[android]\nadb_server = "127.0.0.1:{port}"\n\n'
        f'[snpe]\nsdk = "{sdk}"\ncache_dir = "{tmp_path / "snpe-cache"}"\n',
        encoding="utf-8",
    )
    calib = ASSETS / "digits-calib"
    for scheme in ("ort-qdq", "snpe"):
        ok(devlab("quantize", DIGITS, "--calibration", calib, "--scheme", scheme, "--out", q_dir,
                  home=home, port=port))  # fmt: skip
    qdq, encodings = q_dir / "digits.int8-qdq.onnx", q_dir / "digits.int8.encodings.json"
    phone = f"adb:{virtual_phone.serial}"
    phone_set = subset(tmp_path, PHONE_SAMPLES)
    common = ["--out", out, "--config", config, *QUICK]

    ok(devlab("--run", DIGITS, qdq, "--accuracy", ASSETS / "digits-test", *common,
              home=home, port=port))  # fmt: skip
    ok(devlab("--run", DIGITS, qdq, "--device", phone, "--runtime", "ort", "--no-parity",
              "--accuracy", phone_set, *common, home=home, port=port))  # fmt: skip
    ok(devlab("--run", DIGITS, "--device", phone, "--runtime", "snpe-cpu", "--no-parity",
              "--accuracy", phone_set, *common, home=home, port=port))  # fmt: skip
    last = ok(devlab("--run", DIGITS, "--device", phone, "--runtime", "snpe-dsp", "--no-parity",
                     "--quantization-overrides", encodings, "--accuracy", phone_set, *common,
                     home=home, port=port))  # fmt: skip

    rows = {(r["model"], r["device"], r["runtime"]): r for r in read_results_csv(out)}
    assert len(rows) == 6, sorted(rows)  # 2 models x host, ort; snpe-cpu, snpe-dsp
    for row in rows.values():
        assert row["status"] == "done" and float(row["mean_us"]) > 0, row  # SNPE: no median
        assert row["accuracy_top1"], row  # accuracy next to latency in every row
    assert rows[("digits", phone, "snpe-dsp")]["settings.clip_ranges"].endswith(encodings.name)

    with (out / "fast_wrong.csv").open(newline="") as handle:
        report = {(r["device"], r["quant_runtime"]): r for r in csv.DictReader(handle)}
    assert set(report) == {
        ("host:cpu", rows[("digits", "host:cpu", "onnxruntime")]["runtime"]),
        (phone, "ort"),
        (phone, "snpe-dsp"),
    }
    figures = []
    for (device, runtime), pair in sorted(report.items()):
        fp32, int8 = float(pair["fp32_top1"]), float(pair["quant_top1"])
        assert float(pair["fp32_us"]) > 0 and float(pair["quant_us"]) > 0
        assert float(pair["speedup"]) == pytest.approx(
            float(pair["fp32_us"]) / float(pair["quant_us"]), rel=1e-3
        )
        assert float(pair["drop_points"]) == pytest.approx((fp32 - int8) * 100, abs=1e-6)
        assert fp32 > 0.9 and abs(fp32 - int8) <= MAX_DROP, pair
        assert pair["flagged"] == "False"
        figures.append(
            f"{device} {pair['scheme']} ({pair['fp32_runtime']} vs {runtime}, set "
            f"{pair['accuracy_set']}): top-1 fp32 {fp32:.4f} int8 {int8:.4f}, "
            f"latency {float(pair['fp32_us']):.1f} vs {float(pair['quant_us']):.1f} us"
        )
    print("\n".join(figures))
    assert report[(phone, "snpe-dsp")]["fp32_runtime"] == "snpe-cpu"
    assert report[(phone, "snpe-dsp")]["scheme"] == "snpe-encodings"
    assert rows[("digits", phone, "ort")]["accuracy_set_size"] == str(PHONE_SAMPLES)
    assert "fast but wrong" in last and "snpe-encodings" in last
    png = (out / "accuracy_pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 15_000

    # the stand-in quantizer applied the encodings the DSP job handed over
    metas = [read_container(p)[1] for p in (tmp_path / "snpe-cache").rglob("*.dlc")]
    applied = [m["quantization"]["applied"] for m in metas if m.get("quantization")]
    assert applied == [{"activations": 5, "weights": 2}], metas
