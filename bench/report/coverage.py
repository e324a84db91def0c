"""How much of a suite manifest the published results cover: per task, the manifest's jobs with a
successful result and, grouped by row and NFE budget, the seeds still missing. A board that shows
only what has run says so, and names what has not."""
from __future__ import annotations

import json


def _label_matches(job, r: dict) -> bool:
    label = str(r.get("label") or r.get("method"))
    if job.label is not None:
        return label == job.label
    if job.denoiser is not None:  # the runner names a run on another denoiser method@denoiser
        base = f"{job.method}@{job.denoiser}"
        return label == base or (bool(job.settings) and label.startswith(base + "-"))
    if job.settings:  # unlabelled settings: the runner appends a hash of them
        return label.startswith(job.method + "-") and "@" not in label
    return label == job.method


def matches(job, r: dict) -> bool:
    """Whether result ``r`` (successful) is job ``job``'s: same method, task, label, settings, budget
    and seed."""
    if r.get("status") != "ok" or r.get("method") != job.method or r.get("task") != job.task:
        return False
    if r.get("nfe_budget") != job.nfe or r.get("seed") != job.seed or not _label_matches(job, r):
        return False
    if job.denoiser is not None and r.get("denoiser") != job.denoiser:
        return False
    config = r.get("method_config") or {}
    return all(k in config and config[k] == json.loads(v) for k, v in job.settings)


def coverage(jobs, results: list[dict]) -> dict[str, dict]:
    """Per task of ``jobs``: ``listed`` (jobs), ``done`` (jobs with a matching successful result)
    and ``missing``, a list of (row label, NFE, seeds missing, seeds listed) in manifest order."""
    index: dict[tuple, list[dict]] = {}
    for r in results:
        index.setdefault((r.get("task"), r.get("method"), r.get("nfe_budget"), r.get("seed")), []).append(r)
    out: dict[str, dict] = {}
    groups: dict[tuple, list[int]] = {}
    for job in jobs:
        t = out.setdefault(job.task, dict(listed=0, done=0, missing=[]))
        t["listed"] += 1
        found = any(matches(job, r) for r in index.get((job.task, job.method, job.nfe, job.seed), []))
        t["done"] += found
        g = groups.setdefault(job.group(), [0, 0])
        g[1] += 1
        if not found:
            g[0] += 1
    for job_group, (missing, listed) in groups.items():
        method, task, label, denoiser, _, settings, nfe = job_group
        if missing:
            name = label or (f"{method}@{denoiser}" if denoiser else method) + (" (settings)" if settings and not label else "")
            out[task]["missing"].append((name, nfe, missing, listed))
    return out


def missing_text(missing: list[tuple]) -> str:
    """``[("irl", 10, 1, 3), ("irl", 20, 3, 3)]`` -> ``irl NFE 10 (1 of 3 seeds), 20``: a budget with
    every listed seed missing stands alone."""
    rows: dict[str, list[str]] = {}
    for name, nfe, k, n in missing:
        rows.setdefault(name, []).append(str(nfe) if k == n else f"{nfe} ({k} of {n} seeds)")
    return "; ".join(f"{name} NFE {', '.join(parts)}" for name, parts in rows.items())
