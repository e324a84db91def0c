"""Paired comparisons over seeds (protocol v3; rliable, Agarwal et al. 2021).

Every row of a task shares each seed's initial noise and reference data, so rows compare
*paired*: per seed, the difference of the primary metric between a row and a reference row
at the same NFE budget. The verdict rests on the **paired t-interval** of the mean difference,
mean +- t_{0.975, n-1} sd / sqrt(n): exact 95% coverage for normal differences at any seed
count (a percentile bootstrap over 5 seeds covers about 84%, over 3 it is [min, max]). Reported
per row: the mean paired difference, the t-interval, its two-sided p-value, the 95% percentile
bootstrap interval beside it (``scipy.stats.bootstrap``, paired, 10,000 resamples, a fixed
generator so that the tables rebuild byte for byte), the probability of improvement
P(row better than reference) = (1/(n m)) sum_ij S(x_i, y_j) (S = 1 when better, 1/2 on a tie;
the Mann-Whitney U statistic over n m), and a verdict: ``better`` or ``worse`` only when the
t-interval excludes 0, else ``tie``. A verdict is **close** when the 90% and 99% t-intervals
disagree (p between 0.01 and 0.10): a few more seeds could flip it. The reference at each
budget is the best ``classic`` solver there (a method's ``family``) with the most seeds, on the
task's own denoiser (a row on another one, such as a toy task's exact denoiser, samples another
model: compared, never the reference); rows with fewer than three common seeds get no verdict.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import scipy.stats

CONFIDENCE = 0.95
CLOSE = (0.01, 0.10)  # p-values between these: the 90% and 99% intervals disagree
RESAMPLES = 10_000
MIN_SEEDS = 3
# a tie over this many seeds or fewer whose every seed points one way is "undetermined": the
# t-interval at 3 seeds is wide (t = 4.3), and the 3 signs alone say more seeds would decide it
UNDETERMINED_SEEDS = 3


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-interval of the mean of ``values`` (one per seed): mean +- t_{(1+c)/2, n-1} sd / sqrt(n).
    Zero width when every value is the same; NaN with fewer than two values."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return math.nan, math.nan
    m = float(v.mean())
    if np.all(v == v[0]):  # exactly v[0]: v.mean and v.std would add their own rounding
        return float(v[0]), float(v[0])
    half = float(scipy.stats.t.ppf((1 + confidence) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m - half, m + half


def t_pvalue(values) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 (1 when every value is 0, 0 when every
    value is the same non-zero number)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return math.nan
    sd = v.std(ddof=1)
    if sd == 0:
        return 1.0 if v[0] == 0 else 0.0
    t = v.mean() / (sd / math.sqrt(v.size))
    return float(2 * scipy.stats.t.sf(abs(t), v.size - 1))


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


def verdict_of(lo: float, hi: float, higher_is_better: bool) -> str:
    """better / worse when the interval [lo, hi] of (row - reference) excludes 0, else tie."""
    if math.isnan(lo):
        return "n/a"
    if (hi < 0 and not higher_is_better) or (lo > 0 and higher_is_better):
        return "better"
    if (lo > 0 and not higher_is_better) or (hi < 0 and higher_is_better):
        return "worse"
    return "tie"


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
    statistics of the module docstring, the verdict from ``mine``'s side (by the t-interval; the
    bootstrap's verdict beside it, ``boot_verdict``)."""
    common = sorted(set(mine.index) & set(theirs.index))
    mine, theirs = mine.loc[common], theirs.loc[common]
    diff = (mine - theirs).to_numpy(dtype=float)
    enough = len(common) >= MIN_SEEDS
    lo, hi = t_interval(diff) if enough else (math.nan, math.nan)
    blo, bhi = bootstrap_interval(diff) if enough else (math.nan, math.nan)
    p = t_pvalue(diff) if enough else math.nan
    verdict = verdict_of(lo, hi, higher_is_better)
    one_way = bool(len(diff)) and (bool(np.all(diff > 0)) or bool(np.all(diff < 0)))
    return dict(seeds=len(common), diff=float(diff.mean()) if len(common) else math.nan, diff_low=lo, diff_high=hi,
                p_value=p, close=bool(enough and CLOSE[0] <= p <= CLOSE[1]), boot_low=blo, boot_high=bhi,
                boot_verdict=verdict_of(blo, bhi, higher_is_better),
                p_improve=probability_of_improvement(mine, theirs, higher_is_better)
                if len(common) else math.nan, verdict=verdict,
                undetermined=bool(enough and verdict == "tie" and one_way and len(common) <= UNDETERMINED_SEEDS))


COLUMNS = ["nfe", "label", "reference", "seeds", "diff", "diff_low", "diff_high", "p_value", "close", "boot_low",
           "boot_high", "boot_verdict", "p_improve", "verdict", "undetermined", "floor", "within_floor"]


def within_floor(verdict: str, diff: float, floor: float) -> bool:
    """A decisive verdict (better or worse) whose mean paired difference is smaller than the metric's
    measured floor (``board.floors``: the seed-to-seed standard deviation of the metric on true
    samples): significant, but below what the metric resolves between two sets of true samples."""
    return verdict in ("better", "worse") and not math.isnan(floor) and abs(diff) < floor


def _by_noise(g: pd.DataFrame) -> pd.Series:
    """A row's values indexed by what pairs two results: the seed (its initial noise) and, where the
    frame has it, the samples per seed (the same seed at another count is another estimator)."""
    return g.set_index(["seed", "samples"] if "samples" in g else "seed")["value"]


def _values(frame: pd.DataFrame, nfe, label) -> pd.Series:
    return _by_noise(frame[(frame["nfe"] == nfe) & (frame["label"] == label)])


def compare(frame: pd.DataFrame, higher_is_better: bool, floors: dict | None = None) -> pd.DataFrame:
    """``frame``: one row per (label, family, nfe, seed, value[, own]) of the primary metric. Returns one
    row per (nfe, label) other than the reference: the paired statistics above, and against
    ``floors`` (NFE budget -> the metric's floor) whether a decisive verdict is within it."""
    refs = reference_rows(frame, higher_is_better)
    rows = []
    for (nfe, label), g in frame.groupby(["nfe", "label"], sort=True):
        ref = refs.get(int(nfe))
        if ref is None or label == ref or g["family"].iloc[0] == "floor":
            continue
        stats = pair(_by_noise(g), _values(frame, nfe, ref), higher_is_better)
        floor = float((floors or {}).get(int(nfe), math.nan))
        rows.append(dict(nfe=int(nfe), label=label, reference=ref, **stats, floor=floor,
                         within_floor=within_floor(stats["verdict"], stats["diff"], floor)))
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
                         **pair(mine, _by_noise(g), higher_is_better), floor=math.nan, within_floor=False))
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame, metric: str, reference: str = "reference", empty: str | None = None) -> str:
    """The comparisons as a markdown table (tabulate), numbers to 4 significant digits; ``reference``
    heads the column of the rows compared with; a close verdict is marked with an asterisk."""
    if table.empty:
        return empty or "No paired comparisons (no classic reference row with results)."

    def g(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
    shown = pd.DataFrame({
        "NFE": table["nfe"], "method": table["label"],
        reference: [f"{x} ({r})" if r else x for x, r in zip(table["reference"], table["role"])]
        if "role" in table else table["reference"], "seeds": table["seeds"],
        f"Δ{metric} (paired mean)": table["diff"].map(g),
        "95% t-interval": [f"[{g(lo)}, {g(hi)}]" for lo, hi in zip(table["diff_low"], table["diff_high"])],
        "p": table["p_value"].map(g),
        "bootstrap 95%": [f"[{g(lo)}, {g(hi)}]" for lo, hi in zip(table["boot_low"], table["boot_high"])],
        "P(improvement)": table["p_improve"].map(g),
        "verdict": [v + ("*" if c else "") for v, c in zip(table["verdict"], table["close"])]})
    return shown.to_markdown(index=False, colalign=("right", "left", "left", "right", "right", "left", "right", "left",
                                                    "right", "left"))
