"""``edm-grid``: EDM's stochastic Heun with (S_churn, S_tmin, S_tmax, S_noise) chosen by grid
search on the task's tuning split (the exhaustive tuning that learned samplers aim to replace;
its whole cost is recorded as the fit cost).

The grid is over what the sampler actually uses: the per-step churn gamma (S_churn = gamma N,
so gamma = min(S_churn / N, sqrt(2) - 1) is never clamped), the window [S_tmin, S_tmax] and
S_noise. Points that give the same sampler on the budget's schedule (the same gamma at every
step, and the same S_noise where some gamma > 0) are sampled once: EDM's S_churn values 10, 30,
80 all clamp to sqrt(2) - 1 for N <= 24 steps, and a few Karras levels fall the same way into
several windows, so the old grid of 25 (S_churn, window, S_noise) points held only 3 / 5 / 9 / 9
distinct samplers at NFE 5 / 10 / 20 / 35. This one holds 7 / 13 / 25 / 25.

Each distinct point samples ``tune_samples`` points from fit seeds (the same noise for every
point), is scored by the task's primary metric against the tuning split, and the best point is
then evaluated like any other method.
"""
import itertools
import math

from bench import sampling
from bench.method import Artifact, SolverMethod, steps_for
from bench.registry import register_method

GAMMA_MAX = math.sqrt(2) - 1  # EDM's clamp on the per-step churn


@register_method("edm-grid")
class EDMGrid(SolverMethod):
    description = "EDM stochastic Heun, (gamma, S_tmin, S_tmax, S_noise) grid-searched on the tuning split"
    family = "tuned"
    solver = "heun"
    needs = ("tuning",)
    has_fit = True
    fit_version = 2
    defaults = dict(rho=7.0, grid_gamma=[0.0, 0.1, 0.2, GAMMA_MAX], grid_tmin=[0.01, 0.1],
                    grid_tmax=[1.0, 10.0], grid_noise=[1.0, 1.007], tune_samples=5000)

    def __init__(self, task=None, **config):
        super().__init__(task=task, **config)
        bad = [g for g in self.config["grid_gamma"] if not 0 <= g <= GAMMA_MAX + 1e-12]
        if bad or not self.config["grid_gamma"]:
            raise ValueError(f"edm-grid grid_gamma lists per-step churn levels in [0, sqrt(2)-1 = {GAMMA_MAX:.4f}] "
                             f"(EDM clamps larger ones), got {self.config['grid_gamma']}")

    def grid(self, sigmas) -> list[dict]:
        """The distinct samplers of the grid on the schedule ``sigmas`` (EDM's Heun levels, ending
        in 0): each as Heun's settings (S_churn = gamma N)."""
        c, n = self.config, len(sigmas) - 1
        levels = [float(s) for s in sigmas[:-1]]
        points, seen = [], set()
        for gamma, tmin, tmax, s_noise in itertools.product(c["grid_gamma"], c["grid_tmin"], c["grid_tmax"],
                                                            c["grid_noise"]):
            if gamma > 0 and tmin >= tmax:
                continue
            s_churn = gamma * n
            per_step = tuple(min(s_churn / n, GAMMA_MAX) if gamma > 0 and tmin <= s <= tmax else 0.0
                             for s in levels)
            key = per_step + ((s_noise,) if any(per_step) else ())
            if key in seen:
                continue
            seen.add(key)
            points.append(dict(s_churn=s_churn, s_tmin=tmin, s_tmax=tmax, s_noise=s_noise) if any(per_step)
                          else dict(s_churn=0.0, s_tmin=0.0, s_tmax=0.0, s_noise=1.0))
        return points

    def untrained(self):
        """EDM's deterministic Heun at the budget: the sampler the search starts from."""
        return "edm", dict(rho=self.config["rho"])

    def fit(self, ctx):
        den = ctx.denoiser
        sigmas = sampling.karras_sigmas(steps_for("heun", ctx.nfe_budget), den.sigma_min, den.sigma_max,
                                        self.config["rho"])
        best, table = ctx.search(self, self.grid(sigmas), self.config["tune_samples"],
                                 f"edm-grid nfe={ctx.nfe_budget}")
        return Artifact(meta=dict(best=best, metric=ctx.task.primary_metric, grid=table))

    def load(self, artifact):
        self.chosen = {k: float(v) for k, v in artifact.meta["best"].items()}

    def solver_settings(self):
        return dict(self.chosen)

    @property
    def deterministic(self) -> bool:
        """Plain Heun when the search kept no churn: then it draws no noise."""
        return not getattr(self, "chosen", {}).get("s_churn", 1.0)

    def describe_budget(self, nfe_budget):
        out = super().describe_budget(nfe_budget)
        if getattr(self, "chosen", None):
            out["chosen"] = dict(self.chosen)
        return out
