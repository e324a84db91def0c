"""``art-rl``: adaptive reparameterised time by reinforcement learning (ART / ART-RL, Huang, Tang
and Zhou 2026, arXiv 2601.18681 and 2607.02137), in discrete time.

Diffusion time tau runs over [0, 1] from sigma_max to sigma_min, uniformly in log sigma, so the
probability-flow field is ``F(x, tau) = log(sigma_min / sigma_max) (x - D(x, sigma(tau)))``. A
sampling clock of K = steps - 1 ticks of length h = 1/K has the clock speed theta as its control:
``tau += theta h``, ``x += theta h F`` (Euler), and the budget ``sum theta h = 1`` (psi(T) = T).
One Euler step's error is about ``(h^2 / 2) theta^2 Q`` with Q the norm of the trajectory's second
derivative, measured in variance-preserving scale ``y = x / sqrt(sigma^2 + sigma_data^2)`` (ART
is posed on a VP diffusion; in EDM's exploding scale the norm follows the state's size): one
Jacobian-vector product of dy/dtau along (F, 1), counted as the network evaluation it is (a step
costs 2: the field and its JVP).

ART-RL's randomised companion: a Gaussian policy ``theta ~ N(mu_k, lam / max(Q, q_floor))`` (the
mean per clock tick; the variance the paper's lambda / |Q|), reward per tick
``-(h^2/2) theta^2 Q - gamma theta h``, actor-critic with a per-tick value baseline (the discrete
counterpart of the martingale identities: the advantage is the return to go minus V_k), and the
Lagrange multiplier ``gamma <- gamma + lr_gamma (sum theta h - 1)``, scaled by the batch's mean
h Q so one learning rate serves every task. The mean starts at EDM's rho = 7 schedule.
After training the sampled clock speeds of the last ``average`` iterations are averaged into one
fixed schedule (normalised to the budget): no inference overhead, run by any solver. No data
is used. Fit cost = every field evaluation and every JVP.

In training each tick's interval is crossed in ``substeps`` Euler sub-steps (Q evaluated at each,
the tick's cost their mean): with Q taken only where a tick starts, the policy learned to leap
across the region where the trajectories bend (gmm8, NFE 10, iPNDM: MMD 1.7 against EDM's 0.0022);
with 4 sub-steps it gives 0.0014. Defaults (``iters`` 100 of ``batch`` 32 trajectories, Adam at lr
0.05 on the softmax logits of the mean speeds, so the mean is always on budget and the multiplier
only corrects the drift of exploration) were set on gmm8 at NFE 5 and 10, seed 0.
"""
import math

import torch

from bench import sampling
from bench.method import objective
from bench.noise import Noise
from bench.registry import register_method

from ._schedule import ScheduleMethod


def field(denoiser, x, tau, labels):
    """The probability-flow ODE's dx/dtau, tau in [0, 1] uniform in log sigma (per-sample tau)."""
    c = math.log(denoiser.sigma_min / denoiser.sigma_max)
    sigma = torch.exp(math.log(denoiser.sigma_max) + tau.clamp(0, 1) * c)
    return c * (x - sampling.denoise(denoiser, x, sigma, labels))


def stiffness(denoiser, x, tau, labels):
    """(F, Q): the field and, per sample, the norm of the second tau-derivative of the trajectory in
    variance-preserving scale, y = x / sqrt(sigma^2 + sigma_data^2) (2 evaluations: F and one JVP).
    In EDM's variance-exploding state the norm would grow with sigma and the surrogate would spend
    the budget where the state is large, not where the error matters."""
    c = math.log(denoiser.sigma_min / denoiser.sigma_max)
    sd2 = denoiser.sigma_data ** 2

    def velocity(y_x, t):  # dy/dtau at state x
        sigma = torch.exp(math.log(denoiser.sigma_max) + t.clamp(0, 1) * c)
        s = (sigma ** 2 + sd2).sqrt().view(-1, *[1] * (y_x.ndim - 1))
        ds = (c * sigma ** 2).view_as(s) / s  # ds/dtau, with dsigma/dtau = c sigma
        return (field(denoiser, y_x, t, labels) * s - y_x * ds) / s ** 2

    f = field(denoiser, x, tau, labels)
    _, acc = torch.func.jvp(velocity, (x, tau), (f, torch.ones_like(tau)))
    return f, acc.flatten(1).norm(dim=1)


def schedule_from_speeds(theta: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The levels of clock speeds ``theta`` (one per tick, positive), normalised to the budget, then 0."""
    tau = torch.cat([theta.new_zeros(1), torch.cumsum(theta / theta.sum(), 0)])
    s = torch.exp(math.log(sigma_max) + tau * math.log(sigma_min / sigma_max))
    s[0], s[-1] = sigma_max, sigma_min
    return torch.cat([s, s.new_zeros(1)])


@register_method("art-rl")
class ARTRL(ScheduleMethod):
    description = "ART-RL (Huang et al. 2026): clock speed by Gaussian-policy actor-critic on an Euler-error surrogate (JVPs)"
    defaults = dict(ScheduleMethod.defaults, iters=100, batch=32, substeps=4, lam=0.5, q_floor=1e-3, lr=0.05, lr_gamma=1.0,
                    min_speed=0.02, average=20, rho=7.0)

    def learn(self, ctx, steps):
        c, den = self.config, ctx.denoiser
        if steps < 2:
            raise ValueError("art-rl controls the clock between sigma_max and sigma_min: it needs at least 2 steps")
        k_ticks, h = steps - 1, 1.0 / (steps - 1)
        edm = sampling.karras_sigmas(steps, den.sigma_min, den.sigma_max, c["rho"])[:-1]
        edm_tau = torch.log(edm / den.sigma_max) / math.log(den.sigma_min / den.sigma_max)
        start = (edm_tau[1:] - edm_tau[:-1]) / h  # EDM's clock speeds
        raw = torch.log(start).clone().requires_grad_(True)  # mean speeds K softmax(raw): on budget
        opt = torch.optim.Adam([raw], lr=c["lr"])
        value = torch.zeros(k_ticks, dtype=torch.float64)
        gamma, kept, history = 0.0, [], []
        idx = torch.arange(c["batch"])
        for it in ctx.progress_iter(range(c["iters"]), f"art-rl nfe={ctx.nfe_budget}"):
            seed = ctx.seed + 1 + it
            x = Noise(seed, idx, device=ctx.device).randn(den.shape, dtype=torch.float64) * den.sigma_max
            labels = ctx.task.class_labels(seed, idx, ctx.device)
            tau = torch.zeros(len(idx), dtype=torch.float64, device=ctx.device)
            mu = k_ticks * torch.softmax(raw, 0)
            logp, rewards, speeds, scale = [], [], [], []
            gen = torch.Generator().manual_seed(ctx.torch_seed(it))
            for k in range(k_ticks):
                with torch.no_grad():
                    f, q = stiffness(den, x, tau, labels)
                q = q.cpu().clamp_min(c["q_floor"])
                std = (c["lam"] / q).sqrt()
                theta = (mu[k] + std * torch.randn(len(idx), generator=gen, dtype=torch.float64)).detach()
                logp.append(-0.5 * ((theta - mu[k]) / std) ** 2)  # log N(theta; mu_k, std^2), up to constants
                speed = theta.clamp_min(c["min_speed"])
                dt = (speed * h / c["substeps"]).to(x.device)
                q_tick = q / c["substeps"]
                for sub in range(c["substeps"]):  # the clock ticks through the interval: its cost is Q's mean
                    if sub:
                        with torch.no_grad():
                            f, q_sub = stiffness(den, x, tau, labels)
                        q_tick = q_tick + q_sub.cpu() / c["substeps"]
                    x = x + dt.view(-1, *[1] * (x.ndim - 1)) * f
                    tau = tau + dt
                rewards.append(-(h ** 2 / 2) * speed ** 2 * q_tick - gamma * speed * h)
                speeds.append(speed)
                scale.append(h * q_tick.mean())
            r = torch.stack(rewards)  # (K, batch)
            to_go = r.flip(0).cumsum(0).flip(0)
            adv = to_go - value[:, None]
            adv = adv / adv.std(dim=1, keepdim=True).clamp_min(1e-12)  # per tick: ticks differ by orders of magnitude
            loss = -(torch.stack(logp) * adv).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            value += 0.5 * (to_go.mean(1) - value)
            total = torch.stack(speeds).sum(0) * h  # psi(T) per trajectory
            gamma += c["lr_gamma"] * float(torch.stack(scale).mean()) * float(total.mean() - 1)
            history.append(dict(iteration=it, return_=float(to_go[0].mean()), budget=float(total.mean()),
                                gamma=gamma))
            if it >= c["iters"] - c["average"]:
                kept.append(torch.stack(speeds).mean(1))
        theta = torch.stack(kept).mean(0) if kept else start
        sigmas = schedule_from_speeds(theta, den.sigma_min, den.sigma_max)
        tail = [h["return_"] for h in history[-max(1, c["average"]):]]
        aim = objective("return (first iteration; mean of the averaged last ones)", history[0]["return_"],
                        sum(tail) / len(tail), higher_is_better=True) if history else None
        return sigmas, dict(mean_speed=theta.tolist(), gamma=gamma, history=history[::10], objective=aim)
