"""The boards' pictures (matplotlib, Agg, the default style whatever the user's matplotlibrc, so the
bytes depend on the data only): quality against NFE, against total cost, the fits' cost to
quality, and a grid of image samples."""
from __future__ import annotations

import io
import math

import numpy as np

from bench.report import curves, plots
from bench.report.board import seed_text, verdict_cells


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


def _budget_axis(ax, budgets):
    """NFE budgets on a log axis, every budget a labelled tick and nothing else."""
    import matplotlib.ticker
    if budgets and all(bb > 0 for bb in budgets) and len(budgets) > 1:
        ax.set_xscale("log")
    if budgets:
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(bb) for bb in budgets], fontsize="small")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("NFE budget")


LEGEND_CHARS = 70  # characters of x-small legend text across a 4.6-inch panel


def _legend_columns(labels) -> int:
    """As many legend columns (at most 3) as fit the longest label across a panel."""
    longest = max((len(str(x)) for x in labels), default=1)
    return max(1, min(3, LEGEND_CHARS // (longest + 6)))


def _legend_below(ax, labels):
    """The legend under the axes, in as many columns as fit: it never covers the lines."""
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=_legend_columns(labels),
              frameon=False)


def quality_figure(b: dict):
    """Quality vs NFE, one panel per family of methods (what they change), sharing the y axis, so
    twenty lines stay readable, each panel's legend below it; reported numbers in a panel of their
    own, without intervals (a paper gives none)."""
    import matplotlib
    import matplotlib.style

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
    entries = {p: (sorted(rep) if p == "reported" else sorted(k for k, rs in by_label.items() if rs[0]["family"] == p))
               for p in panels}
    cols = max(1, min(3, len(panels)))
    nrows = max(1, math.ceil(len(panels) / cols))
    legend_rows = [max((math.ceil(len(entries[p]) / _legend_columns(entries[p]))
                        for p in panels[r * cols:(r + 1) * cols]), default=0) for r in range(nrows)]
    fig = figure((4.6 * cols, sum(3.2 + 0.16 * k + 0.5 for k in legend_rows) + 0.6))
    grid = fig.add_gridspec(nrows, cols, height_ratios=[3.2 + 0.16 * k for k in legend_rows])
    axes = [fig.add_subplot(grid[i // cols, i % cols]) for i in range(nrows * cols)]
    for ax in axes[1:]:
        ax.sharey(axes[0])
    means = ([r["mean"][primary] for rs in by_label.values() for r in rs]
             + [r["value"] for rs in rep.values() for r in rs])
    budgets = sorted({r["nfe"] for rs in by_label.values() for r in rs} | {r["nfe"] for rs in rep.values()
                                                                             for r in rs})
    colors = [matplotlib.colormaps["tab10"](k) for k in range(10)]
    markers = ["o", "s", "^", "v", "D", "P", "X", "*"]
    style = lambda i: dict(color=colors[i % 10], marker=markers[i % len(markers)])  # noqa: E731
    scale = plots.value_scale(axes[0], means)
    for ax, panel in zip(axes, panels):
        if panel == "reported":
            for i, label in enumerate(sorted(rep)):
                rs = sorted(rep[label], key=lambda r: (r["nfe"], r["value"]))
                ax.plot([r["nfe"] for r in rs], [r["value"] for r in rs], linestyle=":", fillstyle="none",
                        linewidth=1.0, label=label, **style(i))
            ax.set_title("reported (published numbers, no intervals)", fontsize="medium")
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
                    if scale == "log":  # a band reaching zero or below runs off the bottom of a log axis
                        lo = np.where(lo > 0, lo, y / 10.0)
                    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set_title(f"{panel} (measured)", fontsize="medium")
        _budget_axis(ax, budgets)
        ax.grid(True, which="major", alpha=0.3)
        _legend_below(ax, entries[panel])
    for ax in axes[len(panels):]:
        ax.axis("off")
    if not panels:
        axes[0].axis("on")
        axes[0].text(0.5, 0.5, "no successful results", ha="center", va="center", transform=axes[0].transAxes)
    for i, ax in enumerate(axes):
        if i % cols:
            ax.tick_params(labelleft=False)
    for r in range(nrows):
        axes[r * cols].set_ylabel(f"{primary} ({'higher' if higher.get(primary, False) else 'lower'} is better)")
    measured = "measured: mean and 95% t-interval over seeds" if by_label else ""
    fig.suptitle(f"{task}: {primary} against NFE; " + "; ".join(
        x for x in (measured, "reported: published numbers" if rep else "") if x), fontsize="medium")
    fig.tight_layout()
    return fig


def quality_png(b: dict) -> bytes:
    import matplotlib.style
    # the default style, whatever the user's matplotlibrc says, so the bytes depend on the data only
    with matplotlib.style.context("default"):
        return png(quality_figure(b))


def fit_png(b: dict) -> bytes:
    import matplotlib.style
    with matplotlib.style.context("default"):
        return png(curves.figure(b["task"], b["fit_curves"], b["families"], b["primary"],
                                 b["higher"].get(b["primary"], False)))


def _front(points: list[tuple], higher: bool) -> set:
    """Indices of the points (cost, value) no other point beats on both cost and value."""
    better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
    out = set()
    for i, (c, v) in enumerate(points):
        if not any((c2 <= c and (better(v2, v) or v2 == v) and (c2 < c or better(v2, v)))
                   for j, (c2, v2) in enumerate(points) if j != i):
            out.add(i)
    return out


def _labels(fig, ax, pts):
    """``method @NFE`` beside each point, moved to the first of a few offsets where it overlaps no
    label placed before (display coordinates, an estimate of the text's box)."""
    fig.canvas.draw()  # the scales are final: data to display coordinates is known
    placed = []
    for p in sorted(pts, key=lambda p: (p[3], p[4])):
        text = f"{p[1]} @{p[2]}"
        x, y = ax.transData.transform((p[3], p[4]))
        x, y = x * 72 / fig.dpi, y * 72 / fig.dpi  # in points, as the offsets
        w, h = 4.6 * len(text) + 4, 10  # DejaVu Sans at 7 pt, a little generous: labels never touch
        for dx, dy in ((4, 3), (4, -12), (-w - 4, 3), (-w - 4, -12), (4, 14), (4, -24)):
            box = (x + dx, y + dy, x + dx + w, y + dy + h)
            if not any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in placed):
                break
        placed.append(box)
        ax.annotate(text, (p[3], p[4]), fontsize=7, xytext=(dx, dy), textcoords="offset points")


def cost_figure(b: dict):
    """Quality against the total cost of the samples behind a row: its fit's denoiser evaluations
    plus the sampling NFE per sample times the samples drawn; one marker per row, one colour per
    family. Labelled: the rows on the cost-quality front (none cheaper and better) and the best row
    at each NFE budget (a star); every other row is an unlabelled dot, so labels never pile up."""
    import matplotlib
    import matplotlib.style

    from bench.method import FAMILIES
    task, primary, higher = b["task"], b["primary"], b["higher"]
    pts = [(r["family"], r["method"], r["nfe"], (r["fit_nfe"] if not math.isnan(r["fit_nfe"]) else 0.0)
            + r["nfe_measured"] * r["n_samples"], r["mean"][primary]) for r in b["rows"]
           if r["family"] != "floor" and r["own"] and not math.isnan(r["mean"].get(primary, math.nan))
           and not math.isnan(r["n_samples"]) and not math.isnan(r["nfe_measured"])]
    best = {(row["method"], row["nfe"]) for rows in b["best"].values() for row in rows}
    hi = higher.get(primary, False)
    front = _front([(p[3], p[4]) for p in pts], hi)
    fig = figure((8.4, 5.6))
    ax = fig.add_subplot()
    colors = {f: matplotlib.colormaps["tab10"](k) for k, f in enumerate(FAMILIES)}
    for fam in FAMILIES:
        mine = [p for p in pts if p[0] == fam]
        if mine:
            ax.scatter([p[3] for p in mine], [p[4] for p in mine], color=colors[fam], label=fam, s=16, alpha=0.8)
    stars = [p for p in pts if (p[1], p[2]) in best]
    if stars:
        ax.scatter([p[3] for p in stars], [p[4] for p in stars], marker="*", s=140, facecolor="none",
                   edgecolor="k", linewidth=0.9, label="best at its NFE")
    if pts:
        ax.set_xscale("log")
        plots.value_scale(ax, [p[4] for p in pts])
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, "no successful results", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("total denoiser evaluations: fit + NFE per sample x samples")
    ax.set_ylabel(f"{primary} ({'higher' if hi else 'lower'} is better)")
    ax.set_title(f"{task}: quality against total cost\n(labelled: the cost-quality front, and the best at each NFE "
                 f"starred)", fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()  # counts the legend right of the axes
    # labels last: their places are computed in the final layout
    _labels(fig, ax, [p for i, p in enumerate(pts) if i in front or (p[1], p[2]) in best])
    return fig


def cost_png(b: dict) -> bytes:
    import matplotlib.style
    # the default style, whatever the user's matplotlibrc says, so the bytes depend on the data only
    with matplotlib.style.context("default"):
        return png(cost_figure(b))


# the verdict map's cell kinds, in colour order: what a cell says (its legend entry) and its colour;
# close verdicts (p between 0.01 and 0.10, `*` in the table) get their own shade
VERDICT_KINDS = (("not run", "#ffffff"), ("reference", "#9ecae1"), ("better", "#1a9850"),
                 ("better, close", "#a6d96a"), ("tie, close", "#bdbdbd"), ("tie", "#e0e0e0"),
                 ("worse, close", "#fdae61"), ("worse", "#d73027"), ("n/a", "#f7f7f7"))


def verdict_kind(cell) -> int:
    """The index in ``VERDICT_KINDS`` of a cell of ``board.verdict_cells``."""
    if cell is None or cell == "reference":
        name = "not run" if cell is None else "reference"
    elif cell["verdict"] in ("better", "tie", "worse"):
        name = cell["verdict"] + (", close" if cell["close"] else "")
    else:
        name = "n/a"
    return [n for n, _ in VERDICT_KINDS].index(name)


def verdict_figure(boards: list[dict]):
    """The index's verdicts across tasks as a picture: a row per (method, NFE), a column per task,
    each cell coloured by its paired verdict against the budget's reference (close ones paler), the
    seed count written where a row has fewer seeds than its task's others."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch
    shown, keys, cells = verdict_cells(boards)
    tasks = [b["task"] for b in shown]
    codes = np.array([[verdict_kind(cells[k].get(t)) for t in tasks] for k in keys], dtype=float)
    width, height = 2.6 + 1.15 * len(tasks), 2.2 + 0.17 * len(keys)  # inches: labels, legend and title around
    fig = figure((width, height))
    ax = fig.add_axes([1.9 / width, 0.8 / height, 1 - 2.2 / width, 1 - 2.0 / height])
    cmap = ListedColormap([c for _, c in VERDICT_KINDS])
    ax.imshow(codes, cmap=cmap, norm=BoundaryNorm(np.arange(len(VERDICT_KINDS) + 1) - 0.5, cmap.N),
              aspect="auto", interpolation="nearest")
    for i, k in enumerate(keys):
        for j, t in enumerate(tasks):
            c = cells[k].get(t)
            if isinstance(c, dict):
                marks = ([f"{c['seeds']} seeds"] if c["fewer"] else []) + (["floor"] if c["within_floor"] else []) \
                    + (["undet."] if c["undetermined"] else []) + ([f"={c['same_start']}"] if c["same_start"] else [])
                if marks:
                    ax.text(j, i, " ".join(marks), ha="center", va="center", fontsize=5.5)
    for i in range(1, len(keys)):  # a rule between methods
        if keys[i][0] != keys[i - 1][0]:
            ax.axhline(i - 0.5, color="black", linewidth=0.6)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{b['task']}\n({b['primary']})" for b in shown], fontsize="small")
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([f"{label}  {nfe}" for label, nfe in keys], fontsize=7)
    ax.set_xticks(np.arange(len(tasks) + 1) - 0.5, minor=True)
    ax.grid(which="minor", axis="x", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="grey", label=n) for n, c in VERDICT_KINDS],
              loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, fontsize="x-small", frameon=False)
    fig.suptitle("Paired verdict against the best classic solver at each NFE budget\n"
                 "(95% paired t-interval over seeds; close: p between 0.01 and 0.10; in a cell: floor = within the "
                 "metric's floor,\nundet. = a 3-seed tie all one way, =k/n = the untrained start's samples in k of n "
                 "seeds)", fontsize="small",
                 y=1 - 0.15 / height, va="top")
    return fig


def verdict_png(boards: list[dict]) -> bytes:
    import matplotlib.style
    with matplotlib.style.context("default"):
        return png(verdict_figure(boards))


def compare_figure(table, metric: str, label: str, higher_is_better: bool):
    """``compare``'s table as a picture: one panel per NFE budget, a point per other row at the mean
    paired difference (``label`` - other) with its 95% t-interval, coloured by the verdict (close
    ones paler), the rows ordered by the difference; 0 marked, the better side named."""
    budgets = sorted(int(n) for n in set(table["nfe"]))
    width = max(5.0, 0.3 * max((int((table["nfe"] == n).sum()) for n in budgets), default=1) + 1.8)
    height = 3.3 * len(budgets) + 0.9
    fig = figure((width, height))
    values = [v for c in ("diff", "diff_low", "diff_high") for v in table[c] if math.isfinite(v)]
    for j, nfe in enumerate(budgets):
        ax = fig.add_subplot(len(budgets), 1, j + 1)
        rows = table[table["nfe"] == nfe].sort_values(["diff", "reference"], na_position="last")
        for x, (_, r) in enumerate(rows.iterrows()):
            colour = VERDICT_KINDS[verdict_kind(dict(verdict=r["verdict"], close=bool(r["close"])))][1]
            if math.isfinite(r["diff_low"]):
                ax.plot([x, x], [r["diff_low"], r["diff_high"]], color="black", linewidth=1, zorder=1)
            ax.scatter([x], [r["diff"]], color=colour, edgecolor="black", s=36, zorder=2)
        ax.axhline(0.0, color="grey", linewidth=0.8, zorder=0)
        plots.value_scale(ax, values + [0.0])
        ax.margins(y=0.08)  # the extreme points whole, not cut by the frame
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(list(rows["reference"]), rotation=60, ha="right", fontsize=7)
        ax.set_xlim(-0.6, max(len(rows), 1) - 0.4)
        ax.set_title(f"NFE {nfe}", fontsize="small", loc="left")
        ax.set_ylabel(f"{label} - other, {metric}\n({'above' if higher_is_better else 'below'} 0: {label} better)",
                      fontsize="small")
    from matplotlib.patches import Patch
    shown = [(n, c) for n, c in VERDICT_KINDS if n not in ("not run", "reference")]
    top = 1 - 0.75 / height
    fig.legend(handles=[Patch(facecolor=c, edgecolor="black", label=n) for n, c in shown],
               loc="lower center", bbox_to_anchor=(0.5, top), ncol=len(shown), fontsize="x-small", frameon=False)
    fig.suptitle(f"{label} against each other row, paired over seeds (95% t-intervals)", fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def compare_png(table, metric: str, label: str, higher_is_better: bool) -> bytes:
    import matplotlib.style
    with matplotlib.style.context("default"):
        return png(compare_figure(table, metric, label, higher_is_better))


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

