"""The boards' pictures readable at a glance (issue 29): legends never on the plot, titles that say
what is measured and what is reported, tick labels that never print on each other, labels on the
cost plot only where they say something and never on each other, fit curves in a grid."""
from __future__ import annotations

import itertools
import warnings

import matplotlib.style
import pytest

from bench.report import board, curves, figures
from bench.report.plots import _symlog_ticks
from test_leaderboard import result, write

REPORTED = [dict(method=f"a published sampler with a long name {i}", task="gmm8", nfe=nfe, metric="mmd",
                 value=0.1 / (1 + i) + nfe / 100, value_text=f"{0.1 / (1 + i) + nfe / 100:g}", protocol="50k samples",
                 source="Paper", kind="reported", line=i) for i in range(24) for nfe in (5, 10)]


def _board(tmp_path, reported=(), task="gmm8"):
    for seed in range(3):
        for label, nfe, v in (("euler", 5, 1.0), ("euler", 10, 0.5), ("ipndm", 5, 0.4), ("ipndm", 10, 0.1),
                              ("edm-grid", 10, 0.3), ("ld3", 5, 0.2), ("ld3", 10, 0.05)):
            write(tmp_path, dict(result(label, nfe, seed, v + 0.01 * seed, task=task),
                                 fit_cost=dict(nfe=1000 * nfe, seconds=1.0), n_samples=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded, roots = board.load(tmp_path)
        return board.make(task, loaded, list(reported), roots)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_a_long_legend_never_covers_the_plot_and_the_title_tells_reported_from_measured(tmp_path):
    b = _board(tmp_path, REPORTED, task="gmm8")
    with matplotlib.style.context("default"):
        fig = figures.quality_figure(b)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = [ax for ax in fig.axes if ax.get_legend() is not None]
        assert len(axes) >= 2
        for ax in axes:
            legend = ax.get_legend().get_window_extent(renderer)
            for other in fig.axes:
                if other.axison:
                    assert not _overlap(legend, other.get_window_extent(renderer)), ax.get_title()
        title = fig._suptitle.get_text()
        assert "measured: mean and 95% t-interval" in title and "reported: published numbers" in title
        reported = next(ax for ax in fig.axes if ax.get_title().startswith("reported"))
        assert "no intervals" in reported.get_title()
        assert not reported.collections  # no band: a paper's number has no interval here


def test_a_reported_only_board_does_not_claim_measured_intervals(tmp_path):
    b = _board(tmp_path / "empty", REPORTED, task="gmm8")
    b = dict(b, rows=[])
    with matplotlib.style.context("default"):
        title = figures.quality_figure(b)._suptitle.get_text()
    assert "interval" not in title and "reported: published numbers" in title


def test_symlog_ticks_are_a_decade_clear_of_zero():
    values = [-0.003, -0.0001, 0.0004, 0.02, 0.8]
    ticks = _symlog_ticks(values, 1e-4)
    assert 0.0 in ticks and all(t == 0 or abs(t) >= 1e-3 for t in ticks)
    assert max(ticks) >= 0.8 and min(ticks) <= -0.003


def test_symlog_tick_labels_never_print_on_each_other():
    from matplotlib.figure import Figure

    from bench.report.plots import value_scale
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(4.6, 3.2))
        ax = fig.add_subplot()
        values = [-0.003, -0.0001, 0.0004, 0.02, 0.8, 1.2e-4]
        ax.plot(range(len(values)), values)
        assert value_scale(ax, values) == "symlog"
        fig.canvas.draw()
        labels = [t.get_window_extent() for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) >= 3
        assert not any(_overlap(a, b) for a, b in itertools.combinations(labels, 2))


@pytest.mark.parametrize("values", [[0.55, 0.62, 0.7], [0.02, 0.5], [0.031, 0.13], [0.0244, 0.0289, 0.08],
                                    [3e-4, 3.2e-4], [1e-5, 0.3, 2.0],
                                    [-0.003, 0.0004, 0.8], [-0.1, 0.2]])
def test_every_value_axis_labels_ticks_inside_its_data(values):
    """A panel whose values span less than a decade still reads: at least two labelled ticks fall
    within the data's range (a log axis over 0.55-0.7 had none)."""
    from matplotlib.figure import Figure

    from bench.report.plots import value_scale
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(4.6, 3.2))
        ax = fig.add_subplot()
        ax.plot(range(len(values)), values)
        value_scale(ax, values)
        fig.canvas.draw()
        lo, hi = ax.get_ylim()
        shown = [t for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
        assert len(shown) >= 2, (values, ax.get_yscale(), [t.get_text() for t in ax.get_yticklabels()])


def test_every_fit_panel_labels_ticks_inside_its_own_data():
    """Each NFE panel of the fit figure is scaled to its own curves: a panel of scores within a few
    percent (0.60-0.63) beside one that crosses 0 gets ticks, not the other panel's symlog decades."""
    from bench.report.curves import figure as fit_figure
    curves = {("edm-grid", 5, s): [dict(fit_nfe=1e4 * (i + 1), score=0.63 - 0.01 * i - 0.001 * s) for i in range(3)]
              for s in range(3)}
    curves |= {("irl", 20, s): [dict(fit_nfe=1e5 * (i + 1), score=v) for i, v in enumerate([3e-3, 2e-4, -4e-4])]
               for s in range(3)}
    with matplotlib.style.context("default"):
        fig = fit_figure("gmm8", curves, {"irl": "learned dynamics", "edm-grid": "tuned"}, "mmd", False)
        fig.canvas.draw()
        for ax in fig.axes[:2]:
            lo, hi = ax.get_ylim()
            shown = [t for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
            assert len(shown) >= 2, (ax.get_title(), ax.get_yscale(), [t.get_text() for t in ax.get_yticklabels()])


def test_the_cost_plot_labels_the_front_and_the_best_and_no_label_covers_another(tmp_path):
    b = _board(tmp_path)
    with matplotlib.style.context("default"):
        fig = figures.cost_figure(b)
        fig.canvas.draw()
        ax = fig.axes[0]
        texts = [t for t in ax.texts if "@" in t.get_text()]
        best = {f"{r['method']} @{r['nfe']}" for rows in b["best"].values() for r in rows}
        assert best <= {t.get_text() for t in texts}
        assert len(texts) < len(b["rows"])  # not every row: only the front and the best
        boxes = [t.get_window_extent() for t in texts]
        assert not any(_overlap(x, y) for x, y in itertools.combinations(boxes, 2))
        assert any(c.get_label() == "best at its NFE" for c in ax.collections)


def test_the_fit_curves_are_a_grid_not_a_strip():
    curve = [dict(fit_nfe=1000 * (i + 1), score=1.0 / (i + 1)) for i in range(5)]
    data = {(label, nfe, seed): curve for label in ("irl", "edm-grid") for nfe in (4, 5, 10, 20, 35)
            for seed in range(2)}
    with matplotlib.style.context("default"):
        fig = curves.figure("gmm8", data, {"irl": "learned dynamics", "edm-grid": "tuned"}, "mmd", False)
    w, h = fig.get_size_inches()
    assert w / h <= 3.0 and len([ax for ax in fig.axes if ax.axison]) == 5
    assert len(fig.legends) == 1  # one legend for the figure, not one per panel


@pytest.mark.parametrize("which", ["quality", "cost"])
def test_pictures_rebuild_to_the_same_bytes(tmp_path, which):
    b = _board(tmp_path)
    render = {"quality": figures.quality_png, "cost": figures.cost_png}[which]
    assert render(b) == render(b)


def test_the_verdict_map_colours_each_cell_by_its_verdict_and_says_fewer_seeds():
    """The index's picture of every verdict: the same cells as its table (``board.verdict_cells``),
    a row per (method, NFE) in family order, a column per task with comparisons, each cell the
    colour of its verdict (close ones their own, paler), the seed count where a row has fewer."""
    import numpy as np
    import pandas as pd
    cols = ["nfe", "label", "reference", "seeds", "diff", "diff_low", "diff_high", "p_improve", "verdict", "close"]
    a = pd.DataFrame([[10, "ld3", "ipndm", 5, -0.002, -0.003, -0.001, 1.0, "better", False],
                      [10, "edm", "ipndm", 3, 0.3, 0.2, 0.4, 0.0, "worse", True],
                      [20, "ld3", "ipndm", 5, 0.001, -0.001, 0.002, 0.4, "tie", False],
                      [20, "edm", "ipndm", 5, 0.002, -0.0001, 0.004, 0.1, "tie", True]], columns=cols)
    b = pd.DataFrame([[10, "ld3", "dpmpp-2m", 5, -0.001, -0.002, -0.0001, 0.8, "better", True]], columns=cols)
    boards = [dict(task="t1", primary="mmd", paired=a, families={"ld3": "learned schedule", "edm": "classic",
                                                                  "ipndm": "classic"}),
              dict(task="t2", primary="kid", paired=b, families={"ld3": "learned schedule", "dpmpp-2m": "classic"}),
              dict(task="t3", primary="mmd", paired=pd.DataFrame(columns=cols), families={})]
    kind = {name: i for i, (name, _) in enumerate(figures.VERDICT_KINDS)}
    with matplotlib.style.context("default"):
        fig = figures.verdict_figure(boards)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dpmpp-2m  10", "edm  10", "edm  20", "ipndm  10",
                                                            "ipndm  20", "ld3  10", "ld3  20"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["t1\n(mmd)", "t2\n(kid)"]  # t3 has no comparisons
    want = [["not run", "reference"], ["worse, close", "not run"], ["tie, close", "not run"],
            ["reference", "not run"], ["reference", "not run"], ["better", "better, close"], ["tie", "not run"]]
    assert np.array_equal(np.asarray(ax.images[0].get_array()), [[kind[w] for w in row] for row in want])
    assert [t.get_text() for t in ax.texts] == ["3 seeds"]  # edm's 3 of the task's 5
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [n for n, _ in figures.VERDICT_KINDS]
    # every kind its own colour, so no two verdicts read alike
    assert len({c for _, c in figures.VERDICT_KINDS}) == len(figures.VERDICT_KINDS)


def test_the_compare_picture_draws_each_row_at_its_paired_difference_coloured_by_its_verdict():
    """`compare --plot`: a panel per NFE budget, the other rows ordered by the paired difference,
    each a point at it with its t-interval as a bar, coloured by its verdict (close ones paler)."""
    import pandas as pd
    from matplotlib.colors import to_hex
    cols = ["nfe", "label", "reference", "seeds", "diff", "diff_low", "diff_high", "p_value", "close", "verdict"]
    table = pd.DataFrame([[10, "mine", "edm", 5, -0.3, -0.31, -0.29, 1e-6, False, "better"],
                          [10, "mine", "ld3", 5, 0.002, 0.001, 0.003, 0.02, True, "worse"],
                          [10, "mine", "ipndm", 5, -0.0001, -0.0004, 0.0002, 0.4, False, "tie"],
                          [20, "mine", "late", 0, float("nan"), float("nan"), float("nan"), float("nan"), False, "n/a"],
                          [20, "mine", "edm", 3, 0.01, 0.004, 0.016, 0.03, True, "worse"]], columns=cols)
    with matplotlib.style.context("default"):
        fig = figures.compare_figure(table, "mmd", "mine", higher_is_better=False)
    colour = dict(figures.VERDICT_KINDS)
    axes = fig.axes
    assert [ax.get_title(loc="left") for ax in axes] == ["NFE 10", "NFE 20"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["edm", "ipndm", "ld3"]  # by the difference
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["edm", "late"]  # no difference: last
    points = [(c.get_offsets()[0][1], to_hex(c.get_facecolor()[0])) for c in axes[0].collections]
    assert points == [(-0.3, colour["better"]), (-0.0001, colour["tie"]), (0.002, colour["worse, close"])]
    bars = [tuple(line.get_ydata()) for line in axes[0].lines if len(line.get_xdata()) == 2 and
            line.get_xdata()[0] == line.get_xdata()[1]]
    assert bars == [(-0.31, -0.29), (-0.0004, 0.0002), (0.001, 0.003)]
    assert [to_hex(c.get_facecolor()[0]) for c in axes[1].collections] == [colour["worse, close"], colour["n/a"]]
    assert "below 0: mine better" in axes[0].get_ylabel()
    assert figures.compare_png(table, "mmd", "mine", False) == figures.compare_png(table, "mmd", "mine", False)
