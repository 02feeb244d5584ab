"""The ``[dpu]`` config table: which agents to reach (``[[dpu.endpoints]]``), their tokens,
whether to browse zeroconf for more, and the time budgets of discovery and jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.devices.dpu.client import normalise_url

DEVICE_PREFIX = "dpu:"


@dataclass
class Endpoint:
    """One agent: where it is and the token it wants."""

    url: str
    token: str | None
    name: str | None = None
    source: str = "config"  # or "zeroconf"

    @property
    def device_id(self) -> str:
        return DEVICE_PREFIX + self.url


@dataclass
class DpuConfig:
    """``[dpu]`` settings; every one has a default."""

    endpoints: list[Endpoint] = field(default_factory=list)
    browse: bool = False  # also list agents announced with zeroconf (_devlab._tcp)
    browse_interfaces: list[str] = field(default_factory=list)  # IPv4 addresses; [] = all
    browse_wait_s: float = 2.0  # how long the first discovery waits for announcements
    token: str | None = None  # token for agents found by browsing
    info_timeout_s: float = 2.0  # how long discovery waits for /v1/info
    retry_s: float = 30.0  # how long a job keeps retrying an agent that stopped answering
    poll_s: float = 3.0  # how often the watch thread checks the agents
    offline_timeout_s: float | None = 300.0  # queued jobs of an offline agent fail after this

    @classmethod
    def from_raw(cls, raw: dict[str, Any], base_dir: Path | None = None) -> DpuConfig:
        """Read ``[dpu]`` and ``[[dpu.endpoints]]``; ValueError names the bad entry."""
        if not isinstance(raw, dict):
            raise ValueError("[dpu] must be a table")
        endpoints = []
        for index, entry in enumerate(raw.get("endpoints", [])):
            where = f"[[dpu.endpoints]] #{index + 1}"
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise ValueError(f'{where}: needs url = "http://HOST:PORT"')
            try:
                url = normalise_url(entry["url"])
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            token = _token(entry, where, base_dir)
            endpoints.append(Endpoint(url, token, entry.get("name")))
        numbers: dict[str, Any] = {}
        for key in ("info_timeout_s", "retry_s", "poll_s", "offline_timeout_s", "browse_wait_s"):
            if key in raw:
                value = raw[key]
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"[dpu] {key} must be a number of seconds >= 0")
                numbers[key] = float(value)
        interfaces = raw.get("browse_interfaces", [])
        if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
            raise ValueError('[dpu] browse_interfaces: a list of addresses, e.g. ["10.0.0.5"]')
        return cls(
            endpoints=endpoints,
            browse=bool(raw.get("browse", False)),
            browse_interfaces=list(interfaces),
            token=_token(raw, "[dpu]", base_dir)
            if ("token" in raw or "token_file" in raw)
            else None,
            **numbers,
        )


def _token(entry: dict[str, Any], where: str, base_dir: Path | None) -> str | None:
    if isinstance(entry.get("token"), str) and entry["token"]:
        return entry["token"]
    if "token_file" in entry:
        path = Path(str(entry["token_file"])).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"{where}: cannot read token_file {path}: {error.strerror}") from None
        if not token:
            raise ValueError(f"{where}: token_file {path} is empty")
        return token
    return None
