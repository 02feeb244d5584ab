"""The ``ort`` and ``tflite`` sessions on a phone: one model, one tool, a round per tool run.

``onnxruntime_perf_test`` (``ort``) and TFLite ``benchmark_model`` (``tflite``) run on the phone
over adb; their printed statistics become the round's summary. Per-layer times come from a
separate profiled run (benchmark_model's op profiling, ONNX Runtime's profiler trace pulled back).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from adbutils import AdbDevice

from backends.core.records import Device, Job, Stats
from backends.devices.android.adb import VANISHED, WORKDIR
from backends.devices.android.outputs import ort_outputs
from backends.devices.android.power_sync import (
    run_beacon,
    split_stamps,
    stamped_command,
    timed_loop_s,
)
from backends.devices.base import (
    BenchError,
    BenchSession,
    IterationCallback,
    LayerProfile,
    SessionInfo,
    Timed,
    ort_layer_profile,
)
from backends.runtimes import ort_perf, tflite
from backends.runtimes.common import ToolOutputError, ToolRun

#: The job runtime -> the tool on the phone that runs it.
TOOL_NAMES = {"ort": "onnxruntime_perf_test", "tflite": "benchmark_model"}


class PhoneSession(BenchSession):
    """One model on one phone with one tool; each round is one run of the tool.

    ``no_output_dump`` is shared with the backend: the (serial, tool) pairs known to be unable
    to dump outputs (release builds), so they are not asked again.
    """

    def __init__(
        self,
        adb: AdbDevice,
        device: Device,
        job: Job,
        tool: str,
        remote_model: str,
        *,
        execution_provider: str,
        command_timeout_s: float,
        no_output_dump: set[tuple[str, str]],
        beacon_tool: str | None = None,
        beacon_missing: str = "",
    ) -> None:
        self.adb, self.device, self.job = adb, device, job
        self.tool, self.remote_model = tool, remote_model
        self.execution_provider = execution_provider
        self.command_timeout_s = command_timeout_s
        self.no_output_dump = no_output_dump
        self.info = SessionInfo(
            load_us=None, first_inference_us=None, tool=TOOL_NAMES[job.runtime], tool_version=""
        )
        self._warmup = 0
        # a power job synced by beacon: rounds stamped on the phone's clock, the beacon tool
        # (None: ``beacon_missing`` says why there is none)
        self.stamp_rounds = job.settings.power and job.settings.power_sync == "beacon"
        self.beacon_tool, self.beacon_missing = beacon_tool, beacon_missing
        self.last_span: tuple[float, float] | None = None

    def _argv(
        self,
        runs: int,
        *,
        warmup: int = 0,
        profile: str | None = None,
        min_seconds: float | None = None,
    ) -> list[str]:
        threads = self.job.settings.threads or 1
        if self.job.runtime == "ort":
            if min_seconds:
                raise BenchError(
                    "onnxruntime_perf_test runs a fixed count here: give --runs "
                    "instead of --min-seconds for the ort runtime"
                )
            return ort_perf.build_command(
                self.tool,
                self.remote_model,
                runs=runs,
                threads=threads,
                execution_provider=self.execution_provider,
                profile_file=profile,
            )
        return tflite.build_command(
            self.tool,
            self.remote_model,
            num_runs=runs,
            warmup_runs=warmup,
            num_threads=threads,
            op_profiling=profile is not None,
            # a fixed count means exactly that many runs: benchmark_model's own default
            # (--min_secs=1) would otherwise add runs until a second has passed
            min_secs=min_seconds if min_seconds else 0,
        )

    def _run_tool(self, argv: list[str], stamped: bool = False) -> ToolRun:
        """Run the tool once; with ``stamped``, ``last_span`` holds the run on the phone's
        clock (None when the stamps did not come back)."""
        command = stamped_command(argv) if stamped else shlex.join(argv)
        try:
            result = self.adb.shell2(command, timeout=self.command_timeout_s)
        except VANISHED as error:
            raise BenchError(
                f"{self.device.id} vanished during the benchmark ({error}); "
                "measurements already finished are kept; reconnect the phone "
                "and retry the job"
            ) from error
        output = result.output
        if stamped:
            output, self.last_span = split_stamps(output)
        parse = ort_perf.parse if self.job.runtime == "ort" else tflite.parse
        try:
            run = parse(output, exit_code=result.returncode)
        except ToolOutputError as error:
            raise BenchError(
                f"{self.device.id}: {TOOL_NAMES[self.job.runtime]} failed: {error}"
            ) from error
        if run.tool_version:
            self.info.tool_version = run.tool_version
        if self.info.load_us is None:
            self.info.load_us = run.init_us
            self.info.first_inference_us = run.first_inference_us
        return run

    def warmup(self, iterations: int) -> None:
        if self.job.runtime == "tflite":
            self._warmup = iterations  # benchmark_model warms up inside each run
        elif iterations:
            self._run_tool(self._argv(iterations))  # discarded; also proves the tool works

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        runs = iterations or 1  # with min_seconds, benchmark_model runs at least that long
        self.last_span = None
        tool_run = self._run_tool(
            self._argv(runs, warmup=self._warmup, min_seconds=None if iterations else min_seconds),
            stamped=self.stamp_rounds,
        )
        summary = tool_summary(tool_run, runs)
        on_iteration(summary.count, [])
        loop_s = timed_loop_s(tool_run) if self.last_span is not None else None
        return Timed([], summary=summary, device_span=self.last_span, device_loop_s=loop_s)

    def sync_beacon(self) -> float | None:
        """One beacon with the phone's ``power_beacon``; its start on the phone's clock."""
        if self.beacon_tool is None:
            raise BenchError(self.beacon_missing or "no power_beacon on the phone")
        try:
            return run_beacon(self.adb, self.beacon_tool, self.command_timeout_s)
        except VANISHED as error:
            raise BenchError(f"{self.device.id} vanished during the beacon: {error}") from error

    def outputs(self, feeds: dict[str, Any]) -> list[Any] | None:
        """The phone's outputs for the parity input: ``ort`` only, and only when its
        onnxruntime_perf_test can dump them (see :mod:`backends.devices.android.outputs`);
        None else."""
        key = (self.adb.serial, self.tool)
        if self.job.runtime != "ort" or key in self.no_output_dump:
            return None
        try:
            values = ort_outputs(
                self.adb,
                tool=self.tool,
                remote_model=self.remote_model,
                model=self.job.model,
                feeds=feeds,
                workdir=WORKDIR,
                threads=self.job.settings.threads or 1,
                execution_provider=self.execution_provider,
                timeout_s=self.command_timeout_s,
            )
        except VANISHED as error:
            raise BenchError(f"{self.device.id} vanished while reading outputs: {error}") from error
        if values is None:  # a release build: do not ask again for this phone and tool
            self.no_output_dump.add(key)
        return values

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile | None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        if self.job.runtime == "tflite":
            run = self._run_tool(self._argv(iterations, warmup=self._warmup, profile="on"))
            total = run.layers_total_us
            layers_stats = (
                Stats(iterations, total, total, total, None, None, total, None, None)
                if total is not None
                else None
            )
            return LayerProfile(layers=run.layers, forward_stats=None, layers_stats=layers_stats)
        prefix = f"{WORKDIR}/profiles/{self.job.id}"
        self.adb.shell(shlex.join(["mkdir", "-p", f"{WORKDIR}/profiles"]), timeout=30)
        # the tool's own first (warm-up) inference is profiled too: skip_runs=1 drops it
        self._run_tool(self._argv(iterations, profile=prefix))
        listing = self.adb.shell(shlex.join(["ls", f"{WORKDIR}/profiles"]), timeout=30)
        names = [n for n in listing.split() if n.startswith(self.job.id) and n.endswith(".json")]
        if not names:
            return None
        local = str(Path(log_dir) / names[-1])
        self.adb.sync.pull(f"{WORKDIR}/profiles/{names[-1]}", local)
        self.adb.shell(shlex.join(["rm", "-f", f"{WORKDIR}/profiles/{names[-1]}"]), timeout=30)
        return ort_layer_profile(local, skip_runs=1)


def tool_summary(run: ToolRun, runs: int) -> Stats:
    """The tool's statistics as devlab's Stats (fields the tool did not print stay None)."""
    if run.avg_us is None:
        raise BenchError(f"{run.tool} printed no average latency; its output is not understood")
    cv = run.std_us / run.avg_us if run.std_us is not None and run.avg_us else None
    return Stats(
        count=run.count or runs,
        min=run.min_us if run.min_us is not None else run.avg_us,
        mean=run.avg_us,
        median=run.median_us,
        p90=run.p90_us,
        p99=run.p99_us,
        max=run.max_us if run.max_us is not None else run.avg_us,
        std=run.std_us,
        cv=cv,
    )
