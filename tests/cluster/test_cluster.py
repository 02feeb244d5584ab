"""devlab on a Dask cluster, in process: the real scheduler, dispatcher, workers and store on
127.0.0.1; only the devices are test doubles (``SleepBackend``: sessions that sleep and log
where and when they ran).

Two workers ``A`` and ``B`` each have a ``host:cpu``, published as ``host:cpu@A`` and
``host:cpu@B`` (pinned to their host); both also advertise it under the shared alias
``sim:gpu0``, so a ``sim:gpu0`` job may run on either.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.cluster.client import ClusterLab
from backends.cluster.model_files import ModelFileError, ModelFiles
from backends.cluster.resources import (
    cluster_device_id,
    device_of_resource,
    parse_aliases,
    resource_name,
)
from backends.cluster.wire import decode_event, encode_event
from backends.core.events import (
    DeviceAdded,
    DeviceChanged,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPriorityChanged,
    JobProgress,
    JobQueued,
    JobStarted,
    LogLine,
    PowerSamples,
)
from backends.core.lab import LabError
from backends.core.records import Capabilities, Device, DeviceState, Job, JobSettings, JobState
from backends.power.capture import MonitorLink
from backends.virtual.monsoon import VirtualMonsoon
from support.cluster_fixtures import (
    QUICK,
    WAIT_S,
    InProcessCluster,
    Recorder,
    make_tls_files,
    model_file,
    settings_for,
)
from support.fakes import SleepBackend
from support.helpers import MODELS_DIR
from support.waiting import wait_until

SHARED = {"sim:gpu0": "host:cpu"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InProcessCluster]:
    made = InProcessCluster(tmp_path, grace_s=60.0)
    yield made
    made.close()


def two_hosts(cluster: InProcessCluster):
    """Workers A and B, each with host:cpu (pinned) and the shared alias sim:gpu0."""
    cluster.add_worker("A", aliases=SHARED)
    cluster.add_worker("B", aliases=SHARED)
    lab = cluster.open_lab()
    recorder = Recorder()
    lab.subscribe(recorder)
    wanted = {"host:cpu@A", "host:cpu@B", "sim:gpu0"}
    wait_until(lambda: wanted <= {d.id for d in lab.discover()}, WAIT_S, what="both hosts' devices")
    return lab, recorder


def wait_started(recorder: Recorder, job: Job) -> None:
    """Until the dispatcher has heard that ``job`` started measuring on its host."""
    wait_until(
        lambda: job.id in {event.job.id for event in recorder.of(JobStarted)},
        WAIT_S,
        what=f"{job.model.name} to start",
    )


def store_rows(cluster: InProcessCluster) -> dict[str, tuple[Job, object]]:
    return {job.id: (job, result) for job, result in cluster.store.rows()}


def assert_accounted_once(cluster: InProcessCluster, recorder: Recorder, jobs: list[Job]) -> None:
    """Every job is in the store once, finished; a done job has one result and was announced
    finished once; no physical device ever ran two sessions at once."""
    rows = cluster.store.rows()
    ids = [job.id for job, _ in rows]
    assert sorted(ids) == sorted(job.id for job in jobs)
    assert len(set(ids)) == len(ids)
    ended = (JobFinished, JobFailed, JobCancelled)
    wait_until(  # events travel on their own path: the store may know a moment earlier
        lambda: {e.job.id for e in recorder.events if isinstance(e, ended)} >= set(ids),
        WAIT_S,
        what="every job's last event",
    )
    finished = Counter(event.job.id for event in recorder.of(JobFinished))
    for job, result in rows:
        assert job.state.finished, job
        assert (result is not None) == (job.state is JobState.DONE), job
        assert finished[job.id] == (1 if job.state is JobState.DONE else 0), job
    assert cluster.log.overlaps() == []


# -- naming, files and wire format ----------------------------------------------------------


def test_device_ids_resources_and_aliases_are_reversible() -> None:
    assert cluster_device_id("host:cpu", "lab-a") == "host:cpu@lab-a"
    assert cluster_device_id("openvino:CPU", "lab-a") == "openvino:CPU@lab-a"
    assert cluster_device_id("adb:R5CT00000LK", "lab-a") == "adb:R5CT00000LK"
    for device_id in ("host:cpu@lab-a", "dpu:http://board:8055", "odd:a=b,c d"):
        name = resource_name(device_id)
        assert name.startswith("device:") and not set("=, ") & set(name)
        assert device_of_resource(name) == device_id
    assert device_of_resource("GPU") is None
    assert parse_aliases(["sim:gpu0=host:cpu"]) == {"sim:gpu0": "host:cpu"}
    for bad in (["nothing"], ["=host:cpu"], ["a=b", "a=c"]):
        with pytest.raises(ValueError):
            parse_aliases(bad)


def test_model_files_are_verified_and_kept_by_sha(tmp_path: Path) -> None:
    model = model_file(tmp_path / "in", "m")
    files = ModelFiles(tmp_path / "cache")
    data = Path(model.path).read_bytes()
    with pytest.raises(ModelFileError):
        files.put(model.sha256, "m.onnx", data + b"!")
    fetched: list[str] = []
    path = files.ensure(model.sha256, "m.onnx", lambda sha: fetched.append(sha) or data)
    assert path.read_bytes() == data and path.name == "m.onnx"
    assert files.ensure(model.sha256, "m.onnx", lambda sha: b"never asked") == path
    assert fetched == [model.sha256]


def test_events_round_trip_as_json(tmp_path: Path) -> None:
    job = Job(id="j1", model=model_file(tmp_path, "m"), device_id="sim:gpu0", runtime="rt")
    device = Device(
        id="sim:gpu0",
        kind="host",
        name="GPU",
        runtimes=["rt"],
        capabilities={"rt": Capabilities(per_layer=True, extras={"note": "x"})},
    )
    for event in (
        JobQueued(job),
        JobPriorityChanged(job),
        JobProgress("j1", "round 1/1", 3, 5, 0.6, 10.0, 12.0, (1.0, 2.0)),
        LogLine("hello", "j1", "warning"),
        DeviceChanged(device),
    ):
        assert decode_event(json.loads(json.dumps(encode_event(event)))) == event


# -- dispatch ---------------------------------------------------------------------------------


def test_jobs_land_on_the_host_that_owns_their_device(cluster: InProcessCluster) -> None:
    lab, recorder = two_hosts(cluster)
    shared = lab.device("sim:gpu0")
    assert shared.properties["lab_hosts"] == ["A", "B"]
    assert lab.device("host:cpu@A").properties["lab_hosts"] == ["A"]
    models = [model_file(cluster.folder / "models", f"m{i}") for i in range(3)]
    jobs = [lab.submit(m, d, settings=QUICK) for m in models for d in ("host:cpu@A", "host:cpu@B")]
    assert lab.wait_until_idle(timeout=30)
    rows = store_rows(cluster)
    for job in jobs:
        stored, result = rows[job.id]
        host = job.device_id.split("@")[1]
        assert stored.state is JobState.DONE and stored.attempts == 1
        assert result.device_properties["lab_host"] == host
        assert [s.host for s in cluster.log.for_job(job.id)] == [host]
    assert_accounted_once(cluster, recorder, jobs)


def test_one_device_never_runs_two_jobs_at_once(cluster: InProcessCluster) -> None:
    """The shared id, its hosts' own ids and prefetched jobs all compete for two CPUs."""
    lab, recorder = two_hosts(cluster)
    folder = cluster.folder / "models"
    devices = ("sim:gpu0", "host:cpu@A", "sim:gpu0", "host:cpu@B")
    jobs = [
        lab.submit(model_file(folder, f"m{i}"), devices[i % 4], settings=settings_for(0.05))
        for i in range(16)
    ]
    assert lab.wait_until_idle(timeout=60)
    assert_accounted_once(cluster, recorder, jobs)
    shared_hosts = {
        session.host
        for job in jobs
        if job.device_id == "sim:gpu0"
        for session in cluster.log.for_job(job.id)
    }
    assert shared_hosts == {"A", "B"}  # the shared id really ran on both holders


def test_a_job_whose_host_dies_runs_again_on_another_holder(cluster: InProcessCluster) -> None:
    lab, recorder = two_hosts(cluster)
    folder = cluster.folder / "models"
    long_job = lab.submit(model_file(folder, "long"), "sim:gpu0", settings=settings_for(1.5))
    wait_started(recorder, long_job)
    session = cluster.log.for_job(long_job.id)[0]
    others = [lab.submit(model_file(folder, f"m{i}"), "sim:gpu0", settings=QUICK) for i in range(4)]
    survivor = "B" if session.host == "A" else "A"
    cluster.kill_worker(session.host)

    assert lab.wait_until_idle(timeout=30)
    stored, result = store_rows(cluster)[long_job.id]
    assert stored.state is JobState.DONE and stored.attempts == 2
    assert result.job_id == long_job.id and result.device_properties["lab_host"] == survivor
    first, rerun = cluster.log.for_job(long_job.id)
    assert (first.host, first.completed) == (session.host, False)
    assert (rerun.host, rerun.completed) == (survivor, True)
    assert any("re-queued" in e.text and e.job_id == long_job.id for e in recorder.of(LogLine))
    assert lab.device("sim:gpu0").properties["lab_hosts"] == [survivor]
    assert lab.device(f"host:cpu@{session.host}").state is DeviceState.OFFLINE
    assert_accounted_once(cluster, recorder, [long_job, *others])


def test_a_pinned_job_waits_for_its_host_to_come_back(cluster: InProcessCluster) -> None:
    lab, recorder = two_hosts(cluster)
    job = lab.submit(
        model_file(cluster.folder / "m", "pinned"), "host:cpu@A", settings=settings_for(1.0)
    )
    wait_started(recorder, job)
    cluster.kill_worker("A")
    wait_until(
        lambda: any(e.job.id == job.id and e.job.attempts == 1 for e in recorder.of(JobQueued)),
        WAIT_S,
        what="the job re-queued",
    )
    assert cluster.store.job(job.id).state is JobState.QUEUED  # waiting, not failed

    cluster.add_worker("A", aliases=SHARED)  # the host is back within the grace period
    assert lab.wait_until_idle(timeout=30)
    stored = cluster.store.job(job.id)
    assert stored.state is JobState.DONE and stored.attempts == 2
    assert [s.completed for s in cluster.log.for_job(job.id)] == [False, True]
    assert_accounted_once(cluster, recorder, [job])


def test_a_pinned_job_fails_when_its_host_stays_away(tmp_path: Path) -> None:
    cluster = InProcessCluster(tmp_path, grace_s=1.0)
    try:
        lab, recorder = two_hosts(cluster)
        folder = cluster.folder / "m"
        running = lab.submit(
            model_file(folder, "running"), "host:cpu@A", settings=settings_for(1.0)
        )
        wait_started(recorder, running)
        waiting = lab.submit(model_file(folder, "waiting"), "host:cpu@A", settings=QUICK)
        elsewhere = lab.submit(model_file(folder, "elsewhere"), "sim:gpu0", settings=QUICK)
        cluster.kill_worker("A")

        assert lab.wait_until_idle(timeout=30)
        rows = store_rows(cluster)
        for job in (running, waiting):
            stored, _ = rows[job.id]
            assert stored.state is JobState.FAILED
            assert stored.error.startswith("no lab host offers device host:cpu@A for ")
            assert stored.error.endswith(" s (last seen on worker A)")
            seconds = float(stored.error.split(" for ")[1].split(" s ")[0])
            assert seconds >= 1.0  # it waited the grace period
        assert rows[running.id][0].attempts == 1  # re-queued, then never handed out again
        assert rows[elsewhere.id][0].state is JobState.DONE
        failed = {event.job.id: event.error for event in recorder.of(JobFailed)}
        assert failed.keys() == {running.id, waiting.id}
        assert_accounted_once(cluster, recorder, [running, waiting, elsewhere])
    finally:
        cluster.close()


def test_cancel_stops_a_running_job_and_withdraws_waiting_ones(cluster: InProcessCluster) -> None:
    lab, recorder = two_hosts(cluster)
    folder = cluster.folder / "m"
    running = lab.submit(model_file(folder, "running"), "host:cpu@A", settings=settings_for(5.0))
    wait_started(recorder, running)
    handed_out = lab.submit(model_file(folder, "next"), "host:cpu@A", settings=QUICK)
    queued = lab.submit(model_file(folder, "later"), "host:cpu@A", settings=QUICK)
    wait_until(
        lambda: cluster.store.job(handed_out.id).state is JobState.RUNNING, WAIT_S, what="prefetch"
    )
    for job in (queued, handed_out, running):
        lab.cancel(job.id)

    assert lab.wait_until_idle(timeout=30)
    rows = store_rows(cluster)
    assert {rows[j.id][0].state for j in (running, handed_out, queued)} == {JobState.CANCELLED}
    assert [s.completed for s in cluster.log.for_job(running.id)] == [False]
    assert cluster.log.for_job(queued.id) == []
    cancelled = Counter(event.job.id for event in recorder.of(JobCancelled))
    assert cancelled == {running.id: 1, handed_out.id: 1, queued.id: 1}
    assert_accounted_once(cluster, recorder, [running, handed_out, queued])


def test_hot_plug_updates_the_hosts_resources(cluster: InProcessCluster) -> None:
    """A phone plugged in appears and takes jobs; unplugged mid-job, its job waits and runs
    again when the phone is back."""
    backend = cluster.add_worker("A")
    lab = cluster.open_lab()
    recorder = Recorder()
    lab.subscribe(recorder)
    wait_until(lambda: "host:cpu@A" in {d.id for d in lab.discover()}, WAIT_S, what="host A")
    backend.device_ids.append("sleep:phone")
    wait_until(
        lambda: "sleep:phone" in {d.id for d in lab.discover()}, WAIT_S, what="the new phone"
    )
    resources = next(iter(cluster.dispatcher.scheduler.workers.values())).resources
    assert resources[resource_name("sleep:phone")] == 1
    job = lab.submit(
        model_file(cluster.folder / "m", "m"), "sleep:phone", settings=settings_for(1.0)
    )
    wait_started(recorder, job)

    backend.device_ids.remove("sleep:phone")
    wait_until(
        lambda: lab.discover() and lab.device("sleep:phone").state is DeviceState.OFFLINE,
        WAIT_S,
        what="the phone to go offline",
    )
    assert resources[resource_name("sleep:phone")] == 0
    assert resources[resource_name("host:cpu@A")] == 1
    wait_until(
        lambda: cluster.store.job(job.id).state is JobState.QUEUED, WAIT_S, what="the job waiting"
    )

    backend.device_ids.append("sleep:phone")
    assert lab.wait_until_idle(timeout=30)
    stored = cluster.store.job(job.id)
    assert stored.state is JobState.DONE and stored.attempts == 2
    assert [s.completed for s in cluster.log.for_job(job.id)] == [False, True]


def test_requests_the_dispatcher_refuses_raise_lab_errors(cluster: InProcessCluster) -> None:
    lab, _ = two_hosts(cluster)
    model = model_file(cluster.folder / "m", "m")
    with pytest.raises(LabError, match="unknown device"):
        lab.submit(model, "host:cpu@nowhere", settings=QUICK)
    with pytest.raises(LabError, match="no runtime 'tflite'"):
        lab.submit(model, "sim:gpu0", runtime="tflite", settings=QUICK)
    job = lab.submit(model, "sim:gpu0", settings=QUICK)
    assert lab.wait_until_idle(timeout=30)
    with pytest.raises(LabError, match="is done"):
        lab.retry(job.id)
    again = lab.submit(model, "sim:gpu0", settings=QUICK)  # the same job: its result is kept
    assert again.id == job.id and again.state is JobState.DONE


def test_a_priority_change_reaches_every_console(cluster: InProcessCluster) -> None:
    """The dispatcher publishes the change like any transition: another console's queue
    shows the new priority without asking for it."""
    other = cluster.open_lab()  # first: its topic subscription settles while hosts join
    seen = Recorder()
    other.subscribe(seen)
    lab, _ = two_hosts(cluster)
    wait_until(
        lambda: seen.of(DeviceAdded), WAIT_S, what="the other console hearing the dispatcher"
    )
    lab.pause()  # the job stays queued while its priority changes
    job = lab.submit(model_file(cluster.folder / "m", "m"), "host:cpu@A", settings=QUICK)

    assert lab.set_priority(job.id, -5).priority == -5

    changed = wait_until(
        lambda: seen.of(JobPriorityChanged), WAIT_S, what="the change on the other console"
    )
    assert [(e.job.id, e.job.priority) for e in changed] == [(job.id, -5)]
    assert cluster.store.job(job.id).priority == -5
    lab.resume()
    assert lab.wait_until_idle(timeout=30)


def test_capabilities_travel_with_the_devices(
    cluster: InProcessCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a lab host's backend says its devices can do reaches consoles on the device
    records, and the dispatcher refuses a per-layer job where the host said it has none."""

    def capabilities(
        self: SleepBackend, device: Device, runtime: str | None = None
    ) -> Capabilities:
        return Capabilities(threads=True)

    monkeypatch.setattr(SleepBackend, "capabilities", capabilities)
    lab, _ = two_hosts(cluster)
    for device_id in ("host:cpu@A", "host:cpu@B", "sim:gpu0"):
        assert lab.device(device_id).capabilities == {"rt": Capabilities(threads=True)}
    per_layer = JobSettings(warmup=0, runs=2, per_layer=True, skip_canary=True, skip_parity=True)
    with pytest.raises(LabError, match="sim:gpu0 cannot profile per layer with runtime rt"):
        lab.submit(model_file(cluster.folder / "m", "m"), "sim:gpu0", settings=per_layer)
    assert cluster.store.rows() == []


def test_a_headless_console_follows_only_its_own_jobs(cluster: InProcessCluster) -> None:
    """A cluster is shared: ``--run`` waits for and tabulates the jobs it queued, no others."""
    everyone, _ = two_hosts(cluster)
    mine = ClusterLab(cluster.address, own_jobs_only=True)
    cluster.labs.append(mine)
    recorder = Recorder()
    mine.subscribe(recorder)
    folder = cluster.folder / "m"
    theirs = everyone.submit(model_file(folder, "theirs"), "host:cpu@B", settings=settings_for(1.0))
    own = mine.submit(model_file(folder, "own"), "host:cpu@A", settings=QUICK)
    assert mine.wait_until_idle(timeout=30)
    assert [job.id for job, _ in mine.rows()] == [own.id]
    assert {job.id for job, _ in everyone.rows()} == {own.id, theirs.id}
    job_ids = {getattr(e, "job", None) and e.job.id for e in recorder.events} - {None}
    assert job_ids == {own.id}
    assert everyone.wait_until_idle(timeout=30)


@pytest.mark.asyncio
async def test_the_console_app_follows_a_cluster(cluster: InProcessCluster) -> None:
    """The Textual console runs on a ClusterLab unchanged: devices of every host, jobs live."""
    from textual.widgets import DataTable

    from console.tui.app import DevLabApp

    lab, _ = two_hosts(cluster)
    app = DevLabApp(lab, poll_devices_s=None, export_folder=cluster.folder / "export")
    async with app.run_test(size=(160, 40)) as pilot:
        job = lab.submit(model_file(cluster.folder / "m", "m"), "sim:gpu0", settings=QUICK)
        for _ in range(300):
            if app.state.jobs.get(job.id) and app.state.jobs[job.id].state is JobState.DONE:
                break
            await pilot.pause(0.05)
        assert app.state.jobs[job.id].state is JobState.DONE
        assert job.id in app.state.stats
        assert {"host:cpu@A", "host:cpu@B", "sim:gpu0"} <= set(app.state.devices)
        await pilot.press("1")
        await pilot.pause(0.2)
        assert "sim:gpu0" in app.query_one("#devices-table", DataTable).rows


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")
def test_a_tls_cluster_runs_jobs_and_refuses_plain_connections(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    cluster = InProcessCluster(tmp_path, tls=tls)
    try:
        assert cluster.address.startswith("tls://127.0.0.1:")
        lab, recorder = two_hosts(cluster)
        job = lab.submit(model_file(tmp_path / "m", "m"), "sim:gpu0", settings=QUICK)
        assert lab.wait_until_idle(timeout=30)
        assert cluster.store.job(job.id).state is JobState.DONE
        with pytest.raises((OSError, TimeoutError)):
            ClusterLab(cluster.address.replace("tls://", "tcp://"), timeout=2)
    finally:
        cluster.close()


def test_a_hosts_power_monitor_streams_to_the_console(cluster: InProcessCluster) -> None:
    """A Monsoon on lab host P (a virtual one on a pty) powers its host:cpu: the console gets
    its live readings as ``monsoon:77@P`` at the relay rate, and the energy per inference,
    measured on P from the full-rate trace, comes back with the result."""
    baseline_w, active_w = 0.5, 2.5
    monsoon = VirtualMonsoon(
        serial_number=77,
        load=lambda: 1.0 if cluster.log.busy("P") else 0.0,
        baseline_w=baseline_w,
        active_w=active_w,
        noise_w=0.0,
    ).start()
    try:
        cluster.add_worker("P", power_links=[MonitorLink(device_id="host:cpu", port=monsoon.port)])
        lab = cluster.open_lab()
        recorder = Recorder()
        lab.subscribe(recorder)
        wait_until(
            lambda: "host:cpu@P" in {d.id for d in lab.discover()}, WAIT_S, what="P's device"
        )
        settings = JobSettings(
            warmup=0,
            runs=100,
            rounds=1,
            precision_pct=0,
            skip_canary=True,
            skip_parity=True,
            power=True,
            power_baseline_s=1.0,
        )
        job = lab.submit(
            model_file(cluster.folder / "models", "powered"), "host:cpu@P", settings=settings
        )
        assert lab.wait_until_idle(timeout=60)
    finally:
        monsoon.stop()
    stored, result = store_rows(cluster)[job.id]
    assert stored.state is JobState.DONE, stored.error
    samples = recorder.of(PowerSamples)
    assert samples and {s.monitor_id for s in samples} == {"monsoon:77@P"}
    assert all(s.interval_s == pytest.approx(1 / 500) for s in samples)  # 5 kHz relayed at 500 Hz
    watts = [w for s in samples for w in s.watts]
    assert min(watts) == pytest.approx(baseline_w, rel=0.02)
    assert max(watts) == pytest.approx(active_w, rel=0.02)
    power = result.power
    # the monitor's clock and the host's load samples may disagree by a few ms at the edges
    assert power is not None and power["baseline_w"] == pytest.approx(baseline_w, rel=0.1)
    # the device draws (active - baseline) for the whole timed window: about 10 ms a run
    seconds = power["timed_window"][1] - power["timed_window"][0]
    implied_mj = (active_w - baseline_w) * seconds / result.stats.count * 1000
    assert power["energy_per_inference_mj"] == pytest.approx(implied_mj, rel=0.1)
    assert 15 < power["energy_per_inference_mj"] < 30


def test_a_drifting_device_is_flagged_on_every_console(cluster: InProcessCluster) -> None:
    """The canary of a job on host A judged its device drifting (the DeviceWorker's on_drift
    hook): consoles see ``drift`` on the device and on its alias, a rescan keeps it, and a
    later judgement clears it."""
    lab, _ = two_hosts(cluster)
    host = cluster.workers["A"].host
    drift = {"drifting": True, "reason": "canary +25.3% vs its history (band +-10.0%)"}

    def shown(device_id: str) -> object:
        return lab.device(device_id).properties.get("drift")

    host._device_drift("host:cpu", drift)
    wait_until(lambda: shown("host:cpu@A") == drift, WAIT_S, what="drift on host:cpu@A")
    assert shown("host:cpu@B") is None
    assert host.devices["sim:gpu0"].device.properties["drift"] == drift  # the alias on A
    host.scan()
    assert host.devices["host:cpu@A"].device.properties["drift"] == drift
    host._device_drift("host:cpu", None)
    wait_until(lambda: shown("host:cpu@A") is None, WAIT_S, what="drift cleared")


def test_a_model_with_external_weights_is_refused_with_the_fix(
    cluster: InProcessCluster, tmp_path: Path
) -> None:
    import onnx

    from backends.core.plan import queue_paths
    from backends.models.intake import load_model

    lab, _ = two_hosts(cluster)
    proto = onnx.load(str(MODELS_DIR / "mlp.onnx"))
    external = tmp_path / "external" / "mlp_external.onnx"
    external.parent.mkdir()
    onnx.save(proto, str(external), save_as_external_data=True, size_threshold=0)
    model = load_model(external)  # fine on this machine: the weights file sits beside it
    with pytest.raises(LabError, match=r"mlp_external.onnx: its weights live in external data"):
        lab.submit(model, "host:cpu@A", settings=QUICK)
    assert cluster.store.rows() == []  # nothing was queued
    # in a plan (``devlab --run DIR --cluster``) that model fails alone; the others run
    shutil.copy(MODELS_DIR / "mlp.onnx", external.parent / "mlp.onnx")
    report = queue_paths(lab, [external.parent], ["host:cpu@A"], settings=QUICK)
    [failed] = report.failed
    assert failed.state is JobState.FAILED and "external data" in (failed.error or "")
    assert [job.model.name for job in report.queued] == ["mlp"]
    assert lab.wait_until_idle(timeout=30)
    assert cluster.store.job(report.queued[0].id).state is JobState.DONE
