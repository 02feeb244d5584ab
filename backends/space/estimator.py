"""Latency estimator: whole-model latency from a table of module latencies.

The nnabla-nas recipe: sum the table latencies of an architecture's modules, then correct
the sum with one least-squares line per (device, runtime), ``measured = scale * sum + bias``,
fitted on sampled architectures that were measured whole; its accuracy is reported on
held-out points (k-fold) so it is honest.

What is summed: where the table has each module's "Forward Propagate" (its time less the
fixed per-call cost) and that "Call Overhead", the sum is the modules' forward times plus the
call cost once, which is what a whole model pays; summing the modules' total times instead
counts the call cost once per module (raw sums then run 10-30 % high on small modules).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from backends.space.measurements import (
    CALL_KEY,
    FORWARD_KEY,
    LAYERS_KEY,
    NORMALISED_STAT,
    RESULT_COLUMNS,
    STATS,
    TOTAL_KEY,
    EstimatorError,
    LatencyTable,
    SampledMeasurement,
    few,
    model_module_uids,
    read_latency_table,
    read_sampled,
    read_text,
)
from backends.space.modules import GRANULARITIES, arch_module_uids
from backends.space.spec import Space, load_space

# Re-exported: reading the inputs is part of the estimator's API.
__all__ = [
    "FORWARD_KEY",
    "LAYERS_KEY",
    "RESULT_COLUMNS",
    "STATS",
    "TOTAL_KEY",
    "Accuracy",
    "Estimator",
    "EstimatorError",
    "Fit",
    "LatencyTable",
    "Point",
    "Report",
    "SampledMeasurement",
    "accuracy",
    "fit_estimator",
    "heldout_predictions",
    "least_squares",
    "model_module_uids",
    "read_latency_table",
    "read_sampled",
]

FORMAT_VERSION = 1
MIN_POINTS = 3
LOO_BELOW = 10  # fewer points than this: leave-one-out instead of k-fold

# --- fitting ---------------------------------------------------------------------------------


@dataclass
class Accuracy:
    """How close predictions are to measurements (APE: absolute percentage error)."""

    n: int
    rmse_us: float
    mape_pct: float
    max_ape_pct: float
    within5_pct: float
    within10_pct: float


@dataclass
class Report:
    """Held-out accuracy (the honest number), the in-sample fit, and the unfitted sum."""

    n: int
    evaluation: str
    folds: int
    heldout: Accuracy
    in_sample: Accuracy
    raw_sum: Accuracy


@dataclass
class Point:
    """One sampled architecture in the fit: measured, summed, and both predictions."""

    name: str
    measured_us: float
    accumulated_us: float
    heldout_us: float
    fitted_us: float
    macs: int | None = None


@dataclass
class Fit:
    """The estimator of one (device, runtime): the line, its report and its module table."""

    device: str
    runtime: str
    table_runtime: str
    scale: float
    bias: float
    report: Report
    points: list[Point]
    table: dict[str, float]
    call_cost_us: float = 0.0  # added once per model to the sum of the table's values

    def predict(self, module_uids: Sequence[str]) -> float:
        missing = [uid for uid in module_uids if uid not in self.table]
        if missing:
            raise EstimatorError(
                f"{len(set(missing))} ModuleUID(s) are not in the table of {self.runtime} on "
                f"{self.device}: {few(missing)}; bench those modules "
                "(devlab space modules ...) and fit again"
            )
        summed = sum(self.table[uid] for uid in module_uids) + self.call_cost_us
        return self.scale * summed + self.bias


@dataclass
class Estimator:
    """Fits per (device, runtime) plus what they were made from; saved as one JSON file."""

    key: str
    stat: str
    granularity: str
    fits: list[Fit]
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def fit_for(self, device: str | None = None, runtime: str | None = None) -> Fit:
        """The one fit matching ``device``/``runtime`` (either may be left out if unambiguous)."""
        matches = [
            f
            for f in self.fits
            if (device is None or f.device == device) and (runtime is None or f.runtime == runtime)
        ]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(f"{f.runtime} on {f.device}" for f in self.fits) or "none"
        if not matches:
            asked = [f"device {device}"] if device else []
            asked += [f"runtime {runtime}"] if runtime else []
            raise EstimatorError(f"no fit for {', '.join(asked)}; the estimator has: {known}")
        raise EstimatorError(
            f"the estimator has several fits ({known}); choose one with --device/--runtime"
        )

    def predict(
        self, module_uids: Sequence[str], device: str | None = None, runtime: str | None = None
    ) -> float:
        """Estimated latency (us) of an architecture made of these modules."""
        return self.fit_for(device, runtime).predict(module_uids)

    def predict_model(
        self, path: str | Path, device: str | None = None, runtime: str | None = None
    ) -> float:
        """Estimate a model generated by ``devlab space`` from the ModuleUIDs it carries."""
        return self.predict(model_module_uids(path, self.granularity), device, runtime)

    def predict_arch(
        self,
        space: Space | str | Path,
        choices: Any,
        device: str | None = None,
        runtime: str | None = None,
    ) -> float:
        """Estimate an architecture of ``space`` given as block choices (e.g. ``['e6k3', ...]``)."""
        space = space if isinstance(space, Space) else load_space(space)
        arch = space.parse_arch(choices)
        return self.predict(arch_module_uids(space, arch, self.granularity), device, runtime)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": "devlab.latency_estimator",
            "created": datetime.now(tz=UTC).isoformat(),
            "key": self.key,
            "stat": self.stat,
            "granularity": self.granularity,
            "model": "measured_us = scale * (sum(table[uid] for uid in module_uids) + call_cost_us)"
            " + bias",
            "sources": self.sources,
            "warnings": self.warnings,
            "fits": [asdict(f) for f in self.fits],
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Estimator:
        path = Path(path)
        try:
            data = json.loads(read_text(path, "estimator"))
        except json.JSONDecodeError as exc:
            raise EstimatorError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise EstimatorError(
                f"{path}: not a devlab estimator (format_version {FORMAT_VERSION}); make one "
                "with devlab estimator fit"
            )
        try:
            fits = [_fit_from_dict(f) for f in data["fits"]]
            return cls(
                data["key"],
                data["stat"],
                data["granularity"],
                fits,
                list(data.get("warnings", [])),
                dict(data.get("sources", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EstimatorError(f"{path}: damaged estimator file ({exc!r})") from None


def fit_estimator(
    table: LatencyTable,
    sampled: Sequence[SampledMeasurement],
    key: str = TOTAL_KEY,
    stat: str | None = None,
    folds: int = 5,
    seed: int = 0,
    device: str | None = None,
    runtime: str | None = None,
    granularity: str | None = None,
) -> Estimator:
    """Fit ``measured = scale * accumulated + bias`` per (device, runtime) and report it.

    ``stat`` defaults to Normalised_Time (the drift-normalised median, where the reference
    canary ran), else Median_Time, else Avg_Time. ``granularity``
    defaults to the one whose ModuleUIDs the table covers. Architectures with modules missing
    from the table are left out with a warning; fewer than 3 usable points is an error.
    """
    if key not in table.latency_keys():
        raise EstimatorError(
            f"{table.source}: no '{key}' rows; the table has: {', '.join(table.latency_keys())}"
        )
    stats = table.stats(key)
    stat = stat or next(
        s for s in ("Normalised_Time", "Median_Time", "Avg_Time") if s in stats or s == "Avg_Time"
    )
    if stat not in stats:
        raise EstimatorError(
            f"{table.source}: no {stat} values for '{key}'; it has: {', '.join(stats)}"
        )
    if folds < 2:
        raise EstimatorError(f"--folds is {folds}; use 2 or more")
    if granularity is not None and granularity not in GRANULARITIES:
        raise EstimatorError(f"unknown granularity {granularity!r}; use block or op")
    chosen = [
        m
        for m in sampled
        if (device is None or m.device == device) and (runtime is None or m.runtime == runtime)
    ]
    if not chosen:
        raise EstimatorError(_nothing_sampled(sampled, device, runtime))
    warnings: list[str] = []
    groups = _groups(chosen)
    labels = _labels(table, groups, warnings)
    if not labels:
        raise EstimatorError(
            f"{table.source} has no rows for the measured devices; its runtimes: "
            f"{', '.join(table.runtime_labels())}; bench the modules on the same device"
        )
    granularity = granularity or _best_granularity(table, groups, labels, key, stat)
    fits: list[Fit] = []
    errors: list[str] = []
    for group, items in groups.items():
        if group not in labels:
            continue
        modules, call_cost = _module_values(table, labels[group], key, stat)
        try:
            fits.append(
                _fit_group(
                    group,
                    labels[group],
                    items,
                    modules,
                    key,
                    stat,
                    granularity,
                    folds,
                    seed,
                    warnings,
                    call_cost,
                )
            )
        except EstimatorError as exc:
            errors.append(str(exc))
    if not fits:  # say why: the warnings name the missing modules
        raise EstimatorError("; ".join(errors + warnings))
    warnings.extend(errors)
    return Estimator(key, stat, granularity, fits, warnings)


def _module_values(
    table: LatencyTable, label: str, key: str, stat: str
) -> tuple[dict[str, float], float]:
    """What to sum per module, and the call cost to add once per model: each module's Forward
    Propagate and the median Call Overhead where the table has both for every module of
    ``key``; else the modules' ``key`` values themselves and no call cost.

    Forward Propagate is a raw median; summed against drift-normalised totals
    (``Normalised_Time``) each module's is put on that basis by its own normalised/raw ratio,
    so that the two sides of the sum are at one pace of the host."""
    modules = table.modules(label, key, stat)
    if key != TOTAL_KEY:
        return modules, 0.0
    forward = table.modules(label, FORWARD_KEY, "Median_Time")
    calls = table.modules(label, CALL_KEY, "Median_Time")
    if not modules or not set(modules) <= set(forward) or not set(modules) <= set(calls):
        return modules, 0.0
    pace = {uid: 1.0 for uid in modules}
    if stat == NORMALISED_STAT:
        raw = table.modules(label, TOTAL_KEY, "Median_Time")
        pace = {uid: modules[uid] / raw[uid] if raw.get(uid) else 1.0 for uid in modules}
    summed = {uid: forward[uid] * pace[uid] for uid in modules}
    return summed, float(np.median(list(calls.values())))


def accuracy(measured: Sequence[float], predicted: Sequence[float]) -> Accuracy:
    """RMSE, mean and max absolute percentage error, and the shares within 5 % and 10 %."""
    y = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if y.shape != p.shape or y.size == 0:
        raise ValueError("measured and predicted must be equally long and not empty")
    ape = np.abs(p - y) / y * 100.0
    tolerance = 1e-9  # 5.0 % exactly counts as within 5 %
    return Accuracy(
        n=int(y.size),
        rmse_us=float(np.sqrt(np.mean((p - y) ** 2))),
        mape_pct=float(np.mean(ape)),
        max_ape_pct=float(np.max(ape)),
        within5_pct=float(np.mean(ape <= 5.0 + tolerance) * 100.0),
        within10_pct=float(np.mean(ape <= 10.0 + tolerance) * 100.0),
    )


def least_squares(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Ordinary least squares ``y = scale * x + bias``; needs two distinct x values."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.size < 2 or np.ptp(xs) == 0:
        raise EstimatorError(
            "cannot fit a line: the architectures' accumulated latencies are all equal"
        )
    design = np.column_stack([xs, np.ones_like(xs)])
    (scale, bias), *_ = np.linalg.lstsq(design, ys, rcond=None)
    return float(scale), float(bias)


def heldout_predictions(
    x: Sequence[float], y: Sequence[float], folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Each point predicted by a line fitted without it: k-fold (shuffled with ``seed``), or
    leave-one-out below 10 points. Returns the predictions and the number of folds used."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    n = xs.size
    if n < MIN_POINTS:
        raise EstimatorError(f"only {n} usable point(s); a held-out check needs {MIN_POINTS}")
    k = n if n < LOO_BELOW else min(folds, n)
    order = np.random.default_rng(seed).permutation(n)
    predictions = np.empty(n)
    for held in np.array_split(order, k):
        train = np.setdiff1d(order, held)
        scale, bias = least_squares(xs[train], ys[train])
        predictions[held] = scale * xs[held] + bias
    return predictions, k


# --- helpers ---------------------------------------------------------------------------------


def _fit_group(
    group: tuple[str, str],
    label: str,
    items: list[SampledMeasurement],
    modules: dict[str, float],
    key: str,
    stat: str,
    granularity: str,
    folds: int,
    seed: int,
    warnings: list[str],
    call_cost: float = 0.0,
) -> Fit:
    device, runtime = group
    where = f"{runtime} on {device}"
    points: list[tuple[SampledMeasurement, float, float]] = []
    missing: dict[str, int] = {}
    no_uids = no_value = 0
    substituted = False
    for item in items:
        uids = item.module_uids.get(granularity)
        if not uids:
            no_uids += 1
            continue
        gaps = [uid for uid in uids if uid not in modules]
        if gaps:
            for uid in gaps:
                missing[uid] = missing.get(uid, 0) + 1
            continue
        value = item.latencies.get((key, stat))
        if value is None and (key, "Median_Time") in item.latencies:
            value, substituted = item.latencies[(key, "Median_Time")], True
        if value is None or value <= 0:
            no_value += 1
            continue
        points.append((item, value, sum(modules[uid] for uid in uids) + call_cost))
    skipped = len(items) - len(points)
    if missing:
        archs = skipped - no_uids - no_value
        warnings.append(
            f"{where}: {archs} sampled architecture(s) skipped: {len(missing)} of their "
            f"ModuleUIDs are not in the table, e.g. {few(sorted(missing))}"
        )
    if no_uids:
        warnings.append(f"{where}: {no_uids} architecture(s) have no {granularity}-level UIDs")
    if no_value:
        warnings.append(f"{where}: {no_value} architecture(s) have no '{key}' measurement")
    if substituted:
        warnings.append(
            f"{where}: results.csv has only the median of '{key}'; the measured side uses it"
        )
    if len(points) < MIN_POINTS:
        raise EstimatorError(
            f"{where}: only {len(points)} usable sampled architecture(s) of {len(items)}; the "
            f"fit needs at least {MIN_POINTS} (sample and bench more, or bench the missing "
            "modules)"
        )
    measured = [value for _, value, _ in points]
    summed = [total for _, _, total in points]
    scale, bias = least_squares(summed, measured)
    heldout, k = heldout_predictions(summed, measured, folds, seed)
    fitted = [scale * s + bias for s in summed]
    evaluation = (
        f"leave-one-out ({k} points)"
        if k == len(points)
        else f"{k}-fold cross-validation (shuffled, seed {seed})"
    )
    report = Report(
        n=len(points),
        evaluation=evaluation,
        folds=k,
        heldout=accuracy(measured, heldout),
        in_sample=accuracy(measured, fitted),
        raw_sum=accuracy(measured, summed),
    )
    return Fit(
        device=device,
        runtime=runtime,
        table_runtime=label,
        scale=scale,
        bias=bias,
        report=report,
        points=[
            Point(item.name, value, total, float(h), f, item.macs)
            for (item, value, total), h, f in zip(points, heldout, fitted, strict=True)
        ],
        table=dict(sorted(modules.items())),
        call_cost_us=call_cost,
    )


def _groups(items: Iterable[SampledMeasurement]) -> dict[tuple[str, str], list[SampledMeasurement]]:
    groups: dict[tuple[str, str], list[SampledMeasurement]] = {}
    for item in items:
        groups.setdefault((item.device, item.runtime), []).append(item)
    return groups


def _labels(
    table: LatencyTable, groups: Mapping[tuple[str, str], Any], warnings: list[str]
) -> dict[tuple[str, str], str]:
    labels: dict[tuple[str, str], str] = {}
    for device, runtime in groups:
        label = table.label_for(device, runtime)
        if label is None:
            warnings.append(
                f"{runtime} on {device}: the table has no rows for it (its runtimes: "
                f"{', '.join(table.runtime_labels())}); those measurements are left out"
            )
        else:
            labels[(device, runtime)] = label
    return labels


def _best_granularity(
    table: LatencyTable,
    groups: Mapping[tuple[str, str], list[SampledMeasurement]],
    labels: Mapping[tuple[str, str], str],
    key: str,
    stat: str,
) -> str:
    """The granularity under which the most sampled architectures are fully in the table."""
    covered = dict.fromkeys(GRANULARITIES, 0)
    for group, label in labels.items():
        modules = table.modules(label, key, stat)
        for item in groups[group]:
            for granularity in GRANULARITIES:
                uids = item.module_uids.get(granularity)
                if uids and all(uid in modules for uid in uids):
                    covered[granularity] += 1
    return max(GRANULARITIES, key=lambda g: covered[g])  # ties: block, listed first


def _nothing_sampled(
    sampled: Sequence[SampledMeasurement], device: str | None, runtime: str | None
) -> str:
    if not sampled:
        return (
            "no sampled architectures with ModuleUIDs among the done results; bench the "
            "models of 'devlab space sample' and pass that results.csv as --sampled"
        )
    have = sorted({f"{m.runtime} on {m.device}" for m in sampled})
    return f"no sampled results for {device or 'any device'} / {runtime or 'any runtime'}; " + (
        f"the results have: {', '.join(have)}"
    )


def _fit_from_dict(data: Mapping[str, Any]) -> Fit:
    report = dict(data["report"])
    for part in ("heldout", "in_sample", "raw_sum"):
        report[part] = Accuracy(**report[part])
    return Fit(
        device=data["device"],
        runtime=data["runtime"],
        table_runtime=data["table_runtime"],
        scale=float(data["scale"]),
        bias=float(data["bias"]),
        report=Report(**report),
        points=[Point(**p) for p in data.get("points", [])],
        table={str(k): float(v) for k, v in data["table"].items()},
        call_cost_us=float(data.get("call_cost_us", 0.0)),
    )
