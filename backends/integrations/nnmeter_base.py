"""Stand-ins for nn-Meter's backend base classes, used when ``nn_meter`` is not installed.

devlab's nn-Meter backend subclasses nn-Meter's own ``BaseBackend`` / ``BaseProfiler`` /
``BaseParser`` (``nn_meter/builder/backends/interface.py``) and returns its ``Latency`` and
``ProfiledResults`` (``nn_meter/builder/backend_meta/utils.py``) whenever nn-Meter is importable.
Without it (CI, a lab host that only serves devices) these equivalents keep the same calls and
the same behaviour, so the backend can be built, tested and driven exactly as nn-Meter's builder
drives it. Only what the builder touches is here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class Latency:
    """A latency in ms and its standard deviation; ``str`` is ``"avg +- std"``, which nn-Meter
    writes to its profiled-results JSON and parses back (``Latency("1.5 +- 0.1")``)."""

    def __init__(self, avg: float | str | Latency = 0, std: float = 0) -> None:
        if isinstance(avg, Latency):
            self.avg, self.std = avg.avg, avg.std
        elif isinstance(avg, str):
            mean, spread = avg.split("+-")
            self.avg, self.std = float(mean), float(spread)
        else:
            self.avg, self.std = avg, std

    def __str__(self) -> str:
        return f"{self.avg} +- {self.std}"

    def __add__(self, other: Latency | float) -> Latency:
        if isinstance(other, Latency):
            return Latency(self.avg + other.avg, math.hypot(self.std, other.std))
        return Latency(self.avg + other, self.std)

    __radd__ = __add__


class ProfiledResults:
    """Metric name -> value; ``get`` answers the asked metrics or raises for an unknown one."""

    def __init__(self, results: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(results or {})

    def set(self, metric: str, value: Any) -> None:
        self.data[metric] = value

    def get(self, metrics: str | Iterable[str]) -> dict[str, Any]:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [name for name in names if name not in self.data]
        if unknown:
            raise AttributeError(f"Unsupported metric {unknown[0]}.")
        return {name: self.data[name] for name in names}


class BaseProfiler:
    """Runs a converted model on the device; returns what the device printed."""

    def profile(self, *args: Any, **kwargs: Any) -> Any:
        return ""


class BaseParser:
    """Reads a profiler's output; ``parse`` returns the parser, ``results`` the metrics."""

    def parse(self, content: Any) -> BaseParser:
        return self

    @property
    def results(self) -> ProfiledResults:
        return ProfiledResults()


class BaseBackend:
    """The builder's view of a device: the same constructor, hooks and call chain as nn-Meter's
    (``update_configs`` fills the parser's and profiler's keyword arguments, ``profile`` is
    ``parser.parse(profiler.profile(model, **kwargs)).results.get(metrics)``)."""

    profiler_class: type | None = None
    parser_class: type | None = None

    def __init__(self, configs: dict[str, Any] | None) -> None:
        self.configs = configs
        self.update_configs()
        if self.parser_class:
            self.parser = self.parser_class(**self.parser_kwargs)
        if self.profiler_class:
            self.profiler = self.profiler_class(**self.profiler_kwargs)

    def update_configs(self) -> None:
        self.parser_kwargs: dict[str, Any] = {}
        self.profiler_kwargs: dict[str, Any] = {}

    def convert_model(
        self, model_path: str, save_path: str, input_shape: list[list[int]] | None = None
    ) -> str:
        return model_path

    def profile(
        self, converted_model: str, metrics: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        content = self.profiler.profile(converted_model, **kwargs)
        return self.parser.parse(content).results.get(metrics or ["latency"])

    def profile_model_file(
        self,
        model_path: str,
        save_path: str,
        input_shape: list[list[int]] | None = None,
        metrics: list[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        converted = self.convert_model(model_path, save_path, input_shape)
        return self.profile(converted, metrics or ["latency"], input_shape=input_shape, **kwargs)

    def test_connection(self) -> None:
        pass
