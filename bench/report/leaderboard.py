"""Leaderboards: per task a markdown page, CSV, JSON, LaTeX table, plot and sample grid,
plus an index (``README.md``), built from result files and the published numbers.

    from bench.report.leaderboard import build
    build("results")                                  # every task, every format, into results/leaderboards
    build("results", task="gmm8", formats="latex")    # one task, one format
    build(published=True)                             # the published boards: leaderboards/ from leaderboards/results

A user's own boards never touch the published ones: ``out`` defaults to
``<results>/leaderboards``, and writing into the published folder needs ``published=True``
(``python -m bench leaderboard --published``).

Measured rows: one per (method label, NFE budget), the mean over seeds of every
metric with a 95% interval (the larger side of the percentile bootstrap interval over seeds,
none with one seed), the seeds behind it and the failed runs beside it (counted,
never averaged). Tasks that declare ``seed_aggregate = "min"`` (EDM's protocol:
the minimum FID over seed sets) get a "min over seeds" column for the primary
metric as well. Two results of the same (task, label, budget, seed) are never
averaged: the newest is kept, with a warning naming both files; unreadable,
truncated, old-schema or malformed result files are skipped with a warning.

Reported rows (``bench.report.reported``, ``leaderboards/reported.csv``): published
numbers, shown beside the measured rows, labelled "reported" with their source,
never part of a mean, interval, ranking or "best" marker. A task with reported
numbers but no measured results still gets its page.

Every row carries its protocol: measured rows point to a footnote per distinct
protocol of their result files (``P1``, ``P2``, ...: samples, reference set or
statistics file, feature extractor, NFE convention, seed rule; the full protocol
is in the JSON), reported rows to the protocol text of the CSV (``R1``, ...).

Files written under ``out`` (never inside its subdirectories, so a results
directory kept there, e.g. ``leaderboards/results``, is left alone):
``<task>.md``, ``.csv``, ``.json``, ``.tex`` (booktabs), ``.png`` (quality vs NFE,
the interval as a band, reported numbers as open markers), ``<task>_samples.png``
(image tasks whose results saved samples: a grid, one row per method, at one
NFE budget, seed and the same sample indices for every method) and, when every
task is built with markdown, ``README.md`` (per task: the best measured method per
NFE budget, links, and the date and git sha of the newest result behind it; for the
published boards also how many of ``suite.toml``'s runs have a result and which rows
are still to run, ``bench.report.coverage``).
The outputs depend only on the result files and the reported numbers, so
rebuilding gives the same bytes.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.engine.io import atomic_write_bytes
from bench.registry import method_class, task_class
from bench.report import coverage, curves, paired, plots
from bench.report.reported import load_reported
from bench.engine.results import PUBLISHED, PUBLISHED_RESULTS, SCHEMA, code_version, config_hash, load_results
from bench.report.reported import DEFAULT_PATH as REPORTED_CSV

CI_LEVEL = 0.95
FORMATS = ("md", "csv", "json", "tex", "png")
_ALIASES = {"markdown": "md", "latex": "tex", "plot": "png", "plots": "png"}
GENERATOR = "bench.leaderboard"  # the mark of a generated JSON file (kept from before the move)
RESERVED = {"README", "reported"}  # names of files under out that are not a task's
SAMPLE_COLUMNS = 10  # sample indices 0..9 in the grid
_PROTOCOL_FIELDS = ("n_samples", "reference", "n_reference", "reference_stats", "feature_extractor",
                    "nfe_convention", "eval_seeds")


# --- statistics ------------------------------------------------------------

def mean_ci(values) -> tuple[float, float]:
    """Mean over seeds and the half-width of its 95% t-interval (``bench.report.paired.t_interval``):
    exact coverage for normal values at any seed count. NaN with fewer than two values."""
    v = np.asarray([float(x) for x in values], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    m = float(v.mean())
    lo, hi = paired.t_interval(v)
    return m, (math.nan if math.isnan(lo) else (hi - lo) / 2)


def _float(x) -> float:
    """A number from a result file (JSON writes inf/nan as strings); NaN for None or junk."""
    if x is None or isinstance(x, bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _mean(values) -> float:
    v = [f for f in (_float(x) for x in values) if not math.isnan(f)]
    return float(np.mean(v)) if v else math.nan


def parse_formats(formats) -> tuple[str, ...]:
    """``None`` (every format), a comma-separated string or a list of md/markdown, csv, json,
    tex/latex, png; in the canonical order."""
    if formats is None:
        return FORMATS
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = set()
    for item in items:
        f = _ALIASES.get(str(item).strip().lower(), str(item).strip().lower())
        if not f:
            continue
        if f not in FORMATS:
            raise ValueError(f"unknown leaderboard format {item!r}: choose from md, csv, json, latex, png "
                             f"(comma-separated)")
        chosen.add(f)
    if not chosen:
        raise ValueError("no leaderboard format given: choose from md, csv, json, latex, png")
    return tuple(f for f in FORMATS if f in chosen)


# --- loading ------------------------------------------------------------------

def _is_generated(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("generated_by") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _load(results) -> tuple[list[dict], list[Path]]:
    """Result files under ``results``; this builder's own JSON outputs (when results are read from a
    directory holding leaderboards) are passed over quietly, every other unusable file with a warning."""
    dirs = [Path(results)] if isinstance(results, (str, Path)) else [Path(d) for d in results]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_results(dirs)
    for w in caught:
        m = re.match(r"skipping (.+?): not a result file", str(w.message))
        if m and _is_generated(Path(m.group(1))):
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


def _rel(r: dict, roots: list[Path]) -> str:
    """The result's path relative to the results directory it was found in (machine-independent)."""
    p = Path(r["_path"])
    for root in roots:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return p.as_posix()


# --- collecting -------------------------------------------------------------

def _label(r: dict) -> str:
    return str(r.get("_row_label") or r.get("label") or r["method"])


def _separate_configs(results: list[dict]) -> None:
    """Results under one label but of different method configurations are never averaged: each
    configuration becomes its own row, ``label [config abc123]``, with a warning."""
    by_label: dict[str, set] = {}
    for r in results:
        by_label.setdefault(_label(r), set()).add(config_hash(r.get("method_config")))
    for label, hashes in sorted(by_label.items()):
        if len(hashes) > 1:
            warnings.warn(f"results under {label} come from {len(hashes)} different method configurations "
                          f"({', '.join(sorted(hashes))}): kept apart as {label} [config HASH], never averaged",
                          stacklevel=3)
    for r in results:
        if len(by_label[_label(r)]) > 1:
            r["_row_label"] = f"{_label(r)} [config {config_hash(r.get('method_config'))}]"


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
    versions = sorted({r.get("task_version") for r in results}, key=lambda v: (v is not None, str(v or 0)))
    if len(versions) < 2:
        return results
    newest = versions[-1]
    dropped = [r for r in results if r.get("task_version") != newest]
    warnings.warn(f"task {task}: results of versions {', '.join(map(str, versions))} found; using version "
                  f"{newest}, skipping {len(dropped)} result(s) of older versions (e.g. {dropped[0].get('_path')})",
                  stacklevel=3)
    return [r for r in results if r.get("task_version") == newest]


def _fit(r: dict) -> tuple:
    """The cost of producing what the run used: the artifact's own cost when it was cached
    (a reused artifact reports nfe 0 for the run itself), else the run's fit cost."""
    cost = r.get("fit_cost") if isinstance(r.get("fit_cost"), dict) else {}
    src = cost.get("artifact") if isinstance(cost.get("artifact"), dict) else cost
    return src.get("nfe"), src.get("seconds")


def _task_info(task: str, metrics: list[str]) -> tuple[str, dict, str, dict]:
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
    return primary, higher, aggregate, notes


def _family(method: str) -> str:
    try:
        return method_class(method).family
    except LookupError:
        return "other"


def _own_denoiser(task: str) -> str | None:
    """The task's own denoiser (the first it declares), None where the task is not registered here."""
    try:
        return next(iter(task_class(task)().denoisers()), None)
    except (LookupError, ValueError, ImportError, RuntimeError):
        return None


def _on_own(r: dict, own: str | None) -> bool:
    """Whether a result sampled the task's own denoiser: rows on another one (a toy task's exact
    denoiser) sample a different model, so they are never the reference nor the bold best."""
    return own is None or r.get("denoiser") in (None, own)


def _primary_frame(ok: list[dict], primary: str, own: str | None):
    """One row per successful result: label, family, nfe, seed, the primary metric's value and
    whether it sampled the task's own denoiser."""
    import pandas as pd
    return pd.DataFrame([dict(label=_label(r), family=_family(r["method"]), nfe=int(r["nfe_budget"]),
                              seed=int(r["seed"]), value=_float(r["metrics"].get(primary)), own=_on_own(r, own))
                         for r in ok], columns=["label", "family", "nfe", "seed", "value", "own"])


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
        protocols = {}
        for r in rs:
            p = _norm_protocol(r)
            protocols.setdefault(_protocol_key(p), p)
        if len(protocols) > 1:
            warnings.warn(f"{label} at NFE {nfe}: its {len(rs)} results were made under {len(protocols)} different "
                          f"protocols; the row's mean mixes them (see the protocol footnotes)", stacklevel=3)
        row = dict(kind="measured", method=label, nfe=nfe, nfe_measured=_mean(r.get("nfe") for r in rs),
                   seeds=len(rs), seed_list=[int(r["seed"]) for r in rs], failed=n_failed.get((label, nfe), 0),
                   mean={}, ci={}, min={}, fit_nfe=_mean(f[0] for f in fits), fit_seconds=_mean(f[1] for f in fits),
                   sample_seconds=_mean(r.get("sample_seconds") for r in rs), protocols=protocols,
                   n_samples=_mean(r.get("n_samples") for r in rs), family=_family(rs[0]["method"]) if rs else "other",
                   files=[_rel(r, roots) for r in rs], results=rs, overhead=_overhead(rs),
                   own=all(_on_own(r, own) for r in rs))
        for m in metrics:
            vals = [_float(r["metrics"][m]) for r in rs if m in r["metrics"]]
            row["mean"][m], row["ci"][m] = mean_ci(vals)
            if aggregate == "min" and m == primary:
                row["min"][m] = float(min(vals)) if vals else math.nan
        rows.append(row)
    return rows


def _overhead(rs: list[dict]) -> float:
    """The median over seeds of the time a method spends beyond its own base solver at equal
    budget, as a fraction of the base solver's time (``overhead.ratio`` of a result, both timed in
    the run); NaN for methods that do not declare a base solver."""
    v = [_float(r["overhead"].get("ratio")) for r in rs if isinstance(r.get("overhead"), dict)]
    v = [x for x in v if not math.isnan(x)]
    return float(np.median(v)) if v else math.nan


def _better(higher: dict, metric: str, a: float, b: float) -> bool:
    return a > b if higher.get(metric, False) else a < b


def _ranked(rows: list[dict], primary: str, higher: dict) -> list[dict]:
    """Measured rows by budget, then best primary-metric mean first; rows without a value last."""
    sign = -1.0 if higher.get(primary, False) else 1.0

    def key(row):
        v = row["mean"].get(primary, math.nan)
        return (row["nfe"], math.isnan(v), sign * v if not math.isnan(v) else 0.0, row["method"])
    return sorted(rows, key=key)


def _best(rows: list[dict], primary: str, higher: dict) -> dict[int, list[dict]]:
    """NFE budget -> the measured rows with the best primary-metric mean there (ties all), among the
    samplers of the task's own denoiser (never a noise floor nor another model)."""
    contenders = [row for row in rows if not _is_floor(row) and row["own"]]
    best: dict[int, float] = {}
    for row in contenders:
        v = row["mean"].get(primary, math.nan)
        if not math.isnan(v) and (row["nfe"] not in best or _better(higher, primary, v, best[row["nfe"]])):
            best[row["nfe"]] = v
    out: dict[int, list[dict]] = {}
    for row in _ranked(contenders, primary, higher):
        if row["nfe"] in best and row["mean"].get(primary, math.nan) == best[row["nfe"]]:
            out.setdefault(row["nfe"], []).append(row)
    return out


def _is_floor(row: dict) -> bool:
    """A row that spent no denoiser evaluation (measured NFE 0, e.g. ``oracle``'s true samples) is the
    metrics' noise floor, not a sampler: shown, never the best."""
    return row["nfe_measured"] == 0


def _best_reported(reported: list[dict], primary: str, higher: dict) -> dict:
    """NFE (None: unknown) -> the reported rows of the primary metric with the best value there."""
    out: dict = {}
    for r in _ranked_reported(reported, primary, higher):
        if r["metric"] == primary and (r["nfe"] not in out or r["value"] == out[r["nfe"]][0]["value"]):
            out.setdefault(r["nfe"], []).append(r)
    return out


def _ranked_reported(reported: list[dict], primary: str, higher: dict) -> list[dict]:
    def key(r):
        sign = -1.0 if higher.get(r["metric"], False) else 1.0
        return (r["nfe"] is None, r["nfe"] or 0, r["metric"] != primary, r["metric"], sign * r["value"],
                r["method"], r["line"])
    return sorted(reported, key=key)


def _table(rows: list[dict], reported: list[dict], primary: str, higher: dict) -> list[dict]:
    """Measured and reported rows in one order: by NFE; at each NFE the measured rows (ranked) and
    then the reported ones (ranked); reported rows of unknown NFE last."""
    entries = [((row["nfe"], 0, i), row) for i, row in enumerate(_ranked(rows, primary, higher))]
    entries += [((math.inf if r["nfe"] is None else r["nfe"], 1, i), r)
                for i, r in enumerate(_ranked_reported(reported, primary, higher))]
    return [e for _, e in sorted(entries, key=lambda kv: kv[0])]


def _seed_text(seeds: list[int]) -> str:
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


# --- one task -----------------------------------------------------------------

def _code_status(results: list[dict]) -> dict:
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
            stale.add(_label(r))
    return dict(current=current, stale=sorted(stale), unknown=unknown)


def _code_text(c: dict) -> str:
    if not c["current"] and not c["stale"] and not c["unknown"]:
        return "—"
    parts = [f"{c['current']} current"]
    if c["stale"]:
        parts.append("stale: " + ", ".join(f"`{x}`" for x in c["stale"]))
    if c["unknown"]:
        parts.append(f"{c['unknown']} unchecked")
    return "; ".join(parts)


def _usable(task: str, measured: list[dict]) -> tuple[list[dict], list[dict]]:
    """The results a board uses, successful and failed: the newest task version's, configurations
    kept apart, duplicates resolved."""
    rs = _one_version(task, measured) if measured else []
    _separate_configs(rs)
    return _dedupe([r for r in rs if r["status"] == "ok"]), _dedupe([r for r in rs if r["status"] != "ok"])


def _board(name: str, measured: list[dict], reported: list[dict], roots: list[Path]) -> dict:
    """Everything the files of one task are rendered from."""
    ok, failed = _usable(name, measured)
    measured_metrics = sorted({m for r in ok for m in r["metrics"]})
    metrics = sorted(set(measured_metrics) | {r["metric"] for r in reported})
    primary, higher, aggregate, notes = _task_info(name, metrics)
    own = _own_denoiser(name)
    rows = _rows(ok, failed, metrics, primary, aggregate, roots, own)
    comparisons = paired.compare(_primary_frame(ok, primary, own), higher.get(primary, False))
    fit_curves = {(_label(r), int(r["nfe_budget"]), int(r["seed"])): r["fit_curve"] for r in ok
                  if isinstance(r.get("fit_curve"), list) and r["fit_curve"]}
    families = {_label(r): _family(r["method"]) for r in ok}
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
                privileged=sorted({_label(r) for r in ok if r.get("privileged")}),
                protocols={pid: p for pid, p in sorted(protocols.values(), key=lambda v: (v[0][0], int(v[0][1:])))},
                newest=newest, shas=sorted({str(r.get("git_sha", "unknown")) for r in behind}), ok=ok,
                code=_code_status(behind),
                failed=failed, differ=differ, best=_best(rows, primary, higher),
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


def _protocol_text(p) -> str:
    if isinstance(p, str):
        return p
    if not p:
        return "protocol not recorded (result files of an older schema)"
    return "; ".join(f"{k} = {v}" for k, v in _protocol_fields(p))


def _row_protocol(e: dict) -> str:
    """The protocol cell: footnote id(s) and, for measured rows, the seeds."""
    ids = ", ".join(e.get("protocol_ids") or [])
    if e["kind"] == "reported":
        return ids
    if not e["seed_list"]:
        return "—"
    return f"{ids}, seeds {_seed_text(e['seed_list'])}"


# --- formatting: numbers --------------------------------------------------------

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


def _pipe_table(header: list, rows: list, align: list) -> str:
    """A markdown table (tabulate's pipe format), cells taken as the strings they are."""
    from tabulate import tabulate
    return tabulate(rows, headers=header, tablefmt="pipe", colalign=align, disable_numparse=True)


def _md_text(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _json_num(v):
    if v is None:
        return None
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


# --- CSV ------------------------------------------------------------------------

def _csv_bytes(b: dict) -> bytes:
    metrics, primary = b["metrics"], b["primary"]
    mins = [primary] if b["aggregate"] == "min" and primary in metrics else []
    import pandas as pd
    header = (["method", "nfe", "nfe_measured", "seeds", "failed"]
              + [f"{m}_{s}" for m in metrics for s in ("mean", "ci95")] + [f"{m}_min" for m in mins]
              + ["kind", "source", "reported_metric", "reported_value", "seed_list", "protocol_id", "protocol"]
              + ["fit_nfe", "fit_seconds", "sample_seconds"])
    rows = []
    for e in b["table"]:
        if e["kind"] == "measured":
            rows.append([e["method"], _csv_num(e["nfe"]), _csv_num(e["nfe_measured"]), e["seeds"], e["failed"]]
                       + [_csv_num(e[s][m]) for m in metrics for s in ("mean", "ci")]
                       + [_csv_num(e["min"].get(m)) for m in mins]
                       + ["measured", "measured", "", "", " ".join(map(str, e["seed_list"])),
                          " ".join(e["protocol_ids"]),
                          " | ".join(_protocol_text(b["protocols"][i]) for i in e["protocol_ids"])]
                       + [_csv_num(e["fit_nfe"]), _csv_num(e["fit_seconds"]), _csv_num(e["sample_seconds"])])
        else:
            rows.append([e["method"], _csv_num(e["nfe"]), "", "", ""] + [""] * (2 * len(metrics) + len(mins))
                        + ["reported", e["source"], e["metric"], e["value_text"], "", e["protocol_ids"][0],
                           e["protocol"], "", "", ""])
    # every cell is already the text it should be (numbers as repr): pandas only lays out and quotes
    return pd.DataFrame(rows, columns=header, dtype=str).to_csv(index=False, lineterminator="\n").encode()


# --- markdown -------------------------------------------------------------------

def _arrow(higher: dict, m: str) -> str:
    return "↑" if higher.get(m, False) else "↓"


def _md_bytes(b: dict) -> bytes:
    task, primary, higher, order = b["task"], b["primary"], b["higher"], b["order"]
    mins = b["aggregate"] == "min" and primary in b["metrics"]
    title = f"# Leaderboard: {task}" + (f" (v{b['version']})" if b["version"] is not None else "")
    lines = [title, ""]
    lines.append(f"Primary metric: **{primary or 'n/a'}** ({'higher' if higher.get(primary, False) else 'lower'} "
                 f"is better; ↑/↓ mark each metric's direction). Measured rows: mean ± the larger side of the 95% "
                 f"percentile bootstrap interval over seeds (scipy.stats.bootstrap; n/a with one seed); failed runs "
                 f"are counted, not averaged. Bold: the best measured mean on {primary or 'the primary metric'} at "
                 f"each NFE budget, a ranking, not a claim: whether a row beats the reference is the paired column's "
                 f"verdict (better or worse only when the paired interval excludes 0, else tie)."
                 + (" Rows with measured NFE 0 (true samples, e.g. `oracle`) are the metrics' noise floor, never "
                    "bold." if any(_is_floor(r) for r in b["rows"]) else "")
                 + (" Rows on another denoiser than the task's own (`method@denoiser`, e.g. the exact posterior "
                    "mean) sample another model: never bold, never the reference."
                    if any(not r["own"] for r in b["rows"]) else "")
                 + (f" The task follows EDM's protocol of the minimum over seed sets: the column "
                    f"\"{primary} min over seeds\" gives it beside the mean." if mins else ""))
    if b["reported"]:
        lines += ["", "Rows whose source is **reported** are published numbers (the source column names the paper), "
                      "shown beside the measured ones under their own protocol; they are not measured here and never "
                      "enter a mean, an interval or the bold best."]
    lines.append("")
    if b["newest"] is not None:
        n = b["newest"]
        lines.append(f"Newest result: {n.get('created', 'unknown')}, git {n.get('git_sha', 'unknown')}"
                     + (f" (results span {len(b['shas'])} commits)" if len(b["shas"]) > 1 else "") + ".")
    else:
        lines.append("Newest result: none (no measured results for this task yet; reported numbers only).")
    lines += ["", "Columns: *measured NFE* is the denoiser evaluations per sample, counted, never declared "
                  "(Heun with N steps spends 2N-1, so a budget of 10 spends 9)"
              + "".join(f"; *{m}*: {text}" for m, text in b["notes"].items()) + "."]
    if b["differ"]:
        lines += ["", f"**Warning:** the measured results differ in {', '.join(b['differ'])}; rows under different "
                      f"protocols may not be comparable."]
    lines.append("")
    header = (["method", "NFE (budget)", "measured NFE", "seeds", "failed"]
              + [f"{m} {_arrow(higher, m)}" for m in order]
              + ([f"{primary} min over seeds {_arrow(higher, primary)}"] if mins else [])
              + [f"paired vs reference ({primary})", "fit NFE", "fit s", "sample s", "source", "protocol"])
    align = ["left"] + ["right"] * (len(header) - 7) + ["left"] + ["right"] * 3 + ["left", "left"]
    body = []
    best = {(row["method"], row["nfe"]) for rs in b["best"].values() for row in rs}
    for e in b["table"]:
        if e["kind"] == "measured":
            bold = (e["method"], e["nfe"]) in best
            cells = [_md_text(e["method"]), str(e["nfe"]), _md_num(e["nfe_measured"]), str(e["seeds"]),
                     str(e["failed"])]
            for m in order:
                mean, ci = e["mean"][m], e["ci"][m]
                cell = "—" if math.isnan(mean) else f"{_md_num(mean)} ± {_md_num(ci)}"
                cells.append(f"**{cell}**" if bold and m == primary else cell)
            if mins:
                cells.append("—" if math.isnan(e["min"][primary]) else _md_num(e["min"][primary]))
            if bold:
                cells[0] = f"**{cells[0]}**"
            cells += [_verdict(b, e), _md_num(e["fit_nfe"]), _md_num(e["fit_seconds"]),
                      _md_num(e["sample_seconds"]), "measured", _row_protocol(e)]
            if e["method"] in b["privileged"]:
                cells[0] += " (privileged)"
        else:
            cells = [_md_text(e["method"]), "n/a" if e["nfe"] is None else str(e["nfe"]), "—", "—", "—"]
            cells += [e["value_text"] if m == e["metric"] else "—" for m in order]
            cells += (["—"] if mins else []) + ["—", "—", "—", "—", f"reported: {_md_text(e['source'])}",
                                                _row_protocol(e)]
        body.append(cells)
    lines.append(_pipe_table(header, body, align))
    lines += ["", f"Also as [CSV]({task}.csv), [JSON]({task}.json) and [LaTeX]({task}.tex) (booktabs).", "",
              f"![]({task}.png)", "", f"Quality against total cost (fit plus sampling denoiser evaluations):", "",
              f"![]({task}.cost.png)", ""]
    lines += ["## Paired comparisons", "",
              f"Each row against the reference row at its NFE budget (the best classic solver there on the task's "
              f"own denoiser), seed by seed on "
              f"{primary}: the mean paired difference ({'positive' if higher.get(primary, False) else 'negative'} "
              f"is better), its 95% percentile bootstrap interval over seeds (scipy.stats.bootstrap, 10,000 resamples), "
                "the probability of improvement, and the verdict: better or worse only when the interval excludes "
                "0, otherwise tie.", "", paired.markdown(b["paired"], primary), ""]
    if b["fit_curves"]:
        lines += ["## Fit cost to quality", "", "The task's primary metric on the tuning split against the fit's "
                  "denoiser evaluations so far (a search's candidates as the grid grows, a learned sampler's "
                  "evaluations as it trains), and the cost ratio at equal quality: the fit NFE at which a learned "
                  "row first reaches a tuned row's final tuning score, over the tuned row's whole fit NFE "
                  "(median over seeds; under 1: cheaper). A learned fit that is already there at its first recorded "
                  "score gives only an upper bound: it may have got there sooner, unrecorded; a median with any such "
                  "seed is then an upper bound too (≤).", "",
                  curves.markdown(b["cost_ratios"]), "",
                  f"![]({task}.fit.png)", ""]
    over = [e for e in b["table"] if e["kind"] == "measured" and not math.isnan(e["overhead"])]
    if over:
        lines += ["## Inference overhead", "", "Sampling time beyond the method's own base solver on EDM's schedule at "
                  "the same budget, both timed in the same run on the same samples (`overhead.ratio` of each result; "
                  "median over seeds, one timing each, so a loaded machine moves it: "
                  "`tests/benchmarks/test_irl_overhead.py` interleaves the two for a steadier figure).", "",
                  _pipe_table(["method", "NFE (budget)", "seeds", "overhead", "sample s"],
                              [[_md_text(e["method"]), str(e["nfe"]), str(e["seeds"]), f"{100 * e['overhead']:+.1f}%",
                                _md_num(e["sample_seconds"])] for e in over],
                              ["left", "right", "right", "right", "right"]), ""]
    s = b["samples"]
    if s is not None:
        lines += ["## Samples", "", f"![{task}: samples per method]({s['file']})", "",
                  f"One row per method: samples {_seed_text(s['indices'])} of seed {s['seed']} at NFE {s['nfe']} "
                  f"(the same noise{' and class labels' if s['labels'] is not None else ''} for every method), "
                  f"from the samples saved beside each result ({', '.join(f'`{f}`' for f in s['files'])}).", ""]
    lines += ["## Protocols", ""]
    for pid, p in b["protocols"].items():
        if pid.startswith("P"):
            lines.append(f"- **{pid}** (measured): {_md_text(_protocol_text(p))}. Full protocol: `protocols.{pid}` "
                         f"in [{task}.json]({task}.json).")
        else:
            lines.append(f"- **{pid}** (reported): {_md_text(p)}.")
    if not b["protocols"]:
        lines.append("- none (no successful results)")
    lines.append("")
    return "\n".join(lines).encode()


# --- JSON -----------------------------------------------------------------------

def _json_bytes(b: dict) -> bytes:
    metrics = b["metrics"]
    measured = []
    for row in _ranked(b["rows"], b["primary"], b["higher"]):
        measured.append(dict(
            method=row["method"], nfe=row["nfe"], nfe_measured=_json_num(row["nfe_measured"]), seeds=row["seed_list"],
            failed=row["failed"], protocol=row["protocol_ids"],
            metrics={m: dict(mean=_json_num(row["mean"][m]), ci95=_json_num(row["ci"][m]),
                             **({"min": _json_num(row["min"][m])} if m in row["min"] else {})) for m in metrics
                     if not math.isnan(row["mean"][m])},
            best=any(r is row for rs in b["best"].values() for r in rs),
            fit_nfe=_json_num(row["fit_nfe"]), fit_seconds=_json_num(row["fit_seconds"]),
            sample_seconds=_json_num(row["sample_seconds"]), overhead=_json_num(row["overhead"]), files=row["files"]))
    reported = [dict(method=r["method"], nfe=r["nfe"], metric=r["metric"], value=r["value"], value_text=r["value_text"],
                     source=r["source"], protocol=r["protocol_ids"][0])
                for r in _ranked_reported(b["reported"], b["primary"], b["higher"])]
    n = b["newest"]
    obj = dict(
        generated_by=GENERATOR, task=b["task"], task_version=b["version"], primary_metric=b["primary"],
        higher_is_better={m: bool(b["higher"].get(m, False)) for m in metrics}, seed_aggregate=b["aggregate"],
        interval=f"{CI_LEVEL:.0%} percentile bootstrap over seeds (scipy.stats.bootstrap), larger side as the half-width (null with one seed)",
        newest_result=None if n is None else dict(created=n.get("created"), git_sha=n.get("git_sha"),
                                                  file=n.get("_rel")),
        git_shas=b["shas"], protocols={pid: p for pid, p in b["protocols"].items()},
        measured=measured, reported=reported,
        samples=None if b["samples"] is None else {k: v for k, v in b["samples"].items() if k != "grid"})
    obj["paired"] = b["paired"].to_dict("records")
    obj["cost_ratios"] = b["cost_ratios"].to_dict("records")
    obj["privileged"] = b["privileged"]
    text = json.dumps(_clean(obj), indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode()


def _clean(obj):
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return _clean(float(obj))
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


# --- LaTeX ----------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "§": r"\S{}", "—": "---", "–": "--",
        "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "×": r"$\times$", "≤": r"$\leq$",
        "≥": r"$\geq$",
        "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def tex_escape(s) -> str:
    return "".join(_TEX.get(c, c) for c in str(s))


def _tex_num(v) -> str:
    """A number for math mode: 4 significant digits, ``1.2\\times10^{4}`` rather than ``1.2e+04``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "--"
    if math.isinf(v):  # a divergence that overflowed (e.g. Sinkhorn between far-apart sets)
        return r"\infty" if v > 0 else r"-\infty"
    text = f"{float(v):.4g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = f"{mant}\\times10^{{{int(exp)}}}"
    return text


def _tex_bytes(b: dict) -> bytes:
    task, primary, higher, order = b["task"], b["primary"], b["higher"], b["order"]
    mins = b["aggregate"] == "min" and primary in b["metrics"]
    best = {(row["method"], row["nfe"]) for rs in b["best"].values() for row in rs}
    header = (["Method", "NFE", "Seeds"] + [f"{m} {_arrow(higher, m)}" for m in order]
              + ([f"{primary} min over seeds {_arrow(higher, primary)}"] if mins else []) + ["Source", "Protocol"])
    n = b["newest"]
    out = ["% Generated by `python -m bench leaderboard` from result files (sampler-bench); do not edit by hand.",
           "% Needs \\usepackage{booktabs}.",
           "% Newest result: " + ("none (reported numbers only)" if n is None else
                                  f"{n.get('created', 'unknown')}, git {n.get('git_sha', 'unknown')}"),
           r"\begin{table}[t]", r"\centering", r"\small",
           r"\caption{" + tex_escape(
               f"{task}: {primary} ({'higher' if higher.get(primary, False) else 'lower'} is better) by NFE. "
               f"Measured: mean ± {CI_LEVEL:.0%} bootstrap interval over seeds (larger side); bold: best measured mean per NFE. "
               f"Reported: published numbers, not measured here, never averaged with the measured ones.") + "}",
           r"\label{tab:" + re.sub(r"[^A-Za-z0-9:.-]", "-", task) + "}",
           r"\begin{tabular}{lrr" + "r" * (len(order) + int(mins)) + "ll}", r"\toprule",
           " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule"]
    prev = None
    for e in b["table"]:
        nfe = e["nfe"]
        if prev is not None and nfe != prev:
            out.append(r"\addlinespace")
        prev = nfe
        if e["kind"] == "measured":
            bold = (e["method"], e["nfe"]) in best
            cells = [tex_escape(e["method"]), str(nfe), str(e["seeds"])]
            for m in order:
                mean, ci = e["mean"][m], e["ci"][m]
                if math.isnan(mean):
                    cell = "--"
                elif math.isnan(ci):
                    cell = f"${_tex_num(mean)}$"
                else:
                    cell = f"${_tex_num(mean)} \\pm {_tex_num(ci)}$"
                if bold and m == primary and cell != "--":
                    cell = r"$\mathbf{" + cell.strip("$") + "}$"
                cells.append(cell)
            if mins:
                cells.append(f"${_tex_num(e['min'][primary])}$" if not math.isnan(e["min"][primary]) else "--")
            if bold:
                cells[0] = r"\textbf{" + cells[0] + "}"
            cells += ["measured", tex_escape(_row_protocol(e))]
        else:
            cells = [tex_escape(e["method"]), "--" if nfe is None else str(nfe), "--"]
            cells += [f"${tex_escape(e['value_text'])}$" if m == e["metric"] else "--" for m in order]
            cells += (["--"] if mins else []) + [tex_escape(f"reported: {e['source']}"), tex_escape(_row_protocol(e))]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if b["protocols"]:
        notes = [r"\textbf{" + pid + "}: " + tex_escape(_protocol_text(p)) for pid, p in b["protocols"].items()]
        out += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize",
                "Protocols. " + r" \\ ".join(notes), r"\end{minipage}"]
    out += [r"\end{table}", ""]
    return "\n".join(out).encode()


# --- pictures -------------------------------------------------------------------

def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _png_bytes(b: dict) -> bytes:
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
        fig = _figure((4.6 * cols, 3.6 * nrows))
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
        return _png(fig)


def _fit_png_bytes(b: dict) -> bytes:
    import matplotlib.style
    with matplotlib.style.context("default"):
        return _png(curves.figure(b["task"], b["fit_curves"], b["families"], b["primary"],
                                  b["higher"].get(b["primary"], False)))


def _cost_png_bytes(b: dict) -> bytes:
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
        fig = _figure((7.2, 4.8))
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
        return _png(fig)


def _npz_head(path: Path, key: str, k: int):
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
        x, shape = _npz_head(path, "x", k)
        labels, _ = _npz_head(path, "labels", k)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        warnings.warn(f"samples file {path} is unreadable ({e}); it is left out of the sample grid", stacklevel=4)
        return None
    if x is None or len(shape) != 4 or shape[1] not in (1, 3) or shape[0] < 1:
        return None
    return np.asarray(x, dtype=np.float64), None if labels is None else np.asarray(labels).reshape(-1)


def _choose_samples(b: dict) -> dict | None:
    """The grid's (NFE, seed, methods): the largest NFE budget at which the most methods saved image
    samples, the smallest seed most of those share; methods in the table's order at that NFE."""
    have: dict[tuple, dict] = {}  # (label, nfe, seed) -> result
    for r in b["ok"]:
        if r.get("samples_file"):
            have[(_label(r), int(r["nfe_budget"]), int(r["seed"]))] = r
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
    order = [row["method"] for row in _ranked(b["rows"], b["primary"], b["higher"]) if row["nfe"] == nfe]
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
        files.append((Path(_rel(r, b["roots"])).parent / r["samples_file"]).as_posix())
    if not images:
        return None
    k = shape[0]
    return dict(file=f"{b['task']}_samples.png", nfe=nfe, seed=seed, indices=list(range(k)), methods=names,
                files=files, labels=None if labels is None else [int(v) for v in labels[:k]],
                grid=[x[:k] for x in images])


def _samples_png(b: dict) -> bytes:
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
        fig = _figure((1.9 + k * cell, 0.9 + len(grid) * cell))
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
        ax.set_title(f"{b['task']}: NFE {s['nfe']}, seed {s['seed']}, sample indices {_seed_text(s['indices'])}",
                     fontsize="small")
        fig.tight_layout()
        return _png(fig)


# --- README -----------------------------------------------------------------------

def _readme_bytes(boards: list[dict], formats: tuple[str, ...]) -> bytes:
    lines = ["# Leaderboards", "",
             "Generated by `python -m bench leaderboard` from the result files in [`results/`](results/) and the "
             "published numbers in [`reported.csv`](reported.csv); do not edit by hand: rebuilding from the same "
             "files gives the same bytes. The published boards are regenerated, runs included, by "
             "`python -m bench suite leaderboards/suite.toml`; the commit(s) behind each task's rows are listed "
             "below (`-dirty`: made from a tree with uncommitted changes). A result records the version of the "
             "code that made it (the harness, its task and its method); *code* counts the results whose version "
             "is this checkout's, which this one commit therefore reproduces, and names the rows whose code "
             "changed since (stale: the suite command reruns them).", "",
             "Per task: the best **measured** method at each NFE budget by the task's primary metric (mean ± 95% "
             "bootstrap interval over seeds), and beside it the best **reported** (published) number at that NFE "
             "with its source. Reported numbers are never averaged with or ranked against measured ones; protocols "
             "(P = measured, R = reported) are spelled out on each task's page.", "",
             ]
    manifest = any("coverage" in b for b in boards)
    if manifest:
        lines += ["*manifest* counts the runs (row, NFE, seed) that [`suite.toml`](suite.toml) lists for the task "
                  "and how many of them have a result here; each task's section below names the rows still to run.",
                  ""]
    lines += ["| task | primary metric | measured rows | reported numbers | newest result | results from commit(s) | code |"
              + (" manifest |" if manifest else ""),
              "|:--|:--|--:|--:|:--|:--|:--|" + ("--:|" if manifest else "")]
    for b in boards:
        n = b["newest"]
        lines.append(f"| [{b['task']}](#{_anchor(b['task'])}) | {b['primary']} {_arrow(b['higher'], b['primary'])} | "
                     f"{len(b['rows'])} | {len(b['reported'])} | "
                     + ("—" if n is None else f"{n.get('created', 'unknown')}, git `{n.get('git_sha', 'unknown')}`")
                     + " | " + (", ".join(f"`{sha}`" for sha in sorted(b["shas"])) or "—") + " | "
                     + _code_text(b["code"]) + " |" + (f" {_coverage_count(b)} |" if manifest else ""))
    lines.append("")
    lines += _verdict_matrix(boards)
    for b in boards:
        task, primary, higher = b["task"], b["primary"], b["higher"]
        lines += [f"## {task}", ""]
        links = [f"full table: [{task}.md]({task}.md)"]
        links += [f"[{f.upper() if f != 'tex' else 'LaTeX'}]({task}.{f})" for f in ("csv", "json", "tex")
                  if f in formats]
        if "png" in formats:
            links.append(f"plot: [{task}.png]({task}.png)")
            if b["samples"] is not None:
                links.append(f"samples: [{b['samples']['file']}]({b['samples']['file']})")
        lines.append(" · ".join(links))
        lines.append("")
        n = b["newest"]
        version = f" (task version {b['version']})" if b["version"] is not None else ""
        lines.append(f"Primary metric: **{primary}** ({'higher' if higher.get(primary, False) else 'lower'} is "
                     f"better){version}. " + (
                         f"Newest result behind it: {n.get('created', 'unknown')}, git `{n.get('git_sha', 'unknown')}`"
                         + (f" (results span {len(b['shas'])} commits)" if len(b["shas"]) > 1 else "") + "."
                         if n is not None else "No measured results yet: reported numbers only."))
        lines.append("")
        c = b.get("coverage")
        if c and c["missing"]:
            lines += [f"Not yet run ({c['listed'] - c['done']} of the manifest's {c['listed']} runs of this task; "
                      f"a budget alone: all its seeds): "
                      f"{_md_text(coverage.missing_text(c['missing']))}.", ""]
        budgets = sorted(set(b["best"]) | {x for x in b["best_reported"] if x is not None})
        if None in b["best_reported"]:
            budgets.append(None)
        if not budgets:
            lines += ["No successful results.", ""]
            continue
        arrow = _arrow(higher, primary)
        header = ["NFE", "best measured", f"{primary} {arrow}", "protocol"]
        if b["reported"]:
            header += ["best reported", f"{primary} {arrow} (reported)", "source"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["--:", ":--", "--:", ":--"] + ([":--", "--:", ":--"] if b["reported"] else []))
                     + "|")
        for nfe in budgets:
            rows = b["best"].get(nfe, [])
            if rows:
                cells = [str(nfe), ", ".join(_md_text(r["method"]) for r in rows),
                         f"{_md_num(rows[0]['mean'][primary])} ± {_md_num(rows[0]['ci'][primary])}",
                         "; ".join(f"[{_row_protocol(r)}]({task}.md#protocols)" for r in rows)]
            else:
                cells = ["n/a" if nfe is None else str(nfe), "—", "—", "—"]
            if b["reported"]:
                rep = b["best_reported"].get(nfe, [])
                cells += ([", ".join(_md_text(r["method"]) for r in rep), rep[0]["value_text"],
                           "; ".join(sorted({_md_text(r["source"]) for r in rep}))] if rep else ["—", "—", "—"])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).encode()


def _coverage_count(b: dict) -> str:
    c = b.get("coverage")
    return "—" if c is None else f"{c['done']} of {c['listed']}"


def _verdict_matrix(boards: list[dict]) -> list[str]:
    """Every row's paired verdict against its budget's reference, one column per task: where a
    method wins, ties or loses across tasks reads off one table."""
    from bench.method import FAMILIES
    shown = [b for b in boards if not b["paired"].empty]
    cells: dict[tuple[str, int], dict[str, str]] = {}
    families: dict[str, str] = {}
    for b in shown:
        t = b["paired"]
        most = int(t["seeds"].max())
        for r in t.itertuples(index=False):
            text = r.verdict if r.verdict == "n/a" else f"{r.verdict} {'+' if r.diff > 0 else ''}{_md_num(r.diff)}"
            cells.setdefault((r.label, int(r.nfe)), {})[b["task"]] = text + (f" ({r.seeds} seeds)" if r.seeds < most else "")
        for nfe, ref in sorted(set(zip(t["nfe"], t["reference"]))):
            cells.setdefault((ref, int(nfe)), {})[b["task"]] = "reference"
        families.update(b["families"])
    if not shown:
        return []
    tasks = [b["task"] for b in shown]
    rank = {f: i for i, f in enumerate(FAMILIES)}
    keys = sorted(cells, key=lambda k: (rank.get(families.get(k[0], "other"), len(rank)), k[0], k[1]))
    lines = ["## Verdicts across tasks", "",
             "Each row against the reference row of its task at its NFE budget (the best classic solver there on "
             "the task's own denoiser), "
             "paired over seeds on the task's primary metric: *better* or *worse* only when the paired 95% "
             "bootstrap interval excludes 0, with the mean paired difference (negative is better for a metric "
             "to be lowered); the seed count where a row has fewer seeds than the task's others; — where the "
             "row was not run. Each task's page has the intervals.", "",
             "| method | NFE | " + " | ".join(f"{b['task']} ({b['primary']})" for b in shown) + " |",
             "|:--|--:|" + ":--|" * len(tasks)]
    for label, nfe in keys:
        lines.append(f"| {_md_text(label)} | {nfe} | " + " | ".join(cells[label, nfe].get(t, "—") for t in tasks) + " |")
    return lines + [""]


def _verdict(b: dict, e: dict) -> str:
    """The paired verdict of a measured row against its budget's reference row."""
    t = b["paired"]
    if t.empty:
        return "—"
    hit = t[(t["nfe"] == e["nfe"]) & (t["label"] == e["method"])]
    if hit.empty:
        refs = set(t.loc[t["nfe"] == e["nfe"], "reference"])
        return "reference" if e["method"] in refs else "—"
    return str(hit["verdict"].iloc[0])


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


# --- building ---------------------------------------------------------------

def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def board_paths(results=None, out=None, *, published: bool = False) -> tuple:
    """``(results, out)`` with their defaults: ``results/`` into ``results/leaderboards``, or with
    ``published`` the published results into the published folder. Raises ValueError, before any
    work, when ``out`` is a file or would overwrite the published boards without ``published``."""
    if published:
        if results is not None or out is not None:
            raise ValueError("--published rebuilds leaderboards/ from leaderboards/results and takes no "
                             "--results or --out; drop them, or drop --published for your own boards")
        results, out = PUBLISHED_RESULTS, PUBLISHED
    results = "results" if results is None else results
    if out is None:
        if not isinstance(results, (str, Path)):
            raise ValueError("several result folders: say where the boards go with --out")
        out = Path(results) / "leaderboards"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the leaderboard files")
    if not published and _inside(out, PUBLISHED):
        raise ValueError(f"{out} holds the published leaderboards; write your own elsewhere (default: "
                         f"<results>/leaderboards), or rebuild the published ones with "
                         f"`python -m bench leaderboard --published`")
    return results, out


def build(results=None, out=None, task: str | None = None, *, formats=None, reported=REPORTED_CSV,
          published: bool = False) -> list[Path]:
    """Write the leaderboard files (module docstring) under ``out`` for every task with results
    under ``results`` (a directory or a list of them; default ``results``) or reported numbers,
    or only for ``task``; ``out`` defaults to ``<results>/leaderboards`` and is never the
    published folder unless ``published`` (which also sets both folders). ``formats``
    restricts what is written (md, csv, json, latex, png); ``reported`` is the CSV of published
    numbers (None: none). Returns the paths written."""
    formats = parse_formats(formats)
    results, out = board_paths(results, out, published=published)
    where = ", ".join(map(str, [results] if isinstance(results, (str, Path)) else results))
    loaded, roots = _load(results)
    if task is not None and not any(r["task"] in (task, task.rpartition("-v")[0]) for r in loaded):
        base, _, ver = task.rpartition("-v")
        task_class(base if base and ver.isdigit() else task)  # a name no task has: its close matches
    if not loaded:
        raise FileNotFoundError(f"no result files under {where}: produce some with "
                                f"`python -m bench run --method edm --task gmm8 --out {where}`")
    by_task: dict[str, list[dict]] = {}
    for r in loaded:
        r["_rel"] = _rel(r, roots)
        by_task.setdefault(str(r["task"]), []).append(r)
    rep_by_task: dict[str, list[dict]] = {}
    for r in load_reported(reported):
        rep_by_task.setdefault(r["task"], []).append(r)
    names = sorted(set(by_task) | set(rep_by_task))
    if task is not None:
        base, _, ver = task.rpartition("-v")
        name = task if task in names or not (base and ver.isdigit()) else base
        if name not in names:
            raise FileNotFoundError(f"no results for task {task} under {where} (tasks there: "
                                    f"{', '.join(sorted(by_task))}); produce some with "
                                    f"`python -m bench run --task {task} --out {where}`")
        names = [name]
        if name != task:
            by_task[name] = [r for r in by_task.get(name, []) if f"{name}-v{r.get('task_version')}" == task]
            if not by_task[name] and not rep_by_task.get(name):
                raise FileNotFoundError(f"no results for task {task} under {where} (other versions of {name} "
                                        f"only)")
    boards = []
    for name in names:
        if name in RESERVED or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            warnings.warn(f"task name {name!r} cannot name leaderboard files (reserved or not a plain file name); "
                          f"skipped", stacklevel=2)
            continue
        b = _board(name, by_task.get(name, []), rep_by_task.get(name, []), roots)
        b["roots"] = roots
        if "png" in formats or "md" in formats or "json" in formats:
            b["samples"] = _choose_samples(b)
        boards.append(b)
    manifest = PUBLISHED / "suite.toml"
    if published and manifest.exists():
        from bench.engine import suite
        covered = coverage.coverage(suite.load(manifest), [r for b in boards for r in b["ok"]])
        for b in boards:
            b["coverage"] = covered.get(b["task"])
    written = []
    for b in boards:
        name = b["task"]
        files = []
        if "md" in formats:
            files.append((out / f"{name}.md", _md_bytes(b)))
        if "csv" in formats:
            files.append((out / f"{name}.csv", _csv_bytes(b)))
            files.append((out / f"{name}.paired.csv", b["paired"].to_csv(index=False).encode()))
        if "json" in formats:
            files.append((out / f"{name}.json", _json_bytes(b)))
        if "tex" in formats:
            files.append((out / f"{name}.tex", _tex_bytes(b)))
        if "png" in formats:
            files.append((out / f"{name}.png", _png_bytes(b)))
            files.append((out / f"{name}.cost.png", _cost_png_bytes(b)))
            if b["fit_curves"]:
                files.append((out / f"{name}.fit.png", _fit_png_bytes(b)))
            if b["samples"] is not None:
                files.append((out / b["samples"]["file"], _samples_png(b)))
        for path, data in files:
            atomic_write_bytes(path, data)
            written.append(path)
    if task is None:
        if "md" in formats:
            path = out / "README.md"
            atomic_write_bytes(path, _readme_bytes(boards, formats))
            written.append(path)
        _warn_stale(out, written, formats)
    return written


def comparisons(label: str, task: str, results=None, *, against=None, nfe=None, metric: str | None = None,
                published: bool = False):
    """``label`` against the other rows of ``task`` (or those in ``against``), paired over seeds at
    each NFE budget (in ``nfe`` if given), on ``metric`` (default: the task's primary metric):
    :func:`bench.report.paired.against` on the results a leaderboard would use. Returns
    ``(table, metric, higher_is_better)``; ValueError naming what exists for an unknown label,
    metric or budget."""
    results = (PUBLISHED_RESULTS if published else "results") if results is None else results
    loaded, _ = _load(results)
    mine = [r for r in loaded if r["task"] == task]
    if not mine:
        tasks = sorted({r["task"] for r in loaded})
        raise ValueError(f"no results for task {task} under {results} (tasks there: {', '.join(tasks) or 'none'})")
    ok, _ = _usable(task, mine)
    labels = sorted({_label(r) for r in ok})
    for name in [label, *(against or [])]:
        if name not in labels:
            raise ValueError(f"no results labelled {name!r} for task {task}; labels there: {', '.join(labels)}")
    metrics = sorted({m for r in ok for m in r["metrics"]})
    primary, higher, _, _ = _task_info(task, metrics)
    metric = metric or primary
    if metric not in metrics:
        raise ValueError(f"no metric {metric!r} in task {task}'s results; metrics there: {', '.join(metrics)}")
    frame = _primary_frame(ok, metric, _own_denoiser(task))
    budgets = sorted(set(frame.loc[frame["label"] == label, "nfe"]))
    if nfe is not None:
        missing = sorted(set(nfe) - set(budgets))
        if missing:
            raise ValueError(f"{label} has no results at NFE {', '.join(map(str, missing))} on {task}; its budgets: "
                             f"{', '.join(map(str, budgets))}")
        frame = frame[frame["nfe"].isin(nfe)]
    return paired.against(frame, label, higher.get(metric, False), against), metric, higher.get(metric, False)


def _warn_stale(out: Path, written: list[Path], formats: tuple[str, ...]):
    """Outputs under ``out`` (top level only) that this build did not produce: a task without results
    any more. Never deleted here; named so a person can."""
    made = {p.name for p in written}
    suffixes = {"md": ".md", "csv": ".csv", "json": ".json", "tex": ".tex", "png": ".png"}
    stale = []
    for p in sorted(out.iterdir()) if out.is_dir() else []:
        if not p.is_file() or p.name in made or p.name.startswith(".") or p.stem in RESERVED:
            continue
        if any(p.suffix == suffixes[f] for f in formats):
            if p.suffix == ".json" and not _is_generated(p):
                continue
            stale.append(p.name)
    if stale:
        warnings.warn(f"{out} holds file(s) this build did not write, e.g. of a task without results now: "
                      f"{', '.join(stale)}; not removed", stacklevel=3)
