"""The drift references: small fixed models measured on a device with each round.

Dividing a round's median by the canary measured with it removes the machine's slow phases
(bursts where everything runs ~1.45x slower) from the figure; multiplying by the canary's
long-run median on that device keeps the unit (microseconds at the usual pace). Where rounds
pair the model with the references inside the round, a second, large-footprint reference
runs too (``backends/measure/panel.py`` says why). The probe keeps one session per reference,
runtime and thread count alive for a whole batch of jobs.
"""

from __future__ import annotations

import logging
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from backends.core.records import Device, Job, JobSettings, Model
from backends.devices.base import BenchError, BenchSession, DeviceBackend
from backends.models.intake import ModelError, load_model

log = logging.getLogger(__name__)


def reference_dir() -> Path:
    """The checkout's ``assets/reference``, else the copy an install puts under
    ``<prefix>/share/devlab/reference`` (pyproject's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / "assets" / "reference"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "devlab" / "reference"


REFERENCE_DIR = reference_dir()
CANARY_PATH = REFERENCE_DIR / "canary.onnx"
LARGE_REFERENCE_PATH = REFERENCE_DIR / "canary_large.onnx"
CANARY_WARMUP = 5
CANARY_RUNS = 15


class CanaryProbe:
    """Measures the canary on one device; unavailable runtimes are remembered with the reason."""

    def __init__(
        self,
        backend: DeviceBackend,
        device: Device,
        path: Path = CANARY_PATH,
        opener: Callable[[Device, Job, Model], BenchSession] | None = None,
        large_path: Path | None = LARGE_REFERENCE_PATH,
    ) -> None:
        self.backend = backend
        self._open_session = opener or backend.open_session
        self.device = device
        self.path = path
        self._model: Model | None = None
        self._sessions: dict[tuple[str, int | None], BenchSession] = {}
        self.unavailable: dict[tuple[str, int | None], str] = {}
        self.supported = backend.supports_canary
        # the large reference: only inside paired rounds; missing, it leaves the small one
        self._large = (
            CanaryProbe(backend, device, large_path, opener, large_path=None)
            if large_path is not None
            else None
        )

    def measure(self, job: Job) -> float | None:
        """The canary's median latency (us) now, on ``job``'s runtime and threads; None when
        the canary cannot run there (the reason is in ``unavailable``)."""
        key = (job.runtime, job.settings.threads)
        if key in self.unavailable:
            return None
        try:
            session = self._sessions.get(key) or self._open(job, key)
            timed = session.run(CANARY_RUNS, None, _ignore)
        except (BenchError, ModelError, OSError) as error:
            self.unavailable[key] = str(error)
            self._drop(key)
            return None
        if timed.latencies_us:
            return statistics.median(timed.latencies_us)
        if timed.summary is not None:
            return timed.summary.median or timed.summary.mean
        return None

    def session(self, job: Job) -> BenchSession | None:
        """The canary's open session for ``job``'s runtime and threads (opened and warmed up
        on first use), for a round that pairs it with the model; None where it cannot run."""
        key = (job.runtime, job.settings.threads)
        if key in self.unavailable:
            return None
        try:
            return self._sessions.get(key) or self._open(job, key)
        except (BenchError, ModelError, OSError) as error:
            self.unavailable[key] = str(error)
            self._drop(key)
            return None

    def large_session(self, job: Job) -> BenchSession | None:
        """The large-footprint reference's open session for ``job``'s runtime and threads;
        None where it cannot run (the reason is in ``large_unavailable``) or is not used."""
        return self._large.session(job) if self._large is not None else None

    @property
    def large_unavailable(self) -> dict[tuple[str, int | None], str]:
        return self._large.unavailable if self._large is not None else {}

    def _open(self, job: Job, key: tuple[str, int | None]) -> BenchSession:
        if not self.supported:
            raise BenchError(f"{self.device.id}: the reference canary does not run here")
        if self._model is None:
            self._model = load_model(self.path)
        canary_job = Job(
            id=f"{self.path.stem}-{job.id}",
            model=self._model,
            device_id=self.device.id,
            runtime=job.runtime,
            settings=JobSettings(
                warmup=CANARY_WARMUP, runs=CANARY_RUNS, threads=job.settings.threads, rounds=1
            ),
        )
        session = self._open_session(self.device, canary_job, self._model)
        session.warmup(CANARY_WARMUP)
        self._sessions[key] = session
        return session

    def _drop(self, key: tuple[str, int | None]) -> None:
        session = self._sessions.pop(key, None)
        if session is not None:
            try:
                session.close()
            except Exception:
                log.exception("closing a canary session failed")

    def close(self) -> None:
        for key in list(self._sessions):
            self._drop(key)
        if self._large is not None:
            self._large.close()


def _ignore(done: int, latencies: list[float]) -> None:
    """The canary's runs report no progress of their own."""
