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

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.engine import runner
from bench.engine.results import git_sha


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


class MalformedList(ValueError, argparse.ArgumentTypeError):
    """A malformed list of integers: a ValueError, and argparse's type error (its message shown)."""


def parse_ints(text: str, what: str) -> list[int]:
    """``"0-2"`` -> [0, 1, 2]; ``"5,10,20"`` -> [5, 10, 20]; mixtures of both (MalformedList otherwise)."""
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise MalformedList(f"malformed {what} {text!r}: use integers, commas and ascending ranges, e.g. 0-2 or "
                         f"5,10,20") from None
    if any(v < 0 for v in out) or not out:
        raise MalformedList(f"malformed {what} {text!r}: values must be non-negative integers")
    return out


def _ints(text, what) -> list[int]:
    if isinstance(text, int):
        return [text]
    if isinstance(text, list):
        return [int(v) for v in text]
    return parse_ints(str(text), what)


def load(path) -> list[Job]:
    """Every job of the manifest at ``path``; a malformed manifest raises ValueError naming the entry."""
    import tomllib
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"suite manifest {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"suite manifest {path} is not valid TOML ({e})") from None
    defaults = data.get("defaults", {})
    entries = data.get("run", [])
    if not entries:
        raise ValueError(f"suite manifest {path} lists no [[run]] entries")
    known = {"method", "task", "nfe", "seeds", "label", "settings", "denoiser", "samples"}
    jobs = []
    for i, e in enumerate(entries, 1):
        e = {**defaults, **e}
        unknown = set(e) - known
        if unknown or "method" not in e or "task" not in e or "nfe" not in e:
            raise ValueError(f"suite manifest {path}, entry {i}: needs method, task and nfe"
                             + (f"; unknown key(s) {', '.join(sorted(unknown))}" if unknown else ""))
        settings = tuple(sorted((k, json.dumps(v)) for k, v in e.get("settings", {}).items()))
        for nfe in _ints(e["nfe"], "NFE list"):
            for seed in _ints(e.get("seeds", "0-4"), "seed range"):
                jobs.append(Job(e["method"], e["task"], nfe, seed, e.get("label"), e.get("denoiser"),
                                e.get("samples"), settings))
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"suite manifest {path} lists a job twice")
    return jobs


def shard(jobs: list[Job], k: int, n: int) -> list[Job]:
    """The jobs of shard ``k`` of ``n`` (1-based): those whose key hashes to k - 1 modulo n."""
    if not 1 <= k <= n:
        raise ValueError(f"--shard {k}/{n}: K must lie in 1..N")
    return [j for j in jobs if int(hashlib.sha256(j.key.encode()).hexdigest(), 16) % n == k - 1]


def run_suite(jobs: list[Job], out, *, progress=True, cache=None, device="cpu", say=runner.say) -> dict:
    """Run every job not yet done (grouped per entry and budget); returns counts of what was done,
    kept and failed. Prints a line per group with the time left, estimated from the jobs run."""
    groups: dict[tuple, list[Job]] = {}
    for j in jobs:
        groups.setdefault(j.group(), []).append(j)
    done = kept = failed = 0
    busy = 0.0  # seconds spent on jobs that ran (kept ones cost nothing)
    for gi, (g, js) in enumerate(groups.items(), 1):
        first = js[0]
        t0 = time.perf_counter()
        results = runner.run(first.method, first.task, nfe=[first.nfe], seeds=[j.seed for j in js],
                             samples=first.samples, out=out, denoiser=first.denoiser, label=first.label,
                             config={k: json.loads(v) for k, v in first.settings}, progress=False, cache=cache,
                             device=device)
        ran = [r for r in results if not r.get("kept")]
        kept += len(results) - len(ran)
        done += len(ran)
        failed += sum(r["status"] != "ok" for r in ran)
        busy += time.perf_counter() - t0 if ran else 0.0
        left = sum(len(v) for v in list(groups.values())[gi:])
        eta = "" if not done else f", about {runner.duration(busy / done * left)} left at this pace"
        if progress:
            say(f"[suite {gi}/{len(groups)}] {first.method}"
                + (f" ({first.label})" if first.label else "") + f" on {first.task} nfe={first.nfe}: "
                f"{len(ran)} run, {len(results) - len(ran)} kept{eta}")
    return dict(jobs=len(jobs), run=done, kept=kept, failed=failed, git_sha=git_sha())
