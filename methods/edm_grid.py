"""``edm-grid``: EDM's stochastic Heun with S_churn, S_tmin, S_tmax, S_noise chosen by
grid search on the task's tuning split (the exhaustive tuning that learned
samplers aim to replace; its whole cost is recorded as the fit cost).

Each grid point samples ``tune_samples`` points from fit seeds (disjoint from
evaluation seeds) and is scored by the task's primary metric against the
tuning split; the best point is then evaluated like any other method.
S_churn = 0 makes the window and S_noise irrelevant, so it is evaluated once.
"""
import itertools

from bench.method import Artifact, SolverMethod
from bench.registry import register_method


@register_method("edm-grid")
class EDMGrid(SolverMethod):
    description = "EDM stochastic Heun, (S_churn, S_tmin, S_tmax, S_noise) grid-searched on the tuning split"
    family = "tuned"
    solver = "heun"
    needs = ("tuning",)
    has_fit = True
    defaults = dict(rho=7.0, grid_churn=[0.0, 10.0, 30.0, 80.0], grid_tmin=[0.01, 0.1],
                    grid_tmax=[1.0, 10.0], grid_noise=[1.0, 1.007], tune_samples=5000)

    def grid(self):
        c = self.config
        points = [dict(s_churn=0.0, s_tmin=0.0, s_tmax=0.0, s_noise=1.0)] if 0.0 in c["grid_churn"] else []
        for churn, tmin, tmax, noise in itertools.product(c["grid_churn"], c["grid_tmin"], c["grid_tmax"],
                                                         c["grid_noise"]):
            if churn > 0 and tmin < tmax:
                points.append(dict(s_churn=churn, s_tmin=tmin, s_tmax=tmax, s_noise=noise))
        return points

    def fit(self, ctx):
        best, table = ctx.search(self, self.grid(), self.config["tune_samples"], f"edm-grid nfe={ctx.nfe_budget}")
        return Artifact(meta=dict(best=best, metric=ctx.task.primary_metric, grid=table))

    def load(self, artifact):
        self.chosen = {k: float(v) for k, v in artifact.meta["best"].items()}

    def solver_settings(self):
        return dict(self.chosen)

    def describe_budget(self, nfe_budget):
        out = super().describe_budget(nfe_budget)
        if getattr(self, "chosen", None):
            out["chosen"] = dict(self.chosen)
        return out
