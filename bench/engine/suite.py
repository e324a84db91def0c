"""Suites: a TOML manifest of runs, run where missing, sharded, then the leaderboards rebuilt.

    python -m bench suite leaderboards/suite.toml                 # the published boards
    python -m bench suite leaderboards/suite.toml --shard 2/8     # machine 2 of 8 (e.g. a SLURM array)

A manifest::

    [defaults]
    seeds = "0-4"                      # every entry's seeds unless it says otherwise
    samples = 10000                    # optional: samples per run (default: the task's)

    [[run]]
    method = "edm"
    task = "gmm8"
    nfe = "4,5,10,20,35"

    [[run]]
    method = "ddpo"
    task = "gmm8"
    nfe = "10,20"
    seeds = "0-2"                      # fits over 5 minutes: 3 seeds
    label = "ddpo-untuned"
    settings = { iters = 0 }
    denoiser = "learned"

Each (entry, NFE budget, seed) is one job. A job whose result is already written with the
same identity (configuration, task version, samples, code version: ``runner.IDENTITY``) is
not run again, so a suite resumes where it stopped and a second run does nothing. ``--shard
K/N`` keeps the jobs whose key hashes to K - 1 modulo N: the N shards partition the suite,
whatever order the manifest lists its entries in.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.engine import runner
from bench.engine.ints import MAX_VALUES, MalformedList, parse_ints  # noqa: F401  (the manifest's lists)
from bench.engine.io import NotARegularFile, read_regular
from bench.engine.results import git_sha
from bench.method import check_budgets


@dataclass(frozen=True)
class Job:
    method: str
    task: str
    nfe: int
    seed: int
    label: str | None = None
    denoiser: str | None = None
    samples: int | None = None
    settings: tuple = field(default_factory=tuple)  # sorted (key, JSON value) pairs

    @property
    def key(self) -> str:
        return json.dumps([self.method, self.task, self.label, self.denoiser, self.samples, self.settings, self.nfe,
                           self.seed], sort_keys=True)

    def group(self):
        return (self.method, self.task, self.label, self.denoiser, self.samples, self.settings, self.nfe)


def _ints(value, what) -> list[int]:
    """A manifest's integer list: an integer, a list of integers, or the CLI's text form; anything
    else (10.7, true, "500" where a number belongs) is refused, never coerced."""
    if isinstance(value, bool):
        raise MalformedList(f"{what} {value!r} is not an integer")
    if isinstance(value, int):
        return parse_ints(str(value), what)
    if isinstance(value, list):
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int)]
        if bad or not value:
            raise MalformedList(f"{what} {value!r}: list integers only, e.g. [10, 20]")
        return parse_ints(",".join(map(str, value)), what)
    if isinstance(value, str):
        return parse_ints(value, what)
    raise MalformedList(f"{what} {value!r} is not an integer list: write 5 or [5, 10] or \"0-4\"")


KNOWN = {"method", "task", "nfe", "seeds", "label", "settings", "denoiser", "samples"}
STRINGS = ("method", "task", "label", "denoiser")


def _entry(path, i, e, defaults) -> list["Job"]:
    """The jobs of manifest entry ``i``, every field checked (types, names, settings, budgets)."""
    from bench.engine.results import check_label
    from bench.method import BudgetError
    from bench.registry import UnknownNameError
    where = f"suite manifest {path}, entry {i}"
    if not isinstance(e, dict):
        raise ValueError(f"{where}: not a table")
    e = {**defaults, **e}
    unknown = set(e) - KNOWN
    missing = [k for k in ("method", "task", "nfe") if k not in e]
    if unknown or missing:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"needs {', '.join(missing)}"] if missing else [])
            + ([f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(KNOWN))})"] if unknown else [])))
    for k in STRINGS:
        if k in e and not isinstance(e[k], str):
            raise ValueError(f"{where}: {k} {e[k]!r} is not a string")
    if "samples" in e and (isinstance(e["samples"], bool) or not isinstance(e["samples"], int)):
        raise ValueError(f"{where}: samples {e['samples']!r} is not an integer (write samples = 500)")
    if not isinstance(e.get("settings", {}), dict):
        raise ValueError(f"{where}: settings must be a table, e.g. settings = {{ iters = 0 }}")
    try:
        nfes, seeds = _ints(e["nfe"], "NFE list"), _ints(e.get("seeds", "0-4"), "seed range")
        check_budgets(nfes)
        if e.get("label") is not None:
            check_label(e["label"])
        task = runner.get_task(e["task"])
        method = runner.get_method(e["method"], task, **e.get("settings", {}))
        runner.check_needs(method, task)
        for b in nfes:
            method.describe_budget(b)
        if e.get("denoiser") is not None and e["denoiser"] not in task.denoisers():
            raise ValueError(f"task {task.name} has no denoiser {e['denoiser']!r}; choose from "
                             f"{', '.join(task.denoisers())}")
        if "samples" in e and e["samples"] < task.min_samples:
            raise ValueError(f"samples {e['samples']}: task {task.name}'s metrics need at least {task.min_samples}")
    except (ValueError, UnknownNameError, BudgetError, LookupError, RuntimeError) as err:
        raise ValueError(f"{where} ({e['method']} on {e['task']}): {err}") from None
    settings = tuple(sorted((k, json.dumps(v)) for k, v in e.get("settings", {}).items()))
    return [Job(e["method"], e["task"], b, s, e.get("label"), e.get("denoiser"), e.get("samples"), settings)
            for b in nfes for s in seeds]


def load(path) -> list[Job]:
    """Every job of the manifest at ``path``, the whole manifest checked before any job runs: a
    malformed entry (unknown method, task, setting or key, a wrong type, a budget the method
    cannot take) raises ValueError naming it."""
    import tomllib
    path = Path(path)
    try:
        data = tomllib.loads(read_regular(path, cap=2**20).decode())
    except FileNotFoundError:
        raise FileNotFoundError(f"suite manifest {path} does not exist") from None
    except (IsADirectoryError, NotARegularFile) as e:
        if path.is_dir():
            raise IsADirectoryError(f"suite manifest {path} is a folder; name the .toml file") from None
        raise ValueError(f"suite manifest {e}; name a .toml file") from None
    except UnicodeDecodeError:
        raise ValueError(f"suite manifest {path} is not a text file") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"suite manifest {path} is not valid TOML ({e})") from None
    unknown = set(data) - {"defaults", "run"}
    if unknown:
        raise ValueError(f"suite manifest {path}: unknown section(s) {', '.join(sorted(unknown))} (use [defaults] "
                         f"and [[run]])")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - KNOWN:
        raise ValueError(f"suite manifest {path}: [defaults] takes only {', '.join(sorted(KNOWN))}")
    entries = data.get("run", [])
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"suite manifest {path} lists no [[run]] entries")
    jobs = []
    for i, e in enumerate(entries, 1):
        jobs += _entry(path, i, e, defaults)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        seen, twice = set(), None
        for j in jobs:
            if j.key in seen:
                twice = j
                break
            seen.add(j.key)
        raise ValueError(f"suite manifest {path} lists a job twice ({twice.method} on {twice.task}"
                         + (f" as {twice.label}" if twice.label else "") + f", NFE {twice.nfe}, seed {twice.seed})")
    return jobs


def shard(jobs: list[Job], k: int, n: int) -> list[Job]:
    """The jobs of shard ``k`` of ``n`` (1-based): those whose key hashes to k - 1 modulo n."""
    if not 1 <= k <= n:
        raise ValueError(f"--shard {k}/{n}: K must lie in 1..N")
    return [j for j in jobs if int(hashlib.sha256(j.key.encode()).hexdigest(), 16) % n == k - 1]


def _run_one(job: Job, out, cache, device, published) -> dict:
    """Run one job (the manifest says what its result is: one of another configuration is replaced,
    in a line); returns what it did (ran or kept, failed, seconds)."""
    t0 = time.perf_counter()
    r = runner.run(job.method, job.task, nfe=[job.nfe], seeds=[job.seed], samples=job.samples, out=out,
                   denoiser=job.denoiser, label=job.label, config={k: json.loads(v) for k, v in job.settings},
                   progress=False, cache=cache, device=device, published=published, replace=True)[0]
    return dict(kept=bool(r.get("kept")), failed=r["status"] != "ok", seconds=time.perf_counter() - t0,
                error=r.get("error"))


def plan(jobs: list[Job], out) -> list[tuple[Job, str]]:
    """Each job with what a run would do with it: ``run`` (no result yet), ``rerun`` (a result of older
    code, or a failed one) or ``kept`` (its result is current)."""
    out_plan = []
    for j in jobs:
        state = runner.pending(j.method, j.task, j.nfe, j.seed, samples=j.samples, out=out, denoiser=j.denoiser,
                               label=j.label, config={k: json.loads(v) for k, v in j.settings})
        out_plan.append((j, state))
    return out_plan


def estimate_seconds(job: Job, out) -> float:
    """The time a job took when it last ran (its result file's fit, sampling and scoring seconds, of
    any code version, under ``out`` or else in the published results), else a guess: a minute per
    fitted job, ten seconds otherwise."""
    from bench.engine.results import PUBLISHED_RESULTS, read_result, result_path
    label = job.label or runner.default_label(job.method, job.task, job.denoiser,
                                              {k: json.loads(v) for k, v in job.settings})
    for root in (out, PUBLISHED_RESULTS):
        r, _ = read_result(result_path(root, job.task, label, job.nfe, job.seed))
        if r is not None:
            break
    if r is not None:
        fit = r.get("fit_cost") if isinstance(r.get("fit_cost"), dict) else {}
        art = fit.get("artifact") if isinstance(fit.get("artifact"), dict) else fit
        parts = [art.get("seconds"), r.get("sample_seconds"), r.get("metric_seconds"),
                 (r.get("overhead") or {}).get("base_seconds") if isinstance(r.get("overhead"), dict) else None]
        total = sum(float(v) for v in parts if isinstance(v, (int, float)) and not isinstance(v, bool))
        if total > 0:
            return total
    from bench.registry import method_class
    return 60.0 if method_class(job.method)().has_fit else 10.0


def _worker_init(parent: int | None = None):
    import os

    import torch
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)  # as the published results were made: one thread per job
    _die_with(parent)


def _die_with(parent: int | None):
    """A worker dies with the suite that started it, even when that was killed (SIGKILL leaves no
    chance to stop the pool): Linux's PR_SET_PDEATHSIG; a parent already gone ends it at once."""
    import ctypes
    import os
    import signal
    import sys
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def run_suite(jobs: list[Job], out, *, progress=True, cache=None, device="cpu", say=runner.say, workers: int = 1,
              published: bool = False) -> dict:
    """Run every job not yet done, longest first (``estimate_seconds``), in ``workers`` processes
    (each single-threaded; 1: in this process); returns counts of what was run, kept and failed.
    Prints a line per finished job with the time left. Ctrl-C stops the whole suite with one line
    counting what was done and kept."""
    todo = sorted(jobs, key=lambda j: -estimate_seconds(j, out))
    est = {j: estimate_seconds(j, out) for j in todo}
    counts = dict(jobs=len(jobs), run=0, kept=0, failed=0)
    spent = 0.0
    guessed = 0.0  # the estimates of the jobs that ran: actual / estimated scales what is left
    left = sum(est.values())
    t_start = time.perf_counter()

    def done(j: Job, info: dict, k: int):
        nonlocal spent, guessed, left
        left -= est[j]
        if info["kept"]:
            counts["kept"] += 1
        else:
            counts["run"] += 1
            counts["failed"] += info["failed"]
            spent += info["seconds"]
            guessed += est[j]
        if progress and not info["kept"]:
            rate = spent / guessed if guessed else 1.0
            eta = runner.duration(rate * left / max(1, workers))
            say(f"[suite {k}/{len(todo)}] {j.label or j.method} on {j.task} nfe={j.nfe} seed={j.seed}: "
                + ("FAILED" if info["failed"] else "done") + f" in {runner.duration(info['seconds'])}; about {eta} "
                f"left ({runner.duration(time.perf_counter() - t_start)} so far)")

    try:
        if workers <= 1:
            for k, j in enumerate(todo, 1):
                done(j, _run_one(j, out, cache, device, published), k)
        else:
            import concurrent.futures as cf
            import multiprocessing
            import os
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                        initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(_run_one, j, out, cache, device, published): j for j in todo}
                try:
                    for k, f in enumerate(cf.as_completed(futures), 1):
                        done(futures[f], f.result(), k)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    except KeyboardInterrupt:
        raise runner.Interrupted(f"interrupted: {counts['run']} of {len(todo)} jobs run this time "
                                 f"({counts['failed']} failed), {counts['kept']} kept; the rest not done (rerun the "
                                 f"same command to do only those)") from None
    return dict(counts, git_sha=git_sha())
