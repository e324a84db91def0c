"""``dxmi``: diffusion by maximum-entropy IRL with an energy-based model (Yoon et al. 2024;
references.md section 5), the sampler trained by DxDP.

A minimax game between a T-step sampler pi (T = the NFE budget; the paper's T are 4 and 10)
and an energy-based model E(x): the EBM is the sampler's (negative) reward, the sampler's
samples are the EBM's negatives, and the sampler maximises its entropy.

The sampler: a copy of the task's denoiser (fine-tuned, all weights by default; the base
is never modified) on the EDM schedule ``s_0 = sigma_max > ... > s_{T-1} = sigma_min > s_T = 0``
with a learnable per-step noise level ``sigma_t``::

    x0_hat  = D_theta(x_t, s_t)
    x_{t+1} = x0_hat + sqrt(s_{t+1}^2 - sigma_t^2) / s_t * (x_t - x0_hat) + sigma_t * eps_t

(the DDIM posterior with noise ``sigma_t``, clamped to ``sigma_t < s_{t+1}``; on the last step
``s_T = 0`` the mean is ``x0_hat``). Initialisation: ``sigma_t`` = DDPM's ancestral
``s_{t+1} sqrt(s_t^2 - s_{t+1}^2) / s_t`` and, for the last step, ``sigma_min``.
NFE = T; at evaluation every step draws its noise from the sample's own stream.

Losses (``gamma`` = 1, ``tau1`` = 0.1, ``tau2`` = 0.01; ``|.|^2`` averaged over dimensions, as the
authors' code does):

- EBM: ``mean E(x_data) - mean E(x_T) + gamma (mean E(x_data)^2 + mean E(x_T)^2)``.
- Value V(x, t) (cost to go from x at step t; ``V(x, T) := E(x)``), TD backward over the steps
  with targets ``V(x_{t+1}, t+1) + tau2 |x_{t+1} - x_t|^2 / (2 beta_t) - tau1 log sigma_t``
  (running cost; ``log sigma_t`` is the step's Gaussian entropy per dimension up to a constant;
  ``beta_t = s_t^2 - s_{t+1}^2``, the variance the forward process adds between the two
  levels -- our reading of the paper's beta_t, which keeps every step's cost O(D)), on the
  states of a rollout, MSE, the targets from the current networks, detached.
- Sampler: for each step the reparameterised one-step loss
  ``V(x_{t+1}(theta), t+1) + tau2 |x_{t+1}(theta) - x_t|^2 / (2 beta_t) - tau1 log sigma_t``
  with ``x_t`` from the rollout (detached) and the rollout's ``eps_t``: no back-propagation
  through time.

Schedule: ``warmup`` iterations train only E and V (the sampler fixed), then all three
alternate, one step each per iteration (``value_steps`` for V).

Ours (toy defaults; the paper's are for CIFAR-10): 1000 iterations, 300 of warm-up, 5 value
steps per iteration. The sampler's update is only as good as the gradient of V, and an
under-trained V makes it worse than its start: on gmm8 (seed 0, 2000 samples) 300 iterations
with 100 of warm-up and 1 value step took w2 from 1.14 to 1.25 at T = 4 and 0.50 to 0.52 at
T = 10; the defaults reach 0.65 and 0.35. A larger sampler learning rate (1e-4, 1e-3) made
both much worse (Adam turns V's small, noisy gradient into full-size steps).
On digits (300 tuning images) the energy model soon separates the sampler's samples from the
data completely (the energy gap reaches its bound of 1 under the gamma = 1 penalty) and the
sampler collapses: FD 27 at T = 4 against 0.77 untrained. The weight updates are the cause, not
the learned noise levels: with them frozen (``std_lr=0``, 600 iterations, seed 0) FD was still 6.2.

Networks: E and V are the shared ``bench.nets.discriminator`` networks (an MLP on vectors, a small
CNN on images, so digits works too), V conditioned on the step's noise level ``s_t``, E on
``sigma_min``. Every evaluation of the sampler's copy is charged to the harness's counter
(fit NFE); E and V evaluations are not denoiser evaluations and are not counted.
Divergence (a non-finite loss, or one beyond ``loss_limit``) raises ``TrainingDiverged``.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bench.nets import discriminator as disc_lib
from bench import sampling
from bench.method import Artifact, BudgetError, Method
from bench.registry import register_method
from ._common import Charged, check_finite, curve_png, select_params, unwrap

__all__ = ["DxMI", "ebm_loss", "td_targets", "running_cost", "Sampler"]


def ebm_loss(e_data, e_sample, gamma: float = 1.0):
    """``mean E(data) - mean E(sample) + gamma (mean E(data)^2 + mean E(sample)^2)``."""
    return e_data.mean() - e_sample.mean() + gamma * ((e_data**2).mean() + (e_sample**2).mean())


def running_cost(x_next, x, beta_t, sigma_t, tau1: float, tau2: float):
    """``tau2 |x_{t+1} - x_t|^2 / (2 beta_t) - tau1 log sigma_t`` per sample, the square
    averaged over dimensions."""
    sq = ((x_next - x) ** 2).reshape(x.shape[0], -1).mean(1)
    sigma_t = torch.as_tensor(sigma_t, dtype=sq.dtype)
    return tau2 * sq / (2 * float(beta_t)) - tau1 * sigma_t.log()


def td_targets(v_next, x_next, x, beta_t, sigma_t, tau1: float, tau2: float):
    """DxDP's TD target for V(x_t, t): ``V(x_{t+1}, t+1) + running cost``."""
    return v_next + running_cost(x_next, x, beta_t, sigma_t, tau1, tau2)


class Sampler(nn.Module):
    """The T-step sampler: a denoiser copy plus the learnable per-step noise levels."""

    def __init__(self, net, sigmas, sigma_min):
        super().__init__()
        self.net = net
        s = [float(v) for v in sigmas]
        self.register_buffer("sched", torch.tensor(s, dtype=torch.float64))
        init = [s[t + 1] * math.sqrt(s[t] ** 2 - s[t + 1] ** 2) / s[t] if s[t + 1] > 0 else float(sigma_min)
                for t in range(len(s) - 1)]
        self.log_std = nn.Parameter(torch.tensor(init, dtype=torch.float64).log())

    @property
    def steps(self):
        return len(self.sched) - 1

    def std(self, t):
        s_next = self.sched[t + 1]
        st = self.log_std[t].exp()
        return torch.minimum(st, s_next * (1 - 1e-6)) if s_next > 0 else st

    def step(self, model, x, t, eps, class_labels=None):
        s, s_next = self.sched[t], self.sched[t + 1]
        x0 = sampling.denoise(model, x, s, class_labels)
        st = self.std(t)
        a = (s_next**2 - st**2).clamp_min(0).sqrt() / s
        return x0 + a * (x - x0) + st * eps

    def rollout(self, model, x, class_labels=None, noise=None, generator=None, record=False):
        x = x.to(torch.float64)
        states, noises = [x], []
        for t in range(self.steps):
            eps = noise.randn_like(x) if noise is not None else \
                torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
            x = self.step(model, x, t, eps, class_labels)
            if record:
                states.append(x)
                noises.append(eps)
        return (x, states, noises) if record else x


@register_method("dxmi")
class DxMI(Method):
    description = "DxMI (Yoon et al. 2024): few-step sampler + EBM by max-ent IRL, sampler trained by DxDP"
    family = "whole learned sampler"
    needs = ("tuning",)
    has_fit = True
    fit_version = 1
    defaults = dict(rho=7.0, iters=1000, batch=256, lr=1e-5, std_lr=1e-2, ebm_lr=1e-3, value_lr=1e-3,
                    value_steps=5, warmup=300, gamma=1.0, tau1=0.1, tau2=0.01, width=128, layers="all",
                    tune_samples=5000, grad_clip=0.1, loss_limit=1e8, seed=0)
    # digits: the CNN energy and value at width 128 cost 4 s an iteration on a CPU; width 32 and
    # half the batch bring that to 0.3 s
    presets = {"digits": dict(width=32, batch=128), "digits-uncond": dict(width=32, batch=128)}

    def __init__(self, task=None, **config):
        super().__init__(task=task, **config)
        self.meta, self.tensors, self._sampler = None, None, None

    def describe_budget(self, nfe_budget):
        if nfe_budget < 2:
            raise BudgetError(f"NFE budget {nfe_budget} is too small for dxmi: its sampler needs at least 2 steps "
                              f"(T = NFE)")
        return dict(sampler="dxmi (learned per-step noise, EDM schedule)", steps=int(nfe_budget),
                    nfe_formula=int(nfe_budget))

    def _schedule(self, denoiser, nfe_budget):
        self.describe_budget(nfe_budget)
        return sampling.karras_sigmas(int(nfe_budget), denoiser.sigma_min, denoiser.sigma_max, self.config["rho"])

    def _build(self, denoiser, nfe_budget, device=None):
        net = copy.deepcopy(unwrap(denoiser)).requires_grad_(False)
        sampler = Sampler(net, self._schedule(denoiser, nfe_budget), denoiser.sigma_min)
        return sampler.to(device) if device is not None else sampler

    def untrained(self):
        """The same settings without a training iteration."""
        return self.name, dict(self.config, iters=0)

    def fit(self, ctx):
        c = self.config
        torch.manual_seed(ctx.torch_seed(c["seed"]))
        g = torch.Generator().manual_seed(ctx.torch_seed(c["seed"]))
        task, den, dev = ctx.task, ctx.denoiser, ctx.device
        sampler = self._build(den, ctx.nfe_budget, dev)
        names = select_params(sampler.net, c["layers"], "dxmi")
        params = dict(sampler.net.named_parameters())
        for n in names:
            params[n].requires_grad_(True)
        model = Charged(den, sampler.net)
        ebm = disc_lib.for_shape(den.shape, den.sigma_data, width=c["width"]).to(dev)
        value = disc_lib.for_shape(den.shape, den.sigma_data, width=c["width"]).to(dev)
        opt_s = torch.optim.Adam([dict(params=[params[n] for n in names], lr=c["lr"]),
                                  dict(params=[sampler.log_std], lr=c["std_lr"])])
        opt_e = torch.optim.Adam(ebm.parameters(), lr=c["ebm_lr"])
        opt_v = torch.optim.Adam(value.parameters(), lr=c["value_lr"])
        real, _ = ctx.tuning(c["tune_samples"])
        real = real.to(dev)
        T, b = sampler.steps, c["batch"]
        sched = sampler.sched
        beta = [float(sched[t] ** 2 - sched[t + 1] ** 2) for t in range(T)]
        smin = torch.full((b,), float(den.sigma_min), device=dev)

        def E(x):
            return ebm(x.float(), smin[: x.shape[0]]).double()

        def V(x, t):  # cost to go from step t; V(., T) is the energy
            if t == T:
                return E(x)
            return value(x.float(), torch.full((x.shape[0],), float(sched[t]), device=dev)).double()

        history = []
        for it in ctx.progress_iter(range(c["iters"]), f"dxmi T={T}"):
            x = (torch.randn((b, *den.shape), generator=g, dtype=torch.float64) * den.sigma_max).to(dev)
            labels = torch.randint(task.num_classes, (b,), generator=g).to(dev) if task.num_classes else None
            with torch.no_grad():
                _, states, noises = sampler.rollout(model, x, labels, generator=g, record=True)
            # EBM: data low energy, the sampler's samples high, both regularised
            data = real[torch.randint(len(real), (b,), generator=g).to(real.device)]
            e_data, e_samp = E(data), E(states[-1])
            loss_e = ebm_loss(e_data, e_samp, c["gamma"])
            check_finite("dxmi", "EBM loss", loss_e, it, c["loss_limit"])
            opt_e.zero_grad(set_to_none=True)
            loss_e.backward()
            opt_e.step()
            # value: TD backward over the rollout, targets from the current networks
            with torch.no_grad():
                stds = [sampler.std(t).detach() for t in range(T)]
            for _ in range(c["value_steps"]):
                loss_v = 0.0
                for t in reversed(range(T)):
                    with torch.no_grad():
                        target = td_targets(V(states[t + 1], t + 1), states[t + 1], states[t], beta[t], stds[t],
                                            c["tau1"], c["tau2"])
                    loss_v = loss_v + ((V(states[t], t) - target) ** 2).mean()
                check_finite("dxmi", "value loss", loss_v, it, c["loss_limit"])
                opt_v.zero_grad(set_to_none=True)
                loss_v.backward()
                opt_v.step()
            # sampler: the reparameterised one-step loss at every step (V and E frozen); not during the
            # warm-up, which trains E and V against the initial sampler first
            if it < c["warmup"]:
                history.append(dict(iter=it, ebm_loss=loss_e.item(), value_loss=loss_v.item(),
                                    energy_gap=(e_samp.mean() - e_data.mean()).item(), fit_nfe=den.rows))
                continue
            value.requires_grad_(False)
            ebm.requires_grad_(False)
            loss_s = 0.0
            for t in range(T):
                nxt = sampler.step(model, states[t], t, noises[t], labels)
                loss_s = loss_s + (V(nxt, t + 1) + running_cost(nxt, states[t], beta[t], sampler.std(t), c["tau1"],
                                                                 c["tau2"])).mean()
            check_finite("dxmi", "sampler loss", loss_s, it, c["loss_limit"])
            opt_s.zero_grad(set_to_none=True)
            loss_s.backward()
            torch.nn.utils.clip_grad_norm_([params[n] for n in names], c["grad_clip"])
            opt_s.step()
            value.requires_grad_(True)
            ebm.requires_grad_(True)
            check_finite("dxmi", "noise levels", sampler.log_std.detach(), it)
            history.append(dict(iter=it, ebm_loss=loss_e.item(), value_loss=loss_v.item(), sampler_loss=loss_s.item(),
                                energy_gap=(e_samp.mean() - e_data.mean()).item(), fit_nfe=den.rows))
        meta = dict(history=history, layers=names, steps=T, ebm=ebm.config, value=value.config,
                    stds=sampler.log_std.detach().exp().tolist(),
                    init_stds=Sampler(nn.Identity(), sched, den.sigma_min).log_std.detach().exp().tolist())
        tensors = {f"net.{n}": params[n].detach().clone() for n in names}
        tensors["log_std"] = sampler.log_std.detach().clone()
        tensors.update({f"ebm.{k}": v for k, v in ebm.state_dict().items()})
        tensors.update({f"value.{k}": v for k, v in value.state_dict().items()})
        return Artifact(meta=meta, tensors=tensors)

    def load(self, artifact):
        self.meta, self.tensors, self._sampler = artifact.meta, artifact.tensors, None

    def sampler(self, denoiser, nfe_budget, device=None):
        """The trained sampler on a copy of ``denoiser`` (built once from the artifact)."""
        if self._sampler is None:
            s = self._build(denoiser, nfe_budget)
            net_t = {k[4:]: v for k, v in self.tensors.items() if k.startswith("net.")}
            unknown = set(net_t) - set(dict(s.net.named_parameters()))
            if unknown or len(self.tensors["log_std"]) != s.steps:
                raise ValueError("dxmi artifact does not fit this denoiser or budget")
            s.net.load_state_dict(net_t, strict=False)
            with torch.no_grad():
                s.log_std.copy_(self.tensors["log_std"])
            self._sampler = s.eval().requires_grad_(False)
        return self._sampler.to(device) if device is not None else self._sampler

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        s = self.sampler(denoiser, nfe_budget, x.device)
        return s.rollout(Charged(denoiser, s.net), x, class_labels, noise=noise)

    def write_extras(self, result_path):
        """Training curves (energy gap, losses) as a PNG beside the result."""
        if not self.meta or not self.meta.get("history"):
            return []
        path = result_path.with_suffix(".training.png")
        curve_png(path, self.meta["history"], keys=("energy_gap", "sampler_loss", "value_loss"), title="dxmi")
        return [path.name]
