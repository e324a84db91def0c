"""``qlearning``: reward-directed score-based diffusion by (little) q-learning (Gao, Zha & Zhou;
references.md section 6). Toy tasks only; trains **without a pretrained score**.

Formulation (ours where the summary is silent; VE / EDM noise levels, time = sigma^2 running
from sigma_max^2 down): the state is x at level s_k (``karras_sigmas`` at the budget, K steps,
s_K = 0); the action is a score value a (units of grad log p). One step, with
``Delta_k = s_k^2 - s_{k+1}^2``, is the ancestral step in score form::

    x_{k+1} = x_k + Delta_k a_k + c_k xi,     c_k^2 = s_{k+1}^2 Delta_k / s_k^2

(with a_k = the true score this is DDPM's ancestral sampler). Entropy-regularised reward:
running rate ``-(s^2/2) |a - grad log p_s(x)|^2`` (a KL-type penalty for deviating from the
unknown score, with the denoising-score-matching weight s^2), terminal ``beta * h(x_K)``
(``h`` = the task's log-density when ``beta`` > 0; 0 by default), entropy temperature theta.
The optimal policy is then Gaussian with the **known covariance** ``theta / s^2 I``; only its
mean is learned. We write the mean through a denoiser network D_phi (EDM preconditioning,
a fresh ``MLPNet``, randomly initialised): ``mu_phi(x, s) = (D_phi(x, s) - x) / s^2``, so the
greedy policy's step is exactly the ancestral step of D_phi.

Little q (Jia & Zhou 2023) is tied to the policy, ``q_phi(x, a) = theta log pi_phi(a | x)``
(so that ``int exp(q/theta) da = 1``). With a critic J_psi(x, s) (J(x_K) := beta h(x_K)):

    delta_k = J(x_{k+1}) - J(x_k) + (r_k - q_phi(x_k, a_k)) Delta_k

critic: minimise ``mean delta_k^2`` (martingale loss; J_psi = an MLP plus a per-step offset
started at the policy's cumulative entropy bonus); actor: the q-learning orthogonality
update ``phi += lr * w_k delta_k grad_phi q_phi(x_k, a_k)`` (implemented as the loss
``-mean(w_k delta_k.detach() q_phi)``) with the positive per-step weight
``w_k = s_k^2 / (theta Delta_k)``, which leaves its fixed point unchanged and equalises
the steps' scales.

The unknown score inside r_k is observed through the **ratio estimator**: for a fresh
minibatch of tuning data x0_j, ``grad log p_s(x) ~ sum_j w_j (x0_j - x) / s^2`` with
``w_j = softmax_j(-|x - x0_j|^2 / (2 s^2))`` (self-normalised importance weights, the ratio
of the Gaussian kernels), a noisy, slightly biased observation.

NFE: at sampling time the greedy policy (mean, no exploration) takes K steps, one
evaluation of D_phi each; D_phi is evaluated through ``Charged`` so the harness's counter
measures it (NFE = K), and the fit's NFE counts the policy-mean evaluations of training.
The task's pretrained denoiser is never evaluated (only its sigma range, shape and
sigma_data are used).

Ours: 2000 iterations by default. The actor's update is an unbiased but noisy estimate (its
signal is theta (score - mu) against the critic's noise), so it converges slowly: on gmm8 at
NFE 10 (seed 0, 2000 samples) w2 was 1.30 after 300 iterations, 0.98 after 2000 (126 s); a
larger learning rate (3e-3: 2.02) or temperature (theta 0.1, 1000 iterations: 1.48) was worse.
"""
from __future__ import annotations

import math

import torch

from bench.nets import discriminator as disc_lib
from bench import sampling
from bench.denoiser import EDMPrecond
from bench.method import Artifact, BudgetError, Method
from bench.registry import register_method
from bench.nets.toynet import MLPNet
from ._common import Charged, check_finite, curve_png

__all__ = ["QLearning", "ratio_score", "q_value", "td_errors", "step_noise"]


def ratio_score(x, sigma: float, data):
    """The ratio estimator of grad log p_sigma(x) from data points ``data`` [M, d]."""
    d2 = ((x[:, None, :] - data[None].to(x.dtype)) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * sigma**2), dim=1)
    return (w @ data.to(x.dtype) - x) / sigma**2


def q_value(a, mu, sigma: float, theta: float):
    """``theta log N(a; mu, theta / sigma^2 I)`` per sample (summed over dimensions)."""
    d = a.shape[1]
    var = theta / sigma**2
    return theta * (-((a - mu) ** 2).sum(1) / (2 * var) - 0.5 * d * math.log(2 * math.pi * var))


def td_errors(j_next, j_now, a, score, mu, sigma: float, delta: float, theta: float):
    """``J(x_{k+1}) - J(x_k) + (r - q) Delta`` with ``r = -(sigma^2/2) |a - score|^2``."""
    r = -(sigma**2 / 2) * ((a - score) ** 2).sum(1)
    return j_next - j_now + (r - q_value(a, mu, sigma, theta)) * delta


def step_noise(s: float, s_next: float) -> float:
    """c_k: the state noise of the ancestral step (0 on the last step to sigma 0)."""
    return math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)


@register_method("qlearning")
class QLearning(Method):
    description = "q-learning diffusion (Gao, Zha, Zhou): entropy-regularised RL, Gaussian policy, no pretrained score"
    family = "whole learned sampler"
    needs = ("tuning",)
    has_fit = True
    fit_version = 1
    defaults = dict(rho=7.0, iters=2000, batch=256, data_batch=512, lr=1e-3, critic_lr=1e-3, theta=0.01, beta=0.0,
                    width=128, depth=3, tune_samples=5000, grad_clip=1.0, loss_limit=1e8, seed=0)

    def __init__(self, task=None, **config):
        super().__init__(task=task, **config)
        if task is not None and (len(getattr(task, "shape", ())) != 1):
            raise ValueError("qlearning runs on the toy (vector) tasks only")
        if self.config["theta"] <= 0:
            raise ValueError("qlearning's temperature theta must be positive")
        self.meta, self.net = None, None

    def describe_budget(self, nfe_budget):
        if nfe_budget < 2:
            raise BudgetError(f"NFE budget {nfe_budget} is too small for qlearning: it needs at least 2 steps")
        return dict(sampler="greedy policy, ancestral score step", steps=int(nfe_budget), nfe_formula=int(nfe_budget),
                    nfe_convention="evaluations of the learned policy-mean network")

    def _schedule(self, den, nfe_budget):
        self.describe_budget(nfe_budget)
        return [float(s) for s in sampling.karras_sigmas(int(nfe_budget), den.sigma_min, den.sigma_max,
                                                         self.config["rho"])]

    def _new_net(self, den, num_classes, seed=0):
        c = self.config
        torch.manual_seed(seed)
        return EDMPrecond(MLPNet(den.shape[0], num_classes, width=c["width"], depth=c["depth"]), shape=den.shape,
                          num_classes=num_classes, sigma_min=den.sigma_min, sigma_max=den.sigma_max,
                          sigma_data=den.sigma_data, has_uncond=False)

    def rollout(self, model, x, sig, class_labels=None, noise=None, generator=None, explore=False, record=False):
        """K ancestral score steps; with ``explore`` the action is drawn from the policy."""
        th = self.config["theta"]
        x = x.to(torch.float64)
        rec = dict(x=[x], a=[], mu=[])
        for k in range(len(sig) - 1):
            s, s_next = sig[k], sig[k + 1]
            mu = (sampling.denoise(model, x, s, class_labels) - x) / s**2
            a = mu
            if explore:
                a = mu + math.sqrt(th) / s * torch.randn(x.shape, generator=generator, dtype=torch.float64)
            if noise is not None:
                xi = noise.randn_like(x)
            else:
                xi = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            x = x + (s**2 - s_next**2) * a + step_noise(s, s_next) * xi
            if record:
                rec["x"].append(x)
                rec["a"].append(a)
                rec["mu"].append(mu)
        return (x, rec) if record else x

    def untrained(self):
        """The same settings without a training iteration."""
        return self.name, dict(self.config, iters=0)

    def fit(self, ctx):
        c = self.config
        task, den = ctx.task, ctx.denoiser
        if len(den.shape) != 1:
            raise ValueError("qlearning runs on the toy (vector) tasks only")
        g = torch.Generator().manual_seed(ctx.torch_seed(c["seed"]))
        sig = self._schedule(den, ctx.nfe_budget)
        K = len(sig) - 1
        net = self._new_net(den, task.num_classes, ctx.torch_seed(c["seed"])).train().requires_grad_(True)
        model = Charged(den, net)
        critic = disc_lib.for_shape(den.shape, den.sigma_data, width=c["width"])
        # a per-step offset, started at the policy's cumulative entropy bonus theta*H(pi) Delta (exact
        # for the constant part of J), so the network only learns the state-dependent rest
        d = den.shape[0]
        bonus = [c["theta"] * d / 2 * (1 + math.log(2 * math.pi * c["theta"] / sig[k] ** 2))
                 * (sig[k] ** 2 - sig[k + 1] ** 2) for k in range(K)]
        offset = torch.nn.Parameter(torch.tensor([sum(bonus[k:]) for k in range(K)], dtype=torch.float64))
        opt_a = torch.optim.Adam(net.parameters(), lr=c["lr"])
        opt_c = torch.optim.Adam([dict(params=critic.parameters()), dict(params=[offset], lr=10 * c["critic_lr"])],
                                 lr=c["critic_lr"])
        real, real_labels = ctx.tuning(c["tune_samples"])
        real = real.double()
        th, b = c["theta"], c["batch"]
        if c["beta"] and not hasattr(task, "log_prob"):
            raise ValueError(f"qlearning's terminal reward (beta > 0) needs the task's log-density; "
                             f"{task.name} has none")

        def J(x, k):
            if k == K:
                if not c["beta"]:
                    return torch.zeros(x.shape[0], dtype=torch.float64)
                return c["beta"] * torch.as_tensor(task.log_prob(x.detach().numpy()), dtype=torch.float64)
            return critic(x.float(), torch.full((x.shape[0],), sig[k])).double() + offset[k]

        history = []
        for it in ctx.progress_iter(range(c["iters"]), f"qlearning K={K}"):
            x = torch.randn((b, *den.shape), generator=g, dtype=torch.float64) * den.sigma_max
            labels = torch.randint(task.num_classes, (b,), generator=g) if task.num_classes else None
            with torch.no_grad():
                _, rec = self.rollout(model, x, sig, labels, generator=g, explore=True, record=True)
            data = real[torch.randint(len(real), (c["data_batch"],), generator=g)]
            deltas, loss_a, loss_c = [], 0.0, 0.0
            for k in range(K):
                s, dlt = sig[k], sig[k] ** 2 - sig[k + 1] ** 2
                xk, ak = rec["x"][k], rec["a"][k]
                with torch.no_grad():
                    score = ratio_score(xk, s, data)
                    j_next = J(rec["x"][k + 1], k + 1)
                mu = (sampling.denoise(model, xk, s, labels) - xk) / s**2
                j_now = J(xk, k)
                delta = td_errors(j_next, j_now, ak, score, mu.detach(), s, dlt, th)
                loss_c = loss_c + (delta**2).mean()  # critic only: mu enters detached
                w = s**2 / (th * dlt)
                loss_a = loss_a - (w * delta.detach() * q_value(ak, mu, s, th)).mean()
                deltas.append(delta.detach().abs().mean().item())
            check_finite("qlearning", "critic loss", loss_c, it, c["loss_limit"])
            check_finite("qlearning", "actor loss", loss_a, it, c["loss_limit"])
            opt_a.zero_grad(set_to_none=True)
            opt_c.zero_grad(set_to_none=True)
            (loss_a + loss_c).backward()  # disjoint parameters: loss_a reaches phi only, loss_c psi only
            torch.nn.utils.clip_grad_norm_(net.parameters(), c["grad_clip"])
            opt_a.step()
            opt_c.step()
            history.append(dict(iter=it, critic_loss=loss_c.item(), actor_loss=loss_a.item(),
                                abs_td=sum(deltas) / K, fit_nfe=den.rows))
        net.eval().requires_grad_(False)
        return Artifact(meta=dict(history=history, net=net.model.config, steps=K),
                        tensors={f"net.{k}": v for k, v in net.model.state_dict().items()})

    def load(self, artifact):
        self.meta = artifact.meta
        self._tensors = {k[4:]: v for k, v in artifact.tensors.items() if k.startswith("net.")}
        self.net = None

    def policy(self, denoiser):
        if self.net is None:
            net = self._new_net(denoiser, denoiser.num_classes)
            net.model.load_state_dict(self._tensors)
            self.net = net.eval().requires_grad_(False)
        return self.net

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        model = Charged(denoiser, self.policy(denoiser).to(x.device))
        return self.rollout(model, x, self._schedule(denoiser, nfe_budget), class_labels, noise=noise)

    def write_extras(self, result_path):
        if not self.meta or not self.meta.get("history"):
            return []
        path = result_path.with_suffix(".training.png")
        curve_png(path, self.meta["history"], keys=("abs_td", "critic_loss"), title="qlearning")
        return [path.name]
