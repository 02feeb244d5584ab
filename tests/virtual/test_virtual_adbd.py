"""The virtual phone: an emulated adbd that the real adb server attaches to.

Three layers, following shared/specs/adb-device-emulator.md section 11:

* raw-socket tests talk the transport protocol straight to the emulator (framing, handshake,
  streams, flow control, the sync service's edge cases);
* integration tests go through a private real adb server (the adbutils wheel's binary) with
  adbutils, as devlab's Android backend will;
* unit tests for the sandbox mapping, the profile, the heater and the stand-in tools.

No timed asserts: every wait is a bounded poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import adbutils
import pytest
from adbutils.errors import AdbError

from backends.virtual import PhoneProfile, ProfileError, Sandbox, SandboxError, VirtualPhone
from backends.virtual.adbd import (
    A_AUTH,
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_WRTE,
    MAX_PAYLOAD,
    VERSION_MIN,
    VERSION_SKIP_CHECKSUM,
    checksum,
)
from backends.virtual.profile import ThermalZone
from backends.virtual.provision import cool_down
from backends.virtual.tools import benchmark_model, onnxruntime_perf_test
from backends.virtual.tools._common import SANDBOX_ENV, Heater
from support.adb_fixtures import (
    device_state,
    port_accepts,
    private_adb_server,
)
from support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "assets" / "models" / "mnv2_cifar32.onnx"
HOST_BANNER = b"host::features=shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb\0"
A_SYNC_OBSOLETE = int.from_bytes(b"SYNC", "little")

PROFILE = PhoneProfile(
    serial="VPTEST01",
    name="vp_test",
    model="Pixel 8 Virtual",
    device="vptest",
    battery_level=64,
    battery_temp_c=29.7,
    thermal_zones=[ThermalZone("cpu-1-0-usr", 41.5), ThermalZone("battery", 30.0)],
    cpu_governor="performance",
)


@pytest.fixture
def virtual_phone_profile() -> PhoneProfile:
    """Overrides the fixture of adb_fixtures: this module's phones use PROFILE."""
    return PROFILE


@pytest.fixture
def device(
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,
) -> adbutils.AdbDevice:
    client, _ = adb_server
    return client.device(serial=virtual_phone.serial)


# ---------------------------------------------------------------------------------------------
# A raw adb host (the far end of the transport, written from the protocol description)


@dataclass
class Packet:
    command: int
    arg0: int
    arg1: int
    payload: bytes
    check: int
    magic: int


def packet_bytes(
    command: int,
    arg0: int,
    arg1: int,
    payload: bytes = b"",
    *,
    check: int | None = None,
    magic: int | None = None,
    length: int | None = None,
) -> bytes:
    header = struct.pack(
        "<6I",
        command,
        arg0,
        arg1,
        len(payload) if length is None else length,
        checksum(payload) if check is None else check,
        command ^ 0xFFFFFFFF if magic is None else magic,
    )
    return header + payload


class RawHost:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""
        self.next_id = 100
        self.maxdata = MAX_PAYLOAD

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"", **kw) -> None:
        self.sock.sendall(packet_bytes(command, arg0, arg1, payload, **kw))

    def _fill(self, count: int, timeout: float) -> bool:
        """False on timeout; EOFError when the emulator closed the connection."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                return False
            except ConnectionResetError as error:
                raise EOFError("reset") from error
            if not data:
                raise EOFError("closed")
            self.buffer += data
        return True

    def recv(self, timeout: float = 5.0) -> Packet | None:
        if not self._fill(24, timeout):
            return None
        fields = struct.unpack("<6I", self.buffer[:24])
        if not self._fill(24 + fields[3], timeout):
            return None
        payload = self.buffer[24 : 24 + fields[3]]
        self.buffer = self.buffer[24 + fields[3] :]
        return Packet(fields[0], fields[1], fields[2], payload, fields[4], fields[5])

    def expect(self, timeout: float = 5.0) -> Packet:
        packet = self.recv(timeout)
        assert packet is not None, "no packet from the emulator"
        return packet

    def silent(self, timeout: float = 0.3) -> bool:
        """True if nothing arrives for ``timeout`` seconds (and the connection stays up)."""
        return self.recv(timeout) is None

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        try:
            while self.recv(timeout) is not None:
                pass
        except EOFError:
            return True
        return False

    def handshake(
        self, maxdata: int = MAX_PAYLOAD, version: int = VERSION_SKIP_CHECKSUM, **kw
    ) -> Packet:
        self.maxdata = maxdata
        self.send(A_CNXN, version, maxdata, HOST_BANNER, **kw)
        reply = self.expect()
        assert reply.command == A_CNXN
        return reply

    def open(self, service: str) -> tuple[int, int]:
        """(host id, device id) of a newly opened stream."""
        host_id = self.next_id
        self.next_id += 1
        self.send(A_OPEN, host_id, 0, service.encode() + b"\0")
        reply = self.expect()
        assert (reply.command, reply.arg1) == (A_OKAY, host_id), reply
        assert reply.arg0 != 0
        return host_id, reply.arg0

    def write(self, host_id: int, device_id: int, data: bytes) -> list[Packet]:
        """Send ``data`` in one WRTE and wait for its OKAY; returns packets that came first."""
        self.send(A_WRTE, host_id, device_id, data)
        others = []
        while True:
            packet = self.expect()
            if packet.command == A_OKAY and packet.arg1 == host_id:
                return others
            others.append(packet)
            if packet.command == A_WRTE:
                self.send(A_OKAY, host_id, device_id)

    def collect(self, host_id: int, device_id: int, first: list[Packet] | None = None) -> bytes:
        """Acknowledge WRTEs until the device's CLSE; returns the stream's data."""
        data = b""
        pending = list(first or [])
        while True:
            packet = pending.pop(0) if pending else self.expect()
            if packet.command == A_WRTE:
                assert (packet.arg0, packet.arg1) == (device_id, host_id)
                assert len(packet.payload) <= self.maxdata
                data += packet.payload
                self.send(A_OKAY, host_id, device_id)
            elif packet.command == A_CLSE:
                assert packet.arg1 == host_id
                self.send(A_CLSE, host_id, device_id)
                return data


def parse_banner(payload: bytes) -> tuple[str, dict[str, str]]:
    text = payload.rstrip(b"\0").decode()
    state, _serial, rest = text.split(":", 2)
    props = dict(item.split("=", 1) for item in rest.split(";") if item.count("=") == 1)
    return state, props


def sync_request(request: bytes, path: str | bytes) -> bytes:
    raw = path.encode() if isinstance(path, str) else path
    return request + struct.pack("<I", len(raw)) + raw


@pytest.fixture
def phone(tmp_path: Path) -> VirtualPhone:
    """A virtual phone without an adb server, for the raw-socket tests."""
    started = VirtualPhone(tmp_path / "raw-phone", PROFILE, cooling_interval=0).start()
    yield started
    started.stop()


@pytest.fixture
def host(phone: VirtualPhone) -> RawHost:
    raw = RawHost(phone.port)
    yield raw
    raw.close()


def assert_serving(phone: VirtualPhone) -> None:
    """The emulator still accepts and answers new connections."""
    other = RawHost(phone.port)
    try:
        reply = other.handshake()
        assert parse_banner(reply.payload)[0] == "device"
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------
# Handshake and framing


def test_cnxn_reply_banner(phone: VirtualPhone, host: RawHost) -> None:
    reply = host.handshake()
    assert reply.arg0 == VERSION_SKIP_CHECKSUM
    assert reply.arg1 == MAX_PAYLOAD
    assert reply.magic == A_CNXN ^ 0xFFFFFFFF
    assert reply.check == checksum(reply.payload)
    state, props = parse_banner(reply.payload)
    assert state == "device"
    assert props["ro.product.name"] == "vp_test"
    assert props["ro.product.model"] == "Pixel 8 Virtual"
    assert props["ro.product.device"] == "vptest"
    assert props["features"].split(",") == ["shell_v2"]


def test_checksum_zero_and_correct_sum_are_accepted(phone: VirtualPhone) -> None:
    for check in (0, None):  # None: the correct byte sum
        raw = RawHost(phone.port)
        try:
            raw.handshake(version=VERSION_MIN, check=check)
        finally:
            raw.close()


def test_wrong_checksum_rules(phone: VirtualPhone) -> None:
    # A wrong non-zero sum on the CNXN closes the connection.
    raw = RawHost(phone.port)
    raw.send(A_CNXN, VERSION_MIN, MAX_PAYLOAD, HOST_BANNER, check=12345)
    assert raw.closed_by_peer()
    raw.close()
    # After negotiating 0x01000000 every packet's sum is checked...
    raw = RawHost(phone.port)
    raw.handshake(version=VERSION_MIN)
    raw.send(A_OPEN, 1, 0, b"shell:echo x\0", check=1)
    assert raw.closed_by_peer()
    raw.close()
    # ... and after 0x01000001 it is ignored.
    raw = RawHost(phone.port)
    raw.handshake()
    raw.send(A_OPEN, 1, 0, b"shell:echo x\0", check=1)
    assert raw.expect().command == A_OKAY
    raw.close()
    assert_serving(phone)


def test_packets_before_cnxn_are_ignored(host: RawHost) -> None:
    host.send(A_OPEN, 1, 0, b"shell:echo hi\0")
    host.send(A_WRTE, 1, 1, b"data")
    host.send(A_OKAY, 1, 1)
    host.send(A_AUTH, 1, 0, b"x" * 20)
    assert host.silent()
    host.handshake()
    host_id, device_id = host.open("shell:echo hi")
    assert host.collect(host_id, device_id) == b"hi\n"


def test_second_cnxn_resets_streams(phone: VirtualPhone, host: RawHost) -> None:
    host.handshake()
    host_id, device_id = host.open("shell:sleep 30")
    assert wait_until(phone.child_pids)
    host.handshake()  # starts over: the stream and its child are gone
    assert wait_until(lambda: not phone.child_pids())
    host.send(A_OKAY, host_id, device_id)  # stale ids are ignored
    host.send(A_WRTE, host_id, device_id, b"x")
    assert host.silent()
    new_host, new_device = host.open("shell:echo again")
    assert host.collect(new_host, new_device) == b"again\n"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(packet_bytes(A_CNXN, 0x01000001, MAX_PAYLOAD, magic=0), id="bad-magic"),
        pytest.param(packet_bytes(A_SYNC_OBSOLETE, 0, 0), id="unknown-command-SYNC"),
        pytest.param(packet_bytes(0x11223344, 0, 0), id="unknown-command"),
        pytest.param(
            packet_bytes(A_CNXN, 0x01000001, MAX_PAYLOAD, length=MAX_PAYLOAD + 1, check=0),
            id="oversized-length",
        ),
    ],
)
def test_protocol_violations_close_the_connection(phone: VirtualPhone, bad: bytes) -> None:
    before = RawHost(phone.port)  # an unrelated, live connection
    before.handshake()
    raw = RawHost(phone.port)
    raw.send_raw(bad)  # no payload follows: the size check must not wait for it
    assert raw.closed_by_peer()
    raw.close()
    # after a handshake too
    raw = RawHost(phone.port)
    raw.handshake()
    raw.send_raw(bad)
    assert raw.closed_by_peer()
    raw.close()
    host_id, device_id = before.open("shell:echo still here")
    assert before.collect(host_id, device_id) == b"still here\n"
    before.close()
    assert_serving(phone)


@pytest.mark.parametrize("cut", [10, 24 + 5], ids=["in-header", "in-payload"])
def test_truncated_packet_then_eof(phone: VirtualPhone, cut: int) -> None:
    raw = RawHost(phone.port)
    raw.send_raw(packet_bytes(A_CNXN, VERSION_SKIP_CHECKSUM, MAX_PAYLOAD, HOST_BANNER)[:cut])
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.closed_by_peer()
    raw.close()
    assert wait_until(lambda: phone.connection_count == 0)
    assert_serving(phone)


def test_random_bytes_fuzz(phone: VirtualPhone) -> None:
    rng = random.Random(1234)
    services = [b"shell:true\0", b"sync:\0", b"exec:echo x\0", b"bogus:\0", b"\0"]
    commands = [A_CNXN, A_OPEN, A_OKAY, A_WRTE, A_CLSE, A_AUTH]
    for round_ in range(30):
        raw = RawHost(phone.port)
        if round_ % 2:
            raw.handshake()
        with contextlib.suppress(OSError):
            for _ in range(20):
                if rng.random() < 0.2:
                    raw.send_raw(rng.randbytes(rng.randint(1, 64)))
                else:
                    command = rng.choice(commands)
                    payload = (
                        rng.choice(services)
                        if command == A_OPEN
                        else rng.randbytes(rng.randint(0, 40))
                    )
                    raw.send(command, rng.randint(0, 3), rng.randint(0, 3), payload)
        raw.close()
    assert wait_until(lambda: phone.connection_count == 0)
    assert wait_until(lambda: not phone.child_pids())
    assert_serving(phone)


# ---------------------------------------------------------------------------------------------
# Streams


def test_open_refusals(host: RawHost) -> None:
    host.handshake()
    host.send(A_OPEN, 0, 0, b"shell:echo hi\0")  # host id 0: ignored
    assert host.silent()
    host.send(A_OPEN, 7, 32 * 1024 * 1024, b"shell:echo hi\0")  # delayed ack not negotiated
    reply = host.expect()
    assert (reply.command, reply.arg0, reply.arg1) == (A_CLSE, 0, 7)
    for service in (b"root:\0", b"reboot:\0", b"tcp:1234\0", b"framebuffer:\0"):
        host.send(A_OPEN, 8, 0, service)
        reply = host.expect()
        assert (reply.command, reply.arg0, reply.arg1) == (A_CLSE, 0, 8)


def test_shell_echo_wrte_okay_clse(host: RawHost) -> None:
    host.handshake()
    host_id, device_id = host.open("shell:echo hi")
    first = host.expect()
    assert (first.command, first.arg0, first.arg1) == (A_WRTE, device_id, host_id)
    assert first.payload == b"hi\n"
    host.send(A_OKAY, host_id, device_id)
    end = host.expect()
    assert (end.command, end.arg0, end.arg1) == (A_CLSE, device_id, host_id)
    host.send(A_CLSE, host_id, device_id)
    host.send(A_OKAY, host_id, device_id)  # late packets for a closed stream: ignored
    assert host.silent()
    host_id, device_id = host.open("exec:echo raw")
    assert host.collect(host_id, device_id) == b"raw\n"


def test_unknown_ids_and_mismatched_sender_are_ignored(host: RawHost) -> None:
    host.handshake()
    host_id, device_id = host.open("shell:cat")
    host.send(A_WRTE, host_id + 50, device_id, b"wrong sender\n")
    host.send(A_WRTE, host_id, device_id + 50, b"unknown stream\n")
    host.send(A_OKAY, host_id, device_id + 50)
    host.send(A_CLSE, host_id + 50, device_id)
    assert host.silent()
    others = host.write(host_id, device_id, b"right\n")
    packet = others[0] if others else host.expect()
    assert packet.command == A_WRTE and packet.payload == b"right\n"
    host.send(A_OKAY, host_id, device_id)
    host.send(A_CLSE, host_id, device_id)


def test_flow_control_one_wrte_in_flight_and_host_maxdata(host: RawHost) -> None:
    host.handshake(maxdata=4096)
    host_id, device_id = host.open("shell:head -c 20000 /dev/zero")
    received = 0
    while True:
        packet = host.expect()
        if packet.command == A_CLSE:
            break
        assert packet.command == A_WRTE
        assert len(packet.payload) <= 4096
        received += len(packet.payload)
        if received < 20000:
            assert host.silent(0.2), "a second WRTE arrived before our OKAY"
        host.send(A_OKAY, host_id, device_id)
    assert received == 20000


def test_wrte_while_okay_is_owed_closes_the_stream(host: RawHost) -> None:
    host.handshake()
    host_id, device_id = host.open("shell:sleep 30")  # never reads its stdin
    chunk = b"\0" * MAX_PAYLOAD
    for _ in range(8):
        host.send(A_WRTE, host_id, device_id, chunk)
        reply = host.recv(1.0)
        if reply is None:
            break  # the emulator withholds its OKAY: more than 2 MiB waits unread
        assert reply.command == A_OKAY
    else:
        pytest.fail("the emulator never withheld an OKAY")
    host.send(A_WRTE, host_id, device_id, b"one too many")
    reply = host.expect()
    assert (reply.command, reply.arg0, reply.arg1) == (A_CLSE, device_id, host_id)


def test_shell_v2_stdin_and_close_stdin(host: RawHost) -> None:
    host.handshake()
    host_id, device_id = host.open("shell,v2,raw:cat")
    others = host.write(host_id, device_id, struct.pack("<BI", 0, 6) + b"hello\n")
    others += host.write(host_id, device_id, struct.pack("<BI", 4, 0))
    data = host.collect(host_id, device_id, others)
    packets = []
    while data:
        packet_id, length = struct.unpack("<BI", data[:5])
        packets.append((packet_id, data[5 : 5 + length]))
        data = data[5 + length :]
    assert b"".join(p for i, p in packets if i == 1) == b"hello\n"
    assert packets[-1] == (3, b"\0")


# ---------------------------------------------------------------------------------------------
# Sync over the raw protocol (requests split and batched, bad input)


def test_sync_requests_batched_and_split(phone: VirtualPhone, host: RawHost) -> None:
    (phone.sandbox.root / "sdcard" / "f.txt").write_bytes(b"12345")
    host.handshake()
    host_id, device_id = host.open("sync:")
    batch = (
        sync_request(b"STAT", "/sdcard/f.txt")
        + sync_request(b"LIST", "/sdcard")
        + sync_request(b"QUIT", "")
    )
    data = host.collect(host_id, device_id, host.write(host_id, device_id, batch))
    assert data[:4] == b"STAT"
    mode, size, _ = struct.unpack("<III", data[4:16])
    assert stat.S_ISREG(mode) and size == 5
    names, rest = [], data[16:]
    while rest[:4] == b"DENT":
        namelen = struct.unpack("<I", rest[16:20])[0]
        names.append(rest[20 : 20 + namelen].decode())
        rest = rest[20 + namelen :]
    assert rest == b"DONE" + b"\0" * 16
    assert names[:2] == [".", ".."] and "f.txt" in names

    host_id, device_id = host.open("sync:")
    others: list[Packet] = []
    for byte in sync_request(b"STAT", "/sdcard/f.txt"):
        others += host.write(host_id, device_id, bytes([byte]))
    reply = others[0] if others else host.expect()
    assert reply.command == A_WRTE and reply.payload[:4] == b"STAT"
    assert len(reply.payload) == 16  # never split across WRTEs
    host.send(A_OKAY, host_id, device_id)
    host.send(A_CLSE, host_id, device_id)


@pytest.mark.parametrize(
    "request_bytes, message",
    [
        (sync_request(b"STAT", "/" + "a" * 1100), b"path too long"),
        (sync_request(b"SEND", "/sdcard/no-comma"), b"missing ,"),
        (sync_request(b"SEND", "/sdcard/x,0o644"), b"bad mode"),
        (sync_request(b"SEND", "/sdcard/link,41471"), b"symlinks"),  # S_IFLNK | 0777
        (b"XXXX\0\0\0\0", b"unknown command"),
        (sync_request(b"RECV", b"/sdcard/a\0b"), b"NUL"),
        (sync_request(b"RECV", "/sdcard/missing"), b"No such file or directory"),
        (
            sync_request(b"SEND", "/sdcard/big,33188") + b"DATA" + struct.pack("<I", 65537),
            b"oversize data message",
        ),
        (
            sync_request(b"SEND", "/sdcard/odd,33188") + b"STAT" + struct.pack("<I", 0),
            b"unexpected",
        ),
    ],
    ids=[
        "path-too-long",
        "send-no-comma",
        "send-bad-mode",
        "send-symlink",
        "unknown-id",
        "nul-in-path",
        "recv-missing",
        "data-too-big",
        "unexpected-id-in-send",
    ],
)
def test_sync_bad_input_fails(
    phone: VirtualPhone, host: RawHost, request_bytes: bytes, message: bytes
) -> None:
    host.handshake()
    host_id, device_id = host.open("sync:")
    others = host.write(host_id, device_id, request_bytes)
    if (
        b"SEND" in request_bytes[:4]
        and b"DATA" not in request_bytes
        and b"STAT" not in (request_bytes[8:])
    ):
        # a refused SEND drains until DONE before ending the stream
        others += host.write(host_id, device_id, b"DONE" + struct.pack("<I", 0))
    data = host.collect(host_id, device_id, others)
    assert data[:4] == b"FAIL"
    length = struct.unpack("<I", data[4:8])[0]
    assert message in data[8 : 8 + length]
    assert not any(
        p.name.startswith(".devlab-partial") or p.name in ("link", "big", "odd", "x", "no-comma")
        for p in (phone.sandbox.root / "sdcard").iterdir()
    )


def test_interrupted_send_leaves_no_partial_file(phone: VirtualPhone, host: RawHost) -> None:
    host.handshake()
    host_id, device_id = host.open("sync:")
    request = sync_request(b"SEND", "/data/local/tmp/partial.bin,33188")
    host.write(host_id, device_id, request + b"DATA" + struct.pack("<I", 1000) + b"x" * 1000)
    folder = phone.sandbox.root / "data/local/tmp"
    assert wait_until(lambda: any(p.name.startswith(".devlab-partial") for p in folder.iterdir()))
    host.send(A_CLSE, host_id, device_id)  # the client went away mid-push
    assert wait_until(lambda: not any(folder.iterdir()))
    # a TCP reset mid-push, too
    host_id, device_id = host.open("sync:")
    host.write(host_id, device_id, request + b"DATA" + struct.pack("<I", 10) + b"y" * 10)
    assert wait_until(lambda: any(folder.iterdir()))
    host.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    host.sock.close()
    assert wait_until(lambda: not any(folder.iterdir()))


# ---------------------------------------------------------------------------------------------
# Through the real adb server


def test_connect_list_and_already_connected(
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,
) -> None:
    client, _ = adb_server
    [info] = [i for i in client.list(extended=True) if i.serial == virtual_phone.serial]
    assert info.state == "device"
    assert info.tags["product"] == "vp_test"
    assert info.tags["model"] in ("Pixel 8 Virtual", "Pixel_8_Virtual")
    assert info.tags["device"] == "vptest"
    assert "already connected" in client.connect(virtual_phone.serial)
    assert virtual_phone.serial in [d.serial for d in client.device_list()]
    assert client.device(serial=virtual_phone.serial).get_serialno() == virtual_phone.serial


def test_shell(device: adbutils.AdbDevice) -> None:
    assert device.shell("echo hi") == "hi"
    assert device.shell(["echo", "a b", "c"]) == "a b c"
    assert device.shell("echo 'Grüße, 東京'") == "Grüße, 東京"
    assert device.get_features() == "shell_v2"
    assert device.shell2("(exit 3)").returncode == 3  # marker method
    result = device.shell2("echo out; echo err >&2; exit 4", v2=True)
    assert (result.stdout, result.stderr, result.returncode) == ("out\n", "err\n", 4)
    assert device.shell2("kill -9 $$", v2=True).returncode == 128 + 9
    with pytest.raises(AdbError):
        device.shell2("exit 5")  # adbutils' marker method cannot see a bare exit
    assert device.shell("pwd") == device.shell("echo $HOME")
    for _ in range(20):
        assert device.shell("echo hi") == "hi"


def test_shell_large_output_in_order(device: adbutils.AdbDevice) -> None:
    conn = device.shell("seq 1 400000", stream=True)
    chunks = []
    with conn:
        while data := conn.conn.recv(1 << 16):
            chunks.append(data)
    lines = b"".join(chunks).decode().split()
    assert lines == [str(i) for i in range(1, 400001)]


def test_host_close_kills_the_process_group(
    device: adbutils.AdbDevice,
    virtual_phone: VirtualPhone,
) -> None:
    conn = device.shell("sleep 60 & echo $!; sleep 61", stream=True)
    background = int(conn.conn.recv(100).decode().split()[0])
    leaders = wait_until(virtual_phone.child_pids)
    assert leaders

    def gone(pid: int) -> bool:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return True
        return fields[0] == "Z"  # killed, waiting for its reaper

    conn.close()
    assert wait_until(lambda: all(gone(pid) for pid in [background, *leaders]))


def test_getprop_matches_profile_and_banner(device: adbutils.AdbDevice) -> None:
    assert device.prop.model == "Pixel 8 Virtual"
    assert device.prop.name == "vp_test"
    assert device.prop.device == "vptest"
    assert device.getprop("ro.build.version.sdk") == str(PROFILE.sdk)
    assert device.getprop("ro.board.platform") == PROFILE.board_platform
    assert device.getprop("no.such.property") == ""
    listing = device.shell("getprop")
    assert "[ro.product.model]: [Pixel 8 Virtual]" in listing.splitlines()
    assert listing + "\n" == PROFILE.to_getprop()


def test_dumpsys_battery_and_sysfs(device: adbutils.AdbDevice) -> None:
    battery = device.shell("dumpsys battery")
    assert battery.splitlines()[0] == "Current Battery Service state:"
    assert "  level: 64" in battery.splitlines()
    assert "  temperature: 297" in battery.splitlines()
    assert device.shell("cat /sys/class/thermal/thermal_zone0/type") == "cpu-1-0-usr"
    assert int(device.shell("cat /sys/class/thermal/thermal_zone0/temp")) >= 41500
    governor = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    assert device.shell(f"cat {governor}") == "performance"
    assert device.sync.read_text(governor) == "performance\n"
    assert device.shell("test -d /data/local/tmp && echo yes") == "yes"


def test_push_pull_stat_list_unicode_and_spaces(
    device: adbutils.AdbDevice,
    virtual_phone: VirtualPhone,
    tmp_path: Path,
) -> None:
    remote = "/sdcard/Some Folder/naïve 東京.txt"
    assert device.sync.push(b"hello world", remote) == 11
    host_file = virtual_phone.sandbox.root / "sdcard/Some Folder/naïve 東京.txt"
    assert host_file.read_bytes() == b"hello world"
    info = device.sync.stat(remote)
    assert stat.S_ISREG(info.mode) and info.size == 11
    assert stat.S_IMODE(info.mode) == 0o777  # 0755 with adbd's permission rule
    names = [e.path for e in device.sync.list("/sdcard/Some Folder")]
    assert names[:2] == [".", ".."] and "naïve 東京.txt" in names
    assert device.sync.read_text(remote) == "hello world"
    assert device.shell(f"cat '{remote}'") == "hello world"
    local = tmp_path / "pulled.txt"
    assert device.sync.pull(remote, local) == 11
    assert local.read_bytes() == b"hello world"
    # push a file path into an existing directory: adbutils appends the name
    source = tmp_path / "into dir.bin"
    source.write_bytes(b"abc")
    device.sync.push(source, "/data/local/tmp")
    assert device.sync.read_bytes("/data/local/tmp/into dir.bin") == b"abc"
    # replace an existing file, keep the DONE mtime
    device.sync.push(b"v2", remote)
    assert device.sync.read_bytes(remote) == b"v2"
    assert abs(host_file.stat().st_mtime - time.time()) < 3600
    # missing paths
    assert not device.sync.exists("/sdcard/missing.txt")
    assert device.sync.stat("/sdcard/missing.txt").size == 0
    with pytest.raises(AdbError, match="No such file"):
        device.sync.read_bytes("/sdcard/missing.txt")


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 4 * 1024 * 1024])
def test_push_pull_round_trip_exact_bytes(device: adbutils.AdbDevice, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    assert device.sync.push(payload, f"/data/local/tmp/blob_{size}.bin") == size
    pulled = device.sync.read_bytes(f"/data/local/tmp/blob_{size}.bin")
    assert hashlib.sha256(pulled).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert device.sync.stat(f"/data/local/tmp/blob_{size}.bin").size == size


def test_sync_path_traversal_and_symlink_escape(
    device: adbutils.AdbDevice,
    virtual_phone: VirtualPhone,
    tmp_path: Path,
) -> None:
    root = virtual_phone.sandbox.root
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    (root / "sdcard" / "escape").symlink_to(outside)
    (root / "sdcard" / "escape_file").symlink_to(outside / "secret.txt")

    assert not device.sync.exists("/../../etc/passwd")
    assert not device.sync.exists("../etc/hostname")
    assert not device.sync.exists(str(outside / "secret.txt"))  # absolute host path: inside
    for path in ("/sdcard/escape/secret.txt", "/sdcard/escape_file", "/sdcard/escape"):
        assert device.sync.stat(path).mode == 0
    assert device.sync.list("/sdcard/escape") == []
    for path in ("/sdcard/escape/secret.txt", "/sdcard/escape_file"):
        with pytest.raises(AdbError, match="Permission denied"):
            device.sync.read_bytes(path)
    with pytest.raises(AdbError):
        device.sync.push(b"pwned", "/sdcard/escape/new.txt")
    # a final symlink is replaced, never followed
    device.sync.push(b"replaced", "/sdcard/escape_file")
    assert (outside / "secret.txt").read_text() == "host secret"
    assert not (root / "sdcard" / "escape_file").is_symlink()
    # ".." climbs only to the sandbox root
    device.sync.push(b"inside", "/../../../tmp_escape_test.txt")
    assert (root / "tmp_escape_test.txt").read_bytes() == b"inside"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_onnxruntime_perf_test_via_shell(device: adbutils.AdbDevice) -> None:
    device.sync.push(MODEL, "/data/local/tmp/model.onnx")
    result = device.shell2(
        "onnxruntime_perf_test -m times -r 5 -e cpu -x 1 -I "
        "/data/local/tmp/model.onnx /data/local/tmp/result.csv",
        v2=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for pattern in (
        r"^Setting intra_op_num_threads to 1$",
        r"^Session creation time cost: [\d.e+-]+ s$",
        r"^First inference time cost: \d+ ms$",
        r"^Total inference time cost: [\d.e+-]+ s$",
        r"^Total inference requests: 5$",
        r"^Average inference time cost total: \d+\.\d{6} ms$",
        r"^Total inference run time: [\d.e+-]+ s$",
        r"^Number of inferences per second: [\d.e+-]+$",
        r"^Avg CPU usage: \d+ %$",
        r"^Peak working set size: \d+ bytes$",
        r"^Runs:5$",
        r"^Min Latency: [\d.e+-]+ s$",
        r"^Max Latency: [\d.e+-]+ s$",
        *(rf"^P{p} Latency: [\d.e+-]+ s$" for p in (50, 90, 95, 99, 999)),
    ):
        assert re.search(pattern, out, re.MULTILINE), f"{pattern!r} not in:\n{out}"
    rows = device.sync.read_text("/data/local/tmp/result.csv").splitlines()
    assert len(rows) == 5 and rows[0].startswith("/")
    bad = device.shell2("onnxruntime_perf_test -m times -r 1 -I /data/local/tmp/none", v2=True)
    assert bad.returncode != 0


def test_benchmark_model_via_shell(device: adbutils.AdbDevice) -> None:
    device.sync.push(MODEL, "/data/local/tmp/model.onnx")
    result = device.shell2(
        "benchmark_model --graph=/data/local/tmp/model.onnx --num_runs=5 --warmup_runs=2 "
        "--num_threads=1 --enable_op_profiling=true --min_secs=0 --warmup_min_secs=0",
        v2=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    log = result.stderr  # the real tool logs to stderr
    assert "INFO: Graph: [/data/local/tmp/model.onnx]" in log.splitlines()
    counts = re.findall(r"^INFO: count=(\d+) first=\d+ .* p95=\d+$", log, re.MULTILINE)
    assert counts == ["2", "5"]
    assert re.search(
        r"^INFO: Inference timings in us: Init: \d+, First inference: \d+, "
        r"Warmup \(avg\): [\d.e+]+, Inference \(avg\): [\d.e+]+$",
        log,
        re.MULTILINE,
    )
    assert "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:" in log
    assert "\t[Name]\n" in log and "\t                    Conv\t" in log
    failed = device.shell2("benchmark_model --graph=/data/local/tmp/model.onnx --bogus=1", v2=True)
    assert failed.returncode == 1
    assert "Unconsumed cmdline flags: --bogus=1" in failed.stderr


def test_concurrent_shell_push_pull(device: adbutils.AdbDevice) -> None:
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            data = os.urandom(100_000 + index)
            path = f"/data/local/tmp/c{index}.bin"
            device.sync.push(data, path)
            assert device.sync.read_bytes(path) == data
            assert device.shell(f"echo {index}") == str(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def test_stop_offline_restart_and_disconnect(
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,
) -> None:
    client, _ = adb_server
    serial = virtual_phone.serial
    virtual_phone.stop()
    assert wait_until(lambda: device_state(client, serial) == "offline")
    with pytest.raises(AdbError, match="offline"):
        client.device(serial=serial).shell("echo hi")
    virtual_phone.start()  # same port: the server reconnects by itself
    assert virtual_phone.serial == serial
    assert wait_until(lambda: device_state(client, serial) == "device", timeout=15)
    assert client.device(serial=serial).shell("echo back") == "back"
    # link loss with the listener still up: the server reconnects by itself
    virtual_phone.drop_connections()

    def shell_works() -> bool:
        try:
            return client.device(serial=serial).shell("echo again") == "again"
        except AdbError:
            return False

    assert wait_until(shell_works, timeout=15, interval=0.2)
    virtual_phone.stop()
    assert wait_until(lambda: device_state(client, serial) == "offline")
    client.disconnect(serial)
    assert wait_until(lambda: device_state(client, serial) is None)


def test_device_vanishes_mid_push(
    adb_server: tuple[adbutils.AdbClient, int],
    virtual_phone: VirtualPhone,
) -> None:
    client, _ = adb_server
    device = client.device(serial=virtual_phone.serial)
    halfway = threading.Event()
    release = threading.Event()

    class SlowSource:
        def __init__(self) -> None:
            self.sent = 0

        def read(self, size: int) -> bytes:
            if self.sent >= 1 << 20:
                halfway.set()
                release.wait(10)
            if self.sent >= 4 << 20:
                return b""
            self.sent += size
            return b"\xab" * size

    outcome: list[BaseException | int] = []

    def push() -> None:
        try:
            outcome.append(device.sync.push(SlowSource(), "/data/local/tmp/vanish.bin"))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=push)
    thread.start()
    assert halfway.wait(10)
    virtual_phone.stop()
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome[0], OSError | AdbError), outcome
    assert wait_until(lambda: device_state(client, virtual_phone.serial) == "offline")
    assert list((virtual_phone.sandbox.root / "data/local/tmp").iterdir()) == []
    client.disconnect(virtual_phone.serial)
    assert wait_until(lambda: device_state(client, virtual_phone.serial) is None)


def test_private_server_isolation() -> None:
    default_was_up = port_accepts(5037)
    with pytest.MonkeyPatch.context() as patch:
        with private_adb_server(patch) as (client, port, process):
            assert port != 5037
            assert os.environ["ANDROID_ADB_SERVER_PORT"] == str(port)
            environ = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{process.pid}/environ").read_text().split("\0")
                if "=" in item
            )
            assert {k: environ[k] for k in ("ADB_MDNS", "ADB_USB", "ADB_EMU")} == {
                "ADB_MDNS": "0",
                "ADB_USB": "0",
                "ADB_EMU": "0",
            }
            assert Path(environ["HOME"]) != Path.home()
            assert client.server_version() > 0
        assert process.poll() is not None
    assert os.environ.get("ANDROID_ADB_SERVER_PORT") != str(port)
    if not default_was_up:
        assert not port_accepts(5037)


@pytest.mark.skipif(
    not os.environ.get("DEVLAB_SLOW_TESTS"), reason="takes ~10 s; set DEVLAB_SLOW_TESTS=1"
)
def test_listener_that_never_answers(
    adb_server: tuple[adbutils.AdbClient, int],
    tmp_path: Path,
) -> None:
    client, _ = adb_server
    mute = VirtualPhone(tmp_path / "mute", PROFILE)
    mute.answer_cnxn = False
    mute.start()
    try:
        output = client.connect(mute.serial, timeout=30)
        assert "failed to connect" in output
    finally:
        with contextlib.suppress(AdbError):
            client.disconnect(mute.serial)
        mute.stop()


# ---------------------------------------------------------------------------------------------
# Units: sandbox, profile, heater, tools


def test_sandbox_mapping(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "root")
    root = box.root
    assert box.resolve("/../../etc/passwd") == root / "etc/passwd"
    assert box.resolve("../etc/hostname") == root / "etc/hostname"
    assert box.resolve("//data///local/./tmp/") == root / "data/local/tmp"
    with pytest.raises(SandboxError):
        box.resolve("/data/a\0b")
    (root / "data").mkdir()
    (root / "data" / "up").symlink_to(tmp_path)
    (root / "data" / "dangling").symlink_to(tmp_path / "not-there-yet")
    for path in ("/data/up/x", "/data/dangling", "/data/dangling/deeper/x"):
        with pytest.raises(SandboxError):
            box.resolve(path)
    with pytest.raises(SandboxError):
        box.open_for_write("/data/up/new.txt")
    assert box.device_path(root / "data" / "x") == "/data/x"
    assert box.device_path(root) == "/"
    with box.open_for_write("/data/new/file.bin") as partial:
        partial.write(b"abc")
        partial.commit(0o666, 1_700_000_000)
    assert (root / "data/new/file.bin").read_bytes() == b"abc"
    assert (root / "data/new/file.bin").stat().st_mtime == 1_700_000_000
    with pytest.raises(RuntimeError), box.open_for_write("/data/new/broken.bin") as partial:
        partial.write(b"half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in (root / "data/new").iterdir()) == ["file.bin"]


def test_shell_path_rewrite(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "root")
    r = box.shell_root()
    assert box.rewrite_command("cat /sdcard/a.txt") == f"cat {r}/sdcard/a.txt"
    assert (
        box.rewrite_command("tool --graph=/data/local/tmp/m.onnx > /data/x 2>&1")
        == f"tool --graph={r}/data/local/tmp/m.onnx > {r}/data/x 2>&1"
    )
    assert box.rewrite_command("ls /system;ls '/vendor/lib'") == (
        f"ls {r}/system;ls '{r}/vendor/lib'"
    )
    assert box.rewrite_command("PATH=/system/bin:/sys/x") == f"PATH={r}/system/bin:{r}/sys/x"
    untouched = "cat /proc/cpuinfo /usr/bin/data/x $HOME/data/x ./data/x /database /sdcardx"
    assert box.rewrite_command(untouched) == untouched
    spaced = Sandbox(tmp_path / "with space")
    alias = spaced.shell_root()
    assert " " not in alias and os.path.realpath(alias) == str(spaced.root)
    spaced.close()
    assert not os.path.exists(alias)


def test_profile_load_and_getprop_format(tmp_path: Path) -> None:
    toml_file = tmp_path / "phone.toml"
    toml_file.write_text(
        'model = "Galaxy S24 (virtual)"\nbattery_level = 55\n'
        '[[thermal_zones]]\ntype = "soc"\ntemp_c = 40.0\n'
        '[extra_props]\n"ro.vendor.x" = "1"\n'
    )
    profile = PhoneProfile.load(toml_file)
    assert profile.model == "Galaxy S24 (virtual)" and profile.battery_level == 55
    assert profile.thermal_zones == [ThermalZone("soc", 40.0)]
    json_file = tmp_path / "phone.json"
    json_file.write_text(json.dumps(profile.to_dict()))
    assert PhoneProfile.load(json_file) == profile
    lines = profile.to_getprop().splitlines()
    assert "[ro.product.model]: [Galaxy S24 (virtual)]" in lines
    assert "[ro.vendor.x]: [1]" in lines
    assert lines == sorted(lines)
    assert all(re.fullmatch(r"\[[^\]]+\]: \[.*\]", line) for line in lines)
    for bad in ({"colour": "red"}, {"battery_level": 150}, {"model": "a;b"}):
        with pytest.raises(ProfileError):
            PhoneProfile.from_dict(bad)


def test_heater_warms_and_phone_cools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    phone = VirtualPhone(tmp_path / "hot", PROFILE, cooling_interval=0)
    phone.start()
    phone.stop()
    root = phone.sandbox.root
    zone = root / "sys/class/thermal/thermal_zone0/temp"
    battery = root / "sys/class/power_supply/battery/temp"
    assert int(zone.read_text()) == 41500 and int(battery.read_text()) == 297
    monkeypatch.setenv(SANDBOX_ENV, str(root))
    Heater().step(2.0)
    assert int(zone.read_text()) > 41500 and int(battery.read_text()) > 297
    for _ in range(100):
        cool_down(root, PROFILE)
    assert int(zone.read_text()) == 41500 and int(battery.read_text()) == 297


def test_tools_flag_errors_and_bad_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert onnxruntime_perf_test.main(["-q", "m.onnx"]) == 1
    assert "not recognized" in capsys.readouterr().err
    assert onnxruntime_perf_test.main(["-e", "nnapi", "-I", str(MODEL)]) == 1
    assert "not supported in this build" in capsys.readouterr().err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert onnxruntime_perf_test.main(["-m", "times", "-r", "1", "-I", str(broken)]) == 1
    assert "Failed to create session" in capsys.readouterr().err
    assert benchmark_model.main([f"--graph={broken}"]) == 1
    assert "ERROR: Benchmarking failed." in capsys.readouterr().err
    assert benchmark_model.main([f"--graph={MODEL}", "--num_runs"]) == 1
    assert "Unconsumed cmdline flags" in capsys.readouterr().err
