"""Figures written beside results (matplotlib, Agg, no global state)."""
from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.engine.io import atomic_write_bytes


def save(fig: Figure, path):
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def action_distribution(path, sigmas, probs, families: dict):
    """One panel per action family: stacked probability of each action against the step's noise level."""
    fig = Figure(figsize=(4.2 * len(families), 3.2))
    for j, (name, values) in enumerate(families.items()):
        ax = fig.add_subplot(1, len(families), j + 1)
        bottom = [0.0] * len(sigmas)
        for k, v in enumerate(values):
            p = [row[name][k] for row in probs]
            ax.bar(range(len(sigmas)), p, bottom=bottom, label=f"{name}={v}")
            bottom = [a + b for a, b in zip(bottom, p)]
        ax.set_xticks(range(len(sigmas)))
        ax.set_xticklabels([f"{s:.2g}" for s in sigmas], rotation=60, fontsize=7)
        ax.set_xlabel("sigma at the step")
        ax.set_ylabel("probability")
        ax.set_title(f"learned {name}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
