"""The board model: everything a task's leaderboard files are rendered from, built from result
files (and the published numbers of ``bench.report.reported``); the renderers (``markdown``,
``data``, ``latex``, ``figures``) only lay it out.

Measured rows: one per (method label, NFE budget), the mean over seeds of every metric with the
half-width of its 95% t-interval over seeds (none with one seed), the seeds behind it and the
failed runs beside it (counted, never averaged). Tasks that declare ``seed_aggregate = "min"``
(EDM's protocol: the minimum FID over seed sets) also get the minimum over seeds of the primary
metric. Two results of the same (task, label, budget, seed) are never averaged: the newest is
kept, with a warning naming both files; unusable result files are skipped with a warning
(``bench.engine.results.problem``). Every row carries its protocol (``P1``, ``P2``, ... for
measured rows, ``R1``, ... for reported ones), its paired verdict against the best classic row
at its budget (``bench.report.paired``), its fit cost, and how many of its seeds equal the
method's untrained start (``untrained``: a fit that never moved).
"""
from __future__ import annotations

import json
import math
import re
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.engine.results import PUBLISHED_RESULTS, SCHEMA, code_version, config_hash, load_results
from bench.registry import method_class, task_class
from bench.report import curves, paired


CI_LEVEL = 0.95


GENERATOR = "bench.leaderboard"  # the mark of a generated JSON file (kept from before the move)


RESERVED = {"README", "reported", "references", "verdicts"}  # names of files under out that are not a task's


SAMPLE_COLUMNS = 10  # sample indices 0..9 in the grid


_PROTOCOL_FIELDS = ("n_samples", "reference", "n_reference", "reference_stats", "feature_extractor",
                    "nfe_convention", "eval_seeds")


def mean_ci(values) -> tuple[float, float]:
    """Mean over seeds and the half-width of its 95% t-interval (``bench.report.paired.t_interval``):
    exact coverage for normal values at any seed count. NaN with fewer than two values."""
    v = np.asarray([float(x) for x in values], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    m = float(v.mean())
    lo, hi = paired.t_interval(v)
    return m, (math.nan if math.isnan(lo) else (hi - lo) / 2)


def num(x) -> float:
    """A number from a result file (JSON writes inf/nan as strings); NaN for None or junk."""
    if x is None or isinstance(x, bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def mean_of(values) -> float:
    v = [f for f in (num(x) for x in values) if not math.isnan(f)]
    return float(np.mean(v)) if v else math.nan


def is_generated(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("generated_by") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def load(results) -> tuple[list[dict], list[Path]]:
    """Result files under ``results``; this builder's own JSON outputs (when results are read from a
    directory holding leaderboards) are passed over quietly, every other unusable file with a warning."""
    dirs = [Path(results)] if isinstance(results, (str, Path)) else [Path(d) for d in results]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_results(dirs)
    for w in caught:
        m = re.match(r"skipping (.+?): not a result file", str(w.message))
        if m and is_generated(Path(m.group(1))):
            continue  # a leaderboard JSON written by this module, e.g. results read from the output directory
        warnings.warn(w.message, w.category, stacklevel=3)
    good = []
    for r in loaded:
        schema = r.get("schema", 0)
        if not isinstance(schema, int) or schema < SCHEMA:
            warnings.warn(f"{r['_path']} is a result file of an older schema ({schema!r}, now {SCHEMA}): used, as "
                          f"it has every required field; what it lacks (e.g. protocol, label) shows as not recorded",
                          stacklevel=3)
        good.append(r)
    return good, dirs


def beside_published(results) -> tuple[list[dict], list[Path]]:
    """Your results under ``results`` and the published ones of the same tasks, as one set: a cell
    (task, label, NFE budget) you have results for is taken from yours whole, the published results
    of that cell left out, so a row never mixes seeds of two sources; the label's published cells at
    other budgets stay. Each of your results in a cell the published set also has records how many
    seeds it replaced (``_replaces``). Returns what ``load`` does, the published results marked
    ``_published``; their paths read ``leaderboards/results/...``, yours relative to ``results``."""
    yours, roots = load(results)
    if not yours:
        where = ", ".join(map(str, roots))
        raise FileNotFoundError(f"no result files under {where}: nothing of yours to put beside the published "
                                f"rows (`python -m bench run ... --out {where}` makes some)")

    def cell(r):
        return r["task"], row_label(r), int(r["nfe_budget"])
    mine, tasks = {cell(r) for r in yours}, {r["task"] for r in yours}
    theirs, _ = load(PUBLISHED_RESULTS)
    replaced: dict[tuple, int] = {}
    for r in theirs:
        if cell(r) in mine and r.get("status") == "ok":
            replaced[cell(r)] = replaced.get(cell(r), 0) + 1
    theirs = [dict(r, _published=True) for r in theirs if r["task"] in tasks and cell(r) not in mine]
    yours = [dict(r, _replaces=replaced[cell(r)]) if cell(r) in replaced else r for r in yours]
    return yours + theirs, roots + [PUBLISHED_RESULTS.parent.parent]


def rel_path(r: dict, roots: list[Path]) -> str:
    """The result's path relative to the results directory it was found in (machine-independent)."""
    p = Path(r["_path"])
    for root in roots:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return p.as_posix()


def row_label(r: dict) -> str:
    return str(r.get("_row_label") or r.get("label") or r["method"])


def _separate_configs(results: list[dict]) -> None:
    """Results under one label but of different method configurations are never averaged: each
    configuration becomes its own row, ``label [config abc123]``, with a warning."""
    by_label: dict[str, set] = {}
    for r in results:
        by_label.setdefault(row_label(r), set()).add(config_hash(r.get("method_config")))
    for label, hashes in sorted(by_label.items()):
        if len(hashes) > 1:
            warnings.warn(f"results under {label} come from {len(hashes)} different method configurations "
                          f"({', '.join(sorted(hashes))}): kept apart as {label} [config HASH], never averaged",
                          stacklevel=3)
    for r in results:
        if len(by_label[row_label(r)]) > 1:
            r["_row_label"] = f"{row_label(r)} [config {config_hash(r.get('method_config'))}]"


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
        key = (r["task"], row_label(r), int(r["nfe_budget"]), int(r["seed"]))
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
    versions = sorted({r.get("task_version") for r in results}, key=lambda v: (v is not None, str(v or 0)))
    if len(versions) < 2:
        return results
    newest = versions[-1]
    dropped = [r for r in results if r.get("task_version") != newest]
    warnings.warn(f"task {task}: results of versions {', '.join(map(str, versions))} found; using version "
                  f"{newest}, skipping {len(dropped)} result(s) of older versions (e.g. {dropped[0].get('_path')})",
                  stacklevel=3)
    return [r for r in results if r.get("task_version") == newest]


def fit_of(r: dict) -> tuple:
    """The cost of producing what the run used: the artifact's own cost when it was cached
    (a reused artifact reports nfe 0 for the run itself), else the run's fit cost."""
    cost = r.get("fit_cost") if isinstance(r.get("fit_cost"), dict) else {}
    src = cost.get("artifact") if isinstance(cost.get("artifact"), dict) else cost
    return src.get("nfe"), src.get("seconds")


def recorded_cpu_seconds(r: dict) -> float:
    """The core-seconds one result file records: the process CPU time of its job (``cpu_seconds``:
    fit, sampling, metrics, checks) plus, where it reused a cached fit, that fit's own CPU time;
    results written before CPU time was recorded fall back to their recorded wall times
    (``recorded_seconds``)."""
    cpu = num(r.get("cpu_seconds"))
    if not math.isfinite(cpu):
        return recorded_seconds(r)
    cost = r.get("fit_cost") if isinstance(r.get("fit_cost"), dict) else {}
    if cost.get("reused") and isinstance(cost.get("artifact"), dict):
        fit = num(cost["artifact"].get("cpu_seconds"))
        cpu += fit if math.isfinite(fit) else num(cost["artifact"].get("seconds"))
    return cpu


def recorded_seconds(r: dict) -> float:
    """The compute one result file records: its fit (the artifact's own cost when it reused a
    cached one), sampling, metrics, the untrained-start check, the base solver's overhead timing and
    the ODE reference (when this result solved it); each a single-threaded process in the suite, so
    core-seconds."""
    def part(d, key):
        return d.get(key) if isinstance(d, dict) else None
    parts = [fit_of(r)[1], r.get("sample_seconds"), r.get("metric_seconds"), part(r.get("untrained"), "seconds"),
             part(r.get("overhead"), "base_seconds"), part(r.get("ode_error"), "seconds")]
    return sum(v for v in map(num, parts) if math.isfinite(v))


ODE_NOTE = ("RMS distance, over the run's first 1,000 samples, of a deterministic sampler's sample to the "
            "probability-flow ODE's solution from the same initial noise (EDM Heun, 256 steps; its own error, about "
            "a third of its distance to the 128-step solve, is the floor, in each result): free of sampling noise, "
            "so it separates solvers where the distribution metric cannot; none for samplers that draw noise")


def task_info(task: str, metrics: list[str]) -> tuple[str, dict, str, dict]:
    """(primary metric, higher_is_better, seed aggregate, metric notes) from the registered task,
    else the first metric, lower is better, mean, no notes."""
    primary, higher, aggregate, notes = None, {}, "mean", {}
    try:
        t = task_class(task)
        primary, higher = t.primary_metric, dict(t.higher_is_better)
        aggregate = getattr(t, "seed_aggregate", "mean")
        notes = dict(t.metric_notes)
    except (LookupError, ValueError, ImportError) as e:
        warnings.warn(f"task {task} is not registered here ({e}); ranking by its first metric, lower is better",
                      stacklevel=3)
    if aggregate not in ("mean", "min"):
        warnings.warn(f"task {task}: seed_aggregate {aggregate!r} not understood (mean or min); using mean",
                      stacklevel=3)
        aggregate = "mean"
    if primary not in metrics:
        primary = metrics[0] if metrics else (primary or "")
    notes.setdefault("ode_error", ODE_NOTE)
    return primary, higher, aggregate, notes


def family_of(method: str) -> str:
    try:
        return method_class(method).family
    except LookupError:
        return "other"


def own_denoiser(task: str) -> str | None:
    """The task's own denoiser (the first it declares), None where the task is not registered here."""
    try:
        return next(iter(task_class(task)().denoisers()), None)
    except (LookupError, ValueError, ImportError, RuntimeError):
        return None


def _on_own(r: dict, own: str | None) -> bool:
    """Whether a result sampled the task's own denoiser: rows on another one (a toy task's exact
    denoiser) sample a different model, so they are never the reference nor the bold best."""
    return own is None or r.get("denoiser") in (None, own)


def primary_frame(ok: list[dict], primary: str, own: str | None):
    """One row per successful result with a value of the primary metric: label, family, nfe, seed,
    samples per seed (0 where not recorded), the value and whether it sampled the task's own
    denoiser. Results pair on (seed, samples): a seed without a value, or drawn at another sample
    count, pairs with none."""
    import pandas as pd
    return pd.DataFrame([dict(label=row_label(r), family=family_of(r["method"]), nfe=int(r["nfe_budget"]),
                              seed=int(r["seed"]), samples=_samples(r), value=_value(r, primary), own=_on_own(r, own))
                         for r in ok if not math.isnan(_value(r, primary))],
                        columns=["label", "family", "nfe", "seed", "samples", "value", "own"])


def _samples(r: dict) -> int:
    n = r.get("n_samples")
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) else 0


def _value(r: dict, metric: str) -> float:
    """A result's value of ``metric``; NaN where it has none (a NaN metric is dropped at load)."""
    return num(r["metrics"].get(metric))


def _norm_protocol(r: dict) -> dict:
    """The result's protocol, with its own seed number in ``eval_seeds`` replaced by ``<seed>``
    (so results that differ only in the seed share a protocol)."""
    p = dict(r.get("protocol") or {}) if isinstance(r.get("protocol"), dict) else {}
    if isinstance(p.get("eval_seeds"), str):
        p["eval_seeds"] = re.sub(rf"(?<![\w.]){int(r['seed'])}(?![\w.])", "<seed>", p["eval_seeds"], count=1)
    if "n_samples" not in p and r.get("n_samples") is not None:
        p["n_samples"] = r["n_samples"]
    return p


def _protocol_key(p: dict) -> str:
    return json.dumps(p, sort_keys=True, default=str)


def _rows(ok: list[dict], failed: list[dict], metrics: list[str], primary: str, aggregate: str,
          roots: list[Path], own: str | None) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        groups.setdefault((row_label(r), int(r["nfe_budget"])), []).append(r)
    n_failed: dict[tuple, int] = {}
    for r in failed:
        k = (row_label(r), int(r["nfe_budget"]))
        n_failed[k] = n_failed.get(k, 0) + 1
        groups.setdefault(k, [])
    rows = []
    for (label, nfe), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rs = sorted(rs, key=lambda r: int(r["seed"]))
        fits = [fit_of(r) for r in rs]
        protocols = {}
        for r in rs:
            p = _norm_protocol(r)
            protocols.setdefault(_protocol_key(p), p)
        if len(protocols) > 1:
            warnings.warn(f"{label} at NFE {nfe}: its {len(rs)} results were made under {len(protocols)} different "
                          f"protocols; the row's mean mixes them (see the protocol footnotes)", stacklevel=3)
        scored = [int(r["seed"]) for r in rs if not math.isnan(_value(r, primary))]
        row = dict(kind="measured", method=label, nfe=nfe, nfe_measured=mean_of(r.get("nfe") for r in rs),
                   seeds=len(scored), seed_list=scored, unscored=len(rs) - len(scored),
                   failed=n_failed.get((label, nfe), 0),
                   mean={}, ci={}, min={}, fit_nfe=mean_of(f[0] for f in fits), fit_seconds=mean_of(f[1] for f in fits),
                   sample_seconds=mean_of(r.get("sample_seconds") for r in rs), protocols=protocols,
                   n_samples=mean_of(r.get("n_samples") for r in rs), family=family_of(rs[0]["method"]) if rs else "other",
                   files=[rel_path(r, roots) for r in rs], results=rs, overhead=_overhead(rs),
                   own=all(_on_own(r, own) for r in rs), untrained=_untrained(rs), objective=_objective(rs))
        for m in metrics:
            vals = [num(r["metrics"][m]) for r in rs if m in r["metrics"]]
            row["mean"][m], row["ci"][m] = mean_ci(vals)
            if aggregate == "min" and m == primary:
                row["min"][m] = float(min(vals)) if vals else math.nan
        rows.append(row)
    return rows


def floors(frame) -> dict:
    """NFE budget -> the primary metric's floor: the standard deviation over seeds of its value on
    true samples (the ``floor`` family's rows, e.g. ``oracle``), what two sets of true samples differ
    by; at a budget without such a row, the median of the other budgets' floors. Empty for a task
    without true samples."""
    rows = frame[frame["family"] == "floor"]
    per = {int(nfe): float(g["value"].std(ddof=1)) for nfe, g in rows.groupby("nfe") if len(g) >= 2}
    if not per:
        return {}
    fallback = float(np.median(list(per.values())))
    return {int(nfe): per.get(int(nfe), fallback) for nfe in sorted(set(frame["nfe"]))}


def start_labels(ok: list[dict]) -> dict:
    """Label of a learned row -> the label of its untrained start's row on the same board: the row
    of the start's method (``untrained.method`` of its results) whose every result agrees with the
    start's settings, the method's own label first. Rows configured as their own start (``iters=0``)
    and rows whose start is not on the board have none."""
    by_label: dict[str, list[dict]] = {}
    for r in ok:
        by_label.setdefault(row_label(r), []).append(r)

    def config(r) -> dict:
        return r.get("method_config") if isinstance(r.get("method_config"), dict) else {}

    def agrees(rs, method, want):
        return all(r["method"] == method and all(config(r).get(k) == v for k, v in want.items()) for r in rs)
    out = {}
    for label, rs in by_label.items():
        first = next((r for r in rs if isinstance(r.get("untrained"), dict) and not _by_design(r)), None)
        u = None if first is None else first["untrained"]
        if u is None or not isinstance(u.get("method"), str):
            continue
        settings = u.get("settings") if isinstance(u.get("settings"), dict) else {}
        # the start of a method of its own (iters=0) is this row's whole configuration with the start's settings
        want = {**config(first), **settings} if u["method"] == first["method"] else settings
        found = sorted((other != u["method"], other) for other, ors in by_label.items()
                       if other != label and agrees(ors, u["method"], want))
        if found:
            out[label] = found[0][1]
    return out


def _against_start(rows: list[dict], ok: list[dict], frame, higher_is_better: bool, floor: dict) -> None:
    """``vs_start`` of each learned row: its paired comparison with its untrained start's row at the
    same budget (same seeds, same initial noise; ``paired.pair``), marked within the metric's floor
    as the verdicts against the reference are; None where the start has no row."""
    starts = start_labels(ok)
    for row in rows:
        start = starts.get(row["method"])
        mine, theirs = (paired._values(frame, row["nfe"], lab) for lab in (row["method"], start))
        if start is None or mine.empty or theirs.empty:
            row["vs_start"] = None
            continue
        stats = paired.pair(mine, theirs, higher_is_better)
        row["vs_start"] = dict(start=start, **stats, within_floor=paired.within_floor(
            stats["verdict"], stats["diff"], float(floor.get(row["nfe"], math.nan))))


def _objective(rs: list[dict]) -> dict | None:
    """A fitted row's own training objective (``objective`` of its results): its name, the mean at
    start and at end over the seeds that record it, and in how many of them it improved."""
    aims = [r["objective"] for r in rs if isinstance(r.get("objective"), dict)
            and all(isinstance(r["objective"].get(k), (int, float)) for k in ("start", "end"))]
    if not aims:
        return None
    higher = bool(aims[0].get("higher_is_better"))
    improved = sum((a["end"] > a["start"]) if higher else (a["end"] < a["start"]) for a in aims)
    return dict(name=str(aims[0].get("name", "objective")), start=mean_of(a["start"] for a in aims),
                end=mean_of(a["end"] for a in aims), improved=improved, recorded=len(aims))


def _untrained(rs: list[dict]) -> dict | None:
    """How many of a row's seeds sample exactly as the method's untrained start (``untrained`` of a
    result: a fit that never moved its sampler), of how many were checked, and the start's name;
    None for rows without the check (methods without a fit, older results)."""
    checked = [r for r in rs if isinstance(r.get("untrained"), dict) and not _by_design(r)]
    if not checked:
        return None
    same = [r for r in checked if r["untrained"].get("identical")]
    return dict(identical=len(same), checked=len(checked), start=str(checked[0]["untrained"].get("method", "?")),
                tried=sum(_tried_others(r) for r in same))


def _by_design(r: dict) -> bool:
    """A row configured as its own untrained start (``iters=0``: the baseline a fine-tuning row is
    compared with), not a fit that failed to move."""
    start = r["untrained"].get("settings")
    config = r.get("method_config") if isinstance(r.get("method_config"), dict) else {}
    return isinstance(start, dict) and bool(start) and all(config.get(k) == v for k, v in start.items())


def _tried_others(r: dict) -> bool:
    """Whether a fit scored a sampler other than its start (its ``fit_curve`` holds more than one
    distinct tuning score) and still kept the start: the start was the best it found, within the
    score's tolerance; otherwise the fit never moved at all."""
    curve = r.get("fit_curve") if isinstance(r.get("fit_curve"), list) else []
    scores = {c.get("score") for c in curve if isinstance(c, dict) and isinstance(c.get("score"), (int, float))}
    return len(scores) > 1


def _overhead(rs: list[dict]) -> float:
    """The median over seeds of the time a method spends beyond its own base solver at equal
    budget, as a fraction of the base solver's time (``overhead.ratio`` of a result, both timed in
    the run); NaN for methods that do not declare a base solver."""
    v = [num(r["overhead"].get("ratio")) for r in rs if isinstance(r.get("overhead"), dict)]
    v = [x for x in v if not math.isnan(x)]
    return float(np.median(v)) if v else math.nan


def _better(higher: dict, metric: str, a: float, b: float) -> bool:
    return a > b if higher.get(metric, False) else a < b


def ranked(rows: list[dict], primary: str, higher: dict) -> list[dict]:
    """Measured rows by budget, then best primary-metric mean first; rows without a value last."""
    sign = -1.0 if higher.get(primary, False) else 1.0

    def key(row):
        v = row["mean"].get(primary, math.nan)
        return (row["nfe"], math.isnan(v), sign * v if not math.isnan(v) else 0.0, row["method"])
    return sorted(rows, key=key)


def _best(rows: list[dict], primary: str, higher: dict) -> dict[int, list[dict]]:
    """NFE budget -> the measured rows with the best primary-metric mean there (ties all), among the
    samplers of the task's own denoiser (never a noise floor nor another model)."""
    contenders = [row for row in rows if not is_floor(row) and row["own"]]
    best: dict[int, float] = {}
    for row in contenders:
        v = row["mean"].get(primary, math.nan)
        if not math.isnan(v) and (row["nfe"] not in best or _better(higher, primary, v, best[row["nfe"]])):
            best[row["nfe"]] = v
    out: dict[int, list[dict]] = {}
    for row in ranked(contenders, primary, higher):
        if row["nfe"] in best and row["mean"].get(primary, math.nan) == best[row["nfe"]]:
            out.setdefault(row["nfe"], []).append(row)
    return out


def is_floor(row: dict) -> bool:
    """A row that spent no denoiser evaluation (measured NFE 0, e.g. ``oracle``'s true samples) is the
    metrics' noise floor, not a sampler: shown, never the best."""
    return row["nfe_measured"] == 0


def _best_reported(reported: list[dict], primary: str, higher: dict) -> dict:
    """NFE (None: unknown) -> the reported rows of the primary metric with the best value there."""
    out: dict = {}
    for r in ranked_reported(reported, primary, higher):
        if r["metric"] == primary and (r["nfe"] not in out or r["value"] == out[r["nfe"]][0]["value"]):
            out.setdefault(r["nfe"], []).append(r)
    return out


def ranked_reported(reported: list[dict], primary: str, higher: dict) -> list[dict]:
    def key(r):
        sign = -1.0 if higher.get(r["metric"], False) else 1.0
        return (r["nfe"] is None, r["nfe"] or 0, r["metric"] != primary, r["metric"], sign * r["value"],
                r["method"], r["line"])
    return sorted(reported, key=key)


def _table(rows: list[dict], reported: list[dict], primary: str, higher: dict) -> list[dict]:
    """Measured and reported rows in one order: by NFE; at each NFE the measured rows (ranked) and
    then the reported ones (ranked); reported rows of unknown NFE last."""
    entries = [((row["nfe"], 0, i), row) for i, row in enumerate(ranked(rows, primary, higher))]
    entries += [((math.inf if r["nfe"] is None else r["nfe"], 1, i), r)
                for i, r in enumerate(ranked_reported(reported, primary, higher))]
    return [e for _, e in sorted(entries, key=lambda kv: kv[0])]


def seed_text(seeds: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, run = [], []
    for s in sorted(seeds):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
        run = [s]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
    return ", ".join(parts)


def code_status(results: list[dict]) -> dict:
    """How many results carry the code version this checkout gives their task and method (so this
    commit reproduces them), which labels do not (their code changed since: the suite reruns them),
    and how many cannot be checked (a method or task not registered here)."""
    current, stale, unknown = 0, set(), 0
    for r in results:
        try:
            want = code_version(task_class(str(r["task"])).__module__, method_class(str(r["method"])).__module__)
        except (KeyError, ValueError, ImportError):
            unknown += 1
            continue
        if r.get("code") == want:
            current += 1
        else:
            stale.add(row_label(r))
    return dict(current=current, stale=sorted(stale), unknown=unknown, total=len(results))


def usable(task: str, measured: list[dict]) -> tuple[list[dict], list[dict]]:
    """The results a board uses, successful and failed: the newest task version's, configurations
    kept apart, duplicates resolved."""
    rs = _one_version(task, measured) if measured else []
    _separate_configs(rs)
    return _dedupe([r for r in rs if r["status"] == "ok"]), _dedupe([r for r in rs if r["status"] != "ok"])


def make(name: str, measured: list[dict], reported: list[dict], roots: list[Path]) -> dict:
    """Everything the files of one task are rendered from."""
    ok, failed = usable(name, measured)
    measured_metrics = sorted({m for r in ok for m in r["metrics"]})
    metrics = sorted(set(measured_metrics) | {r["metric"] for r in reported})
    primary, higher, aggregate, notes = task_info(name, metrics)
    own = own_denoiser(name)
    rows = _rows(ok, failed, metrics, primary, aggregate, roots, own)
    frame = primary_frame(ok, primary, own)
    floor = floors(frame)
    comparisons = paired.compare(frame, higher.get(primary, False), floor)
    _against_start(rows, ok, frame, higher.get(primary, False), floor)
    fit_curves = {(row_label(r), int(r["nfe_budget"]), int(r["seed"])): r["fit_curve"] for r in ok
                  if isinstance(r.get("fit_curve"), list) and r["fit_curve"]}
    families = {row_label(r): family_of(r["method"]) for r in ok}
    table = _table(rows, reported, primary, higher)
    # protocol ids in order of first appearance in the table
    protocols: dict[str, tuple[str, object]] = {}  # key -> (id, protocol)
    n_p = n_r = 0
    for e in table:
        if e["kind"] == "measured":
            ids = []
            for key, p in sorted(e["protocols"].items()):
                if key not in protocols:
                    n_p += 1
                    protocols[key] = (f"P{n_p}", p)
                ids.append(protocols[key][0])
            e["protocol_ids"] = sorted(ids, key=lambda s: int(s[1:]))
        else:
            key = "reported:" + e["protocol"]
            if key not in protocols:
                n_r += 1
                protocols[key] = (f"R{n_r}", e["protocol"])
            e["protocol_ids"] = [protocols[key][0]]
    behind = ok + failed
    newest = max(behind, key=lambda r: (_created(r), r.get("_path", ""))) if behind else None
    order = ([primary] if primary in metrics else []) + [m for m in metrics if m != primary]
    differ = [k for k in ("n_samples", "reference", "reference_stats", "feature_extractor", "nfe_convention")
              if len({json.dumps((r.get("protocol") or {}).get(k) if isinstance(r.get("protocol"), dict) else None,
                                 sort_keys=True, default=str) for r in ok}) > 1]
    return dict(task=name, version=next((r.get("task_version") for r in ok + failed), None), rows=rows, reported=reported,
                table=table, metrics=metrics, order=order, primary=primary, higher=higher, aggregate=aggregate,
                notes={m: notes[m] for m in order if m in notes}, paired=comparisons, fit_curves=fit_curves,
                cost_ratios=curves.cost_ratios(fit_curves, families, higher.get(primary, False)),
                families=families,
                privileged=sorted({row_label(r) for r in ok if r.get("privileged")}),
                yours=({(row_label(r), int(r["nfe_budget"])): r.get("_replaces", 0) for r in behind
                        if not r.get("_published")} if any(r.get("_published") for r in behind) else {}),
                protocols={pid: p for pid, p in sorted(protocols.values(), key=lambda v: (v[0][0], int(v[0][1:])))},
                newest=newest, shas=sorted({str(r.get("git_sha", "unknown")) for r in behind}), ok=ok,
                code=code_status(behind), core_hours=sum(recorded_cpu_seconds(r) for r in behind) / 3600,
                failed=failed, differ=differ, best=_best(rows, primary, higher), floors=floor,
                best_reported=_best_reported(reported, primary, higher), samples=None)


def _protocol_fields(p: dict) -> list[tuple[str, str]]:
    """The fields every row must be traceable to, from a result's protocol (``not recorded`` where absent)."""
    def show(v):
        if v is None:
            return "not recorded"
        if isinstance(v, dict):
            name = v.get("name") or v.get("file")
            extra = [f"{k} {str(v[k])[:16] if k.endswith('sha256') else v[k]}" for k in sorted(v)
                     if k not in ("name", "file", "layers") and v[k] not in (None, "")]
            return f"{name} ({', '.join(extra)})" if name and extra else str(name or json.dumps(v, sort_keys=True))
        return str(v)
    ref = p.get("reference", p.get("reference_images"))
    return [("n_samples", show(p.get("n_samples"))), ("reference", show(ref)),
            ("n_reference", show(p.get("n_reference"))), ("reference_stats", show(p.get("reference_stats"))),
            ("feature_extractor", show(p.get("feature_extractor"))),
            ("nfe_convention", show(p.get("nfe_convention"))), ("eval_seeds", show(p.get("eval_seeds")))]


def protocol_text(p) -> str:
    if isinstance(p, str):
        return p
    if not p:
        return "protocol not recorded (result files of an older schema)"
    return "; ".join(f"{k} = {v}" for k, v in _protocol_fields(p))


def row_protocol(e: dict) -> str:
    """The protocol cell: footnote id(s) and, for measured rows, the seeds."""
    ids = ", ".join(e.get("protocol_ids") or [])
    if e["kind"] == "reported":
        return ids
    if not e["seed_list"]:
        return "—"
    return f"{ids}, seeds {seed_text(e['seed_list'])}"


def npz_head(path: Path, key: str, k: int):
    """The first ``k`` entries of array ``key`` of an npz, without reading the rest when the member
    is a plain C-order .npy; (array, full shape), or (None, None) when the key is absent."""
    with zipfile.ZipFile(path) as z:
        member = f"{key}.npy"
        if member not in z.namelist():
            return None, None
        with z.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                shape, fortran, dtype = None, True, None
            if not fortran and shape and not dtype.hasobject:
                k = min(k, shape[0])
                count = k * int(np.prod(shape[1:], dtype=np.int64))
                data = f.read(count * dtype.itemsize)
                if len(data) != count * dtype.itemsize:
                    raise ValueError(f"array {key!r} is truncated")
                return np.frombuffer(data, dtype=dtype).reshape((k,) + tuple(shape[1:])), tuple(shape)
    with np.load(path, allow_pickle=False) as z:
        a = z[key]
        return a[:k], a.shape


def _read_samples(r: dict, k: int):
    """(images [k, C, H, W] float, labels [k] or None) from the result's saved samples; None when the
    result saved no images (e.g. 2-d points); warns when the file is missing or unreadable."""
    name = r.get("samples_file")
    if not isinstance(name, str) or not name:
        return None
    path = Path(r["_path"]).parent / name
    if not path.is_file():
        warnings.warn(f"samples file {path} of {r['_path']} is missing; it is left out of the sample grid",
                      stacklevel=4)
        return None
    try:
        x, shape = npz_head(path, "x", k)
        labels, _ = npz_head(path, "labels", k)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        warnings.warn(f"samples file {path} is unreadable ({e}); it is left out of the sample grid", stacklevel=4)
        return None
    if x is None or len(shape) != 4 or shape[1] not in (1, 3) or shape[0] < 1:
        return None
    return np.asarray(x, dtype=np.float64), None if labels is None else np.asarray(labels).reshape(-1)


def choose_samples(b: dict) -> dict | None:
    """The grid's (NFE, seed, methods): the largest NFE budget at which the most methods saved image
    samples, the smallest seed most of those share; methods in the table's order at that NFE."""
    have: dict[tuple, dict] = {}  # (label, nfe, seed) -> result
    for r in b["ok"]:
        if r.get("samples_file"):
            have[(row_label(r), int(r["nfe_budget"]), int(r["seed"]))] = r
    if not have:
        return None
    cover: dict[int, set] = {}
    for label, nfe, _ in have:
        cover.setdefault(nfe, set()).add(label)
    nfe = max(cover, key=lambda n: (len(cover[n]), n))
    seeds: dict[int, set] = {}
    for label, n, s in have:
        if n == nfe:
            seeds.setdefault(s, set()).add(label)
    seed = max(seeds, key=lambda s: (len(seeds[s]), -s))
    order = [row["method"] for row in ranked(b["rows"], b["primary"], b["higher"]) if row["nfe"] == nfe]
    chosen = [(label, have[(label, nfe, seed)]) for label in order if (label, nfe, seed) in have]
    images, names, files, labels, shape = [], [], [], None, None
    for label, r in chosen:
        got = _read_samples(r, SAMPLE_COLUMNS)
        if got is None:
            continue
        x, y = got
        if shape is not None and x.shape[1:] != shape[1:]:
            warnings.warn(f"samples of {label} ({r['_path']}) have shape {x.shape[1:]}, the others "
                          f"{shape[1:]}; left out of the sample grid", stacklevel=3)
            continue
        if labels is not None and y is not None and not np.array_equal(y[:len(labels)], labels[:len(y)]):
            warnings.warn(f"samples of {label} ({r['_path']}) were drawn with other class labels than the other "
                          f"methods' at the same seed and indices", stacklevel=3)
        shape = x.shape if shape is None else (min(shape[0], x.shape[0]),) + shape[1:]
        labels = y if labels is None else labels
        images.append(x)
        names.append(label)
        files.append((Path(rel_path(r, b["roots"])).parent / r["samples_file"]).as_posix())
    if not images:
        return None
    k = shape[0]
    return dict(file=f"{b['task']}_samples.png", nfe=nfe, seed=seed, indices=list(range(k)), methods=names,
                files=files, labels=None if labels is None else [int(v) for v in labels[:k]],
                grid=[x[:k] for x in images])


def pair_of(b: dict, e: dict) -> dict | None:
    """The paired comparison of a measured row with its budget's reference row, or None."""
    t = b["paired"]
    if t.empty:
        return None
    hit = t[(t["nfe"] == e["nfe"]) & (t["label"] == e["method"])]
    return None if hit.empty else hit.iloc[0].to_dict()


def reference_of(b: dict, nfe: int) -> str | None:
    """The reference row (best classic solver) at a budget, or None."""
    t = b["paired"]
    refs = sorted(set(t.loc[t["nfe"] == nfe, "reference"])) if not t.empty else []
    return refs[0] if refs else None


def verdict(b: dict, e: dict) -> str:
    """The paired verdict of a measured row against its budget's reference row."""
    t = b["paired"]
    if t.empty:
        return "—"
    hit = t[(t["nfe"] == e["nfe"]) & (t["label"] == e["method"])]
    if hit.empty:
        refs = set(t.loc[t["nfe"] == e["nfe"], "reference"])
        return "reference" if e["method"] in refs else "—"
    return str(hit["verdict"].iloc[0])


def verdict_cells(boards: list[dict]) -> tuple[list[dict], list[tuple[str, int]], dict]:
    """Every row's paired verdict against its budget's reference, task by task, for the index's
    table and picture: the boards that have comparisons, the (label, NFE) rows in family order
    (classic first), and ``cells[(label, nfe)][task]``, either ``"reference"`` or the comparison
    (``verdict``, ``close``, ``diff``, ``seeds``, ``fewer``: fewer seeds than the task's most, and the
    flags ``within_floor``, ``undetermined`` and ``same_start``: seeds equal to the untrained start)."""
    from bench.method import FAMILIES
    shown = [b for b in boards if not b["paired"].empty]
    cells: dict[tuple[str, int], dict] = {}
    families: dict[str, str] = {}
    for b in shown:
        t = b["paired"]
        most = int(t["seeds"].max())
        start = {(row["method"], row["nfe"]): row.get("untrained") for row in b.get("rows", [])}
        for r in t.itertuples(index=False):
            u = start.get((r.label, int(r.nfe)))
            cells.setdefault((r.label, int(r.nfe)), {})[b["task"]] = dict(
                verdict=r.verdict, close=bool(r.close), diff=float(r.diff), seeds=int(r.seeds),
                fewer=int(r.seeds) < most, within_floor=bool(getattr(r, "within_floor", False)),
                undetermined=bool(getattr(r, "undetermined", False)),
                same_start=f"{u['identical']}/{u['checked']}" if u and u["identical"] else None)
        for nfe, ref in sorted(set(zip(t["nfe"], t["reference"]))):
            cells.setdefault((ref, int(nfe)), {})[b["task"]] = "reference"
        families.update(b["families"])
    rank = {f: i for i, f in enumerate(FAMILIES)}
    keys = sorted(cells, key=lambda k: (rank.get(families.get(k[0], "other"), len(rank)), k[0], k[1]))
    return shown, keys, cells
