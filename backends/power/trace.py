"""Power traces: streaming storage of monitor samples, energy over a window, UI downsampling.

A trace is a table with the columns ``t_s`` (wall-clock seconds, ``time.time()`` scale),
``amps``, ``volts`` and ``watts`` (= volts x amps), one row per sample, stored as CSV or as
Parquet (chosen by the file suffix: ``.parquet``/``.pq`` is Parquet, anything else CSV).

* ``TraceWriter(path)`` appends batches; it holds at most ``flush_every`` samples (default
  10,000 = 2 s at 5 kHz) in memory and then writes them as one chunk (CSV rows, or one Parquet
  row group; small chunks also keep the writers' temporaries small), so memory stays bounded
  however long the capture. CSV is appended and readable while it grows (a crash loses at most
  the unflushed chunk); a Parquet file is readable only after ``close()`` (its footer).
  CSV numbers are written with full (round-trip) precision.
* ``read_trace(path)`` -> ``pandas.DataFrame``; ``iter_trace(path)`` yields it in chunks.
* ``window_stats(path_or_df, start, end)`` -> ``(mean_w, energy_j, samples)``. The monitor
  samples at a fixed rate, so each sample stands for one sample period starting at its
  timestamp (host timestamps may be slewed slightly; the energy does not depend on that).
  ``energy_j`` integrates V x I over the parts of those periods inside [start, end); ``mean_w``
  is that energy over the measured time inside the window; ``samples`` counts the samples with
  start <= t < end. Gaps (dropped samples, a stall) are not measured time: ``energy_j`` is the
  energy of what was measured, ``mean_w * (end - start)`` an estimate that fills the gaps.
  A file is read chunk by chunk, so windows of long traces need little memory.
* ``block_noise_w(path_or_df, start, end)`` -> how much a 100 ms mean wanders there (W): the
  yardstick for whether a window drew measurably more than another.
* ``RollingPower`` keeps fixed-width buckets (default 100 ms) over a rolling window in a bounded
  deque, for plots and live numbers.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backends.core.extras import require

COLUMNS = ("t_s", "amps", "volts", "watts")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: pyarrow's pip extra and what needs it, for ``require``.
_PARQUET = ("parquet", "Parquet traces")
# pandas < 3 parses CSV floats approximately unless asked; pandas 3 is exact and deprecates the
# option
_CSV_PRECISION = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


class TraceWriter:
    """Append sample batches to a CSV or Parquet trace with bounded memory.

    ``write(batch)`` takes anything with ``t``, ``amps``, ``volts`` and ``watts`` arrays (a
    ``backends.power.monsoon.stream.SampleBatch``);
    ``write_arrays`` takes the arrays (``watts`` defaults to
    volts x amps). Not thread-safe: use it from one thread.
    """

    def __init__(self, path: str | os.PathLike[str], *, flush_every: int = 10_000) -> None:
        self.path = Path(path)
        self.flush_every = max(1, int(flush_every))
        self.samples_written = 0
        self._parquet = _is_parquet(self.path)
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._pending = 0
        self._closed = False
        self._pq_writer: Any = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._parquet:
            pa = require("pyarrow", *_PARQUET)
            pq = require("pyarrow.parquet", *_PARQUET)
            self._schema = pa.schema([(name, pa.float64()) for name in COLUMNS])
            # no dictionary encoding: it never pays for measured floats and costs memory
            self._pq_writer = pq.ParquetWriter(self.path, self._schema, use_dictionary=False)
            self._csv = None
        else:
            self._csv = open(self.path, "w", encoding="ascii", newline="")  # noqa: SIM115
            self._csv.write(",".join(COLUMNS) + "\n")
            self._csv.flush()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, batch: Any) -> None:
        self.write_arrays(batch.t, batch.amps, batch.volts, batch.watts)

    def write_arrays(
        self,
        t: np.ndarray,
        amps: np.ndarray,
        volts: np.ndarray,
        watts: np.ndarray | None = None,
    ) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: trace writer is closed")
        t = np.asarray(t, dtype=np.float64)
        amps = np.asarray(amps, dtype=np.float64)
        volts = np.asarray(volts, dtype=np.float64)
        watts = volts * amps if watts is None else np.asarray(watts, dtype=np.float64)
        if not t.size == amps.size == volts.size == watts.size:
            raise ValueError("t, amps, volts and watts must have the same length")
        if t.size == 0:
            return
        self._chunks.append((t, amps, volts, watts))
        self._pending += t.size
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered samples as one chunk."""
        if not self._chunks:
            return
        columns = {
            name: np.concatenate([chunk[i] for chunk in self._chunks])
            for i, name in enumerate(COLUMNS)
        }
        self._chunks, self._pending = [], 0
        rows = columns["t_s"].size
        if self._parquet:
            pa = require("pyarrow", *_PARQUET)
            self._pq_writer.write_table(pa.table(columns, schema=self._schema))
        else:
            assert self._csv is not None
            pd.DataFrame(columns).to_csv(self._csv, header=False, index=False)
            self._csv.flush()
        self.samples_written += rows

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._pq_writer is not None:
                self._pq_writer.close()
            if self._csv is not None:
                self._csv.close()


def iter_trace(
    path: str | os.PathLike[str], chunk_rows: int = 200_000, max_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """The trace in chunks of about ``chunk_rows`` rows (Parquet: per record batch); a CSV
    only up to ``max_rows`` (what was complete when a reader began, while a writer appends)."""
    path = Path(path)
    if _is_parquet(path):
        parquet = require("pyarrow.parquet", *_PARQUET).ParquetFile(path)
        for record_batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(COLUMNS)):
            yield record_batch.to_pandas()
        return
    with pd.read_csv(
        path, chunksize=chunk_rows, nrows=max_rows, dtype=np.float64, **_CSV_PRECISION
    ) as reader:
        for chunk in reader:
            yield chunk.dropna(subset=["t_s"])  # a line cut by a crash reads as NaN


def read_trace(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The whole trace as a DataFrame with the columns t_s, amps, volts, watts."""
    path = Path(path)
    if _is_parquet(path):
        require("pyarrow", *_PARQUET)  # what pandas reads Parquet with
        return pd.read_parquet(path, columns=list(COLUMNS))
    frame = pd.read_csv(path, dtype=np.float64, **_CSV_PRECISION)
    return frame.dropna(subset=["t_s"]).reset_index(drop=True)


def window_stats(
    source: str | os.PathLike[str] | pd.DataFrame,
    start: float,
    end: float,
    *,
    interval_s: float | None = None,
    chunk_rows: int = 200_000,
) -> tuple[float, float, int]:
    """``(mean_w, energy_j, samples)`` over [start, end) (see the module docstring).

    ``interval_s`` is the sample period (default: estimated from the first chunk's spacing).
    ``mean_w`` is NaN when no measured time falls inside the window.
    """
    if end < start:
        raise ValueError("window end before its start")
    chunks: Any = [source] if isinstance(source, pd.DataFrame) else iter_trace(source, chunk_rows)
    energy = 0.0
    covered = 0.0
    samples = 0
    period = interval_s
    for chunk in chunks:
        t = chunk["t_s"].to_numpy(dtype=np.float64)
        if t.size == 0:
            continue
        if period is None:
            period = _sample_period(t)
        samples += int(np.count_nonzero((t >= start) & (t < end)))
        if t[-1] + period <= start:
            continue
        w = chunk["watts"].to_numpy(dtype=np.float64)
        overlap = np.minimum(t + period, end) - np.maximum(t, start)
        np.maximum(overlap, 0.0, out=overlap)
        energy += float(np.dot(w, overlap))
        covered += float(overlap.sum())
        if t[-1] >= end:
            break
    mean_w = energy / covered if covered > 0 else math.nan
    return mean_w, energy, samples


def block_noise_w(
    source: str | os.PathLike[str] | pd.DataFrame, start: float, end: float, block_s: float = 0.1
) -> float:
    """How much a mean over ``block_s`` wanders in [start, end): the standard deviation of the
    window's block means (W). Block means, not samples, so the rail's slow wander (and
    correlated noise) counts; the error of a mean over T seconds is about
    ``block_noise_w * sqrt(block_s / T)``. NaN with fewer than three whole blocks."""
    frame = source if isinstance(source, pd.DataFrame) else read_window(source, start, end)
    t = frame["t_s"].to_numpy(dtype=np.float64)
    inside = (t >= start) & (t < end)
    blocks = np.floor((t[inside] - start) / block_s).astype(np.int64)
    whole = int((end - start) // block_s)
    if whole < 3:
        return math.nan
    keep = blocks < whole
    sums = np.bincount(blocks[keep], frame["watts"].to_numpy(np.float64)[inside][keep], whole)
    counts = np.bincount(blocks[keep], minlength=whole)
    means = sums[counts > 0] / counts[counts > 0]
    return float(np.std(means, ddof=1)) if means.size >= 3 else math.nan


def read_window(path: str | os.PathLike[str], start: float, end: float) -> pd.DataFrame:
    """The rows of a trace with start <= t_s < end, read chunk by chunk."""
    parts = [
        chunk[(chunk["t_s"] >= start) & (chunk["t_s"] < end)]
        for chunk in iter_trace(path)
        if chunk.size
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def _sample_period(t: np.ndarray) -> float:
    """The sample period from timestamps: the mean of the spacings within 0.5 % of the median.
    That leaves out gaps (dropped samples) and clock slews, and averages away the quantisation
    of epoch-second floats (0.24 us steps, which bias the median itself)."""
    if t.size < 2:
        return 0.0
    spacing = np.diff(t)
    median = float(np.median(spacing))
    usual = spacing[np.abs(spacing - median) <= 0.005 * median]
    return float(usual.mean()) if usual.size else median


class RollingPower:
    """Power in fixed-width buckets over a rolling window, for UIs. Memory is bounded by
    ``window_s / bucket_s`` buckets whatever the sample rate or capture length.

    Feed it with ``add(t, watts)`` (arrays in time order) or ``add_batch(batch)``.
    """

    def __init__(self, bucket_s: float = 0.1, window_s: float = 60.0) -> None:
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError("need 0 < bucket_s <= window_s")
        self.bucket_s = bucket_s
        self.window_s = window_s
        # [bucket index, sum of W, sample count, min W, max W]
        self.buckets: collections.deque[list[float]] = collections.deque(
            maxlen=math.ceil(window_s / bucket_s)
        )
        self.samples = 0
        self.latest_w: float | None = None

    def add_batch(self, batch: Any) -> None:
        self.add(batch.t, batch.watts)

    def add(self, t: np.ndarray, watts: np.ndarray) -> None:
        t = np.asarray(t, dtype=np.float64)
        watts = np.asarray(watts, dtype=np.float64)
        if watts.size == 0:
            return
        self.samples += int(watts.size)
        self.latest_w = float(watts[-1])
        index = np.floor(t / self.bucket_s).astype(np.int64)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(index)) + 1))
        sums = np.add.reduceat(watts, starts)
        mins = np.minimum.reduceat(watts, starts)
        maxs = np.maximum.reduceat(watts, starts)
        counts = np.diff(np.append(starts, watts.size))
        for key, total, count, low, high in zip(
            index[starts].tolist(),
            sums.tolist(),
            counts.tolist(),
            mins.tolist(),
            maxs.tolist(),
            strict=True,
        ):
            last = self.buckets[-1] if self.buckets else None
            if last is not None and last[0] == key:
                last[1] += total
                last[2] += count
                last[3] = min(last[3], low)
                last[4] = max(last[4], high)
            elif last is None or key > last[0]:
                self.buckets.append([key, total, count, low, high])
            # samples older than the newest bucket are ignored (out of order)

    def series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bucket start times, mean W, min W, max W) of the buckets kept, oldest first."""
        if not self.buckets:
            empty = np.empty(0)
            return empty, empty, empty, empty
        data = np.array(self.buckets, dtype=np.float64)
        return data[:, 0] * self.bucket_s, data[:, 1] / data[:, 2], data[:, 3], data[:, 4]

    def window(self, last_s: float) -> tuple[float, float, float]:
        """(min W, mean W, max W) over the newest ``last_s`` seconds of buckets (NaN if none)."""
        if not self.buckets:
            return math.nan, math.nan, math.nan
        newest = self.buckets[-1][0]
        first = newest - max(1, round(last_s / self.bucket_s)) + 1
        chosen = [b for b in self.buckets if b[0] >= first]
        mean = sum(b[1] for b in chosen) / sum(b[2] for b in chosen)
        return min(b[3] for b in chosen), mean, max(b[4] for b in chosen)

    def rate_hz(self, last_s: float = 1.0) -> float:
        """Samples per second over the newest ``last_s`` seconds of complete buckets (the
        newest bucket may still be filling); a stall counts as time without samples. NaN
        until two buckets exist."""
        if len(self.buckets) < 2:
            return math.nan
        complete = list(self.buckets)[:-1]
        newest = complete[-1][0]
        first = max(complete[0][0], newest - max(1, round(last_s / self.bucket_s)) + 1)
        samples = sum(b[2] for b in complete if b[0] >= first)
        return samples / ((newest - first + 1) * self.bucket_s)

    def mean_w(self, last_s: float | None = None) -> float:
        """Mean power over the newest ``last_s`` seconds of buckets (default: all kept)."""
        if not self.buckets:
            return math.nan
        keep = len(self.buckets) if last_s is None else max(1, round(last_s / self.bucket_s))
        chosen = list(self.buckets)[-keep:]
        return sum(b[1] for b in chosen) / sum(b[2] for b in chosen)


__all__ = ["COLUMNS", "RollingPower", "TraceWriter", "iter_trace", "read_trace", "window_stats"]
