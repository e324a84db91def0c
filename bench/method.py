"""The method interface.

A method turns an NFE budget and a denoiser into samples. It may have a fit
phase (tuning or learning on the task's tuning split); the harness measures
that phase's cost in denoiser evaluations and seconds and caches what it
returns, keyed by the configuration. What differs between methods is data
(``defaults``, ``presets``, ``needs``), never a name the harness tests.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from bench import sampling
from bench.errors import BudgetError  # noqa: F401  (raised here, imported from here)


@dataclass
class Artifact:
    """What a fit produced: JSON-able ``meta`` and named tensors."""
    meta: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _typed(method: str, key: str, default, value, choices=None, types=None):
    """``value`` for a setting whose default is ``default``, checked before any work against the
    setting's ``choices`` when it has some, else against the default's type (an int where a
    float is expected is taken as that float)."""
    if choices is not None:
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        raise ValueError(f"setting {key} of method {method} is one of {', '.join(map(json.dumps, choices))}, "
                         f"got {json.dumps(value)}")
    if default is None or value is None:
        return value
    if types is not None:
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            return value
        raise ValueError(f"setting {key} of method {method} is {' or '.join(_kind(t()) for t in types)}, "
                         f"got {json.dumps(value)}")
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isnan(value):
            raise ValueError(f"setting {key} of method {method} is a number, got nan")
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    if _kind(default) == _kind(value) and (not isinstance(default, float) or math.isfinite(value)
                                           or not math.isfinite(default)):
        return value
    raise ValueError(f"setting {key} of method {method} is {_kind(default)} (default {json.dumps(default)}), "
                     f"got {json.dumps(value)}; e.g. --set {key}={json.dumps(default)}")


class EarlyStop:
    """When an iterative fit may stop, and which of its evaluations it keeps.

    Every evaluation (a tuning score with its standard error, ``FitContext.score``) is offered
    with the state that made it; the best score is kept (the untrained start's, evaluated first,
    included). The fit stops after ``patience`` evaluations without an improvement larger than
    ``tol`` standard errors over the last such improvement, but never before ``min_iters`` rounds
    nor while the sampler has not moved from its untrained start (``moved`` false): a fit cannot
    end before it has had the chance to learn, and noise never counts as progress."""

    def __init__(self, higher_is_better: bool, patience: int, min_iters: int, tol: float):
        self.sign = -1.0 if higher_is_better else 1.0
        self.patience, self.min_iters, self.tol = patience, min_iters, tol
        self.best = self.anchor = math.inf
        self.best_state, self.best_iter = None, None
        self.stale, self.moved = 0, False

    def offer(self, it: int, score: float, se: float, state, moved: bool) -> bool:
        """Record an evaluation after round ``it`` (-1: the start); True when it is the new best."""
        signed = self.sign * score
        self.moved = self.moved or moved
        margin = self.tol * se if math.isfinite(se) else 0.0
        if signed < self.anchor - margin or self.anchor == math.inf:
            self.anchor, self.stale = signed, 0
        else:
            self.stale += 1
        if signed < self.best:
            self.best, self.best_state, self.best_iter = signed, state, it
            return True
        return False

    def stop(self, it: int) -> bool:
        return bool(self.patience) and it + 1 >= self.min_iters and self.moved and self.stale >= self.patience


def objective(name: str, start: float, end: float, higher_is_better: bool = False) -> dict:
    """A fit's own training objective at its start and at its end on the tuning split (an artifact's
    ``meta["objective"]``; results carry it): whether the fit improved what it optimises, whatever the
    evaluation metric says."""
    return dict(name=name, start=float(start), end=float(end), higher_is_better=bool(higher_is_better))


FAMILIES = ("classic", "tuned", "learned schedule", "learned dynamics", "fine-tuned weights", "whole learned sampler", "floor", "other")


class Method:
    name: str = ""
    description: str = ""
    # what the method changes (FAMILIES): leaderboards group by it; "classic" rows are the default
    # reference of paired comparisons; "floor" rows (true samples) are never ranked
    family: str = "other"
    defaults: dict = {}
    # task name -> settings that replace the defaults on that task (published configurations)
    presets: dict = {}
    # setting -> its allowed values, for settings that are not just a number, string or list
    choices: dict = {}
    # setting -> the Python types it takes, for settings whose default's type is not the only one
    types: dict = {}
    # capabilities the task must offer: "tuning" (a tuning split), "classes"
    needs: tuple = ()
    # version of the fit procedure: bump it and cached artifacts are recomputed
    fit_version: int = 1
    # whether sampling is a deterministic map of the initial noise (no noise drawn on the way): such a
    # sampler's results carry ``ode_error``, its distance to the ODE's solution (bench.engine.ode_reference)
    deterministic: bool = False
    has_fit: bool = False

    def __init__(self, task=None, **config):
        cfg = dict(self.defaults)
        if task is not None:
            cfg.update(self.presets.get(task.name, {}))
        unknown = set(config) - set(cfg)
        if unknown:
            raise ValueError(f"method {self.name} has no setting {', '.join(sorted(unknown))}; "
                             f"its settings are {', '.join(sorted(cfg)) or 'none'}")
        base = dict(cfg)
        for k, v in config.items():
            cfg[k] = _typed(self.name, k, cfg[k], v, self.choices.get(k), self.types.get(k))
        self.config = cfg
        self.changed = {k: v for k, v in cfg.items() if v != base[k]}  # settings that differ from the published

    # fit ------------------------------------------------------------------
    def fit(self, ctx) -> Artifact:
        """Tune or learn on ``ctx.task``'s tuning split; only called when ``has_fit``."""
        return Artifact()

    def load(self, artifact: Artifact):
        """Take the state a fit (this run's or a cached one) produced."""

    def fit_key(self) -> dict:
        """What the fit depends on besides the task, denoiser and NFE budget."""
        return dict(self.config)

    # sampling ---------------------------------------------------------------
    def sample(self, denoiser, x, *, nfe_budget: int, class_labels=None, noise=None) -> torch.Tensor:
        """Map the initial state ``x`` (at sigma_max, float64) to samples within the budget."""
        raise TypeError(f"method {self.name} defines no sample()")

    def describe_budget(self, nfe_budget: int) -> dict:
        """The configuration the budget selects (for the result file); raises BudgetError
        when the budget cannot hold the method."""
        return {}

    def untrained(self) -> tuple[str, dict] | None:
        """The sampler this method's fit starts from, as (method name, settings), for a fitted
        method: the harness samples it beside every result and flags a result whose samples equal
        it (a fit that never moved its sampler). None: nothing to compare (no fit)."""
        return None

    def cost_card(self, nfe_budget: int) -> dict:
        """What the fit asks of a user beyond sampling (the harness adds the learned parameters and
        the fit's measured cost per checkpoint): whether it reads real data (the tuning split) and
        the NFE of the teacher it distils from, if any."""
        return dict(needs_real_data="tuning" in self.needs, teacher_nfe=None)

    def privileged(self) -> str | None:
        """What the method uses that no real task offers (a true density), or None. Results
        carry it, and every leaderboard row built from them is marked privileged."""
        return None

    def validate(self, denoiser, nfe_budget: int):
        """Check the configuration against the denoiser (its sigma range) before any work."""


@dataclass(frozen=True)
class SolverSpec:
    fn: callable
    calls_per_step: int  # denoiser calls per step; a step to sigma = 0 takes one
    min_steps: int
    classic: str         # the classic method that runs the solver (the untrained start of a learned schedule)
    afs: bool = False    # takes the analytical first step (one call fewer)

    def nfe(self, steps: int, final: str = "zero", afs: bool = False) -> int:
        """Denoiser calls of ``steps`` steps on a schedule ending in 0 (``final='zero'``) or at sigma_min."""
        return self.calls_per_step * steps - (self.calls_per_step - 1 if final == "zero" else 0) - bool(afs)

    def steps(self, nfe_budget: int, final: str = "zero", afs: bool = False) -> int:
        """The most steps whose NFE fits the budget."""
        extra = (self.calls_per_step - 1 if final == "zero" else 0) + bool(afs)
        return (int(nfe_budget) + extra) // self.calls_per_step


SOLVER_SPECS = {
    "euler": SolverSpec(sampling.euler, 1, 1, "euler"),
    "heun": SolverSpec(sampling.heun, 2, 2, "edm"),
    "dpm2": SolverSpec(sampling.dpm2, 2, 2, "dpm2"),
    "dpmpp-2m": SolverSpec(sampling.dpmpp_2m, 1, 2, "dpmpp-2m", afs=True),
    "dpmpp-3m": SolverSpec(sampling.dpmpp_3m, 1, 2, "dpmpp-3m", afs=True),
    "unipc": SolverSpec(sampling.unipc, 1, 2, "unipc", afs=True),
    "deis": SolverSpec(sampling.deis, 1, 2, "deis", afs=True),
    "ipndm": SolverSpec(sampling.ipndm, 1, 2, "ipndm", afs=True),
    "ipndm-v": SolverSpec(sampling.ipndm_v, 1, 2, "ipndm-v", afs=True),
}

# the schedule settings of a classic solver method (its ``defaults`` may override them)
SCHEDULE_SETTINGS = dict(schedule="edm", rho=7.0, time_rho=1.0, final="zero")
FINALS = ("zero", "sigma-min")


# the largest NFE budget a run takes: far above any sampler's (EDM's references solve at 511), far
# below what would allocate gigabytes per sample before anything runs
MAX_NFE = 2000


def check_budgets(nfe) -> None:
    """BudgetError for an NFE budget that is not an integer in 1..MAX_NFE."""
    for b in nfe:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_NFE:
            raise BudgetError(f"NFE budget {b!r} out of range: budgets are integers in 1..{MAX_NFE:,}")


def steps_for(solver: str, nfe_budget: int, final: str = "zero", afs: bool = False) -> int:
    """The most steps of ``solver`` whose NFE fits the budget; BudgetError when none does."""
    spec = SOLVER_SPECS[solver]
    n = spec.steps(int(nfe_budget), final, afs)
    if n < spec.min_steps:
        raise BudgetError(f"NFE budget {nfe_budget} is too small for {solver}: it needs at least "
                          f"{spec.nfe(spec.min_steps, final, afs)} ({spec.min_steps} steps)")
    return n


class SolverMethod(Method):
    """A fixed solver on a fixed schedule: ``solver`` and, in the config, the schedule settings
    (``schedule``, ``rho``, ``time_rho``, ``final``, where the method declares them: else EDM's rho
    schedule ending in 0) and the solver's own ``settings`` (``afs`` among them where the solver
    takes it)."""
    family = "classic"
    solver: str = "heun"
    deterministic = True  # a subclass that churns or draws ancestral noise says False
    settings: tuple = ()  # config keys passed to the solver
    choices = dict(schedule=sampling.SCHEDULES, final=FINALS)

    def _budget(self):
        return self.config.get("final", "zero"), bool(self.config.get("afs", False))

    def schedule(self, denoiser, nfe_budget):
        final, afs = self._budget()
        n = steps_for(self.solver, nfe_budget, final, afs)
        c = self.config
        return sampling.schedule(c.get("schedule", "edm"), n, denoiser.sigma_min, denoiser.sigma_max,
                                 rho=c.get("rho", 7.0), time_rho=c.get("time_rho", 1.0), final=final)

    def solver_settings(self) -> dict:
        return {k: self.config[k] for k in self.settings}

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        sigmas = self.schedule(denoiser, nfe_budget).to(x.device)
        return SOLVER_SPECS[self.solver].fn(denoiser, x, sigmas, class_labels=class_labels, noise=noise,
                                            **self.solver_settings())

    def describe_budget(self, nfe_budget):
        final, afs = self._budget()
        n = steps_for(self.solver, nfe_budget, final, afs)
        return dict(solver=self.solver, steps=n, nfe_formula=SOLVER_SPECS[self.solver].nfe(n, final, afs))
