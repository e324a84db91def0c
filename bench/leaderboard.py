"""Leaderboards: per task, a CSV, a markdown table and a plot built from result files.

    from bench.leaderboard import build
    build("results", "leaderboards")          # every task
    build("results", "leaderboards", "gmm8")  # one task

One row per (method label, NFE budget): the mean over seeds of every metric with
a 95% Student-t interval (half-width ``t_{0.975,n-1} * sd / sqrt(n)``; none with
one seed), the seeds behind it and the failed runs beside it (counted, never
averaged). Two results of the same (task, label, budget, seed) are never
averaged: the newest is kept, with a warning naming both files. The outputs
depend only on the result files, so rebuilding gives the same bytes.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.io import atomic_write_bytes
from bench.results import load_results

CI_LEVEL = 0.95


# --- statistics ------------------------------------------------------------

def mean_ci(values) -> tuple[float, float]:
    """Mean and 95% interval half-width; the half-width is NaN with fewer than two values."""
    from scipy.stats import t as student_t
    v = np.asarray([float(x) for x in values], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    m = float(v.mean())
    if v.size < 2:
        return m, math.nan
    sd = float(v.std(ddof=1))
    return m, float(student_t.ppf(0.5 + CI_LEVEL / 2, v.size - 1) * sd / math.sqrt(v.size))


def _mean(values) -> float:
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else math.nan


# --- collecting -------------------------------------------------------------

def _label(r: dict) -> str:
    return str(r.get("label") or r["method"])


def _created(r: dict) -> datetime:
    try:
        d = datetime.fromisoformat(str(r.get("created")))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _dedupe(results: list[dict]) -> list[dict]:
    """One result per (task, label, budget, seed): the newest by ``created``, with a warning."""
    kept: dict[tuple, dict] = {}
    for r in sorted(results, key=lambda r: r.get("_path", "")):
        key = (r["task"], _label(r), int(r["nfe_budget"]), int(r["seed"]))
        old = kept.get(key)
        if old is None:
            kept[key] = r
            continue
        new, drop = (r, old) if _created(r) > _created(old) else (old, r)
        warnings.warn(f"duplicate {'result' if r['status'] == 'ok' else 'failed result'} for task {key[0]}, "
                      f"{key[1]}, nfe {key[2]}, seed {key[3]}: keeping {new.get('_path')} "
                      f"(created {new.get('created')}), ignoring {drop.get('_path')} "
                      f"(created {drop.get('created')}); duplicates are never averaged", stacklevel=3)
        kept[key] = new
    return [kept[k] for k in sorted(kept)]


def _one_version(task: str, results: list[dict]) -> list[dict]:
    """Results of different task versions are not comparable: keep the newest version's."""
    versions = sorted({r.get("task_version") for r in results}, key=lambda v: (v is not None, v or 0))
    if len(versions) < 2:
        return results
    newest = versions[-1]
    dropped = [r for r in results if r.get("task_version") != newest]
    warnings.warn(f"task {task}: results of versions {', '.join(map(str, versions))} found; using version "
                  f"{newest}, skipping {len(dropped)} result(s) of older versions (e.g. {dropped[0].get('_path')})",
                  stacklevel=3)
    return [r for r in results if r.get("task_version") == newest]


def _fit(r: dict) -> tuple[float | None, float | None]:
    """The cost of producing what the run used: the artifact's own cost when it was cached
    (a reused artifact reports nfe 0 for the run itself), else the run's fit cost."""
    cost = r.get("fit_cost") or {}
    src = cost.get("artifact") if isinstance(cost.get("artifact"), dict) else cost
    return src.get("nfe"), src.get("seconds")


def _task_info(task: str, metrics: list[str]) -> tuple[str, dict]:
    """(primary metric, higher_is_better) from the registered task, else the first metric."""
    primary, higher = None, {}
    try:
        from bench import get_task
        t = get_task(task)
        primary, higher = t.primary_metric, dict(t.higher_is_better)
    except (LookupError, ValueError, ImportError) as e:
        warnings.warn(f"task {task} is not registered here ({e}); ranking by its first metric, lower is better",
                      stacklevel=3)
    if primary not in metrics:
        primary = metrics[0] if metrics else (primary or "")
    return primary, higher


def _rows(ok: list[dict], failed: list[dict], metrics: list[str]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        groups.setdefault((_label(r), int(r["nfe_budget"])), []).append(r)
    n_failed: dict[tuple, int] = {}
    for r in failed:
        k = (_label(r), int(r["nfe_budget"]))
        n_failed[k] = n_failed.get(k, 0) + 1
        groups.setdefault(k, [])
    rows = []
    for (label, nfe), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rs = sorted(rs, key=lambda r: int(r["seed"]))
        fits = [_fit(r) for r in rs]
        row = dict(method=label, nfe=nfe, nfe_measured=_mean(r.get("nfe") for r in rs), seeds=len(rs),
                   failed=n_failed.get((label, nfe), 0), mean={}, ci={},
                   fit_nfe=_mean(f[0] for f in fits), fit_seconds=_mean(f[1] for f in fits),
                   sample_seconds=_mean(r.get("sample_seconds") for r in rs))
        for m in metrics:
            row["mean"][m], row["ci"][m] = mean_ci(r["metrics"][m] for r in rs if m in r["metrics"])
        rows.append(row)
    return rows


# --- formatting -------------------------------------------------------------

def _csv_num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    v = float(v)
    return "" if math.isnan(v) else repr(v)


def _md_num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{float(v):.4g}"


def _md_text(s) -> str:
    return str(s).replace("|", "\\|")


def _csv_bytes(rows: list[dict], metrics: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "nfe", "nfe_measured", "seeds", "failed"]
               + [f"{m}_{s}" for m in metrics for s in ("mean", "ci95")]
               + ["fit_nfe", "fit_seconds", "sample_seconds"])
    for row in rows:
        w.writerow([row["method"], _csv_num(row["nfe"]), _csv_num(row["nfe_measured"]), row["seeds"],
                    row["failed"]]
                   + [_csv_num(row[s][m]) for m in metrics for s in ("mean", "ci")]
                   + [_csv_num(row["fit_nfe"]), _csv_num(row["fit_seconds"]), _csv_num(row["sample_seconds"])])
    return buf.getvalue().encode()


def _better(higher: dict, metric: str, a: float, b: float) -> bool:
    return a > b if higher.get(metric, False) else a < b


def _ranked(rows: list[dict], primary: str, higher: dict) -> list[dict]:
    """Rows by budget, then best primary-metric mean first; rows without a value last."""
    sign = -1.0 if higher.get(primary, False) else 1.0

    def key(row):
        v = row["mean"].get(primary, math.nan)
        return (row["nfe"], math.isnan(v), sign * v if not math.isnan(v) else 0.0, row["method"])
    return sorted(rows, key=key)


def _best(rows: list[dict], primary: str, higher: dict) -> set[tuple]:
    best: dict[int, float] = {}
    for row in rows:
        v = row["mean"].get(primary, math.nan)
        if not math.isnan(v) and (row["nfe"] not in best or _better(higher, primary, v, best[row["nfe"]])):
            best[row["nfe"]] = v
    return {(row["method"], row["nfe"]) for row in rows if row["nfe"] in best
            and row["mean"].get(primary, math.nan) == best[row["nfe"]]}


def _md_bytes(task: str, version, rows, metrics, primary, higher, ok, failed, png_name) -> bytes:
    arrow = lambda m: "↑" if higher.get(m, False) else "↓"  # noqa: E731
    behind = ok or failed
    first = min(behind, key=lambda r: (_label(r), int(r["nfe_budget"]), int(r["seed"])))
    proto = first.get("protocol") or {}
    newest = max(behind, key=lambda r: (_created(r), r.get("_path", "")))
    shas = sorted({str(r.get("git_sha", "unknown")) for r in behind})
    title = f"# Leaderboard: {task}" + (f" (v{version})" if version is not None else "")
    lines = [title, ""]
    lines.append("Protocol: " + "; ".join(f"{k} = {proto.get(k, 'n/a')}"
                                          for k in ("n_samples", "reference", "nfe_convention")) + ".")
    differ = [k for k in ("n_samples", "reference", "nfe_convention")
              if len({str((r.get("protocol") or {}).get(k)) for r in ok}) > 1]
    if differ:
        lines.append("")
        lines.append(f"**Warning:** results differ in {', '.join(differ)}; rows may not be comparable.")
    lines.append("")
    lines.append(f"Primary metric: **{primary or 'n/a'}** ({'higher' if higher.get(primary, False) else 'lower'} "
                 f"is better; ↑/↓ mark each metric's direction). Values are mean ± 95% t-interval half-width "
                 f"over seeds (n/a with one seed); failed runs are counted, not averaged. "
                 f"Bold: best mean on {primary or 'the primary metric'} at each NFE budget.")
    lines.append("")
    lines.append(f"Newest result: {newest.get('created', 'unknown')}, git {newest.get('git_sha', 'unknown')}"
                 + (f" (results span {len(shas)} commits)" if len(shas) > 1 else "") + ".")
    lines.append("")
    order = ([primary] if primary in metrics else []) + [m for m in metrics if m != primary]
    header = (["method", "NFE (budget)", "measured NFE", "seeds", "failed"]
              + [f"{m} {arrow(m)}" for m in order] + ["fit NFE", "fit s", "sample s"])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|")
    best = _best(rows, primary, higher)
    for row in _ranked(rows, primary, higher):
        bold = (row["method"], row["nfe"]) in best
        cells = [_md_text(row["method"]), str(row["nfe"]), _md_num(row["nfe_measured"]), str(row["seeds"]),
                 str(row["failed"])]
        for m in order:
            mean, ci = row["mean"][m], row["ci"][m]
            cell = "—" if math.isnan(mean) else f"{_md_num(mean)} ± {_md_num(ci)}"
            cells.append(f"**{cell}**" if bold and m == primary else cell)
        if bold:
            cells[0] = f"**{cells[0]}**"
        cells += [_md_num(row["fit_nfe"]), _md_num(row["fit_seconds"]), _md_num(row["sample_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![]({png_name})", ""]
    return "\n".join(lines).encode()


def _png_bytes(task: str, rows, primary: str, higher: dict) -> bytes:
    import matplotlib
    import matplotlib.style
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_label: dict[str, list[dict]] = {}
    for row in rows:
        if primary in row["mean"] and not math.isnan(row["mean"][primary]):
            by_label.setdefault(row["method"], []).append(row)
    # the default style, whatever the user's matplotlibrc says, so the bytes depend on the data only
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(6.4, 4.4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        means = [r["mean"][primary] for rs in by_label.values() for r in rs]
        budgets = sorted({r["nfe"] for rs in by_label.values() for r in rs})
        log_y = bool(means) and all(v > 0 for v in means)
        for label in sorted(by_label):
            rs = sorted(by_label[label], key=lambda r: r["nfe"])
            x = np.array([r["nfe"] for r in rs], dtype=float)
            y = np.array([r["mean"][primary] for r in rs])
            ci = np.array([r["ci"][primary] for r in rs])
            (line,) = ax.plot(x, y, marker="o", label=label)
            has = ~np.isnan(ci)
            if has.any():
                lo, hi = y - np.where(has, ci, 0.0), y + np.where(has, ci, 0.0)
                if log_y:  # a band reaching zero or below runs off the bottom of a log axis
                    lo = np.where(lo > 0, lo, y / 10.0)
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        if log_y:
            ax.set_yscale("log")
        if budgets and all(b > 0 for b in budgets) and len(budgets) > 1:
            ax.set_xscale("log")
        if budgets:
            ax.set_xticks(budgets)
            ax.set_xticklabels([str(b) for b in budgets])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("NFE budget")
        ax.set_ylabel(f"{primary} ({'higher' if higher.get(primary, False) else 'lower'} is better)")
        ax.set_title(f"{task}: {primary} vs NFE (mean, 95% interval over seeds)")
        if by_label:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no successful results", ha="center", va="center", transform=ax.transAxes)
        ax.grid(True, which="major", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# --- building ---------------------------------------------------------------

def build(results="results", out="leaderboards", task: str | None = None) -> list[Path]:
    """Write ``<out>/<task>.csv``, ``.md`` and ``.png`` for every task with results
    under ``results`` (a directory or a list of them), or only for ``task``; returns
    the paths written."""
    loaded = load_results(results)
    where = ", ".join(map(str, [results] if isinstance(results, (str, Path)) else results))
    if not loaded:
        raise FileNotFoundError(f"no result files under {where}: produce some with "
                                f"`python -m bench run --method edm --task gmm8 --out {where}`")
    by_task: dict[str, list[dict]] = {}
    for r in loaded:
        by_task.setdefault(str(r["task"]), []).append(r)
    if task is not None:
        name = task if task in by_task else task.rpartition("-v")[0]
        if name not in by_task:
            raise FileNotFoundError(f"no results for task {task} under {where} (tasks there: "
                                    f"{', '.join(sorted(by_task))}); produce some with "
                                    f"`python -m bench run --task {task} --out {where}`")
        by_task = {name: by_task[name]}
        if name != task:
            by_task[name] = [r for r in by_task[name] if f"{name}-v{r.get('task_version')}" == task]
            if not by_task[name]:
                raise FileNotFoundError(f"no results for task {task} under {where} (other versions of {name} "
                                        f"only)")
    out = Path(out)
    written = []
    for name in sorted(by_task):
        rs = _one_version(name, by_task[name])
        ok = _dedupe([r for r in rs if r["status"] == "ok"])
        failed = _dedupe([r for r in rs if r["status"] != "ok"])
        metrics = sorted({m for r in ok for m in r["metrics"]})
        primary, higher = _task_info(name, metrics)
        rows = _rows(ok, failed, metrics)
        version = rs[0].get("task_version") if rs else None
        files = [(out / f"{name}.csv", _csv_bytes(rows, metrics)),
                 (out / f"{name}.md", _md_bytes(name, version, rows, metrics, primary, higher, ok, failed,
                                                f"{name}.png")),
                 (out / f"{name}.png", _png_bytes(name, rows, primary, higher))]
        for path, data in files:
            atomic_write_bytes(path, data)
            written.append(path)
    return written
