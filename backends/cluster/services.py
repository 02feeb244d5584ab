"""Start the two halves of a cluster as async context managers: the scheduler with devlab's
dispatcher beside it, and a lab host's worker. The CLI, the tests and the perf script all go
through these, so what they exercise is what ``devlab scheduler`` and ``devlab worker`` run.

Both bind 127.0.0.1 unless told otherwise. With TLS files, every connection is TLS with
client certificates checked against the CA (Dask's ``Security`` with
``require_encryption``); the scheduler process also acts as a client (the dispatcher's).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from distributed import Scheduler, Worker
from distributed.security import Security

from backends.cluster.dispatcher import DEFAULT_GRACE_S, DEFAULT_PREFETCH, Dispatcher
from backends.cluster.lab_host import DeviceHost
from backends.cluster.remote import DEFAULT_POLL_S, LabHostPlugin
from backends.core.store import Store

DEFAULT_PORT = 8786
DEFAULT_NTHREADS = 16  # task threads; each device runs one job at a time whatever this is


@dataclass(frozen=True)
class TlsFiles:
    """A CA bundle and this process's certificate and key (PEM files)."""

    ca_file: str
    cert: str
    key: str

    @classmethod
    def from_options(
        cls, ca_file: str | None, cert: str | None, key: str | None
    ) -> TlsFiles | None:
        """All three or none; ValueError names what is missing."""
        given = {"--tls-ca-file": ca_file, "--tls-cert": cert, "--tls-key": key}
        if not any(given.values()):
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ValueError(
                "TLS needs all of --tls-ca-file, --tls-cert, --tls-key "
                f"(missing: {', '.join(missing)})"
            )
        assert ca_file and cert and key
        return cls(ca_file, cert, key)


def cluster_security(tls: TlsFiles | None, role: str) -> Security | None:
    """Dask's Security for ``role`` (scheduler, worker or client); None without TLS files."""
    if tls is None:
        return None
    pairs: dict[str, Any] = {"tls_client_cert": tls.cert, "tls_client_key": tls.key}
    if role in ("scheduler", "worker"):
        pairs |= {f"tls_{role}_cert": tls.cert, f"tls_{role}_key": tls.key}
    return Security(tls_ca_file=tls.ca_file, require_encryption=True, **pairs)


@contextlib.asynccontextmanager
async def lab_scheduler(
    store: Store,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    grace_s: float = DEFAULT_GRACE_S,
    prefetch: int = DEFAULT_PREFETCH,
    security: Security | None = None,
) -> AsyncIterator[Dispatcher]:
    """A Dask scheduler listening on ``host:port`` with devlab's dispatcher attached."""
    protocol = "tls" if security is not None and security.require_encryption else "tcp"
    async with Scheduler(
        host=host,
        port=port,
        protocol=protocol,
        security=security,
        dashboard=False,
        dashboard_address=f"{host}:0",  # health routes only, on the same interface
        allowed_failures=0,
    ) as scheduler:
        dispatcher = Dispatcher(store, grace_s=grace_s, prefetch=prefetch, security=security)
        await dispatcher.attach(scheduler)
        try:
            yield dispatcher
        finally:
            await dispatcher.close()


@contextlib.asynccontextmanager
async def lab_worker(
    address: str,
    host: DeviceHost,
    listen: str = "127.0.0.1",
    nthreads: int = DEFAULT_NTHREADS,
    security: Security | None = None,
    poll_s: float = DEFAULT_POLL_S,
) -> AsyncIterator[Worker]:
    """A Dask worker named after ``host`` that advertises its devices and runs their jobs."""
    host.scan()
    async with Worker(
        address,
        name=host.name,
        nthreads=nthreads,
        resources=host.resources(),
        host=listen,
        security=security,
        plugins=(LabHostPlugin(host, poll_s),),
        dashboard=False,
        memory_limit=0,
        local_directory=str(host.work_dir / "dask"),
    ) as worker:
        yield worker
