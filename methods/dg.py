"""``dg``: discriminator guidance (Kim et al., ICML 2023) on EDM's Heun sampler.

Fit: draw samples with the base sampler (deterministic EDM Heun at the same NFE
budget) from fit seeds, and train a time-conditioned discriminator by BCE on
forward-noised tuning data (1) versus forward-noised samples (0), the noise
level drawn per example (``bench.nets.discriminator``). Sampling: the denoiser
output gets ``w * sigma^2 * grad_x log(d / (1 - d))`` (the score correction
in the D-convention) inside the sigma window; weight 2 on the Euler part of
each Heun step and 0 on the correction, the published defaults. The window is
the paper's VP-time window t in [0.01, 1], i.e. sigma in [0.0447, 152].

Costs: the samples made to train the discriminator go into the fit's NFE, its
training time into the fit's seconds; the discriminator gradients taken while
sampling are reported as ``aux_evals`` per sample (they are not denoiser
evaluations).
"""
import math

import torch

from bench.nets import discriminator as disc_lib
from bench import sampling
from bench.method import Artifact, Method, steps_for
from bench.registry import register_method


def vp_sigma(t, beta_d=19.9, beta_min=0.1):
    """sigma(t) of the VP SDE (EDM's VPPrecond), mapping DG's time window to noise levels."""
    return math.sqrt(math.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)


@register_method("dg")
class DiscriminatorGuidance(Method):
    description = "discriminator guidance (Kim et al. 2023): Heun + w*sigma^2*grad log(d/(1-d)) in a window"
    family = "learned dynamics"
    needs = ("tuning",)
    has_fit = True
    deterministic = True  # Heun with the discriminator's correction: no noise drawn
    defaults = dict(rho=7.0, weight=2.0, weight_2nd=0.0, time_min=0.01, time_max=1.0, train_samples=5000,
                    disc_steps=1500, disc_batch=512, disc_lr=1e-3, disc_width=128, disc_seed=0)

    def __init__(self, task=None, **config):
        super().__init__(task=task, **config)
        self.disc = None
        self.aux_rows = 0

    def fit_key(self):
        # guidance weights and window act only at sampling time: one discriminator serves them all
        return {k: v for k, v in self.config.items() if k not in ("weight", "weight_2nd", "time_min", "time_max")}

    def untrained(self):
        """EDM's deterministic Heun at the budget: the sampler the search (or guidance) starts from."""
        return "edm", dict(rho=self.config["rho"])

    def fit(self, ctx):
        c = self.config
        n = c["train_samples"]
        real, _ = ctx.tuning(n)

        def base(denoiser, x, *, nfe_budget, class_labels=None, noise=None):
            sig = sampling.karras_sigmas(steps_for("heun", nfe_budget), denoiser.sigma_min, denoiser.sigma_max,
                                         c["rho"]).to(x.device)
            return sampling.heun(denoiser, x, sig, class_labels=class_labels)
        with torch.no_grad():
            fake, _ = ctx.generate(base, n)
        den = ctx.denoiser
        disc = disc_lib.for_shape(den.shape, den.sigma_data, width=c["disc_width"])
        log = disc_lib.train(disc, real, fake, steps=c["disc_steps"], batch=c["disc_batch"], lr=c["disc_lr"],
                             seed=ctx.torch_seed(c["disc_seed"]), progress=ctx.progress,
                             desc=f"dg discriminator nfe={ctx.nfe_budget}",
                             sigma_sampler=lambda m, g: disc_lib.sample_sigma(m, g, sigma_min=den.sigma_min,
                                                                              sigma_max=den.sigma_max))
        return Artifact(meta=dict(disc=disc.config, train_log=log, n_real=len(real), n_fake=len(fake)),
                        tensors=dict(disc.state_dict()))

    def load(self, artifact):
        self.disc = disc_lib.build(artifact.meta["disc"])
        self.disc.load_state_dict(artifact.tensors)
        self.disc.eval().requires_grad_(False)

    def describe_budget(self, nfe_budget):
        n = steps_for("heun", nfe_budget)
        return dict(solver="heun", steps=n, nfe_formula=2 * n - 1,
                    sigma_window=[vp_sigma(self.config["time_min"]), vp_sigma(self.config["time_max"])])

    def _guided(self, denoiser, x, sigma, weight, class_labels):
        den = sampling.denoise(denoiser, x, sigma, class_labels)
        lo, hi = vp_sigma(self.config["time_min"]), vp_sigma(self.config["time_max"])
        if weight and lo <= float(sigma) <= hi:
            self.disc.to(x.device)
            s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
            _, grad = disc_lib.logit_grad(self.disc, x, s)
            self.aux_rows += x.shape[0]
            den = den + weight * float(sigma) ** 2 * grad.to(den.dtype)
        return den

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        c = self.config
        sig = sampling.karras_sigmas(steps_for("heun", nfe_budget), denoiser.sigma_min, denoiser.sigma_max,
                                     c["rho"]).to(x.device)
        x = x.to(torch.float64)
        for i in range(len(sig) - 1):
            d = (x - self._guided(denoiser, x, sig[i], c["weight"], class_labels)) / sig[i]
            x_next = x + (sig[i + 1] - sig[i]) * d
            if sig[i + 1] > 0:
                d2 = (x_next - self._guided(denoiser, x_next, sig[i + 1], c["weight_2nd"], class_labels)) / sig[i + 1]
                x_next = x + (sig[i + 1] - sig[i]) * (0.5 * d + 0.5 * d2)
            x = x_next
        return x
