"""Qualcomm SNPE on Android phones: convert on the host, run ``snpe-net-run`` on the phone.

The workflow, per job (runtimes :data:`SNPE_RUNTIMES`):

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
5. host: ``snpe-diagview --input_log`` decodes the log, :func:`parse_diagview` reads it.

A timed round is one ``snpe-net-run`` over ``runs`` input lines; its result is the tool's own
average ("Total Inference Time", ``Timed([], summary=…)``: diagview prints no per-inference
times, so min = max = mean). Timed rounds run at ``--profiling_level basic``; per-layer times
come from a separate ``detailed`` pass (:meth:`SnpeSession.profile_layers`), as on every other
device, so profiling never slows the timed runs. That pass gives "Forward Propagate" and the
per-layer times ("Layers Time": their sum except the input layer). On DSP/HTP the per-layer
values are cycles, which are not times: the profile then has Forward Propagate only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from adbutils import AdbDevice, AdbError, AdbTimeout

from backends.core.records import Job, Model, Stats
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
    ClipRangesError,
    aggregate_runs,
    build_diagview_command,
    build_net_run_command,
    build_onnx_to_dlc_command,
    build_quantize_command,
    load_clip_ranges,
    parse_diagview,
)

log = logging.getLogger(__name__)

WORKDIR = "/data/local/tmp/devlab"
SNPE_RUNTIMES = {
    "snpe-cpu": "CPU",
    "snpe-gpu": "GPU",
    "snpe-gpu-fp16": "GPU_FP16",
    "snpe-dsp": "DSP",
}
NET_RUN = "snpe-net-run"
CONVERTER = "snpe-onnx-to-dlc"
QUANTIZER = "snpe-dlc-quantize"
DIAGVIEW = "snpe-diagview"
HOST_ARCH = "x86_64-linux-clang"
DEVICE_ARCH = "aarch64-android"
DEFAULT_PERF_PROFILE = "high_performance"
#: Where Android keeps the vendor's DSP libraries; appended to ADSP_LIBRARY_PATH (';'-separated).
ADSP_SYSTEM_DIRS = ("/system/lib/rfsa/adsp", "/system/vendor/lib/rfsa/adsp", "/dsp")
VANISHED = (AdbError, OSError)  # adbutils raises BrokenPipeError (an OSError) mid-transfer

PushOnce = Callable[[str, str, int], None]
"""``push_once(local, remote, mode)``: push a host file unless the phone already has it."""

NO_SDK = (
    'SNPE runtimes need the Qualcomm SNPE SDK: add [snpe] sdk = "/path/to/snpe-sdk" to the '
    "config (the SDK root, with bin/ and lib/)"
)
_KNOWN_SETTINGS = (
    "sdk",
    "host_bin",
    "device_bin",
    "device_lib",
    "dsp_lib",
    "cache_dir",
    "calibration_inputs",
    "command_timeout_s",
)


class SnpeConfigError(BenchError, ValueError):
    """The ``[snpe]`` table is missing a setting or names something that is not there; the
    message names the setting to add or fix. A BenchError (a job fails with it) and a
    ValueError (config loading reports it)."""


@dataclass
class SnpeConfig:
    """The ``[snpe]`` table of the config file.

    ``sdk`` is the SDK root; the other paths default to the SDK's layout: ``host_bin`` =
    ``<sdk>/bin/x86_64-linux-clang`` (snpe-onnx-to-dlc, snpe-dlc-quantize, snpe-diagview),
    ``device_bin`` = ``<sdk>/bin/aarch64-android/snpe-net-run`` (else the one
    ``bin/aarch64-android*`` folder that has it, e.g. 1.x ``aarch64-android-clang8.0``),
    ``device_lib`` = ``<sdk>/lib/<that arch>``, ``dsp_lib`` = ``<sdk>/lib/dsp`` when it exists
    (2.x SDKs: set it to ``<sdk>/lib/hexagon-vNN/unsigned`` for the phone's Hexagon version).
    ``cache_dir`` holds converted DLCs and calibration inputs (default: the user cache folder).
    """

    sdk: Path
    host_bin: Path | None = None
    device_bin: Path | None = None
    device_lib: Path | None = None
    dsp_lib: Path | None = None
    cache_dir: Path | None = None
    calibration_inputs: int = 4
    command_timeout_s: float = 600.0
    _given: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.sdk = Path(self.sdk).expanduser()
        for name in ("host_bin", "device_bin", "device_lib", "dsp_lib", "cache_dir"):
            value = getattr(self, name)
            if value is not None:
                self._given.add(name)
                setattr(self, name, Path(value).expanduser())
        if self.host_bin is None:
            self.host_bin = self.sdk / "bin" / HOST_ARCH
        if self.device_bin is None:
            self.device_bin = self.sdk / "bin" / DEVICE_ARCH / NET_RUN
            if not self.device_bin.is_file():
                found = sorted(self.sdk.glob(f"bin/{DEVICE_ARCH}*/{NET_RUN}"))
                if found:
                    self.device_bin = found[0]
        if self.device_lib is None:
            self.device_lib = self.sdk / "lib" / self.device_bin.parent.name
        if self.dsp_lib is None and (self.sdk / "lib" / "dsp").is_dir():
            self.dsp_lib = self.sdk / "lib" / "dsp"
        if self.cache_dir is None:
            import platformdirs

            self.cache_dir = Path(platformdirs.user_cache_dir("devlab")) / "snpe"
        if isinstance(self.calibration_inputs, bool) or not isinstance(
            self.calibration_inputs, int
        ):
            raise SnpeConfigError(
                f"[snpe] calibration_inputs must be an integer, got {self.calibration_inputs!r}"
            )
        if self.calibration_inputs < 1:
            raise SnpeConfigError("[snpe] calibration_inputs must be at least 1")
        if not self.command_timeout_s or self.command_timeout_s <= 0:
            raise SnpeConfigError("[snpe] command_timeout_s must be a positive number of seconds")

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any] | None) -> SnpeConfig:
        """From ``config.raw['snpe']``; SnpeConfigError naming the setting that is missing or
        malformed (``sdk`` is the one required setting)."""
        if raw is None:
            raise SnpeConfigError(NO_SDK)
        if not isinstance(raw, Mapping):
            raise SnpeConfigError('[snpe] must be a table of settings, e.g. sdk = "/opt/snpe"')
        unknown = sorted(set(raw) - set(_KNOWN_SETTINGS))
        if unknown:
            raise SnpeConfigError(
                f"[snpe]: unknown setting(s) {', '.join(unknown)}; known: "
                f"{', '.join(_KNOWN_SETTINGS)}"
            )
        if not raw.get("sdk"):
            raise SnpeConfigError(NO_SDK)
        values: dict[str, Any] = {}
        for name in ("sdk", "host_bin", "device_bin", "device_lib", "dsp_lib", "cache_dir"):
            if name in raw:
                if not isinstance(raw[name], str | os.PathLike) or not str(raw[name]):
                    raise SnpeConfigError(f"[snpe] {name} must be a path, got {raw[name]!r}")
                values[name] = Path(raw[name])
        if "calibration_inputs" in raw:
            values["calibration_inputs"] = raw["calibration_inputs"]
        if "command_timeout_s" in raw:
            timeout = raw["command_timeout_s"]
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise SnpeConfigError(f"[snpe] command_timeout_s must be a number, got {timeout!r}")
            values["command_timeout_s"] = float(timeout)
        return cls(**values)

    # -- checks ----------------------------------------------------------------------------

    def _where(self, name: str) -> str:
        return f"[snpe] {name}" if name in self._given else f"[snpe] {name} (default from sdk)"

    def check_sdk(self) -> None:
        if not self.sdk.is_dir():
            raise SnpeConfigError(
                f"[snpe] sdk = {str(self.sdk)!r}: no such folder; set it to the SNPE SDK root "
                "(the folder with bin/ and lib/)"
            )

    def host_tool(self, name: str) -> Path:
        """The host tool ``name`` in ``host_bin``; SnpeConfigError if it is not there."""
        self.check_sdk()
        assert self.host_bin is not None
        path = self.host_bin / name
        if not path.is_file() or not os.access(path, os.X_OK):
            raise SnpeConfigError(
                f"{self._where('host_bin')} = {str(self.host_bin)!r} has no executable {name}; "
                f"set [snpe] host_bin to the SDK's bin/{HOST_ARCH}"
            )
        return path

    def check(self, runtime: str) -> None:
        """Everything a job on ``runtime`` (CPU/GPU/GPU_FP16/DSP) needs is where it is named."""
        self.check_sdk()
        tools = [CONVERTER, DIAGVIEW] + ([QUANTIZER] if runtime == "DSP" else [])
        for tool in tools:
            self.host_tool(tool)
        assert self.device_bin is not None and self.device_lib is not None
        if not self.device_bin.is_file():
            raise SnpeConfigError(
                f"{self._where('device_bin')} = {str(self.device_bin)!r}: no such file; set "
                f"[snpe] device_bin to the SDK's bin/{DEVICE_ARCH}/{NET_RUN}"
            )
        if not self.device_lib.is_dir():
            raise SnpeConfigError(
                f"{self._where('device_lib')} = {str(self.device_lib)!r}: no such folder; set "
                f"[snpe] device_lib to the SDK's lib/{DEVICE_ARCH}"
            )
        if runtime == "DSP" and (self.dsp_lib is None or not self.dsp_lib.is_dir()):
            shown = f" = {str(self.dsp_lib)!r}: no such folder" if self.dsp_lib else " is not set"
            raise SnpeConfigError(
                f"the DSP runtime needs the Hexagon skel libraries: [snpe] dsp_lib{shown}; set "
                "it to the SDK's lib/dsp (1.x) or lib/hexagon-vNN/unsigned (2.x, NN = the "
                "phone's Hexagon version)"
            )

    def cache_folder(self, kind: str) -> Path:
        assert self.cache_dir is not None
        folder = self.cache_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def sdk_tag(self) -> str:
        """A short tag of the SDK (its resolved root) for cache names."""
        return hashlib.sha256(str(self.sdk.resolve()).encode()).hexdigest()[:8]


def load_snpe_config(raw_config: Mapping[str, Any]) -> SnpeConfig | None:
    """The ``[snpe]`` table of a whole raw config as SnpeConfig, or None when there is none."""
    table = raw_config.get("snpe")
    return None if table is None else SnpeConfig.from_raw(table)


def snpe_runtimes(config: SnpeConfig | None) -> list[str]:
    """The job runtimes to advertise for phones: none without an SDK; DSP only with
    skel libraries (``dsp_lib``)."""
    if config is None:
        return []
    return [
        name
        for name, runtime in SNPE_RUNTIMES.items()
        if runtime != "DSP" or (config.dsp_lib is not None and config.dsp_lib.is_dir())
    ]


# --------------------------------------------------------------------------- host side

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_DIGESTS: dict[tuple[str, int, int], str] = {}


@contextlib.contextmanager
def _locked(key: Path) -> Iterator[None]:
    """One conversion per output file at a time in this process (other workers wait)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(key), threading.Lock())
    with lock:
        yield


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so SDK libraries hash once."""
    info = os.stat(path)
    key = (os.fspath(path), info.st_size, info.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def check_clip_ranges(path: str | os.PathLike[str] | None) -> Path | None:
    """``path`` checked with :func:`load_clip_ranges`; BenchError naming the file otherwise."""
    if path is None or path == "":
        return None
    where = Path(path).expanduser()
    if not where.is_file():
        raise BenchError(f"clip-range JSON {str(where)!r}: no such file")
    try:
        load_clip_ranges(where)
    except ClipRangesError as error:
        raise BenchError(f"bad clip-range JSON (--quantization_overrides): {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise BenchError(f"clip-range JSON {str(where)!r}: unreadable ({error})") from error
    return where


def _digest_of(path: Path | None) -> str:
    return file_sha256(path)[:16] if path is not None else "noclip"


def _partial(target: Path) -> Path:
    """A unique temporary name next to ``target`` that keeps its suffix (tools check it)."""
    return target.with_name(f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def _run_host(argv: Sequence[str], label: str, timeout_s: float) -> subprocess.CompletedProcess:
    """Run a host tool; BenchError (quoting its last lines) when it cannot run or fails."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(
            f"{label}: {Path(argv[0]).name} did not finish within {timeout_s:g} s "
            "([snpe] command_timeout_s)"
        ) from error
    except OSError as error:
        raise BenchError(f"{label}: {argv[0]} could not run: {error}") from error
    if done.returncode != 0:
        lines = [line for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
        raise BenchError(
            f"{label}: {Path(argv[0]).name} failed (exit {done.returncode}): "
            + " | ".join(lines[-4:])
        )
    return done


def input_specs(model: Model) -> list[tuple[str, list[int]]]:
    """``(name, shape)`` of each model input (dynamic dimensions are 1): from the Model record,
    or read from the ONNX file when the record has none."""
    if model.inputs:
        return [(i.name, [d if d and d > 0 else 1 for d in i.shape]) for i in model.inputs]
    import onnx

    try:
        graph = onnx.load(model.path, load_external_data=False).graph
    except Exception as error:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise BenchError(f"{model.path}: cannot read the model's inputs: {error}") from error
    params = {tensor.name for tensor in graph.initializer}
    return [
        (
            value.name,
            [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim],
        )
        for value in graph.input
        if value.name not in params
    ]


def raw_output_name(output: str) -> str:
    """The file snpe-net-run writes an output to inside ``Result_N/``."""
    return (output.replace("/", "_").replace(":", "_") or "output") + ".raw"


def random_raw(shape: Sequence[int], seed: int) -> bytes:
    """float32 random normal values in SNPE's raw format (the bytes of the array)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(int(np.prod(shape)) if shape else 1).astype(np.float32).tobytes()


def input_list_line(paths: Mapping[str, str]) -> str:
    """One input-list line: the path for one input, ``name:=path …`` for several."""
    if len(paths) == 1:
        return next(iter(paths.values()))
    return " ".join(f"{name}:={path}" for name, path in paths.items())


def _seed(model: Model, index: int) -> int:
    return (int(model.sha256[:8], 16) if model.sha256 else 0) + index


def convert_to_dlc(
    config: SnpeConfig, model: Model, overrides: str | os.PathLike[str] | None = None
) -> Path:
    """The model as a DLC, made with ``snpe-onnx-to-dlc`` on the host (with
    ``--quantization_overrides`` when clip ranges are given, checked first); cached in
    ``<cache_dir>/dlc`` by model sha256 + clip-range hash + SDK."""
    tool = config.host_tool(CONVERTER)
    clip = check_clip_ranges(overrides)
    if not Path(model.path).is_file():
        raise BenchError(f"{model.path}: no such model file")
    folder = config.cache_folder("dlc")
    target = folder / f"{model.sha256}-{_digest_of(clip)}-{config.sdk_tag}.dlc"
    with _locked(target):
        if target.is_file() and target.stat().st_size > 0:
            return target
        partial = _partial(target)
        argv = build_onnx_to_dlc_command(
            tool.parent, model.path, partial, clip, check_overrides=False
        )
        try:
            _run_host(argv, f"{model.path}: conversion to DLC", config.command_timeout_s)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise BenchError(f"{model.path}: {CONVERTER} wrote no DLC at {partial}")
            os.replace(partial, target)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
    return target


def calibration_list(config: SnpeConfig, model: Model) -> Path:
    """``config.calibration_inputs`` random float32 raw inputs for the model and their input
    list (host paths), in ``<cache_dir>/calibration/``; made once per model."""
    count = config.calibration_inputs
    folder = config.cache_folder("calibration") / f"{model.sha256[:16]}-{count}"
    listing = folder / "input_list.txt"
    if listing.is_file():
        return listing
    folder.mkdir(parents=True, exist_ok=True)
    specs = input_specs(model)
    lines = []
    for index in range(count):
        paths = {}
        for position, (name, shape) in enumerate(specs):
            raw = folder / f"input_{index}_{position}.raw"
            raw.write_bytes(random_raw(shape, _seed(model, 1000 + index * 64 + position)))
            paths[name] = str(raw.resolve())
        lines.append(input_list_line(paths))
    partial = _partial(listing)
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, listing)
    return listing


def quantize_dlc(
    config: SnpeConfig,
    dlc: str | os.PathLike[str],
    model: Model,
    overrides: str | os.PathLike[str] | None = None,
) -> Path:
    """A quantized DLC for the DSP runtime, made with ``snpe-dlc-quantize`` on the host from a
    small random calibration list; with clip ranges (checked first) ``--override_params`` keeps
    the encodings given to the converter. Cached by DLC content + clip ranges + options."""
    tool = config.host_tool(QUANTIZER)
    clip = check_clip_ranges(overrides)
    source = Path(dlc)
    if not source.is_file():
        raise BenchError(f"{source}: no such DLC to quantize")
    options = f"{file_sha256(source)}|{_digest_of(clip)}|{config.calibration_inputs}|bias32"
    key = hashlib.sha256(options.encode()).hexdigest()[:16]
    target = config.cache_folder("dlc") / f"{model.sha256}-q{key}.dlc"
    with _locked(target):
        if target.is_file() and target.stat().st_size > 0:
            return target
        listing = calibration_list(config, model)
        partial = _partial(target)
        argv = build_quantize_command(
            tool.parent,
            source,
            listing,
            partial,
            override_params=clip is not None,
            bias_bitwidth=32,
        )
        try:
            _run_host(argv, f"{model.path}: DLC quantization", config.command_timeout_s)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise BenchError(f"{model.path}: {QUANTIZER} wrote no DLC at {partial}")
            os.replace(partial, target)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
    return target


# --------------------------------------------------------------------------- phone side


@dataclass
class _Pass:
    """One snpe-net-run whose log was decoded."""

    run: ToolRun
    count: int
    log_path: Path
    report_path: Path


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
            data = random_raw(shape, _seed(self.model, position))
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

    def _net_run(self, input_list: str, output_dir: str, profiling_level: str) -> None:
        """One snpe-net-run on the phone; a non-zero exit is a BenchError with its last lines."""
        argv = self.net_run_argv(input_list, output_dir, profiling_level)
        result = self.adb.shell2(shlex.join(argv), timeout=self.config.command_timeout_s)
        if result.returncode != 0:
            lines = [line for line in result.output.splitlines() if line.strip()]
            raise BenchError(
                f"{self.device_id}: {NET_RUN} failed (exit {result.returncode}): "
                + " | ".join(lines[-4:])
            )

    def _execute(self, count: int, profiling_level: str) -> _Pass:
        """Run snpe-net-run over ``count`` input lines, pull and decode its diag log."""
        output_dir = self._next_output_dir()
        local_log = self._tmp / f"SNPEDiag-{self._passes}.log"
        try:
            with self._on_phone("running snpe-net-run"):
                self._net_run(self._input_list(count), output_dir, profiling_level)
                name = self._find_log(output_dir)
                if name is None:
                    raise BenchError(
                        f"{self.device_id}: {NET_RUN} wrote no SNPEDiag log in {output_dir}"
                    )
                self.adb.sync.pull(f"{output_dir}/{name}", str(local_log))
        finally:
            with contextlib.suppress(*VANISHED):
                self.adb.shell(shlex.join(["rm", "-rf", output_dir]), timeout=30)
        tool = self.config.host_tool(DIAGVIEW)
        argv = build_diagview_command(str(tool), str(local_log))
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.config.command_timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BenchError(f"{DIAGVIEW} could not decode {local_log}: {error}") from error
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
        return _Pass(run, count, local_log, report)

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
        done = self._execute(runs, "basic")
        total = done.run.total_inference
        if not total or total.get("mean") is None:
            raise BenchError(f"{DIAGVIEW} printed no Total Inference Time; not understood")
        summary = _stats(runs, total["mean"], total["mean"], total["mean"])
        on_iteration(summary.count, [])
        return Timed([], summary=summary)

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs for ``feeds`` as the phone computes them (output parity): one
        input line of float32 raw files, then ``Result_0/<output>.raw`` pulled back. SNPE
        writes every output as float32 and names the file after the output with ``/`` and
        ``:`` replaced by ``_``; each is reshaped to the ONNX output's shape when it fits."""
        paths: dict[str, str] = {}
        for position, (name, shape) in enumerate(input_specs(self.model)):
            if name not in feeds:
                raise BenchError(f"{self.model.path}: the parity input has no {name!r}")
            data = np.asarray(feeds[name], dtype=np.float32).reshape(shape).tobytes()
            paths[name] = self._push_raw(data, f"parity_{position}")
        output_dir = self._next_output_dir()
        pulled = self._tmp / f"outputs-{self._passes}"
        pulled.mkdir()
        wanted = graph_output_specs(self.model)
        try:
            with self._on_phone("reading the model's outputs"):
                input_list = self._push_list([input_list_line(paths)], "parity")
                self._net_run(input_list, output_dir, "off")
                written = {entry.path for entry in self.adb.sync.list(f"{output_dir}/Result_0")}
                for name, _ in wanted:
                    file = raw_output_name(name)
                    if file not in written:
                        raise BenchError(
                            f"{self.device_id}: {NET_RUN} wrote no {file} for output {name!r} "
                            f"(found: {', '.join(sorted(written - {'.', '..'})) or 'nothing'})"
                        )
                    self.adb.sync.pull(f"{output_dir}/Result_0/{file}", str(pulled / file))
        finally:
            with contextlib.suppress(*VANISHED):
                self.adb.shell(shlex.join(["rm", "-rf", output_dir]), timeout=30)
        values = []
        for name, shape in wanted:
            flat = np.fromfile(pulled / raw_output_name(name), dtype=np.float32)
            fits = shape is not None and int(np.prod(shape)) == flat.size
            values.append(flat.reshape(shape) if fits else flat)
        return values

    def profile_layers(self, iterations: int, log_dir: str) -> LayerProfile | None:
        folder = Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        passes = [self._execute(max(iterations, 1), "detailed")]
        merged = passes[0].run if len(passes) == 1 else aggregate_runs([p.run for p in passes])
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
