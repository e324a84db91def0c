"""Figures written beside results (matplotlib, Agg, no global state)."""
from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.engine.io import atomic_write_bytes


def save(fig: Figure, path):
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def value_scale(ax, values) -> str:
    """The y scale that shows ``values``: log where all are positive; symlog, linear only within the
    smallest tenth of the magnitudes, where signs mix across decades (an unbiased estimate such as
    KID near 0 beside a sampler that fails); else linear. Returns the scale's name."""
    finite = [float(x) for x in values if math.isfinite(x)]
    if finite and all(x > 0 for x in finite):
        ax.set_yscale("log")
        return "log"
    mags = sorted(abs(x) for x in finite if x != 0)
    if mags and mags[-1] > 100 * mags[0]:
        ax.set_yscale("symlog", linthresh=mags[len(mags) // 10])
        return "symlog"
    return "linear"


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
