"""SNPE rounds synced by beacon: ``snpe-net-run`` stamped on the phone's clock, its window the
command less the Init and De-Init that ``snpe-diagview`` reports.

The virtual phone's clock runs 1.5 s ahead and 150 ppm fast; the stand-in SNPE SDK's
``snpe-net-run`` (ONNX Runtime behind the SNPE formats) marks the phone loaded while its
inferences run, so the virtual Monsoon draws ``ACTIVE_W`` then and ``BASELINE_W`` otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.devices.android.snpe_config import SnpeConfig
from backends.power.sync_capture import TRIMMED
from backends.virtual import PhoneProfile, VirtualPhone
from backends.virtual.snpe_sdk import make_standin_sdk
from support.power_jobs import ACTIVE_W, BASELINE_W, run_synced_job

OFFSET_S, DRIFT_PPM = 1.5, 150.0
RUNS, ROUNDS = 1500, 3  # rounds of ~0.4 s: a stalled virtual Monsoon blurs shorter ones


@pytest.fixture
def virtual_phone_profile() -> PhoneProfile:
    return PhoneProfile(clock_offset_s=OFFSET_S, clock_drift_ppm=DRIFT_PPM)


def test_snpe_rounds_are_stamped_and_measured_without_init_and_deinit(
    adb_server, virtual_phone: VirtualPhone, tmp_path: Path
) -> None:
    _, port = adb_server
    snpe = SnpeConfig(sdk=make_standin_sdk(tmp_path / "sdk"), cache_dir=tmp_path / "snpe-cache")
    settings = {"runs": RUNS, "rounds": ROUNDS}
    result, load = run_synced_job(
        virtual_phone, port, tmp_path, "snpe-cpu", settings, monsoon_serial=4747, snpe=snpe
    )
    power = result.power
    assert power is not None
    assert power["power_sync"] == "beacon", result.warnings
    assert power["clock_offset_s"] == pytest.approx(OFFSET_S, abs=0.01)
    assert power["power_window"] == TRIMMED
    assert len(power["device_rounds"]) == ROUNDS
    assert sum(count for *_, count in power["device_rounds"]) == RUNS
    ref = virtual_phone.clock_ref_ns / 1e9

    def to_host(device_t: float) -> float:
        return ref + (device_t - ref - OFFSET_S) / (1.0 + DRIFT_PPM * 1e-6)

    for (start, end, count), window in zip(
        power["device_rounds"], power["device_windows"], strict=True
    ):
        assert start < window[0] < window[1] < end and window[2] == count
    # the truth: the load over each round's whole command (the stand-in marks only its
    # inferences as load, so init and de-init add nothing to it)
    loaded = sum(
        load.load_seconds(to_host(start), to_host(end)) for start, end, _ in power["device_rounds"]
    )
    truth = (ACTIVE_W - BASELINE_W) * loaded / result.stats.count * 1e3
    print(
        f"RESULT snpe_energy_mj={power['energy_per_inference_mj']:.5f} truth_mj={truth:.5f} "
        f"offset_s={power['clock_offset_s']:.5f}"
    )
    assert power["energy_per_inference_mj"] == pytest.approx(truth, rel=0.05)
