"""The harness: fit (cached), sample with measured NFE, score, write results."""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.denoiser import CountingDenoiser
from bench.engine import dist, ode_reference
from bench.engine.artifacts import ArtifactStore, key_hash
from bench.engine.draw import generate  # noqa: F401  (bench.generate)
from bench.engine.io import atomic_write_bytes, check_writable, inside, json_ready
from bench.engine.results import (
    PUBLISHED_RESULTS,
    SCHEMA,
    check_label,
    code_version,
    config_hash,
    git_sha,
    now,
    read_result,
    result_path,
    versions,
    write_result,
)
from bench.errors import Interrupted
from bench.method import BudgetError, check_budgets, objective
from bench.registry import method_class, task_class
from bench.task import Task, Unsupported

FIT_SEED = 2**31  # fits draw from seeds >= this; evaluation seeds are the user's, below it
ANNOUNCE_FIT_S = 60.0  # a fit expected to take longer than this says so before it runs
# what makes a written result the one a rerun would produce: it is then kept, not redone
IDENTITY = ("method", "label", "method_config", "task", "task_version", "task_options", "denoiser", "nfe_budget",
            "seed", "n_samples", "code")


def say(text: str):
    """One line on stderr, between live progress bars when there are some."""
    tqdm.write(text, file=sys.stderr)


def live_bars(progress: bool) -> bool:
    """Live bars only on a terminal: in a log they are escape codes; there a line per result is written."""
    return bool(progress) and sys.stderr.isatty()


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def get_task(name: str, **options) -> Task:
    """A task instance by id: ``gmm8`` (newest version) or ``gmm8-v1`` (exact version).
    ``options`` (checkpoint, ref_stats, data paths) go to tasks that declare them."""
    base, _, ver = name.rpartition("-v")
    if base and ver.isdigit():
        cls = task_class(base)
        if cls.version != int(ver):
            raise ValueError(f"task {base} is at version {cls.version}, not {ver}; results of other "
                             f"versions are not comparable")
        return cls(**options)
    return task_class(name)(**options)


def get_method(name: str, task: Task | None = None, **config):
    """A method instance, with the task's preset (if any) under the given settings."""
    return method_class(name)(task=task, **config)


FIT_STREAMS = 2**16  # sampling seeds of one fit: FIT_SEED + eval_seed * FIT_STREAMS + offset


@dataclass
class FitContext:
    """What a method's fit sees: the task, the (counted) denoiser, the budget, and the evaluation
    seed the fit belongs to (every seed is an independent fit: its own tuning draw, sampling
    noise and initialisation, all disjoint from the evaluation's)."""
    task: Task
    denoiser: CountingDenoiser
    nfe_budget: int
    device: str
    batch_size: int
    progress: bool
    eval_seed: int = 0
    curve: list = field(default_factory=list)  # (fit NFE so far, tuning score) as the fit goes
    _scorers: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return FIT_SEED + self.eval_seed * FIT_STREAMS

    def generate(self, sample_fn, n, seed_offset=0):
        if not 0 <= seed_offset < FIT_STREAMS:
            raise ValueError(f"fit sampling offsets lie in 0..{FIT_STREAMS - 1}, got {seed_offset}")
        return generate(sample_fn, self.task, self.denoiser, n, self.seed + seed_offset,
                        nfe_budget=self.nfe_budget, device=self.device, batch_size=self.batch_size)

    def tuning(self, n):
        """``n`` samples of the task's tuning split, drawn for this fit's seed."""
        return self.task.sample_tuning(n, self.eval_seed)

    def scorer(self, n=None):
        """``score(x, labels)``: the task's primary metric against ``n`` tuning samples of this fit
        (default: the task's ``tuning_reference`` size), the same set at every call; what depends
        on the set alone is computed once (``Task.scorer``)."""
        n = n or self.task.tuning_reference
        if n not in self._scorers:
            self._scorers[n] = self.task.scorer(*self.tuning(n))
        return self._scorers[n]

    def score(self, x, labels, folds: int = 5) -> tuple[float, float]:
        """The tuning score of samples ``x`` (``scorer``) and its standard error, estimated from
        ``folds`` disjoint folds of the samples scored alone: SE = sd(fold scores) / sqrt(folds),
        exact for a mean over samples and conservative (too large) for a U-statistic near 0. A
        fit stops on no improvement larger than this, never on noise."""
        score_of = self.scorer()
        if len(x) < folds * max(2, self.task.min_samples):
            return float(score_of(x, labels)), math.nan
        if hasattr(score_of, "folds"):  # the full score and the folds' from one pass
            full, parts = score_of.folds(x, labels, folds)
        else:
            full = score_of(x, labels)
            parts = [score_of(x[k::folds], None if labels is None else labels[k::folds]) for k in range(folds)]
        return float(full), float(np.std(parts, ddof=1) / math.sqrt(folds))

    def record_score(self, score: float):
        """Note a tuning-split score of the task's primary metric reached so far: the fit's
        cost-to-quality curve (``fit_curve`` in the results, plotted by the leaderboards)."""
        self.curve.append(dict(fit_nfe=int(self.denoiser.rows), score=float(score)))

    def torch_seed(self, setting: int = 0) -> int:
        """A seed for the fit's own generators: from the method's ``seed`` setting and the fit's seed."""
        return int(hashlib.sha256(f"fit:{self.eval_seed}:{setting}".encode()).hexdigest()[:15], 16)

    def progress_iter(self, items, desc):
        """Iterate a fit's loop with a live bar (on a terminal); after the first item, when the
        whole loop will take longer than a minute at that pace, say how long."""
        n = len(items) if hasattr(items, "__len__") else None
        t0 = time.perf_counter()
        for i, item in enumerate(tqdm(items, desc=desc, leave=False, disable=not self.progress)):
            yield item
            if i == 0 and n and n > 1:
                first = time.perf_counter() - t0
                if first * n > ANNOUNCE_FIT_S:
                    say(f"{desc}: {n} iterations; the first took {first:.1f} s, so about {duration(first * n)} "
                        f"in all")

    def search(self, method, candidates, n: int, desc: str):
        """Score each candidate configuration (a dict the method samples with, set as
        ``method.chosen``) by the task's primary metric: ``n`` samples from fit seeds (the same
        noise for every candidate) against the tuning set (``scorer``: the tuning split, never
        the reference split nor a true density). A candidate equal to an earlier one is not
        sampled again. Returns (best candidate, table of every candidate's score)."""
        task, metric = self.task, self.task.primary_metric
        score_of = self.scorer()
        table, distinct = [], []
        for cand in candidates:
            if cand not in distinct:
                distinct.append(cand)
        for cand in self.progress_iter(distinct, desc):
            method.chosen = cand
            x, labels = self.generate(method.sample, n)
            score = float(score_of(x, labels))
            table.append(dict(cand, score=score if math.isfinite(score) else None))
            if math.isfinite(score):
                self.record_score(score)
        scored = [row for row in table if row["score"] is not None]
        if not scored:
            raise FloatingPointError(f"every candidate gave a non-finite {metric}")
        best = scored[0]
        for row in scored[1:]:
            if task.better(metric, row["score"], best["score"]):
                best = row
        return {k: v for k, v in best.items() if k != "score"}, table


def check_needs(method, task):
    for need in method.needs:
        if need == "tuning" and type(task).sample_tuning is Task.sample_tuning:
            raise Unsupported(f"method {method.name} tunes on data, and task {task.name} has no tuning split")
        if need == "true_sampler" and not hasattr(task, "sample_true"):
            raise Unsupported(f"method {method.name} needs fresh true samples, which task {task.name} cannot draw")
        if need == "classes" and not task.num_classes:
            raise Unsupported(f"method {method.name} needs a class-conditional task; {task.name} is unconditional")


def fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a network's parameters and buffers: a cached fit is reused only with the same weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _fit(method, task, denoiser, denoiser_name, nfe_budget, seed, device, batch_size, progress, store, rank,
         world):
    # the code version too: a fit made by other code is never reused (the result would claim this code)
    key = dict(method=method.name, fit_version=method.fit_version, config=method.fit_key(), task=task.id,
               denoiser=denoiser_name, weights=fingerprint(denoiser), nfe_budget=nfe_budget, seed=seed,
               code=code_version(type(task).__module__, type(method).__module__))
    cached = store.load(key)
    if cached is None and rank == 0:
        denoiser.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        ctx = FitContext(task, denoiser, nfe_budget, device, batch_size, progress, eval_seed=seed)
        # torch's global generator (network initialisations) starts from the key: the same fit every time
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(key_hash(key), 16) % 2**63)
            artifact = method.fit(ctx)
        if ctx.curve:
            artifact.meta["curve"] = ctx.curve
        cost = dict(nfe=denoiser.rows, seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
        store.save(key, artifact, cost)
        method.load(artifact)
        dist.barrier(world)
        return dict(cost, reused=False, artifact=dict(cost), artifact_path=str(store.path(key)),
                    curve=artifact.meta.get("curve"), learned_parameters=learned_parameters(artifact),
                    objective=artifact.meta.get("objective"))
    dist.barrier(world)
    if cached is None:
        cached = store.load(key)
    artifact, cost = cached
    method.load(artifact)
    return dict(nfe=0, seconds=0.0, cpu_seconds=0.0, reused=True, artifact=cost, artifact_path=str(store.path(key)),
                curve=artifact.meta.get("curve"), learned_parameters=learned_parameters(artifact),
                objective=artifact.meta.get("objective"))


def fit_objective(recorded: dict | None, curve: list | None, task) -> dict | None:
    """The fit's own objective at start and end: what the method recorded, else, for a fit that
    scores candidates on the tuning split (``FitContext.record_score``), its first score (the
    untrained start, scored first) and the best one (what it keeps)."""
    if recorded:
        return recorded
    scores = [c["score"] for c in curve or [] if isinstance(c, dict) and isinstance(c.get("score"), (int, float))]
    if not scores:
        return None
    higher = task.higher_is_better.get(task.primary_metric, False)
    return objective(f"tuning {task.primary_metric}", scores[0], max(scores) if higher else min(scores), higher)


def learned_parameters(artifact) -> int:
    """How many numbers a fit learned and stores per checkpoint: its tensors' elements, or for a
    search that keeps settings only, how many settings it chose."""
    n = sum(int(t.numel()) for t in artifact.tensors.values())
    best = artifact.meta.get("best")
    return n or (len(best) if isinstance(best, dict) else 0)


def run(method: str, task: str, nfe=(35,), seeds=None, *, seed=None, samples: int | None = None,
        out="results", device: str = "cpu", save_samples: bool = False, denoiser: str | None = None,
        config: dict | None = None, label: str | None = None, batch_size: int | None = None,
        progress: bool = True, cache=None, task_options: dict | None = None, resume: bool = True,
        published: bool = False, replace: bool = False, ode_error: bool = True) -> list[dict]:
    """Run ``method`` on ``task`` for every NFE budget and seed; returns the result dicts
    (also written under ``out``). Bad input raises before any work starts; a failure
    while sampling or scoring gives a result with status ``failed``. With ``resume``, a
    result already written with the same identity (configuration, task version, samples,
    code: ``IDENTITY``) is kept and returned instead of redone; one made under another
    configuration (samples, task version, denoiser, settings) is never replaced unless
    ``resume`` is off (``--rerun``) or ``replace`` is on (a suite: its manifest says what the
    results are, and the replacement is said), and the published results folder is written only with
    ``published`` (the suite's). Under ``torchrun`` the samples are sharded across the
    processes and rank 0 scores, writes and returns the results; the other ranks return an
    empty list. ``ode_error`` off skips the ODE reference (``bench.engine.ode_reference``; the
    suite always measures it)."""
    nfe = [nfe] if isinstance(nfe, int) else list(nfe)
    seeds = [seed if seed is not None else 0] if seeds is None else list(seeds)
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool)):
        raise ValueError(f"samples must be an integer, got {samples!r}")
    if label is not None:
        check_label(label)
    check_device(device)
    if not published and inside(Path(out), PUBLISHED_RESULTS):
        raise ValueError(f"{out} is the published results folder, which only `python -m bench suite "
                         f"leaderboards/suite.toml` writes; choose another --out")
    check_budgets(nfe)
    for what, values in (("seed", seeds), ("NFE budget", nfe)):
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise ValueError(f"{what}s are integers, got {bad[0]!r}")
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{what} {twice[0]} is named twice: each {what} runs once")
    if len(nfe) * len(seeds) > MAX_JOBS:
        raise ValueError(f"{len(nfe)} NFE budgets x {len(seeds)} seeds = {len(nfe) * len(seeds):,} runs, over the "
                         f"{MAX_JOBS:,} one command may start; split them over several commands")
    t = get_task(task, **(task_options or {}))
    m = get_method(method, t, **(config or {}))
    check_needs(m, t)
    for b in nfe:
        m.describe_budget(b)  # raises BudgetError before anything runs
    for s in seeds:
        if not 0 <= int(s) < FIT_SEED:
            raise ValueError(f"seed {s} out of range: evaluation seeds are integers in 0..{FIT_SEED - 1}")
    denoiser_name = denoiser or next(iter(t.denoisers()))
    if denoiser_name not in t.denoisers():
        raise ValueError(f"task {t.name} has no denoiser {denoiser_name!r}; choose from {', '.join(t.denoisers())}")
    label = label or _label(m, t, denoiser_name)
    if not published and inside(Path(out) / t.name / label, PUBLISHED_RESULTS):
        raise ValueError(f"{Path(out) / t.name / label} leads into the published results folder (a link?), which "
                         f"only `python -m bench suite leaderboards/suite.toml` writes; choose another --out")
    rank, world = dist.init(device)
    if rank == 0:
        check_writable(Path(out) / t.name / label)
    t.check_files(m.needs)  # every file the run needs, all missing ones named at once
    n = samples or t.default_samples
    batch_size = batch_size or t.batch_size  # the samples do not depend on it: only the speed does
    if n < t.min_samples:
        raise ValueError(f"--samples {n}: task {t.name}'s metrics need at least {t.min_samples} samples per run")
    check_memory(t, n, batch_size)
    if m.has_fit and rank == 0:
        ArtifactStore(cache).check_writable()
    jobs = [(b, s) for b in nfe for s in seeds]
    identity = _identity(m, t, denoiser_name, label, n)
    if resume:
        _check_same_identity(out, t.name, label, jobs, identity, replace and rank == 0)
    kept = {job: r for job in jobs if resume
            for r in [_kept(result_path(out, t.name, label, *job), dict(identity, nfe_budget=job[0], seed=job[1]))]
            if r is not None}
    todo = [job for job in jobs if job not in kept]
    if kept and rank == 0:
        say(f"{len(kept)} of {len(jobs)} results already written under {Path(out) / t.name / label} with the same "
            f"configuration, task version and code: kept, not redone" + ("" if todo else " (nothing left to do)")
            + " (--rerun redoes them)")
    results = dict(kept)
    written = []
    try:
        if todo:
            _run_jobs(m, t, todo, denoiser_name, label, n, out, device, save_samples, batch_size, progress, cache,
                      rank, world, results, written, ode_error=ode_error)
    except KeyboardInterrupt:
        where = Path(out) / t.name / label
        raise Interrupted(f"interrupted: {len(written)} new result(s) written and {len(kept)} kept under {where}; "
                          f"{len(todo) - len(written)} not done (rerun the same command to do only those)") from None
    dist.finish(world)
    return [results[job] for job in jobs] if rank == 0 else []


def _label(m, t, denoiser_name: str) -> str:
    """The default label: the method's name, ``@denoiser`` off the task's own denoiser, and a hash of
    the settings that differ from the published ones."""
    label = m.name if denoiser_name == next(iter(t.denoisers())) else f"{m.name}@{denoiser_name}"
    return label + ("-" + config_hash(m.changed) if m.changed else "")


def default_label(method: str, task: str, denoiser: str | None = None, config: dict | None = None) -> str:
    t = get_task(task)
    return _label(get_method(method, t, **(config or {})), t, denoiser or next(iter(t.denoisers())))


def _identity(m, t, denoiser_name, label, n) -> dict:
    return dict(method=m.name, label=label, method_config=m.config, task=t.name, task_version=t.version,
                task_options=t.option_record(), denoiser=denoiser_name, n_samples=n,
                code=code_version(type(t).__module__, type(m).__module__))


def pending(method: str, task: str, nfe: int, seed: int, *, samples=None, out="results", denoiser=None,
            config=None, label=None) -> str:
    """What ``run`` would do with one job, without doing it: ``kept`` (a current result is written),
    ``rerun`` (a result of older code, or a failed one, would be replaced) or ``run`` (none yet)."""
    t = get_task(task)
    m = get_method(method, t, **(config or {}))
    denoiser_name = denoiser or next(iter(t.denoisers()))
    label = label or _label(m, t, denoiser_name)
    identity = dict(_identity(m, t, denoiser_name, label, samples or t.default_samples), nfe_budget=nfe, seed=seed)
    path = result_path(out, t.name, label, nfe, seed)
    if not path.exists():
        return "run"
    return "kept" if _kept(path, identity, quiet=True) is not None else "rerun"


# what may differ between a result and a rerun that replaces it: the code (a stale result is redone)
REPLACEABLE = ("code",)
MAX_JOBS = 10_000  # runs one command may start (NFE budgets x seeds)
MEMORY_SHARE = 0.8  # of the memory available now, the most a run may plan to use


def _check_same_identity(out, task, label, jobs, identity, replace=False):
    """A label holds one configuration: a result made under another (other samples, settings, task
    version, denoiser, task options) is never replaced by a resumed run; ``--rerun`` replaces it,
    and so does a suite (``replace``: it says so in a line)."""
    clash = []
    for b, s in jobs:
        path = result_path(out, task, label, b, s)
        r, _ = read_result(path) if path.exists() else (None, None)
        if r is None or r.get("status") != "ok":
            continue
        diff = [k for k, v in identity.items() if k not in REPLACEABLE and json_ready(r.get(k)) != json_ready(v)]
        if diff:
            clash.append((f"nfe={b} seed={s}", diff, r))
    if clash:
        where, diff, r = clash[0]
        shown = ", ".join(f"{k} {json.dumps(json_ready(r.get(k)))[:40]} there, {json.dumps(json_ready(identity[k]))[:40]} "
                          f"here" for k in diff[:2])
        if replace:
            say(f"{Path(out) / task / label}: replacing {len(clash)} result(s) made under another configuration "
                f"({where}: {shown})")
            return
        raise ValueError(f"{Path(out) / task / label} holds {len(clash)} result(s) made under another configuration "
                         f"({where}: {shown}); --rerun replaces them, or give this run its own --label or --out")


def available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable; else the physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _size(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.3g} {unit}"
        b /= 1000
    return f"{b:.3g} TB"


def check_memory(task: Task, n: int, batch_size: int):
    """Refuse, before any work, a run whose samples and metrics could not fit in memory."""
    need = task.memory_bytes(n, min(batch_size, n))
    have = available_memory() * MEMORY_SHARE
    if need > have:
        per = task.memory_bytes(2 * n, min(batch_size, n)) - need  # what n more samples cost
        fits = int(max(0, have - task.memory_bytes(0, min(batch_size, n))) / max(per / n, 1e-9))
        raise ValueError(f"--samples {n:,} needs about {_size(need)} of memory, more than the {_size(have)} this run "
                         f"may use here; at most about {fits:,} samples fit (or lower --batch-size)")


def check_device(device: str):
    import re
    if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", str(device)):
        raise ValueError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible on this machine; use --device cpu")


def _kept(path: Path, identity: dict, quiet: bool = False) -> dict | None:
    """The successful result at ``path`` when it has this identity, else None (a file there that is
    not a usable result is named, and redone)."""
    if not path.exists():
        return None
    r, why = read_result(path)
    if r is None:
        if not quiet:
            say(f"warning: {path} is not a usable result ({why}): redone")
        return None
    if r.get("status") != "ok":
        return None
    if any(json_ready(r.get(k)) != json_ready(v) for k, v in identity.items()):
        return None
    return dict(r, path=str(path), kept=True)


def _run_jobs(m, t, jobs, denoiser_name, label, n, out, device, save_samples, batch_size, progress, cache, rank,
              world, results, written, *, ode_error=True):
    net = t.denoiser(denoiser_name).to(device)
    counted = CountingDenoiser(net)
    for b in sorted({b for b, _ in jobs}):
        m.validate(net, b)
    ref_x, ref_labels = t.sample_reference(getattr(t, "reference_size", t.default_samples), 0)
    store = ArtifactStore(cache)
    live = live_bars(progress) and rank == 0
    bar = tqdm(jobs, desc=f"{m.name} on {t.name}", disable=not live)
    fit_cost = None
    fit_error = None
    curve = learned = aim = None
    weights = None  # the denoiser's fingerprint, for the cached ODE references
    for k, (b, s) in enumerate(bar):
        t_job, c_job = time.perf_counter(), time.process_time()
        if m.has_fit:  # every seed is an independent fit
            bar.set_postfix_str(f"fit nfe={b} seed={s}")
            fit_error = None
            try:
                fit_cost = dict(_fit(m, t, counted, denoiser_name, b, s, device, batch_size, live, store, rank,
                                     world), budget=b)
                curve = fit_cost.pop("curve", None)
                learned = fit_cost.pop("learned_parameters", None)
                aim = fit_objective(fit_cost.pop("objective", None), curve, t)
            except (BudgetError, Unsupported):
                raise
            except Exception as e:  # a diverged or broken fit: its budget's results say failed, nothing is cached
                fit_error = f"fit failed: {type(e).__name__}: {e}"
                fit_cost = dict(nfe=counted.rows, seconds=None, reused=False, budget=b)
        if fit_error is None:
            r, drawn = _one(m, t, counted, denoiser_name, b, s, n, ref_x, ref_labels, device, batch_size, rank,
                            world)
        else:
            r, drawn = _failed(m, t, denoiser_name, b, s, n, device, world, fit_error), None
        r.update(label=label, fit_cost={k: v for k, v in (fit_cost or dict(nfe=0, seconds=0.0)).items()
                                        if k != "budget"})
        if curve:
            r["fit_curve"] = curve
        if m.has_fit and r["status"] == "ok" and aim is not None:
            r["objective"] = aim
        if m.has_fit and r["status"] == "ok" and fit_cost is not None:
            art = fit_cost.get("artifact") or {}
            r["cost_card"] = dict(m.cost_card(b), learned_parameters=learned, precompute=dict(
                nfe=art.get("nfe"), seconds=art.get("seconds"), cpu_seconds=art.get("cpu_seconds")),
                sampling_nfe=dict(sequential=r["nfe"], total=r["nfe"]))  # no method here evaluates in parallel
        if rank == 0 and m.has_fit and r["status"] == "ok" and drawn is not None:
            r["untrained"] = _untrained_check(m, t, counted, denoiser_name, b, s, drawn[0], device, batch_size, store)
        if rank == 0 and r["status"] == "ok" and drawn is not None and not ode_error:
            r["ode_error"] = dict(value=None, reason="not measured (run with ode_error=False)")
        elif rank == 0 and r["status"] == "ok" and drawn is not None:
            if weights is None:
                weights = fingerprint(net)
            r["ode_error"] = ode_reference.measure(m, t, net, dict(name=denoiser_name, weights=weights), s, drawn[0],
                                                   device, batch_size, store)
            if r["ode_error"]["value"] is not None:
                r["metrics"]["ode_error"] = r["ode_error"]["value"]
        # compute as the process's CPU time (all its threads: core-seconds, whatever else shares the
        # machine), with the wall time beside it; a reused fit's own cost stays in fit_cost.artifact
        r["cpu_seconds"], r["wall_seconds"] = time.process_time() - c_job, time.perf_counter() - t_job
        if rank == 0:
            path = result_path(out, t.name, label, b, s)
            staged = None
            try:
                if save_samples and drawn is not None:
                    staged = _save_samples(path, drawn)
                    r["samples_file"] = path.with_suffix(".npz").name
                if hasattr(m, "write_extras") and r["status"] == "ok":
                    r["extras"] = m.write_extras(path)
                r["path"] = str(write_result(path, r))
            except BaseException:
                if staged is not None:
                    staged.unlink(missing_ok=True)  # no samples file without its result
                raise
            if staged is not None:
                staged.replace(path.with_suffix(".npz"))
            written.append(r["path"])
            if r["status"] == "ok":
                score = f"{t.primary_metric}={r['metrics'][t.primary_metric]:.4g}"
                bar.set_postfix_str(f"nfe={b} seed={s} {score}")
            else:
                score = f"FAILED: {r['error']}"
            if progress and not live:
                say(f"[{k + 1}/{len(jobs)}] {m.name} on {t.name} nfe={b} seed={s}: {score} "
                    f"({duration(time.perf_counter() - t_job)})")
        results[(b, s)] = r


UNTRAINED_PROBE = 1000  # samples of each result compared with the method's untrained start


def _untrained_check(m, t, counted, denoiser_name, b, s, x, device, batch_size, store) -> dict | None:
    """Sample the method's untrained start (``Method.untrained``, fitted when it fits, e.g. with no
    training round) on the result's first ``UNTRAINED_PROBE`` noise streams and compare: a fitted
    sampler whose samples equal its start's to float32 rounding never moved, and its rows say so.
    Its cost is recorded here, never in the result's fit cost."""
    spec = m.untrained()
    if spec is None:
        return None
    name, settings = spec
    t0 = time.perf_counter()
    start = get_method(name, t, **settings)
    counted.reset()
    if start.has_fit:
        _fit(start, t, counted, denoiser_name, b, s, device, batch_size, False, store, 0, 1)
    k = min(len(x), UNTRAINED_PROBE)
    with torch.no_grad():
        probe, _ = generate(start.sample, t, counted, k, s, nfe_budget=b, device=device, batch_size=batch_size,
                            indices=torch.arange(k))
    diff = float((probe - x[:k]).abs().max())
    scale = float(x[:k].abs().max())
    # equal up to float32 rounding (the samples are kept in float32): a few ulps of the largest value
    identical = diff <= 4 * torch.finfo(torch.float32).eps * max(scale, 1e-30)
    return dict(method=name, settings=start.changed, probe=k, max_abs_diff=diff, identical=bool(identical),
                nfe=int(counted.rows), seconds=time.perf_counter() - t0)


def _record(m, t, denoiser_name, b, s, n, device, world):
    return dict(schema=SCHEMA, method=m.name, method_config=m.config, budget_config=m.describe_budget(b),
                privileged=m.privileged(), task=t.name, task_version=t.version, task_options=t.option_record(),
                denoiser=denoiser_name,
                nfe_budget=b, seed=s, n_samples=n, metrics={}, nfe=None, sample_seconds=None, status="ok",
                protocol={}, versions=versions(), code=code_version(type(t).__module__, type(m).__module__),
                git_sha=git_sha(), created=now(),
                world_size=world, device=str(device))


def _failed(m, t, denoiser_name, b, s, n, device, world, error):
    r = _record(m, t, denoiser_name, b, s, n, device, world)
    r.update(status="failed", error=error)
    return r


def _one(m, t, counted, denoiser_name, b, s, n, ref_x, ref_labels, device, batch_size, rank, world):
    r = _record(m, t, denoiser_name, b, s, n, device, world)
    drawn = None
    try:
        counted.reset()
        if hasattr(m, "aux_rows"):  # non-denoiser evaluations a method reports (e.g. discriminator gradients)
            m.aux_rows = 0
        idx = dist.shard(n, rank, world)
        t0 = time.perf_counter()
        err = None
        try:
            with torch.no_grad():  # a method that needs gradients (guidance) enables them itself
                x, labels = generate(m.sample, t, counted, n, s, nfe_budget=b, device=device,
                                     batch_size=batch_size, indices=idx)
        except Exception as e:
            err = e
        failed = dist.errors(err, world)  # every rank hears of any rank's failure before the collectives below
        if err is not None:
            raise err
        if failed:
            raise RuntimeError(f"rank {failed[0][0]} failed: {failed[0][1]}")
        r["sample_seconds"] = dist.all_sum(time.perf_counter() - t0, world) / world
        rows = dist.all_sum(counted.rows, world)
        got = dist.gather(idx, dict(x=x, labels=labels), world)
        x, labels = got["x"], got["labels"]
        r["nfe"] = rows / n
        if hasattr(m, "aux_rows"):
            r["aux_evals"] = dist.all_sum(m.aux_rows, world) / n
        if hasattr(m, "overhead_baseline"):  # the method's own base solver at equal NFE, timed in this run
            t2 = time.perf_counter()
            with torch.no_grad():
                generate(m.overhead_baseline, t, counted.inner, n, s, nfe_budget=b, device=device,
                         batch_size=batch_size, indices=idx)
            base = dist.all_sum(time.perf_counter() - t2, world) / world
            r["overhead"] = dict(base_seconds=base, extra_seconds=r["sample_seconds"] - base,
                                 ratio=r["sample_seconds"] / base - 1)
        if r["nfe"] > b + 1e-9:
            raise BudgetError(f"method {m.name} spent {r['nfe']:g} NFE per sample, over its budget {b}")
        finite = torch.isfinite(x.reshape(n, -1)).all(1)
        if not finite.all():
            raise FloatingPointError(f"samples contain NaN or inf ({int((~finite).sum())} of {n} samples)")
        r["protocol"] = dict(t.protocol(n, len(ref_x)), nfe_convention="measured denoiser evaluations per "
                             "sample, every call counted (Heun's final Euler step included, 2N-1)",
                             eval_seeds=f"run seed {s}, sample i from stream (seed, i)")
        if rank == 0:
            t1 = time.perf_counter()
            r["metrics"] = {k: float(v) for k, v in t.metrics(x, labels, ref_x, ref_labels, seed=s).items()}
            r["metric_seconds"] = time.perf_counter() - t1
            bad = [k for k, v in r["metrics"].items() if math.isnan(v)]  # inf is a value (beyond a solver's range)
            if bad:
                raise FloatingPointError(f"metric(s) {', '.join(bad)} are NaN")
            drawn = (x, labels)
    except (BudgetError, Unsupported):
        raise
    except Exception as e:  # recorded, never swallowed: the result says failed and why
        r["status"] = "failed"
        r["error"] = f"{type(e).__name__}: {e}"
        r["metrics"] = {}
    return r, drawn


def _save_samples(result_file, samples) -> Path:
    """The samples as a compressed npz, written beside ``result_file`` under a staging name: the
    caller moves it into place once the result itself is written."""
    import io
    x, labels = samples
    buf = io.BytesIO()
    arrays = dict(x=x.numpy())
    if labels is not None:
        arrays["labels"] = labels.numpy()
    np.savez_compressed(buf, **arrays)
    path = result_file.with_name(result_file.stem + ".npz.partial")
    atomic_write_bytes(path, buf.getvalue())
    return path
