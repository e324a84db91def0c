"""``restart``: Restart sampling (Xu et al., NeurIPS 2023).

EDM Heun over N main steps; each restart interval ``[N_restart, K, t_min, t_max]``
(t_min snapped to the nearest main-schedule sigma) repeats K times, when the
main loop reaches t_min: jump forward ``x += eps * sqrt(t_max^2 - t_min^2) * S_noise``,
then integrate back to t_min with Heun over N_restart rho-spaced sigmas (churn
gamma = 0.05 inside restarts where S_min <= t <= S_max).
``NFE = (2N - 1) + sum_i 2 K_i (N_restart_i - 1)``.

Presets hold the published configurations (cifar10: 18 steps, one interval
[3, K, 0.06, 0.30], K picked as the largest of {2, 5, 10, 20} that fits the
budget; imagenet64: 36 steps and five intervals, NFE 203). Elsewhere (toys,
digits) the main steps and one interval are searched on the tuning split
under the budget, scored by the task's primary metric; that search is the fit,
its cost recorded like edm-grid's.
"""
import itertools
import math

import torch

from bench import sampling
from bench.method import Artifact, BudgetError, Method
from bench.registry import register_method


def restart_nfe(steps: int, intervals) -> int:
    return 2 * steps - 1 + sum(2 * k * (n - 1) for n, k, _, _ in intervals)


def restart_sample(denoiser, x, *, steps, intervals, rho=7.0, s_min=0.01, s_max=1.0, s_noise=1.0,
                   restart_gamma=0.05, class_labels=None, noise=None):
    """The Restart sampler; ``intervals`` a list of [N_restart, K, t_min, t_max]."""
    sig = sampling.karras_sigmas(steps, denoiser.sigma_min, denoiser.sigma_max, rho).to(x.device)
    at = {}  # main-schedule index -> intervals starting there
    for n_r, k, t_min, t_max in intervals:
        j = int(torch.argmin((sig[:-1] - t_min).abs()))
        at.setdefault(j, []).append((int(n_r), int(k), float(sig[j]), float(t_max)))
    x = x.to(torch.float64)
    for i in range(steps):
        x = sampling.heun(denoiser, x, sig[i:i + 2], class_labels=class_labels, noise=noise)
        for n_r, k, t_min, t_max in at.get(i + 1, []):
            back = sampling.karras_sigmas(n_r, t_min, t_max, rho)[:-1].to(x.device)  # n_r levels, t_max..t_min
            for _ in range(k):
                eps = torch.randn_like(x) if noise is None else noise.randn_like(x)
                x = x + eps * math.sqrt(t_max**2 - t_min**2) * s_noise
                x = sampling.heun(denoiser, x, back, class_labels=class_labels, noise=noise,
                                  s_churn=restart_gamma * (n_r - 1), s_tmin=s_min, s_tmax=s_max, s_noise=s_noise)
    return x


@register_method("restart")
class Restart(Method):
    description = "Restart sampling (Xu et al. 2023): Heun main loop + forward-jump/backward-Heun intervals"
    family = "tuned"
    defaults = dict(rho=7.0, steps=0, intervals=[], k_choices=[], s_min=0.01, s_max=1.0, s_noise=1.0,
                    search_tmin=[0.05, 0.2, 0.5, 1.0], search_ratio=[2.0, 4.0], search_nrestart=[2, 3],
                    search_k=[0, 1, 2], tune_samples=5000)
    fit_version = 2
    presets = {
        "cifar10": dict(steps=18, intervals=[[3, 0, 0.06, 0.30]], k_choices=[2, 5, 10, 20]),
        "cifar10-cond": dict(steps=18, intervals=[[3, 0, 0.06, 0.30]], k_choices=[2, 5, 10, 20]),
        "imagenet64": dict(steps=36, intervals=[[4, 1, 19.35, 40.79], [4, 1, 1.09, 1.92], [4, 5, 0.59, 1.09],
                                                [4, 5, 0.30, 0.59], [6, 6, 0.06, 0.30]], s_noise=1.003),
    }

    @property
    def has_fit(self):
        return not self.config["steps"]

    @property
    def needs(self):
        return ("tuning",) if self.has_fit else ()

    def configured(self, nfe_budget):
        """The preset or explicit configuration that fits the budget, or None when searched."""
        c = self.config
        if not c["steps"]:
            return None
        intervals = [list(iv) for iv in c["intervals"]]
        if c["k_choices"]:
            fits = [k for k in c["k_choices"] if restart_nfe(c["steps"], [[iv[0], k] + iv[2:] for iv in intervals])
                    <= nfe_budget]
            if not fits:
                smallest = restart_nfe(c["steps"], [[iv[0], min(c["k_choices"])] + iv[2:] for iv in intervals])
                raise BudgetError(f"restart's configuration needs NFE {smallest} at least, over the budget "
                                  f"{nfe_budget}")
            intervals = [[iv[0], max(fits)] + iv[2:] for iv in intervals]
        need = restart_nfe(c["steps"], intervals)
        if need > nfe_budget:
            raise BudgetError(f"restart's configuration ({c['steps']} steps, intervals {intervals}) needs "
                              f"NFE {need}, over the budget {nfe_budget}")
        return dict(steps=c["steps"], intervals=intervals)

    def validate(self, denoiser, nfe_budget):
        cfg = self.configured(nfe_budget)
        if cfg is not None:
            self._check(denoiser, cfg)

    def _check(self, denoiser, cfg):
        for n_r, k, t_min, t_max in cfg["intervals"]:
            if not denoiser.sigma_min <= t_min < t_max <= denoiser.sigma_max:
                raise BudgetError(f"restart interval [{n_r}, {k}, {t_min}, {t_max}] must satisfy sigma_min <= "
                                  f"t_min < t_max <= sigma_max = [{denoiser.sigma_min}, {denoiser.sigma_max}]")
            if n_r < 2 or k < 0:
                raise BudgetError(f"restart interval [{n_r}, {k}, {t_min}, {t_max}]: N_restart must be >= 2, K >= 0")

    def candidates(self, nfe_budget):
        c = self.config
        out = []
        for t_min, ratio, n_r, k in itertools.product(c["search_tmin"], c["search_ratio"], c["search_nrestart"],
                                                      c["search_k"]):
            extra = 2 * k * (n_r - 1)
            steps = (nfe_budget - extra + 1) // 2
            cand = dict(steps=steps, intervals=[[n_r, k, t_min, t_min * ratio]] if k else [])  # K = 0: plain Heun
            if steps >= 2 and cand not in out:
                out.append(cand)
        if not out:
            raise BudgetError(f"NFE budget {nfe_budget} is too small for restart: it needs at least "
                              f"{3 + 2 * min(c['search_k']) * (min(c['search_nrestart']) - 1)}")
        if any(k < 0 or int(k) != k for k in c["search_k"]):
            raise ValueError(f"restart search_k lists restart counts K >= 0 (0: plain Heun), got {c['search_k']}")
        return out

    def untrained(self):
        """EDM's deterministic Heun at the budget: the sampler the search (or guidance) starts from."""
        return "edm", dict(rho=self.config["rho"])

    def fit(self, ctx):
        candidates = self.candidates(ctx.nfe_budget)
        for cand in candidates:
            self._check(ctx.denoiser, cand)
        best, table = ctx.search(self, candidates, self.config["tune_samples"], f"restart nfe={ctx.nfe_budget}")
        return Artifact(meta=dict(best=best, grid=table, metric=ctx.task.primary_metric))

    def load(self, artifact):
        self.chosen = artifact.meta["best"]

    def describe_budget(self, nfe_budget):
        cfg = self.configured(nfe_budget)
        if cfg is None:
            self.candidates(nfe_budget)
            cfg = getattr(self, "chosen", None)
        return {} if cfg is None else dict(cfg, nfe_formula=restart_nfe(cfg["steps"], cfg["intervals"]))

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        cfg = self.configured(nfe_budget) or self.chosen
        c = self.config
        return restart_sample(denoiser, x, steps=cfg["steps"], intervals=cfg["intervals"], rho=c["rho"],
                              s_min=c["s_min"], s_max=c["s_max"], s_noise=c["s_noise"], class_labels=class_labels,
                              noise=noise)
