"""Running the agent: in the foreground until SIGINT/SIGTERM (``devlab agent``), or in a
background thread (tests, demos, the console's own tests).

Once listening, ``serve`` prints exactly one line, ``devlab agent listening on
http://HOST:PORT``, to stdout; port 0 picks a free port and the line shows the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable

from aiohttp import web

from backends.agent.app import create_app
from backends.agent.config import DEFAULT_PORT, AgentConfig
from backends.agent.protocol_log import ProtocolLogger

LISTENING = "devlab agent listening on"
SHUTDOWN_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def start_site(config: AgentConfig, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the app on ``host:port``; returns the runner and the port actually bound."""
    runner = web.AppRunner(
        create_app(config),
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log=None,
        handler_cancellation=True,  # a client that goes away ends its upload or event stream
        keepalive_timeout=75,
        logger=ProtocolLogger(),  # a malformed request is a WARNING line, not an ERROR traceback
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound


def serve(
    config: AgentConfig,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. ``ready(url)`` is called once listening."""
    asyncio.run(_serve(config, host, port, ready))


async def _serve(
    config: AgentConfig, host: str, port: int, ready: Callable[[str], None] | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    runner, bound = await start_site(config, host, port)
    url = url_of(host, bound)
    advertisement = None
    try:
        print(f"{LISTENING} {url}", flush=True)
        if config.advertise:
            from backends.agent.discovery import advertise

            advertisement = await loop.run_in_executor(None, advertise, config, host, bound)
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        if advertisement is not None:
            await loop.run_in_executor(None, advertisement.close)
        await runner.cleanup()


class AgentThread:
    """An agent served from a background thread on its own event loop (tests, demos).

    ``with AgentThread(config) as agent: agent.url`` — stopped on exit. Does not advertise
    and prints nothing.
    """

    def __init__(self, config: AgentConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config, self.host, self.port = config, host, port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout_s: float = 30.0) -> AgentThread:
        self._thread = threading.Thread(target=self._main, name="devlab-agent", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the agent did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                print("devlab agent thread did not stop in time", file=sys.stderr)

    def __enter__(self) -> AgentThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            runner, bound = await start_site(self.config, self.host, self.port)
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        self.url = url_of(self.host, bound)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
