"""The ``trtexec`` runner: TensorRT on a Jetson (or any NVIDIA box), through the agent.

* **Engine once per model**: ``trtexec --onnx … --saveEngine …`` with the agent's precision
  (fp32/fp16/int8) and workspace, cached under ``<workdir>/engines`` by the model's sha256 and
  the flags (and the trtexec version), written atomically so a crash never leaves half an engine.
* **Timed rounds**: one ``trtexec --loadEngine … --iterations=N --duration=0 --exportTimes``
  per round; ``--exportTimes`` gives every query's host latency (H2D + GPU compute + D2H, the
  summary's ``Latency``), so rounds, the precision gate and the statistics work as for any
  runner. The summary lines are parsed too (GPU compute, H2D/D2H, enqueue, throughput).
* **Per-layer**: a separate profiled pass, ``--exportProfile``, in ``extras["layers"]``.
* **Power** (with ``--tegrastats``): tegrastats samples the rails over an idle baseline and the
  timed rounds; the samples and both windows (this machine's clock) go back in
  ``extras["power"]`` for the console to compute energy per inference.

trtexec's ``--warmUp`` is in milliseconds: the job's warm-up iterations become
``iterations x`` the latency measured when the engine was built. Argument lists only, no shell.
Runs on Python 3.8 (the board agent).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backends.agent.process import ToolOutput, run_tool
from backends.agent.runners import (
    ITERATIONS,
    ProgressCallback,
    ProgressUpdate,
    RoundResult,
    Runner,
    RunnerCancelled,
    RunnerError,
    RunnerResult,
    iteration_summary,
)
from backends.agent.settings import JobSettingsIn
from backends.agent.tegrastats_sampler import SamplerError, TegrastatsSampler
from backends.power.tegrastats import interval_argv
from backends.runtimes import trtexec
from backends.runtimes.common import ToolOutputError, tail

BUILD_TIMEOUT_S = 3 * 3600.0  # int8 builds of large models on a Nano take long
RUN_MARGIN_S = 600.0
VERSION_TIMEOUT_S = 60.0
BUILD_PROBE_ITERATIONS = 10  # the build's own short timing run: the warm-up estimate
PROFILE_ITERATIONS = (10, 100)  # the profiled pass's runs: the job's count, within these
MAX_WARMUP_MS = 60_000
POWER_TAIL_S = 0.3


class TrtexecRunner(Runner):
    """ONNX in, a TensorRT engine built once, timed rounds, per-layer times, optional power."""

    name = "trtexec"

    def __init__(
        self,
        program: str,
        workdir: Path,
        precision: str = "fp16",
        workspace_mib: int | None = None,
        tegrastats: str | None = None,
        interval_ms: int = 100,
        baseline_s: float = 2.0,
    ) -> None:
        trtexec.precision_flags(precision)  # ValueError naming the allowed precisions
        if workspace_mib is not None and workspace_mib < 1:
            raise ValueError(f"the workspace must be at least 1 MiB, got {workspace_mib}")
        if tegrastats is not None:
            interval_argv(tegrastats, interval_ms)  # ValueError on a bad interval
            if not baseline_s > 0:
                raise ValueError(f"the power baseline must be positive, got {baseline_s}")
        self.program = program
        self.workdir = Path(workdir)
        self.precision = precision
        self.workspace_mib = workspace_mib
        self.tegrastats = tegrastats
        self.interval_ms = interval_ms
        self.baseline_s = baseline_s
        self._version: str | None = None
        self._version_lock = threading.Lock()

    # -- version ------------------------------------------------------------------------------

    def version(self) -> str:
        """TensorRT's version from ``trtexec --help`` (its RUNNING line), once."""
        with self._version_lock:
            if self._version is None:
                try:
                    output = run_tool(
                        [self.program, "--help"], threading.Event(), _ignore, VERSION_TIMEOUT_S
                    )
                    self._version = trtexec.trtexec_version(output.text) or "unknown"
                except (RunnerError, RunnerCancelled):
                    self._version = "unknown"
            return self._version

    # -- a job --------------------------------------------------------------------------------

    def run(
        self,
        model_path: Path,
        settings: JobSettingsIn,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> RunnerResult:
        notes: list[str] = []
        if settings.threads != 1:
            notes.append("threads does not apply to trtexec (the GPU runs the engine)")
        if settings.seconds is not None:
            notes.append("seconds does not apply to trtexec: rounds set the iteration counts")
        engine, meta, built = self._engine(model_path, progress, cancel)
        warmup_ms = _warmup_ms(settings.warmup, meta.get("latency_ms"))
        if settings.warmup:
            notes.append(
                f"warm-up of {settings.warmup} iterations given to trtexec as "
                f"--warmUp={warmup_ms} ms per round (its unit)"
            )
        scratch = Path(tempfile.mkdtemp(prefix="trtexec-", dir=str(self.workdir)))
        try:
            sampler = self._start_power(notes)
            try:
                baseline = self._baseline(sampler, progress, cancel)
                rounds, windows, parsed = self._rounds(
                    engine, settings, warmup_ms, meta.get("latency_ms"), scratch, progress, cancel
                )
                power = None
                if sampler is not None and baseline is not None:
                    cancel.wait(POWER_TAIL_S + self.interval_ms / 1000.0)
                    iterations = sum(len(r.latencies_us) for r in rounds)
                    power = sampler.report(
                        {
                            "baseline_window": list(baseline),
                            "timed_windows": [list(w) for w in windows],
                            "iterations": iterations,
                        }
                    )
            finally:
                if sampler is not None:
                    sampler.stop()
            layers, profile_runs = self._profile(engine, settings, scratch, progress, cancel, notes)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        extras = _summary_extras(parsed)
        extras.update(
            {
                "precision": self.precision,
                "workspace_mib": self.workspace_mib,
                "engine": engine.name,
                "engine_built": built,
                "engine_build_s": meta.get("build_s"),
                "layers": [
                    {"name": layer.name, "op_type": layer.op_type, "mean_us": layer.mean_us}
                    for layer in layers
                ],
                "profile_runs": profile_runs,
            }
        )
        if power is not None:
            extras["power"] = power
            notes.extend(power["warnings"])
        return RunnerResult(
            stats_source=ITERATIONS,
            rounds=rounds,
            tool="trtexec",
            tool_version=meta.get("version") or self.version(),
            load_us=meta.get("build_s", 0.0) * 1e6 if built else None,
            extras=extras,
            notes=notes + parsed_warnings(parsed),
        )

    # -- engine -------------------------------------------------------------------------------

    def engine_key(self, model_path: Path) -> str:
        """What identifies an engine: the model's bytes and every flag that changes it."""
        digest = hashlib.sha256()
        with open(model_path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        flags = json.dumps(
            {
                "precision": self.precision,
                "workspace_mib": self.workspace_mib,
                "trtexec": self.program,
                "version": self.version(),
            },
            sort_keys=True,
        )
        flags_digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
        workspace = self.workspace_mib if self.workspace_mib is not None else "default"
        return f"{digest.hexdigest()[:24]}-{self.precision}-ws{workspace}-{flags_digest}"

    def _engine(
        self, model_path: Path, progress: ProgressCallback, cancel: threading.Event
    ) -> tuple[Path, dict[str, Any], bool]:
        """The cached engine (and its metadata), built now when missing."""
        folder = self.workdir / "engines"
        folder.mkdir(parents=True, exist_ok=True)
        key = self.engine_key(model_path)
        engine, meta_path = folder / f"{key}.engine", folder / f"{key}.json"
        if engine.is_file() and meta_path.is_file():
            try:
                return engine, json.loads(meta_path.read_text(encoding="utf-8")), False
            except ValueError:
                pass  # a damaged record: build again
        progress(ProgressUpdate("build engine", 0, None))
        partial = folder / f".{key}.{os.getpid()}.partial.engine"
        argv = trtexec.build_argv(
            self.program, str(model_path), str(partial), self.precision, self.workspace_mib
        )
        argv += [f"--iterations={BUILD_PROBE_ITERATIONS}", "--duration=0", "--warmUp=0"]
        started = time.monotonic()
        try:
            output = run_tool(argv, cancel, _lines_as(progress, "build engine"), BUILD_TIMEOUT_S)
            parsed = _parse(output, "building the engine")
            if not partial.is_file():
                raise RunnerError(
                    f"trtexec reported success but wrote no engine ({partial.name}); "
                    f"last lines: {' | '.join(tail(output.lines, 5))}"
                )
            meta = {
                "model_sha256_prefix": key.split("-")[0],
                "precision": self.precision,
                "workspace_mib": self.workspace_mib,
                "version": parsed.tool_version or self.version(),
                "latency_ms": (parsed.avg_us or 0.0) / 1e3,
                "build_s": time.monotonic() - started,
            }
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
            os.replace(partial, engine)
        finally:
            if partial.exists():
                partial.unlink()
        return engine, meta, True

    # -- power --------------------------------------------------------------------------------

    def _start_power(self, notes: list[str]) -> TegrastatsSampler | None:
        if self.tegrastats is None:
            return None
        argv = interval_argv(self.tegrastats, self.interval_ms)
        try:
            return TegrastatsSampler(argv, self.interval_ms).start()
        except SamplerError as error:
            notes.append(f"no power measured: {error}")
            return None

    def _baseline(
        self,
        sampler: TegrastatsSampler | None,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> tuple[float, float] | None:
        """Idle for the baseline (the board at rest, tegrastats sampling); its window."""
        if sampler is None:
            return None
        progress(ProgressUpdate("power baseline", 0, None))
        first = time.monotonic() + max(5.0, 5 * self.interval_ms / 1000.0)
        while sampler.count() == 0 and time.monotonic() < first:  # tegrastats' first line
            if cancel.wait(0.02):
                raise RunnerCancelled()
        start = time.time()
        if cancel.wait(self.baseline_s):
            raise RunnerCancelled()
        return start, time.time()

    # -- timed rounds -------------------------------------------------------------------------

    def _rounds(
        self,
        engine: Path,
        settings: JobSettingsIn,
        warmup_ms: int,
        latency_ms: float | None,
        scratch: Path,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> tuple[list[RoundResult], list[tuple[float, float]], Any]:
        """One trtexec per round; each may take 3x the build-time latency per query, plus a
        margin for loading the engine."""
        rounds: list[RoundResult] = []
        windows: list[tuple[float, float]] = []
        parsed = None
        for index, count in enumerate(settings.rounds, start=1):
            phase = f"round {index}/{len(settings.rounds)}"
            progress(ProgressUpdate(phase, 0, count))
            times_json = scratch / f"times-{index}.json"
            argv = trtexec.timed_argv(self.program, str(engine), count, warmup_ms, str(times_json))
            seen: dict[str, float] = {}

            def on_lines(
                lines: list[str], phase: str = phase, seen: dict[str, float] = seen, count=count
            ) -> None:
                now = time.time()
                for line in lines:
                    if "Starting inference" in line:
                        seen.setdefault("start", now)
                    elif "Timing trace has" in line:  # printed right after the timed queries
                        seen.setdefault("end", now)
                progress(ProgressUpdate(phase, 0, count, lines=list(lines)))

            timeout = RUN_MARGIN_S + warmup_ms / 1000.0 + 3 * count * (latency_ms or 0) / 1e3
            output = run_tool(argv, cancel, on_lines, timeout)
            ended = time.time()
            parsed = _parse(output, f"round {index}")
            latencies, span_s = _export_times(times_json, output)
            if len(latencies) != count:
                raise RunnerError(
                    f"trtexec timed {len(latencies)} queries in round {index}, not the "
                    f"{count} asked (--iterations={count} --duration=0)"
                )
            windows.append(_timed_window(seen, warmup_ms, span_s, ended))
            rounds.append(RoundResult(latencies, iteration_summary(latencies)))
            progress(ProgressUpdate(phase, count, count, recent_us=latencies[-500:]))
        return rounds, windows, parsed

    # -- per-layer ----------------------------------------------------------------------------

    def _profile(
        self,
        engine: Path,
        settings: JobSettingsIn,
        scratch: Path,
        progress: ProgressCallback,
        cancel: threading.Event,
        notes: list[str],
    ) -> tuple[list, int | None]:
        """A separate profiled pass; a failure is a note (the timed rounds stand)."""
        runs = min(max(settings.runs, PROFILE_ITERATIONS[0]), PROFILE_ITERATIONS[1])
        progress(ProgressUpdate("profile", 0, runs))
        profile_json = scratch / "profile.json"
        argv = trtexec.profile_argv(self.program, str(engine), runs, str(profile_json))
        try:
            output = run_tool(argv, cancel, _lines_as(progress, "profile"), RUN_MARGIN_S)
            if output.exit_code != 0:
                raise RunnerError(" | ".join(tail(output.lines, 5)))
            profile = trtexec.parse_export_profile(
                profile_json.read_text(encoding="utf-8"), profile_json.name
            )
        except (RunnerError, OSError, trtexec.ExportError) as error:
            notes.append(f"per-layer profiling failed: {error}")
            return [], None
        return profile["layers"], profile["count"]


def parsed_warnings(parsed: Any) -> list[str]:
    return list(parsed.warnings) if parsed is not None else []


def _parse(output: ToolOutput, doing: str):
    try:
        return trtexec.parse_trtexec(output.text, output.exit_code)
    except ToolOutputError as error:
        raise RunnerError(f"{doing}: {error}") from None


def _export_times(path: Path, output: ToolOutput) -> tuple[list[float], float]:
    """Per-query host latencies (us) and the span of the timed queries (s)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise RunnerError(
            f"trtexec wrote no --exportTimes file ({path.name}); "
            f"last lines: {' | '.join(tail(output.lines, 5))}"
        ) from None
    try:
        series = trtexec.parse_export_times(text, path.name)
        records = json.loads(text)
    except (trtexec.ExportError, ValueError) as error:
        raise RunnerError(str(error)) from None
    starts = [r.get("startEnqMs") for r in records if isinstance(r, dict)]
    ends = [r.get("endD2hMs", r.get("endComputeMs")) for r in records if isinstance(r, dict)]
    numbers = [x for x in starts + ends if isinstance(x, (int, float))]
    span_s = (max(numbers) - min(numbers)) / 1e3 if len(numbers) >= 2 else 0.0
    if span_s <= 0:
        span_s = sum(series["latency"]) / 1e6
    return series["latency"], span_s


def _timed_window(
    seen: dict[str, float], warmup_ms: int, span_s: float, ended: float
) -> tuple[float, float]:
    """The timed queries on this machine's clock, ``span_s`` long (from --exportTimes): ending
    when trtexec's "Timing trace has N queries" line arrived (it follows the last query), else
    starting after the warm-up that follows its "Starting inference" line, else ending when
    trtexec exited. Lines arrive in batches about 0.1 s apart: the window is that exact."""
    if "end" in seen:
        end = min(seen["end"], ended)
    elif "start" in seen:
        end = min(seen["start"] + warmup_ms / 1000.0 + span_s, ended)
    else:
        end = ended
    return end - span_s, end


def _summary_extras(parsed: Any) -> dict[str, Any]:
    if parsed is None:
        return {}
    extras: dict[str, Any] = {
        "fps": parsed.extra.get("throughput_qps"),
        "gpu_compute_mean_us": (parsed.forward_us or {}).get("mean"),
        "e2e_mean_us": None,
        "dpu_mean_us": None,
        "threads": 1,
        "last_round_summary_us": parsed.total_inference,
    }
    for key in ("gpu_compute_us", "h2d_us", "d2h_us", "enqueue_us", "end_to_end_us"):
        if key in parsed.extra:
            extras[key] = parsed.extra[key]
    return extras


def _warmup_ms(iterations: int, latency_ms: float | None) -> int:
    if iterations <= 0:
        return 0
    per = latency_ms if latency_ms and latency_ms > 0 else 1.0
    return int(min(MAX_WARMUP_MS, max(1, math.ceil(iterations * per))))


def _lines_as(progress: ProgressCallback, phase: str):
    def on_lines(lines: list[str]) -> None:
        progress(ProgressUpdate(phase, 0, None, lines=list(lines)))

    return on_lines


def _ignore(lines: list[str]) -> None:
    return None
