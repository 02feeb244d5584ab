"""The Qualcomm SNPE SDK as devlab finds it: the ``[snpe]`` config table, where each SDK tool and
library is, and which SNPE runtimes a phone can be offered.

Every problem is a :class:`SnpeConfigError` that names the setting to add or fix.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.devices.base import BenchError

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
