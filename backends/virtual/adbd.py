"""A virtual phone: an emulated adbd over TCP that the real adb server connects to.

Start it, then ``adb connect 127.0.0.1:PORT`` (or ``AdbClient.connect``): the server lists it
as ``device`` and adbutils drives it exactly like a USB phone. Protocol notes are in
``shared/specs/adb-device-emulator.md``; this module follows them:

* framing: 24-byte little-endian headers; magic, command, payload size (checked before the
  payload is read) and checksum are validated and any violation closes the TCP connection;
  before the host's CNXN a checksum of 0 or the correct byte sum is accepted (the server's
  reconnect CNXN carries 0), after negotiating 0x01000001 the field is ignored;
* handshake: CNXN answered with CNXN (version 0x01000001, banner built from the profile,
  features ``shell_v2`` by default); packets before CNXN are ignored; a second CNXN drops
  every stream;
* streams: one WRTE in flight per stream and direction, outgoing data coalesced up to the
  host's maxdata without splitting a sync reply record, host WRTEs acknowledged at once unless
  more than 2 MiB waits unread; delayed ack is not implemented (an OPEN with arg1 != 0 is
  refused with CLSE(0, id), as adbd does when it was not negotiated);
* services: ``shell:``, ``shell,v2,...:``, ``exec:`` and ``sync:`` (STAT, LIST, SEND, RECV,
  QUIT; v1 only). Everything else is refused with CLSE(0, id).

Shell commands run as ``/bin/sh -c`` with the sandbox as working directory and HOME, a minimal
environment and ``PATH=<sandbox>/system/bin:/usr/bin:/bin``. Because ``/bin/sh`` sees the host
file system, device-absolute paths in the command text that start with ``/data``, ``/sdcard``,
``/sys``, ``/system`` or ``/vendor`` are rewritten to the sandbox (``Sandbox.rewrite_command``);
sync maps the same paths the same way. The shell is a convenience, not a security boundary.

Use it from synchronous code (its own event loop in a background thread)::

    phone = VirtualPhone(tmp_path / "phone", PhoneProfile(model="Pixel 8"))
    phone.start()            # phone.port, phone.serial == "127.0.0.1:<port>"
    ...
    phone.stop()             # start() again later listens on the same port

or inside an event loop with ``await phone.astart()`` / ``await phone.astop()`` (or
``async with``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import stat
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from backends.virtual.profile import PhoneProfile
from backends.virtual.provision import SANDBOX_ENV, SHELL_ROOT_ENV, cool_down, provision
from backends.virtual.sandbox import PartialFile, Sandbox, SandboxError
from backends.virtual.tools._common import CLOCK_ENV, WARMUP_LOAD_ENV

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Protocol constants


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


A_CNXN = _cmd(b"CNXN")
A_AUTH = _cmd(b"AUTH")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_WRTE = _cmd(b"WRTE")
A_CLSE = _cmd(b"CLSE")
A_STLS = _cmd(b"STLS")
KNOWN_COMMANDS = {A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_WRTE, A_CLSE, A_STLS}

VERSION_MIN = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
MAX_PAYLOAD = 1024 * 1024
MAX_PAYLOAD_V1 = 4096
HEADER = struct.Struct("<6I")

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
SYNC_HEADER = struct.Struct("<4sI")

# Host -> device: OKAY at once while at most this much waits unread on a stream.
INBOX_LIMIT = 2 * 1024 * 1024
# Device -> host: a service's write() waits while this much is queued on its stream.
OUTBOX_HIGH = 2 * 1024 * 1024

SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4
SHELL_PACKET = struct.Struct("<BI")

DEFAULT_FEATURES = ("shell_v2",)


def checksum(data: bytes) -> int:
    """The adb "data_check": a plain byte sum modulo 2**32 (not a CRC)."""
    return sum(data) & 0xFFFFFFFF


def pack_packet(command: int, arg0: int, arg1: int, payload: bytes, with_sum: bool) -> bytes:
    check = checksum(payload) if with_sum else 0
    return HEADER.pack(command, arg0, arg1, len(payload), check, command ^ 0xFFFFFFFF) + payload


class ProtocolError(Exception):
    """The host broke the transport protocol: the TCP connection is closed."""


class StreamClosed(Exception):
    """The stream ended (host CLSE, connection loss, emulator stop) while a service used it."""


# ---------------------------------------------------------------------------------------------
# Streams


class _Stream:
    """One adb stream: a service on our side, a socket of the adb server on the other."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        # outgoing: whole records (never split unless larger than the host's maxdata)
        self._out: collections.deque[bytes] = collections.deque()
        self._out_size = 0
        self._ready = True  # an OPEN counts as READY for our first WRTE
        self._finishing = False
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        # incoming
        self._inbox = bytearray()
        self._in_event = asyncio.Event()
        self._in_eof = False
        self.okay_owed = False
        self.closed = False
        self.on_abort: list[Callable[[], None]] = []
        self.sender: asyncio.Task[None] | None = None
        self.service: asyncio.Task[None] | None = None

    # -- output (service -> host) -------------------------------------------------------------

    async def write(self, record: bytes) -> None:
        """Queue ``record`` for the host; waits while too much is queued."""
        if self.closed:
            raise StreamClosed()
        if record:
            self._out.append(bytes(record))
            self._out_size += len(record)
            self._wake.set()
        while self._out_size > OUTBOX_HIGH and not self.closed:
            self._space.clear()
            await self._space.wait()
        if self.closed:
            raise StreamClosed()

    def finish(self) -> None:
        """No more output: flush what is queued, then send CLSE."""
        self._finishing = True
        self._wake.set()

    def _take(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while self._out:
            record = self._out[0]
            if size + len(record) <= limit:
                parts.append(self._out.popleft())
                size += len(record)
            elif size == 0:  # a record larger than one packet: split it
                parts.append(record[:limit])
                self._out[0] = record[limit:]
                size = limit
                break
            else:
                break
        self._out_size -= size
        return b"".join(parts)

    async def run_sender(self) -> None:
        while True:
            if self.closed:
                return
            if self._out and self._ready:
                payload = self._take(self.conn.peer_maxdata)
                self._ready = False
                self.conn.send(A_WRTE, self.local_id, self.remote_id, payload)
                if self._out_size <= OUTBOX_HIGH:
                    self._space.set()
                await self.conn.drain()
                continue
            if not self._out and self._finishing:
                self.conn.send(A_CLSE, self.local_id, self.remote_id)
                self.conn.forget(self)
                self.closed = True
                self._space.set()
                return
            self._wake.clear()
            await self._wake.wait()

    def on_okay(self) -> None:
        self._ready = True
        self._wake.set()

    # -- input (host -> service) --------------------------------------------------------------

    def on_write(self, payload: bytes) -> None:
        if self.okay_owed:
            # The host sent another WRTE before our OKAY: a flow-control violation.
            log.warning("stream %d: WRTE while an OKAY is owed; closing it", self.local_id)
            self.close_from_device()
            return
        self._inbox += payload
        self._in_event.set()
        if len(self._inbox) <= INBOX_LIMIT:
            self.conn.send(A_OKAY, self.local_id, self.remote_id)
        else:
            self.okay_owed = True

    def _consumed(self) -> None:
        if self.okay_owed and len(self._inbox) <= INBOX_LIMIT and not self.closed:
            self.okay_owed = False
            self.conn.send(A_OKAY, self.local_id, self.remote_id)

    async def read_exactly(self, count: int) -> bytes:
        """``count`` bytes from the host; ``StreamClosed`` when the stream ends first."""
        while len(self._inbox) < count:
            if self._in_eof or self.closed:
                raise StreamClosed()
            self._in_event.clear()
            await self._in_event.wait()
        data = bytes(self._inbox[:count])
        del self._inbox[:count]
        self._consumed()
        return data

    async def read_some(self) -> bytes:
        """Whatever the host sent (at least one byte), or b"" once the stream ended."""
        while not self._inbox:
            if self._in_eof or self.closed:
                return b""
            self._in_event.clear()
            await self._in_event.wait()
        data = bytes(self._inbox)
        self._inbox.clear()
        self._consumed()
        return data

    # -- ending -------------------------------------------------------------------------------

    def abort(self) -> None:
        """The host closed the stream or the connection is gone: stop everything, no CLSE."""
        if self.closed and self._in_eof:
            return
        self.closed = True
        self._in_eof = True
        self._in_event.set()
        self._space.set()
        self._wake.set()
        for callback in self.on_abort:
            try:
                callback()
            except Exception:
                log.exception("stream cleanup failed")
        if self.service is not None:
            self.service.cancel()
        if self.sender is not None:
            self.sender.cancel()

    def close_from_device(self) -> None:
        """End the stream at once from our side (protocol trouble): CLSE, then abort."""
        if not self.closed:
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self.conn.forget(self)
        self.abort()


# ---------------------------------------------------------------------------------------------
# Connections


class _Connection:
    """One TCP connection from the adb server (one transport)."""

    def __init__(
        self, phone: VirtualPhone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.phone = phone
        self.reader = reader
        self.writer = writer
        self.online = False
        self.version = VERSION_MIN
        self.peer_maxdata = MAX_PAYLOAD_V1
        self.host_features: list[str] = []
        self.streams: dict[int, _Stream] = {}
        self._next_id = 1

    # -- sending ------------------------------------------------------------------------------

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"") -> None:
        """Write one whole packet (never interleaved with another: no await in between)."""
        if self.writer.is_closing():
            return
        with_sum = command == A_CNXN or self.version < VERSION_SKIP_CHECKSUM
        self.writer.write(pack_packet(command, arg0, arg1, payload, with_sum))

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def forget(self, stream: _Stream) -> None:
        if self.streams.get(stream.local_id) is stream:
            del self.streams[stream.local_id]

    # -- receiving ----------------------------------------------------------------------------

    async def serve(self) -> None:
        peer = self.writer.get_extra_info("peername")
        try:
            while True:
                header = await self.reader.readexactly(HEADER.size)
                command, arg0, arg1, length, check, magic = HEADER.unpack(header)
                if magic != command ^ 0xFFFFFFFF:
                    raise ProtocolError(f"bad magic {magic:#x} for command {command:#x}")
                if command not in KNOWN_COMMANDS:
                    raise ProtocolError(f"unknown command {command:#x}")
                if length > self.phone.max_payload:
                    raise ProtocolError(f"payload of {length} bytes > {self.phone.max_payload}")
                payload = await self.reader.readexactly(length) if length else b""
                self._check_sum(check, payload)
                self._dispatch(command, arg0, arg1, payload)
                await self.drain()
        except asyncio.IncompleteReadError:
            log.debug("%s: connection ended", peer)
        except ProtocolError as error:
            log.info("%s: closing the connection: %s", peer, error)
        except (ConnectionError, OSError) as error:
            log.debug("%s: connection lost: %s", peer, error)
        except Exception:
            log.exception("%s: closing the connection after an internal error", peer)
        finally:
            self.close_all_streams()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    def _check_sum(self, check: int, payload: bytes) -> None:
        if not self.online:
            if check != 0 and check != checksum(payload):
                raise ProtocolError("wrong checksum before CNXN")
        elif self.version < VERSION_SKIP_CHECKSUM and check != checksum(payload):
            raise ProtocolError("wrong checksum")

    def _dispatch(self, command: int, arg0: int, arg1: int, payload: bytes) -> None:
        if command == A_CNXN:
            self._on_cnxn(arg0, arg1, payload)
        elif not self.online:
            return  # anything before the host's CNXN is ignored
        elif command == A_OPEN:
            self._on_open(arg0, arg1, payload)
        elif command == A_WRTE:
            stream = self._stream(arg0, arg1)
            if stream is not None:
                stream.on_write(payload)
        elif command == A_OKAY:
            stream = self._stream(arg0, arg1)
            if stream is not None:
                stream.on_okay()
        elif command == A_CLSE:
            stream = self.streams.get(arg1)
            if stream is not None and arg0 in (0, stream.remote_id):
                self.forget(stream)
                stream.abort()
        # AUTH and STLS after CNXN: we never asked for them; ignore.

    def _stream(self, remote_id: int, local_id: int) -> _Stream | None:
        stream = self.streams.get(local_id)
        if stream is None or stream.remote_id != remote_id:
            return None  # unknown id or mismatched sender: ignored
        return stream

    def _on_cnxn(self, version: int, maxdata: int, payload: bytes) -> None:
        self.close_all_streams()  # a (second) CNXN starts over
        self.version = max(VERSION_MIN, min(version, VERSION_SKIP_CHECKSUM))
        self.peer_maxdata = max(1, min(maxdata or MAX_PAYLOAD_V1, MAX_PAYLOAD))
        banner = payload.rstrip(b"\0").decode("utf-8", "replace")
        features = banner.partition("features=")[2].split(";")[0]
        self.host_features = [f for f in features.split(",") if f]
        if not self.phone.answer_cnxn:
            return
        self.online = True
        self.send(
            A_CNXN,
            VERSION_SKIP_CHECKSUM,
            self.phone.max_payload,
            self.phone.banner().encode("utf-8"),
        )

    def _on_open(self, remote_id: int, arg1: int, payload: bytes) -> None:
        if remote_id == 0:
            return  # invalid: ignored
        if arg1 != 0:
            # delayed ack is not negotiated (never advertised): refuse like adbd
            self.send(A_CLSE, 0, remote_id)
            return
        name = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
        factory = self.phone.service_for(name)
        if factory is None:
            log.info("refusing service %r", name)
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = self._next_id
        self._next_id = self._next_id + 1 if self._next_id < 0xFFFFFFFF else 1
        stream = _Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        stream.sender = self.phone._spawn(stream.run_sender())
        stream.service = self.phone._spawn(self._run_service(stream, factory))

    async def _run_service(
        self, stream: _Stream, factory: Callable[[_Stream], Coroutine[Any, Any, None]]
    ) -> None:
        try:
            await factory(stream)
        except (StreamClosed, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("service failed on stream %d", stream.local_id)
        finally:
            if not stream.closed:
                stream.finish()

    def close_all_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once (link loss)."""
        self.close_all_streams()
        transport = self.writer.transport
        if transport is not None:
            transport.abort()


# ---------------------------------------------------------------------------------------------
# Services


def _exit_byte(returncode: int) -> int:
    if returncode < 0:
        return 0x80 | (-returncode & 0x7F)
    return returncode & 0xFF


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _parse_mode(text: str) -> int:
    """Like C strtoul(text, NULL, 0) on a whole string: decimal, 0-prefixed octal or 0x hex."""
    text = text.strip()
    if text[:2].lower() == "0x":
        return int(text[2:], 16)
    if text.startswith("0") and len(text) > 1:
        return int(text[1:], 8)
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _sync_fail(message: str) -> bytes:
    data = message.encode("utf-8", "replace")
    return SYNC_HEADER.pack(b"FAIL", len(data)) + data


class _ShellService:
    def __init__(self, phone: VirtualPhone, command: str, v2: bool, term: str | None) -> None:
        self.phone = phone
        self.command = command
        self.v2 = v2
        self.term = term

    async def __call__(self, stream: _Stream) -> None:
        phone = self.phone
        if self.command:
            argv = ["/bin/sh", "-c", phone.sandbox.rewrite_command(self.command)]
        else:
            argv = ["/bin/sh"]  # interactive request: a plain shell reading the stream
        env = phone.shell_environment()
        if self.term:
            env["TERM"] = self.term
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if self.v2 else asyncio.subprocess.STDOUT,
            cwd=phone.sandbox.root,
            env=env,
            start_new_session=True,
        )
        phone._children[proc.pid] = proc

        def kill() -> None:
            if proc.returncode is None:
                _kill_group(proc.pid)

        stream.on_abort.append(kill)
        feeder = asyncio.create_task(self._feed_stdin(stream, proc))
        try:
            pumps = [self._pump(stream, proc.stdout, SHELL_STDOUT)]
            if self.v2:
                pumps.append(self._pump(stream, proc.stderr, SHELL_STDERR))
            await asyncio.gather(*pumps)
            returncode = await proc.wait()
            if self.v2:
                exit_byte = bytes([_exit_byte(returncode)])
                await stream.write(SHELL_PACKET.pack(SHELL_EXIT, 1) + exit_byte)
        finally:
            feeder.cancel()
            if proc.returncode is None:
                _kill_group(proc.pid)
                with contextlib.suppress(Exception):
                    await asyncio.shield(proc.wait())
            phone._children.pop(proc.pid, None)

    async def _pump(
        self, stream: _Stream, pipe: asyncio.StreamReader | None, packet_id: int
    ) -> None:
        assert pipe is not None
        while True:
            data = await pipe.read(64 * 1024)
            if not data:
                return
            if self.v2:
                await stream.write(SHELL_PACKET.pack(packet_id, len(data)) + data)
            else:
                await stream.write(data)

    async def _feed_stdin(self, stream: _Stream, proc: asyncio.subprocess.Process) -> None:
        stdin = proc.stdin
        assert stdin is not None

        async def deliver(data: bytes) -> None:
            nonlocal stdin
            if stdin is None:
                return
            try:
                stdin.write(data)
                await stdin.drain()
            except (ConnectionError, OSError):
                stdin = None  # the child stopped reading: keep draining the stream

        def close_stdin() -> None:
            nonlocal stdin
            if stdin is not None:
                with contextlib.suppress(Exception):
                    stdin.close()
                stdin = None

        try:
            if not self.v2:
                while data := await stream.read_some():
                    await deliver(data)
                return
            while True:
                packet_id, length = SHELL_PACKET.unpack(await stream.read_exactly(5))
                data = await stream.read_exactly(length) if length else b""
                if packet_id == SHELL_STDIN:
                    await deliver(data)
                elif packet_id == SHELL_CLOSE_STDIN:
                    close_stdin()
                # window-size changes (5) and anything else: ignored
        except StreamClosed:
            pass
        finally:
            if self.v2:
                close_stdin()


class _SyncService:
    """The ``sync:`` service, protocol v1 (STAT, LIST, SEND, RECV, QUIT)."""

    def __init__(self, phone: VirtualPhone) -> None:
        self.phone = phone
        self.sandbox = phone.sandbox

    async def __call__(self, stream: _Stream) -> None:
        while True:
            try:
                header = await stream.read_exactly(SYNC_HEADER.size)
            except StreamClosed:
                return
            request, length = SYNC_HEADER.unpack(header)
            if request == b"QUIT":
                return
            if request not in (b"STAT", b"LIST", b"SEND", b"RECV"):
                name = request.decode("ascii", "replace")
                await stream.write(_sync_fail(f"unknown command {name!r}"))
                return
            if length > SYNC_PATH_MAX:
                await stream.write(_sync_fail("path too long"))
                return
            raw = await stream.read_exactly(length)
            if b"\0" in raw:
                await stream.write(_sync_fail("path contains a NUL byte"))
                return
            path = raw.decode("utf-8", "surrogateescape")
            if request == b"STAT":
                await stream.write(self._stat(path))
            elif request == b"LIST":
                await self._list(stream, path)
            elif request == b"RECV":
                if not await self._recv(stream, path):
                    return
            elif not await self._send(stream, path):
                return

    def _stat(self, path: str) -> bytes:
        try:
            st = os.lstat(self.sandbox.lresolve(path))
        except (OSError, ValueError):
            return struct.pack("<4sIII", b"STAT", 0, 0, 0)
        return struct.pack(
            "<4sIII",
            b"STAT",
            st.st_mode & 0xFFFFFFFF,
            st.st_size & 0xFFFFFFFF,
            int(st.st_mtime) & 0xFFFFFFFF,
        )

    async def _list(self, stream: _Stream, path: str) -> None:
        entries: list[tuple[str, os.stat_result]] = []
        try:
            folder = self.sandbox.resolve(path)
            names = os.listdir(folder)
        except (OSError, ValueError):
            names = []
            folder = None
        if folder is not None:
            with contextlib.suppress(OSError):
                entries.append((".", os.lstat(folder)))
            # ".." of the sandbox root is the root itself: nothing about the host leaks out.
            up = folder if folder == self.sandbox.root else folder.parent
            with contextlib.suppress(OSError):
                entries.append(("..", os.lstat(up)))
            for name in sorted(names):
                with contextlib.suppress(OSError):
                    entries.append((name, os.lstat(folder / name)))
        for name, st in entries:
            encoded = name.encode("utf-8", "surrogateescape")
            await stream.write(
                struct.pack(
                    "<4sIIII",
                    b"DENT",
                    st.st_mode & 0xFFFFFFFF,
                    st.st_size & 0xFFFFFFFF,
                    int(st.st_mtime) & 0xFFFFFFFF,
                    len(encoded),
                )
                + encoded
            )
        await stream.write(struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))

    async def _recv(self, stream: _Stream, path: str) -> bool:
        try:
            handle = open(self.sandbox.resolve(path), "rb")  # noqa: SIM115 - closed below
        except SandboxError:
            await stream.write(_sync_fail("open failed: Permission denied"))
            return False
        except OSError as error:
            await stream.write(_sync_fail(f"open failed: {error.strerror}"))
            return False
        with handle:
            while True:
                try:
                    chunk = handle.read(SYNC_DATA_MAX)
                except OSError as error:
                    await stream.write(_sync_fail(f"read failed: {error.strerror}"))
                    return False
                if not chunk:
                    break
                await stream.write(SYNC_HEADER.pack(b"DATA", len(chunk)) + chunk)
        await stream.write(SYNC_HEADER.pack(b"DONE", 0))
        return True

    async def _send(self, stream: _Stream, spec: str) -> bool:
        """Receive one file. True: the stream goes on; False: it ends (after a FAIL)."""
        error: str | None = None
        partial: PartialFile | None = None
        perm = 0o644
        path, comma, mode_text = spec.rpartition(",")
        if not comma:
            error = "missing , in SEND request"
        else:
            try:
                mode = _parse_mode(mode_text)
            except ValueError:
                error = f"bad mode {mode_text!r}"
            else:
                if stat.S_ISLNK(mode):
                    error = "symlinks are not supported on the virtual phone"
                elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                    error = f"not a regular file mode: {mode:o}"
                else:
                    perm = mode & 0o777
                    perm |= (perm >> 3) & 0o070  # adbd: user bits into group bits,
                    perm |= (perm >> 3) & 0o007  # then group bits into other bits
        if error is None:
            try:
                partial = self.sandbox.open_for_write(path)
            except SandboxError:
                error = f"{path}: Permission denied"
            except OSError as exc:
                error = f"{path}: {exc.strerror or exc}"
        if error is not None:
            await stream.write(_sync_fail(f"couldn't create file: {error}"))
        if partial is not None:
            stream.on_abort.append(partial.discard)
        try:
            while True:
                request, length = SYNC_HEADER.unpack(await stream.read_exactly(SYNC_HEADER.size))
                if request == b"DATA":
                    if length > SYNC_DATA_MAX:
                        if error is None:
                            await stream.write(_sync_fail("oversize data message"))
                        return False
                    data = await stream.read_exactly(length)
                    if partial is not None and error is None:
                        try:
                            partial.write(data)
                        except OSError as exc:
                            error = f"write failed: {exc.strerror}"
                            partial.discard()
                            await stream.write(_sync_fail(error))
                elif request == b"DONE":
                    if error is not None or partial is None:
                        return False
                    try:
                        partial.commit(perm, length)
                    except OSError as exc:
                        await stream.write(_sync_fail(f"close failed: {exc.strerror}"))
                        return False
                    await stream.write(SYNC_HEADER.pack(b"OKAY", 0))
                    return True
                else:
                    name = request.decode("ascii", "replace")
                    if error is None:
                        await stream.write(_sync_fail(f"unexpected {name!r} in SEND"))
                    return False
        finally:
            if partial is not None:
                partial.discard()  # no-op after commit
                with contextlib.suppress(ValueError):
                    stream.on_abort.remove(partial.discard)


# ---------------------------------------------------------------------------------------------
# The phone


class VirtualPhone:
    """An emulated adbd on ``host:port`` backed by the folder ``sandbox``.

    Args:
        sandbox: host folder that holds the phone's file system (created and provisioned).
        profile: what the phone reports (``PhoneProfile``; a path to a .json/.toml profile
            works too). Defaults to ``PhoneProfile()``.
        host: address to listen on (keep it on loopback).
        port: TCP port; 0 picks a free one on the first start and keeps it for later starts.
        features: the feature list in the CNXN banner (only what is implemented: the
            default ``("shell_v2",)``, or ``()`` for a legacy device).
        max_payload: the maxdata we advertise (largest payload we accept).
        tools: install the ``onnxruntime_perf_test`` / ``benchmark_model`` stand-ins.

    Fault switches for tests: ``answer_cnxn = False`` makes the phone accept TCP but never
    answer the handshake (``adb connect`` then fails after ~10 s); ``drop_connections()`` cuts
    every TCP connection (link loss) while the listener stays up.
    """

    def __init__(
        self,
        sandbox: str | os.PathLike[str],
        profile: PhoneProfile | str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        features: tuple[str, ...] | list[str] = DEFAULT_FEATURES,
        max_payload: int = MAX_PAYLOAD,
        tools: bool = True,
        cooling_interval: float = 1.0,
    ) -> None:
        if profile is None:
            profile = PhoneProfile()
        elif not isinstance(profile, PhoneProfile):
            profile = PhoneProfile.load(profile)
        self.profile = profile
        self.sandbox = Sandbox(sandbox)
        self.host = host
        self._port = port
        self.features = tuple(features)
        self.max_payload = max_payload
        self.tools = tools
        self.cooling_interval = cooling_interval
        self.answer_cnxn = True
        self.clock_ref_ns = time.time_ns()  # where the profile's clock offset holds
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._cooler: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- identity -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def serial(self) -> str:
        """What the adb server calls this phone: ``host:port``."""
        return f"{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def child_pids(self) -> list[int]:
        """Shell processes (group leaders) started by the phone that are still running."""
        children = list(self._children.items())  # a copy: the loop thread may be adding one
        return [pid for pid, proc in children if proc.returncode is None]

    def banner(self) -> str:
        return self.profile.banner(self.features)

    def shell_environment(self) -> dict[str, str]:
        root = self.sandbox.shell_root()
        clock = self.profile.clock_offset_s, self.profile.clock_drift_ppm
        extra = {}
        if any(clock):  # the phone's own clock, for its date and power_beacon
            offset_ns, drift_ppb = round(clock[0] * 1e9), round(clock[1] * 1e3)
            extra[CLOCK_ENV] = f"{offset_ns} {drift_ppb} {self.clock_ref_ns}"
        if self.profile.tool_warmup_load != 1.0:  # warm-up runs unlike the timed loop
            extra[WARMUP_LOAD_ENV] = f"{self.profile.tool_warmup_load:g}"
        return {
            **extra,
            "PATH": f"{root}/system/bin:/usr/bin:/bin",
            "HOME": root,
            "TMPDIR": f"{root}/data/local/tmp",
            "SHELL": "/bin/sh",
            "USER": "shell",
            "LOGNAME": "shell",
            "LANG": "C.UTF-8",
            "HOSTNAME": self.profile.device,
            SANDBOX_ENV: str(self.sandbox.root),
            SHELL_ROOT_ENV: root,
        }

    def service_for(self, name: str) -> Callable[[_Stream], Coroutine[Any, Any, None]] | None:
        """The coroutine function serving ``name``, or None to refuse it."""
        if name == "shell" or name.startswith(("shell:", "shell,")):
            head, _, command = name.partition(":")
            args = head.split(",")[1:]
            term = next((a[5:] for a in args if a.startswith("TERM=")), None)
            v2 = "v2" in args and "shell_v2" in self.features
            return _ShellService(self, command, v2, term)
        if name.startswith("exec:"):
            return _ShellService(self, name[5:], False, None)
        if name == "sync:":
            return _SyncService(self)
        return None

    # -- async API ----------------------------------------------------------------------------

    async def astart(self) -> None:
        """Provision the sandbox and start listening (on the current event loop)."""
        if self._server is not None:
            raise RuntimeError("the virtual phone is already running")
        provision(self.sandbox.root, self.profile, tools=self.tools)
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._on_client, self.host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]
        if self.cooling_interval > 0:
            self._cooler = asyncio.create_task(self._cool_loop())
        log.info("virtual phone listening on %s", self.serial)

    async def astop(self) -> None:
        """Stop listening, drop every connection, kill every shell child still running."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._cooler is not None:
            self._cooler.cancel()
            self._cooler = None
        for conn in list(self._connections):
            conn.abort()
        handlers = list(self._handlers) + list(self._tasks)
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        for pid, proc in list(self._children.items()):
            if proc.returncode is None:
                _kill_group(pid)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 5)
        self._children.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
        log.info("virtual phone on %s stopped", self.serial)

    async def __aenter__(self) -> VirtualPhone:
        await self.astart()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.astop()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        try:
            await conn.serve()
        finally:
            self._connections.discard(conn)
            self._handlers.discard(task)

    async def _cool_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cooling_interval)
            cool_down(self.sandbox.root, self.profile)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _drop_all(self) -> None:
        for conn in list(self._connections):
            conn.abort()

    # -- synchronous API (own loop in a background thread) -------------------------------------

    def start(self, timeout: float = 10.0) -> VirtualPhone:
        """Start on a private event loop in a daemon thread; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("the virtual phone is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"virtual-phone-{self._port}", daemon=True
        )
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.astart(), loop).result(timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
            raise
        self._thread = thread
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the phone started with ``start()``; safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.astop(), loop).result(timeout)
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._thread = None
            self._loop = None
            self.sandbox.close()

    def drop_connections(self) -> None:
        """Cut every TCP connection now (the listener stays): like pulling the cable."""
        loop = self._loop
        if loop is None:
            return
        if self._thread is not None and threading.current_thread() is not self._thread:
            done = threading.Event()

            def drop() -> None:
                self._drop_all()
                done.set()

            loop.call_soon_threadsafe(drop)
            done.wait(5)
        else:
            self._drop_all()

    def __enter__(self) -> VirtualPhone:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"VirtualPhone({self.serial}, {self.profile.model}, {state})"


VirtualAdbd = VirtualPhone


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
