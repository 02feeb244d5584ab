"""Zeroconf (mDNS / DNS-SD): agents announce ``_devlab._tcp.local.``; consoles browse for them.

TXT properties: ``api`` ("1"), ``path`` ("/v1"), ``board``, ``kind`` and ``runners``
(comma-separated). Multicast may be unavailable (containers, some networks); every failure here
is a logged warning and the agent or console carries on without discovery.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from backends.agent.config import API_VERSION, AgentConfig

SERVICE_TYPE = "_devlab._tcp.local."
API_PATH = "/v1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Announcement:
    """One agent found on the network. ``url`` is the base (``http://host:port``); the API
    is at ``api_url`` (``url`` + ``path``)."""

    name: str
    url: str
    api_url: str
    board: str
    kind: str
    runners: tuple[str, ...]
    api: str
    properties: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


class Advertisement:
    """A registered announcement; ``close()`` withdraws it."""

    def __init__(self, zeroconf, info) -> None:
        self._zeroconf, self.info = zeroconf, info

    @property
    def name(self) -> str:
        return self.info.name

    def close(self) -> None:
        try:
            self._zeroconf.unregister_service(self.info)
        except Exception as error:  # already gone, network down: nothing to undo
            log.debug("zeroconf unregister: %s", error)
        finally:
            self._zeroconf.close()


def properties_for(board: str, kind: str, runners: Sequence[str]) -> dict[str, str]:
    return {
        "api": str(API_VERSION),
        "path": API_PATH,
        "board": board[:100],
        "kind": kind,
        "runners": ",".join(runners)[:200],
    }


def advertise(config: AgentConfig, host: str, port: int) -> Advertisement | None:
    """Announce the agent serving on ``host:port``; None (and a warning) when it cannot."""
    return advertise_service(config.board, config.kind, list(config.runners), host, port)


def advertise_service(
    board: str, kind: str, runners: Sequence[str], host: str, port: int
) -> Advertisement | None:
    """Register ``<board> (<port>)._devlab._tcp.local.`` for ``host:port``.

    A loopback ``host`` is announced on the loopback interface only; ``0.0.0.0``/``::`` on
    every interface with this machine's addresses; any other address on its interface.
    """
    try:
        from zeroconf import IPVersion, ServiceInfo, Zeroconf

        addresses, interfaces = _addresses(host)
        zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except Exception as error:
        log.warning("zeroconf: cannot advertise the agent (%s); connect by URL instead", error)
        return None
    instance = f"{_label(board) or 'devlab'} ({port})"
    info = ServiceInfo(
        SERVICE_TYPE,
        f"{instance}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(a) for a in addresses],
        port=port,
        properties=properties_for(board, kind, runners),
        server=f"{re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname())[:63] or 'devlab'}.local.",
    )
    try:
        zeroconf.register_service(info, allow_name_change=True)
    except Exception as error:
        log.warning("zeroconf: cannot advertise the agent (%s); connect by URL instead", error)
        zeroconf.close()
        return None
    return Advertisement(zeroconf, info)


class AgentBrowser:
    """Watches the network for agents; ``endpoints()`` is safe to call from any thread.

    ``interfaces`` are the IPv4 addresses to listen on (None: all).
    """

    def __init__(self, interfaces: Sequence[str] | None = None) -> None:
        self.interfaces = list(interfaces) if interfaces else None
        self._found: dict[str, Announcement] = {}
        self._lock = threading.Lock()
        self._zeroconf = None
        self._browser = None
        self.error: str | None = None

    def start(self) -> AgentBrowser:
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, Zeroconf

            self._zeroconf = Zeroconf(
                interfaces=self.interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only
            )
            self._browser = ServiceBrowser(self._zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        except Exception as error:
            self.error = str(error) or type(error).__name__
            log.warning("zeroconf: cannot browse for agents (%s); add them by URL", self.error)
            self.stop()
        return self

    def stop(self) -> None:
        browser, zeroconf = self._browser, self._zeroconf
        self._browser = self._zeroconf = None
        try:
            if browser is not None:
                browser.cancel()
            if zeroconf is not None:
                zeroconf.close()
        except Exception as error:
            log.debug("zeroconf close: %s", error)

    def endpoints(self) -> list[Announcement]:
        with self._lock:
            return sorted(self._found.values(), key=lambda a: (a.board, a.url))

    def __enter__(self) -> AgentBrowser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_change(self, zeroconf, service_type: str, name: str, state_change) -> None:
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            with self._lock:
                self._found.pop(name, None)
            return
        try:
            info = zeroconf.get_service_info(service_type, name, timeout=3000)
        except Exception as error:
            log.debug("zeroconf: no details for %s: %s", name, error)
            return
        announcement = announcement_from(info) if info is not None else None
        if announcement is not None:
            with self._lock:
                self._found[name] = announcement


def browse_agents(
    timeout_s: float = 2.0, interfaces: Sequence[str] | None = None
) -> list[Announcement]:
    """The agents that answer within ``timeout_s`` (empty when multicast does not work)."""
    with AgentBrowser(interfaces) as browser:
        time.sleep(timeout_s)
        return browser.endpoints()


def announcement_from(info) -> Announcement | None:
    """An Announcement from a resolved zeroconf ServiceInfo; None if it is not usable."""
    props = {
        _text(key): _text(value)
        for key, value in (info.properties or {}).items()
        if key is not None
    }
    addresses = info.parsed_addresses()
    if not addresses or not info.port:
        return None
    host = addresses[0]
    url = f"http://[{host}]:{info.port}" if ":" in host else f"http://{host}:{info.port}"
    path = props.get("path") or API_PATH
    if not path.startswith("/"):
        path = "/" + path
    return Announcement(
        name=info.name,
        url=url,
        api_url=url + path,
        board=props.get("board", ""),
        kind=props.get("kind", ""),
        runners=tuple(r for r in props.get("runners", "").split(",") if r),
        api=props.get("api", ""),
        properties=props,
    )


def _addresses(host: str) -> tuple[list[str], object]:
    from zeroconf import InterfaceChoice

    if host in ("", "0.0.0.0", "::"):
        found = [a for a in _local_ipv4() if not a.startswith("127.")]
        return found or ["127.0.0.1"], InterfaceChoice.All
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    if address.version != 4:
        raise ValueError(f"only IPv4 addresses are announced, not {host}")
    return [str(address)], [str(address)]


def _local_ipv4() -> list[str]:
    import ifaddr

    return [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str)
    ]


def _label(text: str) -> str:
    """A DNS-SD instance/host label: printable, no dots, at most 40 characters."""
    return re.sub(r"[^A-Za-z0-9 _-]", "-", text).strip(" -")[:40]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
