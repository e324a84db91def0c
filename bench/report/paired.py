"""Paired comparisons over seeds (protocol v2; rliable, Agarwal et al. 2021).

Every row of a task shares each seed's initial noise and reference data, so rows compare
*paired*: per seed, the difference of the primary metric between a row and a reference row
at the same NFE budget. Reported per row: the mean paired difference, its 95% percentile
bootstrap interval over seeds (``scipy.stats.bootstrap``, paired, 10,000 resamples, a fixed
generator so that the tables rebuild byte for byte), the probability of improvement
P(row better than reference) = (1/(n m)) sum_ij S(x_i, y_j) (S = 1 when better, 1/2 on a tie;
the Mann-Whitney U statistic over n m), and a verdict: ``better`` or ``worse`` only when the
interval excludes 0, else ``tie``. The reference at each budget is the best ``classic``
solver there (a method's ``family``) with the most seeds, on the task's own denoiser (a row on
another one, such as a toy task's exact denoiser, samples another model: compared, never the
reference); rows with fewer than three common seeds get no verdict.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import scipy.stats

CONFIDENCE = 0.95
RESAMPLES = 10_000
MIN_SEEDS = 3


def bootstrap_interval(values, statistic=np.mean) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``statistic`` over ``values`` (one per seed)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return math.nan, math.nan
    if np.all(v == v[0]):
        return float(v[0]), float(v[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy notes the degenerate distributions of tiny samples
        res = scipy.stats.bootstrap((v,), statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                                    method="percentile", rng=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def probability_of_improvement(x, y, higher_is_better: bool) -> float:
    """P(X better than Y) over all pairs of runs, ties counting one half."""
    x, y = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    better = (x > y) if higher_is_better else (x < y)
    return float((better + 0.5 * (x == y)).mean())


def reference_rows(frame: pd.DataFrame, higher_is_better: bool) -> dict:
    """NFE budget -> label of the best classic row there (most seeds first, then the mean), among
    the rows on the task's own denoiser (column ``own``, all rows where absent)."""
    out = {}
    own = frame["own"].astype(bool) if "own" in frame else True
    classic = frame[(frame["family"] == "classic") & own]
    for nfe, g in classic.groupby("nfe"):
        stats = g.groupby("label")["value"].agg(["count", "mean"])
        stats = stats[stats["count"] >= MIN_SEEDS] if (stats["count"] >= MIN_SEEDS).any() else stats
        best = stats["mean"].idxmax() if higher_is_better else stats["mean"].idxmin()
        out[int(nfe)] = best
    return out


def pair(mine: pd.Series, theirs: pd.Series, higher_is_better: bool) -> dict:
    """``mine`` - ``theirs`` over their common seeds (two series indexed by seed): the paired
    statistics of the module docstring, the verdict from ``mine``'s side."""
    common = sorted(set(mine.index) & set(theirs.index))
    diff = (mine[common] - theirs[common]).to_numpy(dtype=float)
    lo, hi = bootstrap_interval(diff) if len(common) >= MIN_SEEDS else (math.nan, math.nan)
    if math.isnan(lo):
        verdict = "n/a"
    elif (hi < 0 and not higher_is_better) or (lo > 0 and higher_is_better):
        verdict = "better"
    elif (lo > 0 and not higher_is_better) or (hi < 0 and higher_is_better):
        verdict = "worse"
    else:
        verdict = "tie"
    return dict(seeds=len(common), diff=float(diff.mean()) if len(common) else math.nan, diff_low=lo, diff_high=hi,
                p_improve=probability_of_improvement(mine[common], theirs[common], higher_is_better)
                if len(common) else math.nan, verdict=verdict)


COLUMNS = ["nfe", "label", "reference", "seeds", "diff", "diff_low", "diff_high", "p_improve", "verdict"]


def _values(frame: pd.DataFrame, nfe, label) -> pd.Series:
    return frame[(frame["nfe"] == nfe) & (frame["label"] == label)].set_index("seed")["value"]


def compare(frame: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """``frame``: one row per (label, family, nfe, seed, value[, own]) of the primary metric. Returns one
    row per (nfe, label) other than the reference: the paired statistics above."""
    refs = reference_rows(frame, higher_is_better)
    rows = []
    for (nfe, label), g in frame.groupby(["nfe", "label"], sort=True):
        ref = refs.get(int(nfe))
        if ref is None or label == ref or g["family"].iloc[0] == "floor":
            continue
        rows.append(dict(nfe=int(nfe), label=label, reference=ref,
                         **pair(g.set_index("seed")["value"], _values(frame, nfe, ref), higher_is_better)))
    return pd.DataFrame(rows, columns=COLUMNS)


def against(frame: pd.DataFrame, label: str, higher_is_better: bool, others=None) -> pd.DataFrame:
    """``label`` against every other row (or those named in ``others``) at each NFE budget where
    both have results: one row per (nfe, other), ``diff`` = label - other, the verdict ``label``'s."""
    rows = []
    for (nfe, other), g in frame.groupby(["nfe", "label"], sort=True):
        if other == label or (others is not None and other not in others):
            continue
        mine = _values(frame, nfe, label)
        if mine.empty:
            continue
        rows.append(dict(nfe=int(nfe), label=label, reference=other,
                         **pair(mine, g.set_index("seed")["value"], higher_is_better)))
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame, metric: str, reference: str = "reference") -> str:
    """The comparisons as a markdown table (tabulate), numbers to 4 significant digits; ``reference``
    heads the column of the rows compared with."""
    if table.empty:
        return "No paired comparisons (no classic reference row with results)."

    def g(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
    shown = pd.DataFrame({
        "NFE": table["nfe"], "method": table["label"], reference: table["reference"], "seeds": table["seeds"],
        f"Δ{metric} (paired mean)": table["diff"].map(g),
        "95% interval": [f"[{g(lo)}, {g(hi)}]" for lo, hi in zip(table["diff_low"], table["diff_high"])],
        "P(improvement)": table["p_improve"].map(g), "verdict": table["verdict"]})
    return shown.to_markdown(index=False, colalign=("right", "left", "left", "right", "right", "left", "right",
                                                    "left"))
