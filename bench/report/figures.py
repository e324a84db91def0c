"""The boards' pictures (matplotlib, Agg, the default style whatever the user's matplotlibrc, so the
bytes depend on the data only): quality against NFE, against total cost, the fits' cost to
quality, and a grid of image samples."""
from __future__ import annotations

import io
import math

import numpy as np

from bench.report import curves, plots
from bench.report.board import seed_text


def figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def quality_png(b: dict) -> bytes:
    """Quality vs NFE, one panel per family of methods (what they change), sharing the y axis, so
    twenty lines stay readable; reported numbers in a panel of their own."""
    import matplotlib
    import matplotlib.style
    import matplotlib.ticker

    from bench.method import FAMILIES
    task, primary, higher = b["task"], b["primary"], b["higher"]
    by_label: dict[str, list[dict]] = {}
    for row in b["rows"]:
        if primary in row["mean"] and not math.isnan(row["mean"][primary]):
            by_label.setdefault(row["method"], []).append(row)
    rep: dict[str, list[dict]] = {}
    for r in b["reported"]:
        if r["metric"] == primary and r["nfe"] is not None:
            rep.setdefault(r["method"], []).append(r)
    panels = [f for f in FAMILIES if any(rs[0]["family"] == f for rs in by_label.values())]
    panels += ["reported"] if rep else []
    # the default style, whatever the user's matplotlibrc says, so the bytes depend on the data only
    with matplotlib.style.context("default"):
        cols = max(1, min(3, len(panels)))
        nrows = max(1, math.ceil(len(panels) / cols))
        fig = figure((4.6 * cols, 3.6 * nrows))
        axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).ravel()
        means = ([r["mean"][primary] for rs in by_label.values() for r in rs]
                 + [r["value"] for rs in rep.values() for r in rs])
        budgets = sorted({r["nfe"] for rs in by_label.values() for r in rs} | {r["nfe"] for rs in rep.values()
                                                                                 for r in rs})
        colors = [matplotlib.colormaps["tab10"](k) for k in range(10)]
        markers = ["o", "s", "^", "v", "D", "P", "X", "*"]
        style = lambda i: dict(color=colors[i % 10], marker=markers[i % len(markers)])  # noqa: E731
        for ax, panel in zip(axes, panels):
            log_y = plots.value_scale(ax, means) == "log"
            if panel == "reported":
                for i, label in enumerate(sorted(rep)):
                    rs = sorted(rep[label], key=lambda r: (r["nfe"], r["value"]))
                    ax.plot([r["nfe"] for r in rs], [r["value"] for r in rs], linestyle=":", fillstyle="none",
                            linewidth=1.0, label=label, **style(i))
            else:
                labels = sorted(k for k, rs in by_label.items() if rs[0]["family"] == panel)
                for i, label in enumerate(labels):
                    rs = sorted(by_label[label], key=lambda r: r["nfe"])
                    x = np.array([r["nfe"] for r in rs], dtype=float)
                    y = np.array([r["mean"][primary] for r in rs])
                    ci = np.array([r["ci"][primary] for r in rs])
                    (line,) = ax.plot(x, y, label=label, **style(i))
                    has = ~np.isnan(ci)
                    if has.any():
                        lo, hi = y - np.where(has, ci, 0.0), y + np.where(has, ci, 0.0)
                        if log_y:  # a band reaching zero or below runs off the bottom of a log axis
                            lo = np.where(lo > 0, lo, y / 10.0)
                        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set_title(panel, fontsize="medium")
            if budgets and all(bb > 0 for bb in budgets) and len(budgets) > 1:
                ax.set_xscale("log")
            if budgets:
                ax.set_xticks(budgets)
                ax.set_xticklabels([str(bb) for bb in budgets], fontsize="small")
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("NFE budget")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize="x-small")
        for ax in axes[len(panels):]:
            ax.axis("off")
        if not panels:
            axes[0].axis("on")
            axes[0].text(0.5, 0.5, "no successful results", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_ylabel(f"{primary} ({'higher' if higher.get(primary, False) else 'lower'} is better)")
        fig.suptitle(f"{task}: {primary} vs NFE (mean, 95% interval over seeds)", fontsize="medium")
        fig.tight_layout()
        return png(fig)


def fit_png(b: dict) -> bytes:
    import matplotlib.style
    with matplotlib.style.context("default"):
        return png(curves.figure(b["task"], b["fit_curves"], b["families"], b["primary"],
                                  b["higher"].get(b["primary"], False)))


def cost_png(b: dict) -> bytes:
    """Quality against the total cost of the samples behind a row: its fit's denoiser evaluations
    plus the sampling NFE per sample times the samples drawn; one marker per row, one colour per
    family, labelled with the method and NFE budget."""
    import matplotlib
    import matplotlib.style

    from bench.method import FAMILIES
    task, primary, higher = b["task"], b["primary"], b["higher"]
    pts = [(r["family"], r["method"], r["nfe"], (r["fit_nfe"] if not math.isnan(r["fit_nfe"]) else 0.0)
            + r["nfe_measured"] * r["n_samples"], r["mean"][primary]) for r in b["rows"]
           if r["family"] != "floor" and not math.isnan(r["mean"].get(primary, math.nan))
           and not math.isnan(r["n_samples"]) and not math.isnan(r["nfe_measured"])]
    with matplotlib.style.context("default"):
        fig = figure((7.2, 4.8))
        ax = fig.add_subplot()
        colors = {f: matplotlib.colormaps["tab10"](k) for k, f in enumerate(FAMILIES)}
        for fam in FAMILIES:
            mine = [p for p in pts if p[0] == fam]
            if mine:
                ax.scatter([p[3] for p in mine], [p[4] for p in mine], color=colors[fam], label=fam, s=18)
                for p in mine:
                    ax.annotate(f"{p[1]}@{p[2]}", (p[3], p[4]), fontsize=5, alpha=0.7, xytext=(2, 2),
                                textcoords="offset points")
        if pts:
            ax.set_xscale("log")
            plots.value_scale(ax, [p[4] for p in pts])
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "no successful results", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("total denoiser evaluations: fit + NFE per sample x samples")
        ax.set_ylabel(f"{primary} ({'higher' if higher.get(primary, False) else 'lower'} is better)")
        ax.set_title(f"{task}: quality against total cost", fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
        fig.tight_layout()
        return png(fig)


def samples_png(b: dict) -> bytes:
    import matplotlib.style
    s = b["samples"]
    grid = s["grid"]
    k, c, h, w = grid[0].shape
    pad = max(1, h // 8)
    mosaic = np.full((len(grid) * (h + pad) + pad, k * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, x in enumerate(grid):
        img = np.clip(np.floor(127.5 * x + 128), 0, 255).astype(np.uint8)  # as EDM's generate.py writes PNGs
        img = np.repeat(img, 3, axis=1) if c == 1 else img
        for j in range(k):
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            mosaic[y0:y0 + h, x0:x0 + w] = img[j].transpose(1, 2, 0)
    cell = max(0.55, min(1.0, h / 40))
    with matplotlib.style.context("default"):
        fig = figure((1.9 + k * cell, 0.9 + len(grid) * cell))
        ax = fig.add_subplot()
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_yticks([pad + i * (h + pad) + h / 2 - 0.5 for i in range(len(grid))])
        ax.set_yticklabels(s["methods"], fontsize="small")
        ax.set_xticks([pad + j * (w + pad) + w / 2 - 0.5 for j in range(k)])
        ax.set_xticklabels([f"{j}" + ("" if s["labels"] is None else f"\ny={s['labels'][j]}") for j in range(k)],
                           fontsize="x-small")
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(f"{b['task']}: NFE {s['nfe']}, seed {s['seed']}, sample indices {seed_text(s['indices'])}",
                     fontsize="small")
        fig.tight_layout()
        return png(fig)

