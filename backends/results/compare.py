"""Compare two results tables model by model: B against A, with the noise taken into account.

A and B are results tables as ``backends.results.tables.write_results`` writes them (results.json,
results.csv or results.parquet, or the ``--out`` folder holding one). Rows are paired by
(model_sha256, device, runtime); rows left over are paired by (model name, device, runtime),
and then the model file is marked as differing. ``delta_pct`` is ``(B - A) / A``.

The verdict rule (``verdict``):
1. When both rows carry an interval, they are "indistinguishable" if the intervals overlap:
   ``|B - A| <= hA x A + hB x B``, h the relative half-widths. The interval is the row's own
   (``ci_half_width_pct``, or ``ci_low_us``/``ci_high_us``), else the round-level bootstrap
   (``backends.measure.precision.median_ci``) of its round medians (``round_medians_us``, or
   ``iterations.csv`` beside the table) when the job ran two rounds or more.
2. Otherwise "indistinguishable" if ``|delta| <= max(threshold_pct, nA + nB)``, n the 95%
   noise of each median from its iterations (``1.96 x 1.2533 x cv / sqrt(count)``, the
   standard error of a median). The threshold (default 5%) stands for what iteration noise
   misses: with one session at a time, medians of two passes disagree by up to +-5%.
3. Else "faster" (B below A) or "slower".

The headline compared is ``normalised_median_us`` (drift-normalised) when both rows have it,
else ``median_us``. Conditions compared: the model file, tool and tool_version, every
``settings.*`` and ``device_properties.*`` column, and ``conditions_start.*`` /
``conditions_end.*`` beyond a small tolerance (``condition_tolerance``).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backends.core.extras import MissingExtra, require
from backends.measure.precision import median_ci

RESULT_FILES: tuple[str, ...] = ("results.json", "results.csv", "results.parquet")
REQUIRED_COLUMNS: tuple[str, ...] = ("model", "median_us")
DEFAULT_THRESHOLD_PCT = 5.0
MEDIAN_SE_FACTOR = 1.2533  # standard error of a median = this x sigma / sqrt(n), normal data
Z95 = 1.96

FASTER = "faster"
SLOWER = "slower"
INDISTINGUISHABLE = "indistinguishable"
NOT_COMPARABLE = "not comparable"

_CONDITION_PREFIXES = ("settings.", "device_properties.", "conditions_start.", "conditions_end.")
_TOLERANT_PREFIXES = ("conditions_start.", "conditions_end.")
_EXACT_COLUMNS = ("model_sha256", "tool", "tool_version")


class CompareError(ValueError):
    """A path that is not a results table, with what to give instead."""


@dataclass
class ResultsTable:
    """The flat rows of one results table and the round medians found beside it."""

    path: Path
    rows: list[dict[str, Any]]
    columns: set[str]
    round_medians: dict[str, list[float]] = field(default_factory=dict)  # job_id -> rounds


@dataclass
class Side:
    """One row's numbers as the comparison uses them."""

    value_us: float | None
    half_width_pct: float | None  # relative 95% half-width
    noise_source: str  # "ci", "rounds", "cv" or "none"
    status: str | None
    flags: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """One model on one device and runtime, measured in both A and B."""

    model: str
    device: str
    runtime: str
    basis: str  # "normalised_median_us" or "median_us"
    a_us: float | None
    b_us: float | None
    delta_pct: float | None
    verdict: str
    rule: str  # which part of the rule decided, with its figures
    a_half_width_pct: float | None
    b_half_width_pct: float | None
    noise_source: str
    conditions_differ: list[str] = field(default_factory=list)  # "column: a -> b"
    flags: list[str] = field(default_factory=list)  # "A drifting", "B outputs differ", ...

    @property
    def conditions_differ_names(self) -> list[str]:
        return [item.split(":", 1)[0] for item in self.conditions_differ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Unmatched:
    """A row only one side has."""

    side: str  # "A" or "B"
    model: str
    device: str
    runtime: str
    status: str | None
    median_us: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompareReport:
    a: str
    b: str
    threshold_pct: float
    rows: list[Comparison]
    only_in_a: list[Unmatched]
    only_in_b: list[Unmatched]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {FASTER: 0, SLOWER: 0, INDISTINGUISHABLE: 0, NOT_COMPARABLE: 0}
        for row in self.rows:
            counts[row.verdict] += 1
        counts["conditions_differ"] = sum(1 for row in self.rows if row.conditions_differ)
        counts["only_in_a"] = len(self.only_in_a)
        counts["only_in_b"] = len(self.only_in_b)
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "threshold_pct": self.threshold_pct,
            "delta": "(B - A) / A, in percent",
            "rows": [row.to_dict() for row in self.rows],
            "only_in_a": [row.to_dict() for row in self.only_in_a],
            "only_in_b": [row.to_dict() for row in self.only_in_b],
            "notes": self.notes,
            "summary": self.counts(),
        }


# --- reading -------------------------------------------------------------------------------


def load_results(path: str | Path) -> ResultsTable:
    """Read a results table (a file or the folder holding one); CompareError says what's wrong."""
    given = Path(path)
    if not given.exists():
        raise CompareError(
            f"{given}: no such file or folder; give a results.csv or results.json written by "
            "devlab --run, or the --out folder that holds it"
        )
    file = _results_file(given)
    rows = _read_rows(file)
    columns = set().union(*(row.keys() for row in rows)) if rows else set()
    missing = [c for c in REQUIRED_COLUMNS if c not in columns] if rows else []
    if missing:
        raise CompareError(
            f"{file}: not a devlab results table (no {', '.join(missing)} column); give a "
            "results.csv or results.json written by devlab --run, or its --out folder"
        )
    return ResultsTable(file, rows, columns, _round_medians(file.parent / "iterations.csv"))


def _results_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in RESULT_FILES:
        if (path / name).is_file():
            return path / name
    raise CompareError(
        f"{path}: no {', '.join(RESULT_FILES)} in this folder; give the --out folder of a "
        "devlab --run, or the results file itself"
    )


def _read_rows(file: Path) -> list[dict[str, Any]]:
    """Flat rows (``settings.runs`` etc.), NaN as None, whatever the format."""
    suffix = file.suffix.lower()
    try:
        if suffix == ".json":
            with open(file, encoding="utf-8") as handle:
                data = json.load(handle)
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise CompareError(
                    f"{file}: not a devlab results table (expected a JSON list of rows, as "
                    "results.json holds)"
                )
            frame = pd.json_normalize(data, sep=".") if data else pd.DataFrame()
        elif suffix == ".csv":  # as text: pandas would read tool_version 1.10 as 1.1
            frame = pd.read_csv(file, dtype=str)
        elif suffix == ".parquet":
            require("pyarrow", "parquet", "Parquet files")  # what pandas reads Parquet with
            frame = pd.read_parquet(file)
        else:
            raise CompareError(
                f"{file}: not a results table (expected .csv, .json or .parquet); give a "
                "results.csv or results.json written by devlab --run, or its --out folder"
            )
    except (CompareError, MissingExtra):
        raise
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CompareError(
            f"{file}: cannot be read as a results table ({_first_line(error)}); give a "
            "results.csv or results.json written by devlab --run, or its --out folder"
        ) from None
    except Exception as error:  # pandas/pyarrow parser errors have many types
        raise CompareError(f"{file}: cannot be read as a results table ({error})") from None
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _round_medians(iterations: Path) -> dict[str, list[float]]:
    """job_id -> median of each round, from iterations.csv (empty when absent or unreadable)."""
    if not iterations.is_file():
        return {}
    rounds: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    try:
        with open(iterations, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                rounds[row["job_id"]][int(row["round"])].append(float(row["latency_us"]))
    except (OSError, KeyError, ValueError, TypeError):
        return {}
    return {
        job: [_median(values) for _, values in sorted(by_round.items())]
        for job, by_round in rounds.items()
    }


# --- comparing -----------------------------------------------------------------------------


def compare_tables(
    a: ResultsTable,
    b: ResultsTable,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    raw: bool = False,
) -> CompareReport:
    """Pair the rows of A and B and judge every pair (see the module docstring for the rule)."""
    if threshold_pct < 0:
        raise CompareError(f"the threshold must be >= 0, not {threshold_pct}")
    notes: list[str] = []
    rows_a = _latest_per_key(a, "A", notes)
    rows_b = _latest_per_key(b, "B", notes)
    pairs, only_a, only_b = _pair(rows_a, rows_b)
    shared = a.columns & b.columns
    comparisons = [_compare_pair(ra, rb, a, b, shared, threshold_pct, raw) for ra, rb in pairs]
    return CompareReport(
        str(a.path),
        str(b.path),
        threshold_pct,
        comparisons,
        [_unmatched("A", row) for row in only_a],
        [_unmatched("B", row) for row in only_b],
        notes,
    )


def _key(row: Mapping[str, Any], by_sha: bool) -> tuple[str, str, str] | None:
    ident = row.get("model_sha256") if by_sha else row.get("model")
    if ident is None:
        return None
    return (str(ident), str(row.get("device")), str(row.get("runtime")))


def _latest_per_key(table: ResultsTable, side: str, notes: list[str]) -> list[dict[str, Any]]:
    """One row per model, device and runtime: a measured one first, then the latest."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in table.rows:
        key = _key(row, by_sha=True) or _key(row, by_sha=False)
        if key is not None:
            groups[key].append(row)
    chosen = []
    for rows in groups.values():
        best = max(
            rows, key=lambda r: (_number(r.get("median_us")) is not None, str(r.get("finished_at")))
        )
        if len(rows) > 1:
            notes.append(
                f"{side}: {len(rows)} rows for {best.get('model')} on {best.get('device')}/"
                f"{best.get('runtime')}; compared the latest measured one"
            )
        chosen.append(best)
    return chosen


def _pair(
    rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[dict], list[dict]]:
    """Pairs by (sha256, device, runtime), then by (name, device, runtime); then the rest."""
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    left_a, left_b = list(rows_a), list(rows_b)
    for by_sha in (True, False):
        index: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in left_b:
            key = _key(row, by_sha)
            if key is not None:
                index.setdefault(key, row)
        still_a = []
        for row in left_a:
            key = _key(row, by_sha)
            match = index.pop(key, None) if key is not None else None
            if match is None:
                still_a.append(row)
            else:
                pairs.append((row, match))
                left_b = [r for r in left_b if r is not match]
        left_a = still_a
    return pairs, left_a, left_b


def _unmatched(side: str, row: Mapping[str, Any]) -> Unmatched:
    return Unmatched(
        side,
        str(row.get("model")),
        str(row.get("device")),
        str(row.get("runtime")),
        row.get("status"),
        _number(row.get("median_us")),
    )


def _compare_pair(
    ra: dict[str, Any],
    rb: dict[str, Any],
    a: ResultsTable,
    b: ResultsTable,
    shared: set[str],
    threshold_pct: float,
    raw: bool,
) -> Comparison:
    basis = "median_us"
    if not raw and all(_number(r.get("normalised_median_us")) for r in (ra, rb)):
        basis = "normalised_median_us"
    side_a = _side(ra, a, basis, "A")
    side_b = _side(rb, b, basis, "B")
    verdict, rule, delta, source = judge(side_a, side_b, threshold_pct)
    differ = conditions_differ(ra, rb, shared)
    return Comparison(
        model=str(rb.get("model")),
        device=str(rb.get("device")),
        runtime=str(rb.get("runtime")),
        basis=basis,
        a_us=side_a.value_us,
        b_us=side_b.value_us,
        delta_pct=delta,
        verdict=verdict,
        rule=rule,
        a_half_width_pct=side_a.half_width_pct,
        b_half_width_pct=side_b.half_width_pct,
        noise_source=source,
        conditions_differ=differ,
        flags=side_a.flags + side_b.flags,
    )


def _side(row: Mapping[str, Any], table: ResultsTable, basis: str, name: str) -> Side:
    """The value, its noise and its flags for one row."""
    value = _number(row.get(basis))
    half, source = _row_interval(row, table)
    if half is None:
        half, source = _cv_noise(row), "cv"
        if half is None:
            source = "none"
    flags = []
    if _truthy(row.get("drifting")):
        flags.append(f"{name} drifting")
    if _falsy(row.get("parity_ok")):
        flags.append(f"{name} outputs differ")
    if _falsy(row.get("converged")):
        flags.append(f"{name} not converged")
    return Side(value, half, source, row.get("status"), flags)


def _row_interval(row: Mapping[str, Any], table: ResultsTable) -> tuple[float | None, str]:
    """Relative 95% half-width from the row's own interval, else from its round medians."""
    half = _number(row.get("ci_half_width_pct"))
    if half is not None and math.isfinite(half):
        return half, "ci"
    low, high = _number(row.get("ci_low_us")), _number(row.get("ci_high_us"))
    centre = _number(row.get("median_us"))
    if low is not None and high is not None and centre:
        return 100.0 * max(centre - low, high - centre) / centre, "ci"
    rounds = _round_list(row.get("round_medians_us"))
    if not rounds:
        rounds = table.round_medians.get(str(row.get("job_id")), [])
    if len(rounds) >= 2 and all(r > 0 for r in rounds):
        interval = median_ci(rounds)
        if interval.finite:
            return interval.half_width_pct, "rounds"
    return None, "none"


def _round_list(value: Any) -> list[float]:
    """A row's round medians: a list (JSON table) or its JSON text (CSV table)."""
    value = _plain(value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, list):
        return []
    numbers = [_number(v) for v in value]
    return [v for v in numbers if v is not None] if None not in numbers else []


def _cv_noise(row: Mapping[str, Any]) -> float | None:
    """95% half-width of a median from iteration scatter alone (misses bursts: a floor)."""
    cv, count = _number(row.get("cv")), _number(row.get("count"))
    if cv is None or not count or count < 2:
        return None
    return 100.0 * Z95 * MEDIAN_SE_FACTOR * cv / math.sqrt(count)


def judge(a: Side, b: Side, threshold_pct: float) -> tuple[str, str, float | None, str]:
    """(verdict, rule text, delta %, noise source) for one pair of sides."""
    if a.value_us is None or b.value_us is None or a.value_us <= 0:
        missing = [n for n, s in (("A", a), ("B", b)) if s.value_us is None or s.value_us <= 0]
        statuses = {"A": a.status, "B": b.status}
        text = ", ".join(f"{n} {statuses[n] or 'has no median'}" for n in missing)
        return NOT_COMPARABLE, f"no latency: {text}", None, "none"
    delta = 100.0 * (b.value_us - a.value_us) / a.value_us
    direction = FASTER if delta < 0 else SLOWER
    interval_sources = {"ci", "rounds"}
    if a.noise_source in interval_sources and b.noise_source in interval_sources:
        assert a.half_width_pct is not None and b.half_width_pct is not None
        reach = a.half_width_pct / 100 * a.value_us + b.half_width_pct / 100 * b.value_us
        gap = abs(b.value_us - a.value_us)
        source = "+".join(sorted({a.noise_source, b.noise_source}))
        if gap <= reach:
            rule = f"intervals overlap (A +-{a.half_width_pct:.2f}%, B +-{b.half_width_pct:.2f}%)"
            return INDISTINGUISHABLE, rule, delta, source
        rule = f"intervals apart (A +-{a.half_width_pct:.2f}%, B +-{b.half_width_pct:.2f}%)"
        return direction, rule, delta, source
    noise = (a.half_width_pct or 0.0) + (b.half_width_pct or 0.0)
    band = max(threshold_pct, noise)
    source = "threshold" if threshold_pct >= noise else "cv"
    if abs(delta) <= band:
        return INDISTINGUISHABLE, f"|delta| {abs(delta):.2f}% <= noise {band:.2f}%", delta, source
    return direction, f"|delta| {abs(delta):.2f}% > noise {band:.2f}%", delta, source


# --- conditions ----------------------------------------------------------------------------


def conditions_differ(
    ra: Mapping[str, Any], rb: Mapping[str, Any], columns: Iterable[str]
) -> list[str]:
    """``"column: a -> b"`` for each recorded condition the two rows disagree on."""
    differ = []
    for column in sorted(columns):
        if column not in _EXACT_COLUMNS and not column.startswith(_CONDITION_PREFIXES):
            continue
        va, vb = _canonical(ra.get(column)), _canonical(rb.get(column))
        if column in _EXACT_COLUMNS:  # identities and versions: as text, never as numbers
            va, vb = _text(ra.get(column)), _text(rb.get(column))
            same = va == vb
        elif column.startswith(_TOLERANT_PREFIXES):
            same = _within_tolerance(column, va, vb)
        else:
            same = _equal(va, vb)
        if not same:
            differ.append(f"{column}: {_shown(column, va)} -> {_shown(column, vb)}")
    return differ


def condition_tolerance(column: str, a: float, b: float) -> float:
    """How far a recorded condition may move and still count as the same.

    Temperatures (``*temp*``, ``thermal*``, ``*_c``): 3 degrees C. Load averages: 0.5 or 25%,
    the larger. Battery level: 10 points. Anything else numeric: 10%.
    """
    name = column.split(".", 1)[-1].lower()
    if "temp" in name or "thermal" in name or name.endswith("_c"):
        return 3.0
    if "load" in name:
        return max(0.5, 0.25 * max(abs(a), abs(b)))
    if "level" in name:
        return 10.0
    return 0.10 * max(abs(a), abs(b))


def _within_tolerance(column: str, a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= condition_tolerance(column, a, b)
    return _equal(a, b)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _canonical(value: Any) -> Any:
    """One spelling per value whether it came from CSV, JSON or Parquet text."""
    value = _plain(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    text = str(value).strip()
    if text == "":
        return None
    if text in ("True", "true", "False", "false"):
        return text.lower() == "true"
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return number
    if text[:1] in "[{":
        try:
            return json.dumps(json.loads(text), sort_keys=True)
        except ValueError:
            pass
    return text


def _text(value: Any) -> str | None:
    value = _plain(value)
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _shown(column: str, value: Any) -> str:
    if column == "model_sha256" and isinstance(value, str):
        return value[:12]
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --- small helpers -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """NaN and pandas' missing markers as None; numpy scalars as Python ones."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _number(value: Any) -> float | None:
    value = _canonical(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _truthy(value: Any) -> bool:
    return _canonical(value) is True or _canonical(value) == 1.0


def _falsy(value: Any) -> bool:
    """Explicitly false (a missing value is not false: the column may be new)."""
    return _canonical(value) is False or _canonical(value) == 0.0


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
