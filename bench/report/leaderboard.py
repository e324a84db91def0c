"""Leaderboards: per task a markdown page, CSV, JSON, LaTeX table, plots and sample grid, plus an
index (``README.md``), built from result files and the published numbers.

    from bench.report.leaderboard import build
    build("results")                                  # every task, every format, into results/leaderboards
    build("results", task="gmm8", formats="latex")    # one task, one format
    build(published=True)                             # the published boards: leaderboards/ from leaderboards/results

The model is ``bench.report.board`` (rows, intervals, paired verdicts, costs, protocols); each
format has its renderer: ``markdown`` (pages and the index), ``data`` (CSV, JSON), ``latex``,
``figures`` (PNG). This module only decides what to build and writes it.

A user's own boards never touch the published ones: ``out`` defaults to
``<results>/leaderboards``, and writing into the published folder needs ``published=True``
(``python -m bench leaderboard --published``).

Files written under ``out`` (never inside its subdirectories, so a results directory kept there,
e.g. ``leaderboards/results``, is left alone): ``<task>.md``, ``.csv``, ``.paired.csv``,
``.json``, ``.tex`` (booktabs), ``.png`` (quality vs NFE), ``.cost.png`` (quality vs total
cost), ``.fit.png`` (the fits' cost to quality), ``<task>_samples.png`` (image tasks whose
results saved samples) and, when every task is built, the index: ``README.md`` (with markdown)
and ``verdicts.png`` (with PNG, when some row has a paired verdict: every verdict across tasks). The outputs
depend only on the result files and the reported numbers, so rebuilding gives the same bytes.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from bench.engine.io import atomic_write_bytes, inside
from bench.engine.results import PUBLISHED, PUBLISHED_RESULTS
from bench.registry import suggest, task_class
from bench.report import coverage, paired
from bench.report.board import (RESERVED, beside_published, choose_samples, code_status, is_generated, load, make,
                                own_denoiser, primary_frame, rel_path, row_label, start_labels, task_info, usable)
from bench.report.data import csv_bytes, json_bytes
from bench.report.figures import cost_png, fit_png, quality_png, samples_png, verdict_png
from bench.report.latex import tex_bytes
from bench.report.markdown import index, page
from bench.report.reported import DEFAULT_PATH as REPORTED_CSV
from bench.report.reported import load_reported

FORMATS = ("md", "csv", "json", "tex", "png")


_ALIASES = {"markdown": "md", "latex": "tex", "plot": "png", "plots": "png"}


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


def check_folders(results) -> None:
    """ValueError for a ``--results`` that names a file, not a folder of result files."""
    for folder in [results] if isinstance(results, (str, Path)) else results:
        if Path(folder).is_file():
            raise ValueError(f"--results {folder} is a file: name the folder of result files (here "
                             f"{Path(folder).parent})")


def board_paths(results=None, out=None, *, published: bool = False) -> tuple:
    """``(results, out)`` with their defaults: ``results/`` into ``results/leaderboards``, or with
    ``published`` alone the published results into the published folder (``published`` with
    ``results``: your rows beside the published ones, into your folder). Raises ValueError, before
    any work, when ``out`` is a file or would overwrite the published boards without ``published``."""
    if published and results is None:
        if out is not None:
            raise ValueError("--published rebuilds leaderboards/ from leaderboards/results and takes no --out; "
                             "drop it, or give --results for your own rows beside the published ones")
        results, out = PUBLISHED_RESULTS, PUBLISHED
    elif published:  # your rows beside the published ones: your boards, never the published folder
        published = False
    results = "results" if results is None else results
    check_folders(results)
    if out is None:
        if not isinstance(results, (str, Path)):
            raise ValueError("several result folders: say where the boards go with --out")
        out = Path(results) / "leaderboards"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the leaderboard files")
    if not published and inside(out, PUBLISHED):
        raise ValueError(f"{out} holds the published leaderboards; write your own elsewhere (default: "
                         f"<results>/leaderboards), or rebuild the published ones with "
                         f"`python -m bench leaderboard --published`")
    return results, out


def build(results=None, out=None, task: str | None = None, *, formats=None, reported=REPORTED_CSV,
          published: bool = False) -> list[Path]:
    """Write the leaderboard files (module docstring) under ``out`` for every task with results
    under ``results`` (a directory or a list of them; default ``results``) or reported numbers,
    or only for ``task``; ``out`` defaults to ``<results>/leaderboards`` and is never the
    published folder unless ``published`` alone (which also sets both folders; with ``results``,
    the boards of your rows beside the published ones, ``board.beside_published``). ``formats``
    restricts what is written (md, csv, json, latex, png); ``reported`` is the CSV of published
    numbers (None: none). Returns the paths written."""
    formats = parse_formats(formats)
    beside = published and results is not None
    results, out = board_paths(results, out, published=published)
    published = published and not beside
    where = ", ".join(map(str, [results] if isinstance(results, (str, Path)) else results))
    loaded, roots = beside_published(results) if beside else load(results)
    if task is not None and not any(r["task"] in (task, task.rpartition("-v")[0]) for r in loaded):
        base, _, ver = task.rpartition("-v")
        task_class(base if base and ver.isdigit() else task)  # a name no task has: its close matches
    if not loaded:
        raise FileNotFoundError(f"no result files under {where}: produce some with "
                                f"`python -m bench run --method edm --task gmm8 --out {where}`")
    by_task: dict[str, list[dict]] = {}
    for r in loaded:
        r["rel_path"] = rel_path(r, roots)
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
        b = make(name, by_task.get(name, []), rep_by_task.get(name, []), roots)
        b["roots"] = roots
        if "png" in formats or "md" in formats or "json" in formats:
            b["samples"] = choose_samples(b)
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
            files.append((out / f"{name}.md", page(b)))
        if "csv" in formats:
            files.append((out / f"{name}.csv", csv_bytes(b)))
            files.append((out / f"{name}.paired.csv", b["paired"].to_csv(index=False).encode()))
        if "json" in formats:
            files.append((out / f"{name}.json", json_bytes(b)))
        if "tex" in formats:
            files.append((out / f"{name}.tex", tex_bytes(b)))
        if "png" in formats:
            files.append((out / f"{name}.png", quality_png(b)))
            files.append((out / f"{name}.cost.png", cost_png(b)))
            if b["fit_curves"]:
                files.append((out / f"{name}.fit.png", fit_png(b)))
            if b["samples"] is not None:
                files.append((out / b["samples"]["file"], samples_png(b)))
        for path, data in files:
            atomic_write_bytes(path, data)
            written.append(path)
    if task is None:
        index_files = []
        if "md" in formats:
            index_files.append((out / "README.md", index(boards, formats, published=published, beside=beside)))
        if "png" in formats and any(not b["paired"].empty for b in boards):
            index_files.append((out / "verdicts.png", verdict_png(boards)))
        for path, data in index_files:
            atomic_write_bytes(path, data)
            written.append(path)
        _warn_stale(out, written, formats)
    return written


def comparisons(label: str, task: str, results=None, *, against=None, nfe=None, metric: str | None = None,
                published: bool = False):
    """``label`` against the other rows of ``task`` (or those in ``against``), paired over seeds at
    each NFE budget (in ``nfe`` if given), on ``metric`` (default: the task's primary metric):
    :func:`bench.report.paired.against` on the results a leaderboard would use. With ``results``
    and ``published`` both, your runs against the published rows: ``label`` must be among the
    results under ``results``, and a label found there is taken from there whole (the published
    results of that label are left out, so a row never mixes seeds of two sources). Rows whose
    results have another number of samples per seed than ``label``'s are not paired (a warning
    names them): their metrics are other estimators. Returns ``(table, metric,
    higher_is_better)``; ValueError naming what exists for an unknown label, metric or budget."""
    if results is not None:
        check_folders(results)
    if results is not None and published:
        loaded, _ = beside_published(results)
        own_rows = {row_label(r) for r in loaded if r["task"] == task and not r.get("_published")}
        if label not in own_rows:
            raise ValueError(f"no results labelled {label!r} for task {task} under {results}"
                             f"{suggest(label, own_rows)} (labels there: {', '.join(sorted(own_rows)) or 'none'}): "
                             f"with --published, LABEL is a row of yours")
        results = f"{results} and {PUBLISHED_RESULTS}"
    else:
        results = (PUBLISHED_RESULTS if published else "results") if results is None else results
        loaded, _ = load(results)
    mine = [r for r in loaded if r["task"] == task]
    if not mine:
        tasks = sorted({r["task"] for r in loaded})
        raise ValueError(f"no results for task {task} under {results} (tasks there: {', '.join(tasks) or 'none'})")
    ok, _ = usable(task, mine)
    labels = sorted({row_label(r) for r in ok})
    for name in [label, *(against or [])]:
        if name not in labels:
            raise ValueError(f"no results labelled {name!r} for task {task}{suggest(name, labels)} (labels there: "
                             f"{', '.join(labels)})")
    notes, samples = [], {}  # warned once the request is known to be valid
    for r in ok:
        samples.setdefault(row_label(r), set()).add(r.get("n_samples"))
    other_count = sorted(x for x in samples if x != label and samples[x] != samples[label]
                         and (against is None or x in against))
    if other_count:
        def counts(x):
            return "/".join("unrecorded" if n is None else str(n) for n in sorted(samples[x], key=str))
        notes.append(f"not paired with {', '.join(other_count)}: their results have "
                     f"{', '.join(counts(x) for x in other_count)} samples per seed, {label}'s {counts(label)} "
                     f"(rerun with the same --samples to compare)")
        ok = [r for r in ok if row_label(r) not in other_count]
    stale = code_status([r for r in ok if against is None or row_label(r) in {label, *against}])["stale"]
    if stale:
        notes.append(f"{', '.join(stale)}: made by other code than this checkout's (the numbers are what that code "
                     f"measured; `python -m bench suite` reruns such results)")
    metrics = sorted({m for r in ok for m in r["metrics"]})
    primary, higher, _, _ = task_info(task, metrics)
    metric = metric or primary
    if metric not in metrics:
        raise ValueError(f"no metric {metric!r} in task {task}'s results; metrics there: {', '.join(metrics)}")
    frame = primary_frame(ok, metric, own_denoiser(task))
    budgets = sorted(set(frame.loc[frame["label"] == label, "nfe"]))
    if nfe is not None:
        missing = sorted(set(nfe) - set(budgets))
        if missing:
            raise ValueError(f"{label} has no results at NFE {', '.join(map(str, missing))} on {task}; its budgets: "
                             f"{', '.join(map(str, budgets))}")
        frame = frame[frame["nfe"].isin(nfe)]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    table = paired.against(frame, label, higher.get(metric, False), against)
    return _ordered(table, frame, label, start_labels(ok).get(label), higher.get(metric, False)), metric, \
        higher.get(metric, False)


def _ordered(table, frame, label: str, start: str | None, higher_is_better: bool):
    """The comparisons by NFE budget, at each the reference row (the best classic solver there)
    first, then ``label``'s untrained start, then the rest from the strongest rival (the mean
    difference worst for ``label``) down; their ``role`` column says which row is which."""
    if table.empty:
        return table.assign(role=[])
    refs = paired.reference_rows(frame, higher_is_better)
    role = [", ".join(x for x in ("reference" if refs.get(int(n)) == other else "",
                                  "its start" if other == start else "") if x)
            for n, other in zip(table["nfe"], table["reference"])]
    rank = [0 if r.startswith("reference") else 1 if r else 2 for r in role]
    sign = 1 if higher_is_better else -1  # the difference worst for label first
    out = table.assign(role=role, _rank=rank, _key=sign * table["diff"])
    return out.sort_values(["nfe", "_rank", "_key", "reference"]).drop(columns=["_rank", "_key"]).reset_index(drop=True)


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
            if p.suffix == ".json" and not is_generated(p):
                continue
            stale.append(p.name)
    if stale:
        warnings.warn(f"{out} holds file(s) this build did not write, e.g. of a task without results now: "
                      f"{', '.join(stale)}; not removed", stacklevel=3)

