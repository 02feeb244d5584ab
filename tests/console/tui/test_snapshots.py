"""Snapshot tests of the console: one SVG per view, dialog and placeholder.

Everything on screen is fixed: the devices are ``DEVICES`` below, served by
``support.fakes.FixedBackend``; the jobs are written straight into a real Store with fixed ids
and timestamps, and live numbers, power samples and log lines are published as Lab events with
fixed values once the app runs. No worker starts (``start_dispatch=False``), no discovery
runs (``poll_devices_s=None``) and no power monitor is opened or looked for
(``open_monitors=False``), so nothing depends on the clock, the host or real hardware.

Update the SVGs under ``tests/console/tui/__snapshots__/`` with
``pytest tests/console/tui/test_snapshots.py --snapshot-update`` after checking the new screens
in the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from backends.core.events import JobProgress, JobStarted, LogLine, MonitorChanged, PowerSamples
from backends.core.lab import Lab, job_key
from backends.core.records import (
    Device,
    DeviceState,
    Job,
    JobSettings,
    JobState,
    Model,
    ModelInput,
    MonitorState,
    PowerMonitor,
    Result,
)
from backends.core.store import Store
from backends.measure.stats import summarize
from console.tui.app import DevLabApp
from support.fakes import FixedBackend

TERMINAL_SIZE = (140, 40)
# A folder that does not exist anywhere, so the export dialog's path completion stays empty.
EXPORT_FOLDER = Path("/nonexistent/devlab/export")
EPOCH = 1_700_000_000.0  # created_at of the first job; never shown, but fixed anyway

DEVICES = (
    Device(
        id="bench:cpu",
        kind="bench",
        name="Bench CPU",
        runtimes=["onnxruntime"],
        properties={
            "cpu": "Fixed Bench CPU @ 3.00GHz",
            "cores": 8,
            "os": "Linux 6.1 x86_64",
            "temperature_c": 48.0,
        },
    ),
    Device(
        id="adb:EMU0001",
        kind="adb",
        name="Pixel 7 (emulator)",
        runtimes=["onnxruntime", "nnapi"],
        properties={
            "model": "Pixel 7",
            "soc": "Tensor G2",
            "abi": "arm64-v8a",
            "sdk": 34,
            "temperature_c": 36.6,
            "battery_level": 87,
        },
    ),
    Device(
        id="adb:R5CT00000LK",
        kind="adb",
        name="Galaxy S23",
        state=DeviceState.UNAUTHORIZED,
    ),
)


def model(name: str) -> Model:
    return Model(
        path=f"models/{name}.onnx",
        name=name,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        inputs=[ModelInput("input", [1, 3, 224, 224], "float32")],
        opset=17,
    )


def result(job_id: str, latencies_us: list[float]) -> Result:
    stats = summarize(latencies_us)
    return Result(
        job_id=job_id,
        latencies_us=latencies_us,
        stats=stats,
        round_sizes=[len(latencies_us)],
        round_medians_us=[stats.median],
        load_us=182_400.0,
        first_inference_us=latencies_us[0] * 3,
        tool="fixed",
        tool_version="1.0",
    )


def ripple(base: float, step: float, count: int) -> list[float]:
    """A fixed, slightly noisy-looking latency series (no randomness)."""
    return [base + step * ((i * 7) % 11) + (6 * step if i % 17 == 0 else 0.0) for i in range(count)]


RUNNING_JOB = "job-05"
MONITOR = "monsoon:EMU0001"
# the monitor that powers the phone (recording), one whose unit is not plugged in, and one that
# no [[power.monitors]] names
MONITORS = (
    PowerMonitor(
        MONITOR,
        port="/dev/ttyACM0",
        serial_number=20001,
        powers="adb:EMU0001",
        state=MonitorState.RECORDING,
        voltage=3.85,
        recording="out/power/monsoon-EMU0001-20231114-221320.csv",
    ),
    PowerMonitor(
        "monsoon:31337",
        serial_number=31337,
        powers="adb:R5CT00000LK",
        state=MonitorState.FAILED,
        error="no Monsoon with serial number 31337 (found: 20001 on /dev/ttyACM0)",
        voltage=4.2,
    ),
    PowerMonitor(
        "monsoon:20002",
        port="/dev/ttyACM1",
        serial_number=20002,
        state=MonitorState.AVAILABLE,
        configured=False,
    ),
)
SETTINGS = JobSettings(warmup=10, runs=100, rounds=2)

# (job id, model, device, runtime, priority, final state, latencies or error)
JOBS: tuple[tuple[str, str, str, str, int, JobState, list[float] | str | None], ...] = (
    ("job-01", "resnet18", "adb:EMU0001", "onnxruntime", 0, JobState.DONE, ripple(15_200, 40, 30)),
    ("job-02", "resnet18", "bench:cpu", "onnxruntime", 0, JobState.DONE, ripple(6_100, 25, 30)),
    (
        "job-03",
        "mobilenet_v2",
        "adb:EMU0001",
        "onnxruntime",
        0,
        JobState.DONE,
        ripple(4_300, 30, 30),
    ),
    (
        "job-04",
        "squeezenet1_1",
        "adb:EMU0001",
        "nnapi",
        0,
        JobState.FAILED,
        "nnapi rejected the model: unsupported operator Gather (opset 17)\n"
        "try --runtime onnxruntime",
    ),
    (RUNNING_JOB, "efficientnet_b0", "bench:cpu", "onnxruntime", 0, JobState.RUNNING, None),
    ("job-06", "yolov8n", "adb:EMU0001", "onnxruntime", 0, JobState.CANCELLED, None),
    ("job-07", "vit_tiny", "bench:cpu", "onnxruntime", 0, JobState.QUEUED, None),
    ("job-08", "deit_small", "adb:EMU0001", "onnxruntime", 1, JobState.QUEUED, None),
)


def seed_jobs(store: Store) -> None:
    """Write every job of ``JOBS`` through the store in its final state, one after another.

    Each job is claimed right after it is added, so ``claim_next`` can only take that job.
    """
    for index, (job_id, name, device_id, runtime, priority, state, outcome) in enumerate(JOBS):
        job = Job(
            id=job_id,
            model=model(name),
            device_id=device_id,
            runtime=runtime,
            settings=SETTINGS,
            priority=priority,
            created_at=EPOCH + index,
        )
        store.add_job(job, job_key(job.model.sha256, device_id, runtime, SETTINGS))
        if state is JobState.QUEUED:
            continue
        if state is JobState.CANCELLED:  # cancelled while it waited in the queue
            store.cancel(job_id)
            continue
        claimed = store.claim_next([device_id])
        assert claimed is not None and claimed.id == job_id
        if state is JobState.DONE:
            assert isinstance(outcome, list)
            store.finish(job_id, result(job_id, outcome))
        elif state is JobState.FAILED:
            assert isinstance(outcome, str)
            store.fail(job_id, outcome)
    assert [job.state for job in store.jobs()] == [spec[5] for spec in JOBS]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def idle_lab(store: Store, tmp_path: Path) -> Iterator[Lab]:
    """The fixed devices and an empty queue."""
    lab = Lab(store, backends=[FixedBackend(DEVICES)], log_dir=tmp_path / "logs")
    lab.discover()
    yield lab
    lab.shutdown()


@pytest.fixture
def lab(idle_lab: Lab) -> Lab:
    """The fixed devices and jobs in every state."""
    seed_jobs(idle_lab.store)
    return idle_lab


def console(lab: Lab) -> DevLabApp:
    return DevLabApp(
        lab,
        defaults=SETTINGS,
        start_dispatch=False,
        poll_devices_s=None,
        export_folder=EXPORT_FOLDER,
        open_monitors=False,  # no probing of this machine's serial ports
    )


# -- driving the app -------------------------------------------------------------------------


async def settle(pilot: Pilot, seconds: float = 0.3) -> None:
    """Apply published events now (not at the next 10 Hz tick), then let the views redraw."""
    pilot.app.pump_events()
    await pilot.pause(seconds)
    await pilot.wait_for_scheduled_animations()


def feed_live(lab: Lab) -> None:
    """The running job starts, reports warmup then timed progress, and logs a few lines."""
    job = lab.store.job(RUNNING_JOB)
    lab.events.publish(JobStarted(job))
    lab.events.publish(LogLine("loaded models/efficientnet_b0.onnx in 182.4 ms", RUNNING_JOB))
    lab.events.publish(JobProgress(RUNNING_JOB, "warmup", 10, 10, 0.1))
    lab.events.publish(LogLine("warmup: 10 runs", RUNNING_JOB))
    lab.events.publish(LogLine("round 1/2: 50 timed runs", RUNNING_JOB))
    first, second = ripple(4_800, 35, 50), ripple(4_850, 35, 12)
    lab.events.publish(
        JobProgress(RUNNING_JOB, "timed", 50, 100, 0.5, 4_975.0, 5_130.0, tuple(first))
    )
    lab.events.publish(LogLine("round 1/2 median 4975.0 us", RUNNING_JOB))
    lab.events.publish(LogLine("round 2/2: 50 timed runs", RUNNING_JOB))
    lab.events.publish(
        JobProgress(RUNNING_JOB, "timed", 62, 100, 0.62, 4_990.0, 5_145.0, tuple(second))
    )
    lab.events.publish(LogLine("another job's line is not shown here", "job-07"))


def power_watts(level: float, count: int) -> tuple[float, ...]:
    return tuple(
        round(level + 0.05 * ((i * 5) % 9) + (0.6 if i % 50 < 5 else 0.0), 3) for i in range(count)
    )


def feed_monitors(lab: Lab) -> None:
    for monitor in MONITORS:
        lab.events.publish(MonitorChanged(monitor))


def feed_power(lab: Lab) -> None:
    """Four seconds idle, then the job starts and the phone draws more for eight seconds."""
    t0, interval = 1_000.0, 0.01
    feed_monitors(lab)
    lab.events.publish(
        PowerSamples(MONITOR, t0, interval, power_watts(1.2, 400), volts=3.85, amps=0.3406)
    )
    started = dataclasses.replace(lab.store.job(RUNNING_JOB), started_at=t0 + 4)
    lab.events.publish(JobStarted(started))  # job energy counts from its start
    lab.events.publish(
        PowerSamples(
            MONITOR, t0 + 4, interval, power_watts(3.1, 400), dropped=3, volts=3.84, amps=0.8366
        )
    )
    lab.events.publish(
        PowerSamples(MONITOR, t0 + 8, interval, power_watts(3.4, 400), volts=3.83, amps=0.9215)
    )


def steady_inputs(pilot: Pilot) -> None:
    """A blinking cursor would be caught on or off at random: keep it on."""
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False


SnapCompare = Callable[..., bool]


def snap(
    snap_compare: SnapCompare, app: DevLabApp, run_before: Callable[[Pilot], Awaitable[None]]
) -> bool:
    async def loaded_then(pilot: Pilot) -> None:
        """The app reads the lab in a thread worker: the screen starts once that has landed."""
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await run_before(pilot)

    return snap_compare(app, terminal_size=TERMINAL_SIZE, run_before=loaded_then)


# -- the views -------------------------------------------------------------------------------


def test_devices_view(snap_compare: SnapCompare, lab: Lab) -> None:
    """Devices: online, busy (its job started) and unauthorized; the phone's properties; the
    power monitors: recording, failed with its reason, and one found but not configured."""

    async def run_before(pilot: Pilot) -> None:
        feed_live(lab)
        feed_monitors(lab)
        await settle(pilot)
        await pilot.press("1", "down")
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


def test_queue_view(snap_compare: SnapCompare, lab: Lab) -> None:
    """Queue: done, failed with its error, running at 62 %, cancelled and queued jobs."""

    async def run_before(pilot: Pilot) -> None:
        feed_live(lab)
        await pilot.press("2")
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


def test_live_view(snap_compare: SnapCompare, lab: Lab) -> None:
    """Live: the running job's progress bar, numbers, latency sparkline and log tail."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("3")
        feed_live(lab)
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


def test_power_view(snap_compare: SnapCompare, lab: Lab) -> None:
    """Power: the recording monitor's V, I, P, rate, drops, plot, min/mean/max over 10 s and the
    job's energy; the failed monitor's reason."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("4")
        feed_power(lab)
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


def test_results_view(snap_compare: SnapCompare, lab: Lab) -> None:
    """Results: done, failed and cancelled rows, and the median/p90 latency plot."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("5")
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


# -- dialogs ---------------------------------------------------------------------------------


def test_help_screen(snap_compare: SnapCompare, lab: Lab) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


def test_add_models_dialog(snap_compare: SnapCompare, lab: Lab) -> None:
    """Add models: the online and busy devices (not the unauthorized one), options, power."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("a")
        await settle(pilot)
        steady_inputs(pilot)
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


def test_export_dialog(snap_compare: SnapCompare, lab: Lab) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("e")
        await settle(pilot)
        steady_inputs(pilot)
        await settle(pilot)

    assert snap(snap_compare, console(lab), run_before)


# -- placeholders ----------------------------------------------------------------------------


def test_live_placeholder(snap_compare: SnapCompare, idle_lab: Lab) -> None:
    """Live with nothing running says so."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("3")
        await settle(pilot)

    assert snap(snap_compare, console(idle_lab), run_before)


def test_power_placeholder(snap_compare: SnapCompare, idle_lab: Lab) -> None:
    """Power with no monitor says how to get one."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("4")
        await settle(pilot)

    assert snap(snap_compare, console(idle_lab), run_before)
