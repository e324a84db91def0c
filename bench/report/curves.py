"""Cost to quality of the fits: the task's primary metric on the tuning split against the fit's
denoiser evaluations so far (``fit_curve`` in the result files: the candidates of a search as
the grid grows, a learned sampler's evaluations as its training goes).

The cost ratio at equal quality compares a learned row L with a tuned row T (a method's
``family``) at the same NFE budget and seed: the fit NFE at which L's best score so far first
reaches T's final best, over T's total fit NFE. Under 1, L gets there cheaper; ``not reached``
when it never does. Per pair of rows, the median over the seeds and how many reached it. A seed
that reaches it at L's first recorded score gives only an upper bound (L may have been there
sooner, unrecorded): the table counts those seeds, and a median with any such seed reads "≤" (every
seed's true ratio is at most its listed one, so the true median is at most the listed median; one
bound can move which seed is the median, so only a median free of bounds is exact).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.method import FAMILIES
from bench.report import plots

# every family that learns, whatever it learns: all but the fixed, the tuned and the floor rows
LEARNED = tuple(f for f in FAMILIES if f not in ("classic", "tuned", "floor", "other"))


def running_best(curve: list[dict], higher: bool) -> tuple[np.ndarray, np.ndarray]:
    """(fit NFE, best score so far) of a curve."""
    nfe = np.array([p["fit_nfe"] for p in curve], dtype=float)
    score = np.array([p["score"] for p in curve], dtype=float)
    best = np.maximum.accumulate(score) if higher else np.minimum.accumulate(score)
    return nfe, best


def cost_ratios(curves: dict, families: dict, higher: bool) -> pd.DataFrame:
    """``curves``: (label, nfe, seed) -> curve; ``families``: label -> family. One row per (NFE,
    learned label, tuned label) with a seed in common."""
    rows = []
    labels = sorted({k[0] for k in curves})
    for nfe in sorted({k[1] for k in curves}):
        for learned in (lb for lb in labels if families.get(lb) in LEARNED):
            for tuned in (lb for lb in labels if families.get(lb) == "tuned"):
                seeds = sorted({k[2] for k in curves if k[:2] == (learned, nfe)}
                               & {k[2] for k in curves if k[:2] == (tuned, nfe)})
                if not seeds:
                    continue
                ratios, at_first = [], 0
                for s in seeds:
                    t_nfe, t_best = running_best(curves[(tuned, nfe, s)], higher)
                    l_nfe, l_best = running_best(curves[(learned, nfe, s)], higher)
                    reached = (l_best >= t_best[-1]) if higher else (l_best <= t_best[-1])
                    ratios.append(l_nfe[reached.argmax()] / t_nfe[-1] if reached.any() else math.inf)
                    at_first += bool(reached.any() and reached.argmax() == 0)
                finite = [r for r in ratios if math.isfinite(r)]
                rows.append(dict(nfe=nfe, learned=learned, tuned=tuned, seeds=len(seeds), reached=len(finite),
                                 at_first=at_first, median_ratio=float(np.median(ratios)) if finite else math.inf))
    return pd.DataFrame(rows, columns=["nfe", "learned", "tuned", "seeds", "reached", "at_first", "median_ratio"])


def markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "No learned row has a tuned row with fit curves at the same budget."
    shown = pd.DataFrame({
        "NFE": table["nfe"], "learned": table["learned"], "tuned": table["tuned"],
        "seeds reaching the tuned quality": [f"{r} of {s}" for r, s in zip(table["reached"], table["seeds"])],
        "of them at the first score": table["at_first"],
        "fit NFE ratio (median)": ["not reached" if not math.isfinite(v) else ("≤ " if k else "") + f"{v:.3g}"
                                   for v, k in zip(table["median_ratio"], table["at_first"])]})
    return shown.to_markdown(index=False, colalign=("right", "left", "left", "right", "right", "right"))


def figure(task: str, curves: dict, families: dict, metric: str, higher: bool):
    """One panel per NFE budget, three to a row: every seed's best-so-far curve, one colour per row,
    one legend for the figure below the panels."""
    import math as _math

    import matplotlib
    import matplotlib.ticker
    from matplotlib.figure import Figure
    budgets = sorted({k[1] for k in curves})
    labels = sorted({k[0] for k in curves})
    colors = {lb: matplotlib.colormaps["tab10"](i % 10) for i, lb in enumerate(labels)}
    cols = min(3, len(budgets))
    rows = _math.ceil(len(budgets) / cols)
    legend_rows = _math.ceil(len(labels) / 3)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.3 * legend_rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    handles = {}
    for ax, nfe in zip(axes, budgets):
        shown = []
        for (label, b, seed), curve in sorted(curves.items()):
            if b != nfe or not curve:
                continue
            x, y = running_best(curve, higher)
            shown += [float(v) for v in y]
            (line,) = ax.step(x, y, where="post", color=colors[label], alpha=0.8, linewidth=1)
            handles.setdefault(label, line)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=4))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        plots.value_scale(ax, shown)  # what this panel draws, not the scores a running best hides
        ax.set_title(f"NFE {nfe}", fontsize="medium")
        ax.set_xlabel("fit denoiser evaluations so far")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(budgets):]:
        ax.axis("off")
    for r in range(rows):
        axes[r * cols].set_ylabel(f"best tuning {metric} so far\n({'higher' if higher else 'lower'} is better)")
    fig.suptitle(f"{task}: cost to quality of the fits (each line one seed)", fontsize="medium")
    fig.legend([handles[lb] for lb in labels], [f"{lb} ({families.get(lb, 'other')})" for lb in labels],
               loc="lower center", ncol=3, fontsize="x-small", frameon=False)
    fig.tight_layout(rect=(0, 0.3 * legend_rows / fig.get_figheight() + 0.02, 1, 1))
    return fig
