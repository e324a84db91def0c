"""Figures written beside results (matplotlib, Agg, no global state)."""
from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from bench.engine.io import atomic_write_bytes


def save(fig: Figure, path):
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def value_scale(ax, values) -> str:
    """The y scale that shows ``values``: log where all are positive; symlog, linear only within the
    smallest tenth of the magnitudes, where signs mix across decades (an unbiased estimate such as
    KID near 0 beside a sampler that fails); else, and for positive values within a factor 2.5,
    linear. Returns the scale's name."""
    finite = [float(x) for x in values if math.isfinite(x)]
    if finite and all(x > 0 for x in finite):
        if max(finite) < 2.5 * min(finite):
            return "linear"  # no 1, 2 or 5 of a decade may fall inside (the widest gap, 2 to 5, is 2.5x)
        ax.set_yscale("log")
        if max(finite) < 100 * min(finite):  # under two decades: label 1, 2, 5 of each, or no tick shows
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.05, not an unlabelled tick
            ax.yaxis.set_minor_locator(NullLocator())
        return "log"
    mags = sorted(abs(x) for x in finite if x != 0)
    if mags and mags[-1] > 100 * mags[0]:
        lin = mags[len(mags) // 10]
        ax.set_yscale("symlog", linthresh=lin)
        ax.yaxis.set_major_locator(FixedLocator(_symlog_ticks(finite, lin)))
        ax.yaxis.set_minor_locator(NullLocator())
        return "symlog"
    return "linear"


def _symlog_ticks(values, lin: float) -> list[float]:
    """0 and the signed decades beyond the linear range ``lin`` that the values reach, the first one
    decade clear of it (a tick at +-lin would print on top of the one at 0)."""
    first = math.floor(math.log10(lin)) + 1
    ticks = [0.0]
    for sign in (1, -1):
        reach = max((abs(v) for v in values if v * sign > 0), default=0.0)
        if reach > 0:
            last = math.ceil(math.log10(reach))
            step = max(1, math.ceil((last - first + 1) / 5))  # at most about five decades labelled per side
            ticks += [sign * 10.0**k for k in range(first, last + 1, step)]
    return sorted(ticks)


def action_distribution(path, ticks, probs, families: dict, xlabel: str = "sigma at the step"):
    """One panel per action family: stacked probability of each action per step (``ticks``: the
    steps' labels, noise levels as numbers or any strings)."""
    fig = Figure(figsize=(4.2 * len(families), 3.2))
    for j, (name, values) in enumerate(families.items()):
        ax = fig.add_subplot(1, len(families), j + 1)
        bottom = [0.0] * len(ticks)
        for k, v in enumerate(values):
            p = [row[name][k] for row in probs]
            ax.bar(range(len(ticks)), p, bottom=bottom, label=f"{name}={v}")
            bottom = [a + b for a, b in zip(bottom, p)]
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels([t if isinstance(t, str) else f"{t:.2g}" for t in ticks], rotation=60, fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("probability")
        ax.set_title(f"learned {name}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
