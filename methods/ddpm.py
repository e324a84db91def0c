"""``ddpm``: the DDPM ancestral sampler (Ho et al. 2020) in the EDM parameterisation, on DDPM's
own time discretisation.

Schedule: the VP noise schedule sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) with DDPM's
linear betas (beta_min 0.1, beta_d 19.9; EDM Table 1, "VP"), N points uniform in t between the
times of the denoiser's sigma_max and sigma_min, then 0. Step: the posterior q(x' | x, x0_hat)
of the variance-exploding form, x' = x0_hat + (sigma'^2 / sigma^2)(x - x0_hat) + sigma'
sqrt(1 - sigma'^2 / sigma^2) eps, and x0_hat itself on the last step. NFE = N steps.
"""
import math

import torch

from bench import sampling
from bench.method import SolverMethod, steps_for
from bench.registry import register_method

BETA_MIN, BETA_D = 0.1, 19.9


def vp_sigma(t):
    return (torch.exp(0.5 * BETA_D * t**2 + BETA_MIN * t) - 1).sqrt()


def vp_time(sigma: float) -> float:
    """The inverse of ``vp_sigma``: the root of beta_d t^2 / 2 + beta_min t = log(1 + sigma^2)."""
    return (math.sqrt(BETA_MIN**2 + 2 * BETA_D * math.log1p(sigma**2)) - BETA_MIN) / BETA_D


def vp_sigmas(num_steps: int, sigma_min: float, sigma_max: float):
    """``num_steps`` noise levels uniform in VP time from sigma_max to sigma_min, then 0. float64."""
    t = torch.linspace(vp_time(sigma_max), vp_time(sigma_min), num_steps, dtype=torch.float64)
    s = vp_sigma(t) if num_steps > 1 else torch.tensor([sigma_max], dtype=torch.float64)
    s[0] = sigma_max  # exactly where the initial noise is
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def ddpm_sample(denoiser, x, sigmas, *, class_labels=None, noise=None):
    """DDPM's ancestral steps: the posterior mean and variance of each step given x0_hat."""
    x = x.to(torch.float64)
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = sampling.denoise(denoiser, x, s, class_labels)
        ratio = s_next**2 / s**2
        x = x0 + ratio * (x - x0)
        if s_next > 0:
            x = x + s_next * (1 - ratio).sqrt() * (torch.randn_like(x) if noise is None else noise.randn_like(x))
    return x


@register_method("ddpm")
class DDPM(SolverMethod):
    description = "DDPM ancestral sampler (posterior steps) on DDPM's VP time grid; NFE N"
    deterministic = False  # draws noise while it samples
    solver = "euler"  # the budget arithmetic: one evaluation per step
    defaults = dict()

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        sigmas = vp_sigmas(steps_for("euler", nfe_budget), denoiser.sigma_min, denoiser.sigma_max).to(x.device)
        return ddpm_sample(denoiser, x, sigmas, class_labels=class_labels, noise=noise)

    def describe_budget(self, nfe_budget):
        n = steps_for("euler", nfe_budget)
        return dict(solver="ddpm-ancestral", schedule="VP linear betas, uniform in t", steps=n, nfe_formula=n)
