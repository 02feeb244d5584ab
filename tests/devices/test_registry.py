"""The device contract and the registry: what each kind knows about itself (its config tables,
machine-local ids, a hint for an unknown id) is asked of its backend class, never of ``kind``."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.core.config import Config
from backends.core.records import Device
from backends.devices.android.backend import AndroidBackend
from backends.devices.base import BenchSession, IterationCallback, SessionInfo, Timed
from backends.devices.dpu.backend import DpuBackend
from backends.devices.host import HostBackend
from backends.devices.openvino.backend import OpenVinoBackend
from backends.devices.openvino.ncs import NcsBackend
from backends.devices.registry import (
    backend_kinds,
    default_backends,
    hint_for_unknown,
    is_machine_local,
    machine_local_prefixes,
)


class TimingOnly(BenchSession):
    """A session that overrides only what the contract requires."""

    info = SessionInfo(None, None, "fake", "")

    def warmup(self, iterations: int) -> None:
        pass

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        return Timed([1.0])


def test_a_session_returns_no_outputs_unless_it_can() -> None:
    assert TimingOnly().outputs({"x": [1.0]}) is None


def test_every_kind_is_listed_once_with_its_id_prefix() -> None:
    kinds = [backend for backend, _ in backend_kinds()]
    assert kinds == [HostBackend, AndroidBackend, NcsBackend, OpenVinoBackend, DpuBackend]
    prefixes = [backend.id_prefix for backend in kinds]
    assert prefixes == ["host:", "adb:", "ncs:", "openvino:", "dpu:"]


def test_machine_local_ids_come_from_the_backends() -> None:
    local = {backend for backend, _ in backend_kinds() if backend.machine_local}
    assert local == {HostBackend, NcsBackend, OpenVinoBackend}
    assert set(machine_local_prefixes()) == {"host:", "ncs:", "openvino:"}
    for device_id in ("host:cpu", "openvino:CPU", "openvino:GPU.0", "ncs:1-1.2"):
        assert is_machine_local(device_id), device_id
    for device_id in ("adb:R5CT00000LK", "dpu:http://board:8055", "sim:gpu0", "hostile:x"):
        assert not is_machine_local(device_id), device_id


def test_each_backend_reads_its_own_tables(tmp_path: Path) -> None:
    token = tmp_path / "agent.token"
    token.write_text("secret\n")
    config = Config(
        path=tmp_path / "config.toml",
        raw={
            "android": {"adb_server": "127.0.0.1:5099", "ort_execution_provider": "nnapi"},
            "ncs": {"python": "/opt/ov2021/bin/python", "timeout_s": 30},
            "dpu": {
                "endpoints": [{"url": "http://127.0.0.1:8055", "token_file": "agent.token"}],
                "retry_s": 5,
            },
            "power": {"unrelated": True},
        },
    )
    host, android, ncs, openvino, dpu = default_backends(config)
    assert isinstance(host, HostBackend) and isinstance(openvino, OpenVinoBackend)
    assert isinstance(android, AndroidBackend)
    assert (android.config.adb_host, android.config.adb_port) == ("127.0.0.1", 5099)
    assert android.config.ort_execution_provider == "nnapi" and android.snpe is None
    assert isinstance(ncs, NcsBackend)
    assert (ncs.config.python, ncs.config.timeout_s) == ("/opt/ov2021/bin/python", 30.0)
    assert isinstance(dpu, DpuBackend)
    [endpoint] = dpu.config.endpoints
    assert endpoint.token == "secret"  # token_file relative to the config file
    assert dpu.config.retry_s == 5.0


def test_no_config_gives_every_backend_its_defaults() -> None:
    backends = default_backends(None)
    assert [type(b) for b in backends] == [backend for backend, _ in backend_kinds()]
    android = backends[1]
    assert isinstance(android, AndroidBackend) and android.snpe is None


@pytest.mark.parametrize(
    ("backend", "tables", "named"),
    [
        (AndroidBackend, {"android": {"adb_server": "localhost"}}, "[android] adb_server"),
        (AndroidBackend, {"android": {"tools": {"onnx": "/x"}}}, "[android.tools]"),
        (AndroidBackend, {"snpe": {"sdk": "/opt/snpe", "sdk_root": "/x"}}, "[snpe]"),
        (AndroidBackend, {"snpe": {}}, "[snpe] sdk"),
        (NcsBackend, {"ncs": {"pythn": "/usr/bin/python3"}}, "[ncs]"),
        (NcsBackend, {"ncs": {"timeout_s": "soon"}}, "[ncs] timeout_s"),
        (DpuBackend, {"dpu": {"retry_s": -1}}, "[dpu] retry_s"),
        (DpuBackend, {"dpu": {"endpoints": [{"name": "board"}]}}, "[[dpu.endpoints]] #1"),
    ],
)
def test_a_bad_setting_is_named(backend: type, tables: dict, named: str) -> None:
    with pytest.raises(ValueError) as raised:
        backend.from_config(tables, None)
    assert named in str(raised.value)


def test_a_bad_setting_stops_default_backends() -> None:
    with pytest.raises(ValueError, match=r"\[ncs\]"):
        default_backends(Config(raw={"ncs": {"unknown_key": 1}}))


def test_only_a_kind_that_knows_what_to_do_gives_a_hint_for_an_unknown_id() -> None:
    hint = hint_for_unknown("dpu:http://10.0.0.5:8055")
    assert hint == (
        'add the agent to the config: [[dpu.endpoints]] with url = "http://10.0.0.5:8055" '
        'and token_file = "..."'
    )
    assert DpuBackend.hint_for_unknown("adb:XYZ") is None
    for device_id in ("adb:XYZ", "host:gpu", "ncs:9-9", "nothing"):
        assert hint_for_unknown(device_id) is None, device_id


def test_capabilities_follow_the_runtime() -> None:
    phone = Device("adb:X", "android", "X", runtimes=["ort", "tflite", "snpe-cpu"])
    android = AndroidBackend()
    assert android.capabilities(phone).threads  # the default runtime, ort
    assert android.capabilities(phone, "tflite").per_layer
    snpe = android.capabilities(phone, "snpe-cpu")
    assert snpe.per_layer and not snpe.threads  # snpe-net-run takes no thread count
    cpu = Device("openvino:CPU", "openvino", "CPU", runtimes=["openvino"])
    assert OpenVinoBackend().capabilities(cpu).threads
    assert not OpenVinoBackend().capabilities(cpu).per_layer
