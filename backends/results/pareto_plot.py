"""The accuracy-vs-latency PNG of the "fast but wrong" report, with each device's Pareto front.

Drawn on a matplotlib ``Figure`` with the Agg canvas, never pyplot (no GUI backend, no global
state: it works in threads, CI and over ssh). matplotlib is the ``plots`` extra; without it
``require`` raises MissingExtra naming ``devlab[plots]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from backends.core.extras import require
from backends.results.fast_wrong import FP32, ParetoPoint, pareto_front

PLOT_FILE = "accuracy_pareto.png"


def plot_accuracy_vs_latency(points: Sequence[ParetoPoint], path: str | Path) -> Path:
    """Top-1 (%) against latency (log axis, us or ms as the numbers need): one colour per
    device, circles for float runs and triangles for quantized ones, each device's front as a
    step line (the best top-1 within a latency budget)."""
    figure = require("matplotlib.figure", "plots", "Accuracy plots")
    ticker = require("matplotlib.ticker", "plots", "Accuracy plots")
    fig = figure.Figure(figsize=(7.0, 5.0), dpi=110, layout="tight")
    ax = fig.add_subplot()
    slowest = max((p.latency_us for p in points), default=0.0)
    unit, per = ("ms", 1e3) if slowest >= 1e3 else ("us", 1.0)
    devices = list(dict.fromkeys(p.device for p in points))
    for index, device in enumerate(devices):
        color = f"C{index % 10}"
        mine = [p for p in points if p.device == device]
        for precision, marker in ((FP32, "o"), (None, "^")):
            shown = [p for p in mine if (p.precision == FP32) == (precision == FP32)]
            if shown:
                kind = "fp32" if precision == FP32 else "quantized"
                ax.scatter(
                    [p.latency_us / per for p in shown],
                    [p.top1 * 100 for p in shown],
                    marker=marker,
                    s=40,
                    color=color,
                    label=f"{device} {kind}",
                )
        for number, p in enumerate(mine):  # alternate above and below: neighbours overlap less
            ax.annotate(
                p.label,
                (p.latency_us / per, p.top1 * 100),
                textcoords="offset points",
                xytext=(4, 5 if number % 2 == 0 else -11),
                fontsize=7,
            )
        front = pareto_front([(p.latency_us, p.top1) for p in mine])
        xs = [mine[i].latency_us / per for i in front]
        ys = [mine[i].top1 * 100 for i in front]
        ax.step(xs, ys, where="post", color=color, lw=1, alpha=0.8)
    if not points:
        ax.text(0.5, 0.5, "no rows with accuracy", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_xscale("log")
        plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.margins(x=0.15, y=0.15)
        low, high = ax.get_ylim()  # no room above 100 % or below 0 % (one point pads both ways)
        ax.set_ylim(max(low, 0.0), min(high, 100.5))
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(f"latency ({unit}, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy vs latency (line: Pareto front per device)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", metadata={"Software": None})
    return target
