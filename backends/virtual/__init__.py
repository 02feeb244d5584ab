"""Emulated devices that speak the real protocols, for demos and tests.

``VirtualPhone`` (alias ``VirtualAdbd``) is an adbd over TCP: the real adb server attaches to it
with ``adb connect 127.0.0.1:PORT`` and adbutils then drives it like a USB phone (shell,
shell v2, getprop, dumpsys battery, sync push/pull/stat/list, and stand-ins for
``onnxruntime_perf_test`` and ``benchmark_model`` that really run the model with ONNX Runtime).
"""

from backends.virtual.adbd import VirtualAdbd, VirtualPhone
from backends.virtual.profile import PhoneProfile, ProfileError, ThermalZone
from backends.virtual.sandbox import Sandbox, SandboxError

__all__ = [
    "PhoneProfile",
    "ProfileError",
    "Sandbox",
    "SandboxError",
    "ThermalZone",
    "VirtualAdbd",
    "VirtualPhone",
]
