"""PNG plots of an estimator: predicted vs measured, and latency vs MACs (the Pareto view).

Drawn on matplotlib ``Figure`` objects with the Agg canvas, never pyplot, so no GUI backend or
global state is touched and the plots work in threads, CI and over ssh. matplotlib (the
``plots`` extra) is imported only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.core.extras import require
from backends.space.estimator import Fit


def plot_predicted_vs_measured(fit: Fit, path: str | Path) -> Path:
    """Held-out predictions against measurements, with the +-10 % band and the identity."""
    fig, ax = _figure()
    measured = np.array([p.measured_us for p in fit.points]) / 1e3
    predicted = np.array([p.heldout_us for p in fit.points]) / 1e3
    raw = np.array([p.accumulated_us for p in fit.points]) / 1e3
    lo = 0.85 * min(measured.min(), predicted.min())
    hi = 1.15 * max(measured.max(), predicted.max())
    line = np.array([lo, hi])
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="tab:green", alpha=0.15, label="+-10 %")
    ax.plot(line, 0.95 * line, color="tab:green", lw=0.8, ls="--", label="+-5 %")
    ax.plot(line, 1.05 * line, color="tab:green", lw=0.8, ls="--")
    ax.plot(line, line, color="black", lw=1)
    ax.scatter(measured, raw, s=12, color="tab:gray", alpha=0.6, label="raw sum (unfitted)")
    ax.scatter(measured, predicted, s=18, color="tab:blue", label="estimate (held out)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(min(lo, 0.85 * raw.min()), max(hi, 1.15 * raw.max()))
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("estimated latency (ms)")
    r = fit.report.heldout
    ax.set_title(
        f"{fit.runtime} on {fit.device}, {fit.report.evaluation}\n"
        f"{r.within10_pct:.0f} % within +-10 %, {r.within5_pct:.0f} % within +-5 %, "
        f"MAPE {r.mape_pct:.1f} % (n={fit.report.n})",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_latency_vs_macs(fits: Sequence[Fit], path: str | Path) -> Path:
    """Measured latency against MACs per device with the Pareto front (the architectures no
    other one beats with more MACs at a lower latency: the most capacity for a latency budget)
    as a step line; Pearson r says how well MACs alone predict latency."""
    fig, ax = _figure()
    drawn = False
    for index, fit in enumerate(fits):
        points = [p for p in fit.points if p.macs]
        if not points:
            continue
        color = f"C{index % 10}"
        macs = np.array([p.macs for p in points], dtype=float) / 1e6
        latency = np.array([p.measured_us for p in points]) / 1e3
        r = float(np.corrcoef(macs, latency)[0, 1]) if len(points) > 2 else float("nan")
        ax.scatter(
            macs, latency, s=16, color=color, label=f"{fit.runtime} on {fit.device} (r={r:.2f})"
        )
        front = _pareto(macs, latency)
        ax.step(macs[front], latency[front], where="pre", color=color, lw=1, alpha=0.8)
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no MACs recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("measured latency (ms)")
    ax.set_title(
        "sampled architectures: latency vs MACs (line: Pareto front, most MACs per latency)",
        fontsize=9,
    )
    if drawn:
        ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _pareto(macs: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Indices, by latency, of the points no other point beats with more MACs and a lower
    latency (MACs standing for capacity: the NAS trade-off)."""
    order = np.lexsort((-macs, latency))
    front: list[int] = []
    best = -np.inf
    for i in order:
        if macs[i] > best:
            front.append(int(i))
            best = macs[i]
    return np.array(front, dtype=int)


def _figure() -> tuple[Any, Any]:
    figure = require("matplotlib.figure", "plots", "Estimator plots")
    fig = figure.Figure(figsize=(6.4, 5.0), dpi=110, layout="tight")
    return fig, fig.add_subplot()


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
