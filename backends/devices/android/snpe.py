"""Qualcomm SNPE on Android phones: the session that runs ``snpe-net-run`` on the phone.

The workflow, per job (runtimes :data:`~.snpe_config.SNPE_RUNTIMES`; the SDK's settings in
:mod:`.snpe_config`, steps 1-2 in :mod:`.dlc_cache`):

1. host: ``snpe-onnx-to-dlc`` turns the ONNX model into a DLC (with ``--quantization_overrides``
   when MQBench clip ranges are given), cached by model sha256 + clip-range hash + SDK;
2. host, DSP only: ``snpe-dlc-quantize`` on a small list of random float32 calibration inputs
   (``--override_params --bias_bitwidth 32`` with clip ranges, as MQBench deploys), cached;
3. phone: ``snpe-net-run`` and the SDK's ``lib/<arch>`` (and the DSP skel libraries for DSP)
   are pushed once per content hash under ``<workdir>/snpe/<hash>/``; the DLC, one random raw
   file per model input and an input list (one line per inference, every line naming the same
   raw file(s)) are pushed once per content hash too;
4. phone: ``env LD_LIBRARY_PATH=… [ADSP_LIBRARY_PATH=…] snpe-net-run --container … --input_list
   … --output_dir … --perf_profile … --profiling_level …`` (an argv list joined with
   ``shlex.join``); the diag log ``<output_dir>/SNPEDiag_0.log`` is pulled and the output dir
   removed;
5. host: ``snpe-diagview --input_log … --output ….csv`` decodes the log: its report is read by
   :func:`parse_diagview`, its per-inference CSV by
   :func:`~backends.runtimes.snpe_diag_csv.parse_diagview_csv`.

A timed round is one ``snpe-net-run`` over ``runs`` input lines; its latencies are every
inference's Total Inference Time from the CSV (``Timed(latencies)``: devlab's own median and
spread, as for the host). Where diagview writes no CSV, or not one per inference, the round is
the report's average (``Timed([], summary=…)``, min = max = mean). Timed rounds run at
``--profiling_level basic``; per-layer times come from a separate ``detailed`` pass
(:meth:`SnpeSession.profile_layers`), as on every other device, so profiling never slows the
timed runs. That pass gives "Forward Propagate" and the per-layer times ("Layers Time": their
sum except the input layer), each inference's from the CSV where it has them (the spread of
both). On DSP/HTP the per-layer values are cycles, which are not times: the profile then has
Forward Propagate only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from adbutils import AdbDevice, AdbError, AdbTimeout

from backends.core.records import Job, Model, Stats
from backends.devices.android.adb import VANISHED, WORKDIR
from backends.devices.android.dlc_cache import (
    check_clip_ranges,
    convert_to_dlc,
    file_sha256,
    input_list_line,
    input_seed,
    input_specs,
    quantize_dlc,
    random_raw,
)
from backends.devices.android.power_sync import (
    init_and_deinit_s,
    run_beacon,
    split_stamps,
    stamped_command,
)
from backends.devices.android.snpe_config import (
    ADSP_SYSTEM_DIRS,
    DEFAULT_PERF_PROFILE,
    DIAGVIEW,
    NET_RUN,
    NO_SDK,
    SNPE_RUNTIMES,
    SnpeConfig,
    SnpeConfigError,
)
from backends.devices.base import (
    BenchError,
    BenchSession,
    IterationCallback,
    LayerProfile,
    SessionInfo,
    Timed,
)
from backends.models.intake import graph_output_specs
from backends.runtimes.common import ToolOutputError, ToolRun
from backends.runtimes.snpe import (
    PERF_PROFILES,
    aggregate_runs,
    build_diagview_command,
    build_net_run_command,
    parse_diagview,
)
from backends.runtimes.snpe_diag_csv import parse_diagview_csv

log = logging.getLogger(__name__)

PushOnce = Callable[[str, str, int], None]
"""``push_once(local, remote, mode)``: push a host file unless the phone already has it."""


def raw_output_name(output: str) -> str:
    """The file snpe-net-run writes an output to inside ``Result_N/``."""
    return (output.replace("/", "_").replace(":", "_") or "output") + ".raw"


@dataclass
class _Pass:
    """One snpe-net-run whose log was decoded."""

    run: ToolRun
    count: int
    log_path: Path
    report_path: Path
    #: What diagview's ``--output`` CSV says of every inference (None when the tool wrote
    #: none, it could not be read or it does not hold the pass's inferences: the report's
    #: averages then stand).
    table: ToolRun | None = None

    @property
    def inferences_us(self) -> list[float] | None:
        """Every inference's Total Inference Time, in order, from the CSV."""
        return None if self.table is None else list(self.table.extra["total_inference_us"])


class SnpeSession(BenchSession):
    """One model on one phone with SNPE; each round is one ``snpe-net-run`` of ``runs`` lines.

    Construction does the preparation (conversion, quantization for DSP, pushes) and raises
    BenchError on bad input, a missing SDK (naming ``[snpe] sdk``) or a phone that vanished.
    ``clip_ranges`` (an MQBench/SNPE clip-range JSON) defaults to ``job.settings.clip_ranges``
    when the settings have such a field.
    """

    def __init__(
        self,
        adb: AdbDevice,
        device_id: str,
        job: Job,
        model: Model,
        config: SnpeConfig | None,
        push_once: PushOnce,
        workdir: str = WORKDIR,
        *,
        clip_ranges: str | os.PathLike[str] | None = None,
        beacon_tool: str | None = None,
        beacon_missing: str = "",
    ) -> None:
        if config is None:
            raise SnpeConfigError(f"{device_id}: {NO_SDK}")
        if job.runtime not in SNPE_RUNTIMES:
            raise BenchError(
                f"{device_id}: unknown SNPE runtime {job.runtime!r} "
                f"(known: {', '.join(SNPE_RUNTIMES)})"
            )
        self.adb, self.device_id, self.job, self.model = adb, device_id, job, model
        self.config, self.push_once = config, push_once
        self.workdir = workdir.rstrip("/")
        self.runtime = SNPE_RUNTIMES[job.runtime]
        self.perf_profile = getattr(job.settings, "perf_profile", None) or DEFAULT_PERF_PROFILE
        if self.perf_profile not in PERF_PROFILES:
            raise BenchError(
                f"unknown SNPE perf_profile {self.perf_profile!r}; allowed: "
                f"{', '.join(PERF_PROFILES)}"
            )
        config.check(self.runtime)
        if clip_ranges is None:
            clip_ranges = getattr(job.settings, "clip_ranges", None)
        self.clip_ranges = check_clip_ranges(clip_ranges)
        self.info = SessionInfo(
            load_us=None, first_inference_us=None, tool=NET_RUN, tool_version=""
        )
        self._tmp = Path(tempfile.mkdtemp(prefix="devlab-snpe-"))
        self._lists: dict[int, str] = {}
        self._passes = 0
        self._tag = re.sub(r"[^A-Za-z0-9_.-]", "_", job.id)[:64] or "job"
        # a power job synced by beacon: each round stamped on the phone's clock (as the
        # ort/tflite sessions do), the beacon tool (None: ``beacon_missing`` says why)
        self.stamp_rounds = job.settings.power and job.settings.power_sync == "beacon"
        self.beacon_tool, self.beacon_missing = beacon_tool, beacon_missing
        self.last_span: tuple[float, float] | None = None
        try:
            self.dlc = convert_to_dlc(config, model, self.clip_ranges)
            if self.runtime == "DSP":
                self.dlc = quantize_dlc(config, self.dlc, model, self.clip_ranges)
            with self._on_phone("preparing the job"):
                self._push_files()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    # -- preparation -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _on_phone(self, what: str) -> Iterator[None]:
        try:
            yield
        except AdbTimeout as error:
            raise BenchError(
                f"{self.device_id}: no answer within {self.config.command_timeout_s:g} s while "
                f"{what} ({error}); raise [snpe] command_timeout_s for big models, or check "
                "the phone"
            ) from error
        except VANISHED as error:
            raise BenchError(
                f"{self.device_id} vanished while {what} ({error}); measurements already "
                "finished are kept; reconnect the phone and retry the job"
            ) from error

    def _push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        self.push_once(str(local), remote, mode)

    def _push_files(self) -> None:
        config = self.config
        assert config.device_bin is not None and config.device_lib is not None
        libs = sorted(p for p in config.device_lib.iterdir() if p.is_file())
        bundle = hashlib.sha256()
        for path in [config.device_bin, *libs]:
            bundle.update(f"{path.name}:{file_sha256(path)}\n".encode())
        root = f"{self.workdir}/snpe/{bundle.hexdigest()[:16]}"
        self.remote_bin = f"{root}/bin/{NET_RUN}"
        self.remote_lib = f"{root}/lib"
        self._push(config.device_bin, self.remote_bin, 0o755)
        for lib in libs:
            self._push(lib, f"{self.remote_lib}/{lib.name}")
        self.remote_dsp: str | None = None
        if self.runtime == "DSP":
            assert config.dsp_lib is not None
            skels = sorted(p for p in config.dsp_lib.iterdir() if p.is_file())
            dsp = hashlib.sha256()
            for path in skels:
                dsp.update(f"{path.name}:{file_sha256(path)}\n".encode())
            self.remote_dsp = f"{self.workdir}/snpe/dsp-{dsp.hexdigest()[:16]}"
            for skel in skels:
                self._push(skel, f"{self.remote_dsp}/{skel.name}")
        self.remote_dlc = f"{self.workdir}/snpe/models/{file_sha256(self.dlc)[:32]}.dlc"
        self._push(self.dlc, self.remote_dlc)
        paths: dict[str, str] = {}
        for position, (name, shape) in enumerate(input_specs(self.model)):
            data = random_raw(shape, input_seed(self.model, position))
            paths[name] = self._push_raw(data, f"input_{position}")
        if not paths:
            raise BenchError(f"{self.model.path}: the model has no inputs to feed snpe-net-run")
        self._line = input_list_line(paths)

    def _input_list(self, count: int) -> str:
        """The remote input list of ``count`` lines (pushed once per content)."""
        if count not in self._lists:
            self._lists[count] = self._push_list([self._line] * count, f"input_list_{count}")
        return self._lists[count]

    def _push_list(self, lines: list[str], stem: str) -> str:
        text = "\n".join(lines) + "\n"
        local = self._tmp / f"{stem}.txt"
        local.write_text(text, encoding="utf-8")
        remote = f"{self.workdir}/snpe/lists/{hashlib.sha256(text.encode()).hexdigest()[:24]}.txt"
        self._push(local, remote)
        return remote

    def _push_raw(self, data: bytes, stem: str) -> str:
        local = self._tmp / f"{stem}.raw"
        local.write_bytes(data)
        remote = f"{self.workdir}/snpe/inputs/{hashlib.sha256(data).hexdigest()[:24]}.raw"
        self._push(local, remote)
        return remote

    # -- one snpe-net-run ------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """LD_LIBRARY_PATH (and ADSP_LIBRARY_PATH for DSP) of the ``env`` prefix."""
        env = {"LD_LIBRARY_PATH": self.remote_lib}
        if self.remote_dsp is not None:
            env["ADSP_LIBRARY_PATH"] = ";".join([self.remote_dsp, *ADSP_SYSTEM_DIRS])
        return env

    def net_run_argv(self, input_list: str, output_dir: str, profiling_level: str) -> list[str]:
        """The argv of one ``snpe-net-run`` on the phone (``env K=V …`` prefix included)."""
        return build_net_run_command(
            self.remote_bin,
            self.remote_dlc,
            input_list,
            runtime=self.runtime,
            perf_profile=self.perf_profile,
            output_dir=output_dir,
            profiling_level=profiling_level,
            env=self.environment(),
        )

    def _find_log(self, output_dir: str) -> str | None:
        entries = [e for e in self.adb.sync.list(output_dir) if e.path not in (".", "..")]
        logs = [e for e in entries if e.path.startswith("SNPEDiag") and e.path.endswith(".log")]
        if not logs:
            return None
        if any(e.path == "SNPEDiag_0.log" for e in logs):
            return "SNPEDiag_0.log"
        return max(logs, key=lambda e: (e.mtime.timestamp() if e.mtime else 0, e.path)).path

    def _next_output_dir(self) -> str:
        self._passes += 1
        return f"{self.workdir}/snpe/out/{self._tag}-{os.getpid()}-{self._passes}"

    def _net_run(
        self, input_list: str, output_dir: str, profiling_level: str, stamped: bool = False
    ) -> None:
        """One snpe-net-run on the phone; a non-zero exit is a BenchError with its last lines.
        With ``stamped``, ``last_span`` holds the run on the phone's clock (None when the
        stamps did not come back)."""
        argv = self.net_run_argv(input_list, output_dir, profiling_level)
        command = stamped_command(argv) if stamped else shlex.join(argv)
        result = self.adb.shell2(command, timeout=self.config.command_timeout_s)
        output = result.output
        if stamped:
            output, self.last_span = split_stamps(output)
        if result.returncode != 0:
            lines = [line for line in output.splitlines() if line.strip()]
            raise BenchError(
                f"{self.device_id}: {NET_RUN} failed (exit {result.returncode}): "
                + " | ".join(lines[-4:])
            )

    def _execute(self, count: int, profiling_level: str, stamped: bool = False) -> _Pass:
        """Run snpe-net-run over ``count`` input lines, pull and decode its diag log."""
        output_dir = self._next_output_dir()
        local_log = self._tmp / f"SNPEDiag-{self._passes}.log"
        try:
            with self._on_phone("running snpe-net-run"):
                self._net_run(self._input_list(count), output_dir, profiling_level, stamped)
                name = self._find_log(output_dir)
                if name is None:
                    raise BenchError(
                        f"{self.device_id}: {NET_RUN} wrote no SNPEDiag log in {output_dir}"
                    )
                self.adb.sync.pull(f"{output_dir}/{name}", str(local_log))
        finally:
            with contextlib.suppress(*VANISHED):
                self.adb.shell(shlex.join(["rm", "-rf", output_dir]), timeout=30)
        table = local_log.with_suffix(".csv")
        done = self._diagview(local_log, table)
        if done.returncode != 0 and not table.exists():
            done = self._diagview(local_log, None)  # a diagview without --output
        report = local_log.with_suffix(".txt")
        report.write_text(done.stdout, encoding="utf-8")
        try:
            run = parse_diagview(done.stdout + done.stderr, exit_code=done.returncode)
        except ToolOutputError as error:
            raise BenchError(f"{self.device_id}: {error}") from error
        if run.tool_version:
            self.info.tool_version = run.tool_version
        if self.info.load_us is None:
            self.info.load_us = run.init_us
        return _Pass(run, count, local_log, report, _read_table(table, count, run))

    def _diagview(self, log_file: Path, table: Path | None) -> subprocess.CompletedProcess[str]:
        """``snpe-diagview`` on the host over a pulled log (with ``table``: its per-inference
        CSV too)."""
        tool = self.config.host_tool(DIAGVIEW)
        argv = build_diagview_command(
            str(tool), str(log_file), output=None if table is None else str(table)
        )
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.config.command_timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BenchError(f"{DIAGVIEW} could not decode {log_file}: {error}") from error

    # -- BenchSession ----------------------------------------------------------------------

    def warmup(self, iterations: int) -> None:
        if iterations > 0:
            self._execute(iterations, "basic")  # discarded; also proves the setup works

    def run(
        self, iterations: int | None, min_seconds: float | None, on_iteration: IterationCallback
    ) -> Timed:
        if not iterations and min_seconds:
            raise BenchError(
                f"{NET_RUN} runs one inference per input-list line: give --runs instead of "
                "--min-seconds for the SNPE runtimes"
            )
        runs = iterations or 1
        self.last_span = None
        done = self._execute(runs, "basic", stamped=self.stamp_rounds)
        total = done.run.total_inference
        if not total or total.get("mean") is None:
            raise BenchError(f"{DIAGVIEW} printed no Total Inference Time; not understood")
        # every inference's time where diagview's CSV has them, else the report's average
        latencies = done.inferences_us or []
        summary = None if latencies else _stats(runs, total["mean"], total["mean"], total["mean"])
        on_iteration(runs, latencies)
        if self.last_span is None:
            return Timed(latencies, summary=summary)
        head_s, tail_s = init_and_deinit_s(done.run)
        span = self.last_span
        return Timed(
            latencies,
            summary=summary,
            device_span=span,
            device_head_s=head_s,
            device_tail_s=tail_s,
        )

    def sync_beacon(self) -> float | None:
        """One beacon with the phone's ``power_beacon``; its start on the phone's clock."""
        if self.beacon_tool is None:
            raise BenchError(self.beacon_missing or "no power_beacon on the phone")
        with self._on_phone("running the power sync beacon"):
            return run_beacon(self.adb, self.beacon_tool, self.config.command_timeout_s)

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs for ``feeds`` as the phone computes them (output parity)."""
        return self.outputs_batch([feeds])[0]

    def outputs_batch(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Outputs for many inputs in one ``snpe-net-run`` (an accuracy set: one tool start, not
        one per sample): one input line of float32 raw files per entry, then each
        ``Result_N/<output>.raw`` pulled back. SNPE writes every output as float32 and names the
        file after the output with ``/`` and ``:`` replaced by ``_``; each is reshaped to the
        ONNX output's shape when it fits."""
        lines = []
        for number, one in enumerate(feeds):
            paths: dict[str, str] = {}
            for position, (name, shape) in enumerate(input_specs(self.model)):
                if name not in one:
                    raise BenchError(f"{self.model.path}: the input has no {name!r}")
                data = np.asarray(one[name], dtype=np.float32).reshape(shape).tobytes()
                paths[name] = self._push_raw(data, f"sample_{number}_{position}")
            lines.append(input_list_line(paths))
        output_dir = self._next_output_dir()
        pulled = self._tmp / f"outputs-{self._passes}"
        pulled.mkdir()
        wanted = graph_output_specs(self.model)
        try:
            with self._on_phone("reading the model's outputs"):
                input_list = self._push_list(lines, "outputs")
                self._net_run(input_list, output_dir, "off")
                for number in range(len(lines)):
                    for name, _ in wanted:
                        self._pull_output(output_dir, number, name, pulled)
        finally:
            with contextlib.suppress(*VANISHED):
                self.adb.shell(shlex.join(["rm", "-rf", output_dir]), timeout=30)
        batch = []
        for number in range(len(lines)):
            values = []
            for name, shape in wanted:
                local = pulled / f"{number}-{raw_output_name(name)}"
                flat = np.fromfile(local, dtype=np.float32)
                fits = shape is not None and int(np.prod(shape)) == flat.size
                values.append(flat.reshape(shape) if fits else flat)
            batch.append(values)
        shutil.rmtree(pulled, ignore_errors=True)
        return batch

    def _pull_output(self, output_dir: str, number: int, name: str, into: Path) -> None:
        """``Result_<number>/<output>.raw`` to ``into``; a missing file names what is there
        (listed only then: one adb call per file on the way that works)."""
        folder, file = f"{output_dir}/Result_{number}", raw_output_name(name)
        try:
            self.adb.sync.pull_file(f"{folder}/{file}", str(into / f"{number}-{file}"))
        except AdbError:
            written = {entry.path for entry in self.adb.sync.list(folder)} - {".", ".."}
            if file in written:
                raise  # it is there: the pull itself failed (the phone went away)
            raise BenchError(
                f"{self.device_id}: {NET_RUN} wrote no {file} for output {name!r} in "
                f"Result_{number} (found: {', '.join(sorted(written)) or 'nothing'})"
            ) from None

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile | None:
        folder = Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        passes = [self._execute(max(iterations, 1), "detailed")]
        merged = passes[0].run if len(passes) == 1 else aggregate_runs([p.run for p in passes])
        table = passes[0].table
        # the CSV's layers are every inference's (Forward Propagate's and Layers Time's real
        # spread), used when they are times like the report's (HTP layers are cycles)
        in_time = merged.layers and "layer_cycles" not in merged.extra
        if len(passes) == 1 and table is not None and table.layers and in_time:
            merged = table
        count = sum(p.count for p in passes)
        report = None
        for index, done in enumerate(passes):
            shutil.copyfile(done.log_path, folder / f"SNPEDiag_{index}.log")
            report = folder / f"snpe_diagview_{index}.txt"
            shutil.copyfile(done.report_path, report)
        for warning in merged.warnings:
            log.warning("%s %s: %s", self.device_id, self.job.id, warning)
        forward = merged.forward_us
        forward_stats = (
            _stats(count, forward["mean"], forward.get("min"), forward.get("max"))
            if forward and forward.get("mean") is not None
            else None
        )
        layers_stats = None
        if merged.layers_total_us is not None:
            low, high = merged.layers_total_range_us or (None, None)
            layers_stats = _stats(count, merged.layers_total_us, low, high)
        if not merged.layers and forward_stats is None:
            return None
        return LayerProfile(
            layers=list(merged.layers),
            forward_stats=forward_stats,
            layers_stats=layers_stats,
            raw_log_path=str(report) if report else None,
        )

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


def _stats(count: int, mean: float, low: float | None, high: float | None) -> Stats:
    """Stats of a tool that printed averages only: min/max as given, else the mean."""
    return Stats(
        count=count,
        min=low if low is not None else mean,
        mean=mean,
        median=None,
        p90=None,
        p99=None,
        max=high if high is not None else mean,
        std=None,
        cv=None,
    )


def _read_table(table: Path, count: int, report: ToolRun) -> ToolRun | None:
    """diagview's per-inference CSV, its layers named and its input layers chosen as in the
    same log's ``report``, when it holds exactly the ``count`` inferences the pass ran (else
    None: the report's averages stand)."""
    rows = report.extra.get("layer_rows") or []
    try:
        run = parse_diagview_csv(
            table.read_text(encoding="utf-8", errors="replace"),
            input_layer_indices=report.extra.get("input_layer_indices"),
            layer_names={row["index"]: row["name"] for row in rows},
        )
    except (OSError, ToolOutputError) as error:
        log.debug("no per-inference times from %s: %s", table, error)
        return None
    return run if len(run.extra.get("total_inference_us") or []) == count else None
