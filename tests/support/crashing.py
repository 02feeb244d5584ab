"""A test-only runtime that crashes or hangs its process: the host's ONNX Runtime session on a
device of its own (``crashy:cpu``), told by marker files beside the model what to do.

``<model>.crash`` present: the second round (of that session) deletes the marker, runs a few
iterations and kills its own process with SIGSEGV, as a runtime with a memory bug would.
``<model>.hang`` present: the first round deletes it and then never returns. The session lives
in devlab's measurement process (``isolation()``), so only that process dies.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from backends.core.records import Device, Job, Model
from backends.devices.base import BenchSession, IterationCallback, SessionInfo, Timed
from backends.devices.host import HostBackend, HostSession

CRASHY_DEVICE_ID = "crashy:cpu"


class CrashingSession(HostSession):
    """A real host session whose rounds obey the marker files; its tool version is its pid."""

    def __init__(self, model: Model, threads: int | None) -> None:
        super().__init__(model, threads)
        self.rounds = 0
        self.info = SessionInfo(
            self.info.load_us, self.info.first_inference_us, "crashy-ort", str(os.getpid())
        )

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        self.rounds += 1
        crash = Path(self.model.path + ".crash")
        hang = Path(self.model.path + ".hang")
        if self.rounds == 2 and crash.exists():
            crash.unlink()
            super().run(3, None, on_iteration)
            os.kill(os.getpid(), signal.SIGSEGV)
        if hang.exists():
            hang.unlink()
            while True:
                time.sleep(1)
        return super().run(iterations, min_seconds, on_iteration)


class CrashingBackend(HostBackend):
    """``crashy:cpu``: the host CPU again, with the crashing session."""

    kind = "crashy"
    id_prefix = "crashy:"

    def discover(self) -> list[Device]:
        host = super().discover()[0]
        return [
            Device(id=CRASHY_DEVICE_ID, kind=self.kind, name="Crashy CPU", runtimes=host.runtimes)
        ]

    def isolation(self) -> type[CrashingBackend]:
        return CrashingBackend

    def open_session(self, device: Device, job: Job, model: Model) -> BenchSession:
        return CrashingSession(model, job.settings.threads)
