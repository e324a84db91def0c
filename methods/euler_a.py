"""``euler-a``: Euler ancestral sampling (k-diffusion's ``sample_euler_ancestral``; Song et al.
2021's ancestral step written for the EDM parameterisation) on EDM's rho schedule.

Each step from sigma to sigma' splits sigma' into a deterministic part and fresh noise:
sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)), sigma_down =
sqrt(sigma'^2 - sigma_up^2); the Euler step goes to sigma_down, then noise of std sigma_up is
added (none on the last step, to sigma = 0). eta = 1 is DDPM's posterior variance, eta = 0 is
Euler exactly (the same arithmetic, bit for bit). NFE = N steps.
"""
import torch

from bench import sampling
from bench.method import SolverMethod, steps_for
from bench.registry import register_method


def euler_ancestral(denoiser, x, sigmas, *, class_labels=None, noise=None, eta=1.0):
    """Euler ancestral with ``eta`` (k-diffusion's sample_euler_ancestral). NFE = N."""
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = sampling.denoise(denoiser, x, s, class_labels)
        s_up = torch.clamp(eta * (s_next**2 * (s**2 - s_next**2) / s**2).sqrt(), max=s_next)
        s_down = s_next if eta == 0 else (s_next**2 - s_up**2).sqrt()
        x = x + (s_down - s) * (x - denoised) / s
        if eta != 0 and s_next > 0:
            x = x + (torch.randn_like(x) if noise is None else noise.randn_like(x)) * s_up
    return x


@register_method("euler-a")
class EulerAncestral(SolverMethod):
    description = "Euler ancestral with eta (k-diffusion), rho=7 schedule; eta 0 is Euler; NFE N"
    deterministic = False  # draws noise while it samples
    solver = "euler"  # the budget arithmetic: one evaluation per step
    defaults = dict(rho=7.0, eta=1.0)

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        sigmas = self.schedule(denoiser, nfe_budget).to(x.device)
        return euler_ancestral(denoiser, x, sigmas, class_labels=class_labels, noise=noise, eta=self.config["eta"])

    def describe_budget(self, nfe_budget):
        n = steps_for("euler", nfe_budget)
        return dict(solver="euler-ancestral", steps=n, nfe_formula=n, eta=self.config["eta"])
