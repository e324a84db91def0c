"""``ld3``: Learning to Discretize Denoising Diffusion ODEs (Tong et al., ICLR 2025).

The student is the chosen solver (``solver``) on N steps whose noise levels are learned: free
parameters xi -> softmax -> cumulative sum -> levels spaced in log sigma between the denoiser's
sigma_max and sigma_min (the end points fixed, as published), then the final step to 0. It is
trained to reproduce a many-step teacher (iPNDM on EDM's schedule, ``teacher_nfe`` = 20, in the
role of the paper's 20-NFE UniPC, which the benchmark does not have) from the same initial noise,
on ``pairs`` (noise, teacher sample) pairs, half for training, half for validation. The teacher
takes at least twice the student's NFE (``teacher_for``; 40 at NFE 20): the paper distils 4-10
steps from 20, and a teacher no finer than the student (iPNDM on EDM's schedule at NFE 20 is the
student's own start) leaves nothing to learn. The result records the teacher's NFE
(``budget_config.teacher_nfe``).

Loss: the soft loss, ``min over x'_T in B(x_T, r sigma_max) of d(student(x'_T), teacher(x_T))``
with ``r = gamma dim / NFE^2`` (gamma = 0.001): the ball is around the input noise; the minimum
is one SGD step on x'_T (learning rate 12 / NFE) projected back on the ball and kept only where
the loss fell (the published code). ``soft=false`` gives the hard loss. d is the L2 distance of
the task's ``perceptual_features`` where the task offers them (digits: the shipped classifier's
features, in LPIPS's role), else the L2 distance of the samples (the toys).

Optimisation as published: batch 2, RMSprop (lr 5e-3), gradient clipping at 1, the learning
rate times 0.8 after 5 validations without improvement, the best parameters by validation loss;
``rounds`` = 7 passes over the training pairs (~175 iterations). Not implemented: the decoupled
evaluation shift xi_c (the schedule here is an artifact any solver runs unchanged).

``init``: ``edm`` starts at EDM's rho = 7 schedule (so a student equal to the teacher has zero
loss and training only moves away where it pays); ``uniform`` at xi = 1 (uniform in log sigma,
the paper's start). Fit cost = the teacher's NFE + every student evaluation (training and
validation).
"""
import math

import torch

from bench import sampling
from bench.method import SOLVER_SPECS, objective
from bench.noise import Noise
from bench.registry import register_method

from ._schedule import ScheduleMethod


def levels(xi: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The schedule of len(xi) + 1 steps: sigma_max, ..., sigma_min spaced by softmax(xi) in log sigma, then 0."""
    u = torch.cat([xi.new_zeros(1), torch.cumsum(torch.softmax(xi, 0), 0)])
    log_s = math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max))
    return torch.cat([log_s.exp()[:-1], torch.tensor([sigma_min, 0.0], dtype=xi.dtype)])


def xi_for(sigmas: torch.Tensor) -> torch.Tensor:
    """The parameters whose ``levels`` are ``sigmas`` (a schedule from sigma_max down to sigma_min, then 0)."""
    log_s = sigmas[:-1].to(torch.float64).log()
    return torch.log((log_s[:-1] - log_s[1:]) / (log_s[0] - log_s[-1]))


def soft_start(run, loss_of, x_t, target, radius, lr):
    """One projected gradient step of the input noise inside the ball of ``radius`` around
    ``x_t``, kept per sample only where it lowered the loss."""
    x = x_t.detach().clone().requires_grad_(True)
    before = loss_of(run(x), target)
    (grad,) = torch.autograd.grad(before.sum(), x)
    moved = x_t - lr * grad
    step = moved - x_t
    norm = step.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, *[1] * (x_t.ndim - 1))
    moved = x_t + step * torch.clamp(radius / norm, max=1.0)
    with torch.no_grad():
        after = loss_of(run(moved), target)
    keep = (after < before.detach()).view(-1, *[1] * (x_t.ndim - 1))
    return torch.where(keep, moved, x_t).detach()


def l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


def distance_for(task):
    """d(a, b) per sample: L2 between the task's perceptual features if it has them, else between samples."""
    features = getattr(task, "perceptual_features", None)
    if features is None:
        return l2
    return lambda a, b: l2(features(a), features(b))


@register_method("ld3")
class LD3(ScheduleMethod):
    description = ("LD3 (Tong et al. 2025): time steps learned against an iPNDM teacher of 20 NFE (twice the "
                   "student's where that is more), soft loss, 100 pairs")
    defaults = dict(ScheduleMethod.defaults, teacher_nfe=20, pairs=100, batch=2, rounds=7, lr=5e-3,
                    gamma=0.001, soft=True, val_every=5, patience=5, init="edm", rho=7.0)
    choices = dict(ScheduleMethod.choices, init=("edm", "uniform"))

    def cost_card(self, nfe_budget):
        return dict(super().cost_card(nfe_budget), teacher_nfe=self.teacher_for(nfe_budget))

    def teacher_for(self, nfe_budget: int) -> int:
        """The teacher's NFE (iPNDM: one per step): ``teacher_nfe``, or twice the budget where that is more."""
        return max(self.config["teacher_nfe"], 2 * nfe_budget)

    def describe_budget(self, nfe_budget):
        return dict(super().describe_budget(nfe_budget), teacher_nfe=self.teacher_for(nfe_budget))

    def learn(self, ctx, steps):
        c, den = self.config, ctx.denoiser
        if steps < 2:
            raise ValueError("ld3 learns the levels between sigma_max and sigma_min: it needs at least 2 steps")
        solver, dist = SOLVER_SPECS[c["solver"]].fn, distance_for(ctx.task)
        idx = torch.arange(c["pairs"])
        x_t = Noise(ctx.seed + 1, idx, device=ctx.device).randn(den.shape, dtype=torch.float64) * den.sigma_max
        labels = ctx.task.class_labels(ctx.seed + 1, idx, ctx.device)
        teacher_levels = sampling.karras_sigmas(self.teacher_for(ctx.nfe_budget), den.sigma_min, den.sigma_max,
                                                c["rho"])
        with torch.no_grad():
            target = sampling.ipndm(den, x_t, teacher_levels.to(ctx.device), class_labels=labels)
        n_train = c["pairs"] // 2
        start = sampling.karras_sigmas(steps, den.sigma_min, den.sigma_max, c["rho"])
        xi = (xi_for(start) if c["init"] == "edm" else torch.ones(steps - 1, dtype=torch.float64))
        xi = xi.clone().requires_grad_(True)
        opt = torch.optim.RMSprop([xi], lr=c["lr"])
        radius = c["gamma"] * math.prod(den.shape) / (SOLVER_SPECS[c["solver"]].nfe(steps) ** 2) * den.sigma_max
        nfe = SOLVER_SPECS[c["solver"]].nfe(steps)

        def student(sig, x, lab):
            return solver(den, x, sig.to(x.device), class_labels=lab)

        def validate():
            with torch.no_grad():
                sig = levels(xi, den.sigma_min, den.sigma_max)
                lab = None if labels is None else labels[n_train:]
                return float(dist(student(sig, x_t[n_train:], lab), target[n_train:]).mean())

        best = (validate(), xi.detach().clone())
        history, stale, it = [dict(iteration=0, val=best[0])], 0, 0
        gen = torch.Generator().manual_seed(ctx.torch_seed())
        for _ in ctx.progress_iter(range(c["rounds"]), f"ld3 nfe={ctx.nfe_budget}"):
            order = torch.randperm(n_train, generator=gen)
            for b in range(0, n_train, c["batch"]):
                rows = order[b:b + c["batch"]]
                lab = None if labels is None else labels[rows]
                sig = levels(xi, den.sigma_min, den.sigma_max)
                x0 = x_t[rows]
                if c["soft"]:
                    x0 = soft_start(lambda x: student(sig.detach(), x, lab), dist, x0, target[rows], radius,
                                    12.0 / nfe)
                loss = dist(student(sig, x0, lab), target[rows]).mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([xi], 1.0)
                opt.step()
                it += 1
                if it % c["val_every"] == 0:
                    val = validate()
                    history.append(dict(iteration=it, val=val))
                    if val < best[0]:
                        best, stale = (val, xi.detach().clone()), 0
                    else:
                        stale += 1
                        if stale >= c["patience"]:
                            for group in opt.param_groups:
                                group["lr"] *= 0.8
                            stale = 0
        return levels(best[1], den.sigma_min, den.sigma_max).detach(), dict(
            val_loss=best[0], start_val_loss=history[0]["val"], iterations=it, validation=history,
            objective=objective(f"teacher distance (validation pairs{', from EDM' if c['init'] == 'edm' else ''})",
                                history[0]["val"], best[0]))
