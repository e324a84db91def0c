"""``gits``: Geometry-Inspired Time Scheduling (Chen et al., ICML 2024, "On the Trajectory
Regularity of ODE-based Diffusion Sampling").

A teacher, iPNDM on EDM's rho=7 schedule with ``teacher_nfe`` + 1 levels (60 NFE as published),
integrates ``teacher_samples`` fit noises; its levels are the fine grid. Jumping from grid point
i to j costs the mean over samples of ``|| x_i + (t_j - t_i) d(x_i, t_i) - x_j ||_2`` (the Euler
prediction against the teacher's point, the paper's cost; the denoiser's values at the grid
points are the teacher's own, so the costs need no further evaluation). A dynamic programme,

    V[1][i] = c(i -> end),   V[k][i] = min over j > i of c(i -> j) + coeff V[k-1][j],

with coeff = 1.15 finds the schedule of every length at once; the one the budget's solver can
run is kept and run with that solver (searched with Euler and reused unchanged for the others,
as in the published code). Fit cost = the teacher's NFE. No data needed.
"""
import torch

from bench import sampling
from bench.method import objective
from bench.registry import register_method

from ._schedule import ScheduleMethod


def gits_programme(cost: torch.Tensor, steps: int, coeff: float = 1.15) -> list[int]:
    """The path 0 = p_0 < p_1 < ... < p_steps = G through a (G+1) x (G+1) jump ``cost``
    (entries with j <= i unused) minimising sum_m coeff^m cost[p_m, p_(m+1)]."""
    g = cost.shape[0] - 1
    if not 1 <= steps <= g:
        raise ValueError(f"a grid of {g} intervals holds schedules of 1 to {g} steps, not {steps}")
    cost = cost.to(torch.float64)
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    value = cost[:, g].clone()  # V[1][i]: one jump to the end
    value[g] = inf
    choice = []  # choice[k-2][i]: the best next point from i with k jumps left
    for _ in range(2, steps + 1):
        new, nxt = torch.full((g + 1,), inf, dtype=torch.float64), torch.zeros(g + 1, dtype=torch.long)
        for i in range(g):
            total = cost[i, i + 1:g] + coeff * value[i + 1:g]
            if len(total):
                j = int(torch.argmin(total))
                new[i], nxt[i] = total[j], i + 1 + j
        value = new
        choice.append(nxt)
    path = [0]
    for nxt in reversed(choice):
        path.append(int(nxt[path[-1]]))
    return path + [g]


def jump_costs(xs: torch.Tensor, ds: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """cost[i, j] = mean_n || xs[i] + (t[j] - t[i]) ds[i] - xs[j] || for i < j (else inf);
    ``xs`` the teacher's states (G+1, N, ...), ``ds`` its ODE derivatives at the first G."""
    g, n = len(t) - 1, xs.shape[1]
    flat_x, flat_d = xs.reshape(g + 1, n, -1), ds.reshape(g, n, -1)
    cost = torch.full((g + 1, g + 1), float("inf"), dtype=torch.float64)
    for i in range(g):
        pred = flat_x[i][None] + (t[i + 1:] - t[i])[:, None, None] * flat_d[i][None]
        cost[i, i + 1:] = (pred - flat_x[i + 1:]).norm(dim=-1).mean(dim=1)
    return cost


@register_method("gits")
class GITS(ScheduleMethod):
    description = "GITS (Chen et al. 2024): time steps by dynamic programming over an iPNDM teacher's trajectories"
    defaults = dict(ScheduleMethod.defaults, teacher_nfe=60, teacher_samples=256, coeff=1.15, rho=7.0)

    def cost_card(self, nfe_budget):
        return dict(super().cost_card(nfe_budget), teacher_nfe=self.config["teacher_nfe"])

    def learn(self, ctx, steps):
        c, den = self.config, ctx.denoiser
        t = sampling.karras_sigmas(c["teacher_nfe"], den.sigma_min, den.sigma_max, c["rho"])
        xs, ds = [], []

        def record(step):
            xs.append(step["x"])
            ds.append((step["x"] - step["denoised"]) / step["sigma"])

        labels = []

        def teacher(denoiser, x, *, nfe_budget, class_labels=None, noise=None):
            labels.append(class_labels)
            out = sampling.ipndm(denoiser, x, t.to(x.device), class_labels=class_labels, callback=record)
            xs.append(out)
            return out

        ctx.generate(teacher, c["teacher_samples"])
        if len(xs) != len(t):
            raise ValueError(f"gits records the teacher in one batch; raise --batch-size above "
                             f"{c['teacher_samples']}")
        cost = jump_costs(torch.stack(xs).cpu(), torch.stack(ds).cpu(), t)
        path = gits_programme(cost, steps, c["coeff"])
        start = sampling.karras_sigmas(steps, den.sigma_min, den.sigma_max, c["rho"])
        errors = [self.teacher_error(den, xs[0], xs[-1], labels[0], sig) for sig in (start, t[path])]
        return t[path], dict(grid_points=path, teacher_nfe=c["teacher_nfe"] * c["teacher_samples"],
                             objective=objective("teacher error (RMS, the teacher's noise)", *errors))
