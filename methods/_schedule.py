"""Learned schedules: the shared base of the methods that learn only the time steps.

A schedule learner fits, per NFE budget, one float64 vector of noise levels (strictly
decreasing, from the denoiser's sigma_max, ending in 0) and samples it with any of the
fixed-step solvers (``--set solver=NAME``, any of ``bench.method.SOLVER_SPECS``), with the NFE counted as
for the fixed-schedule solvers: the schedule is an artifact, the solver a setting.
"""
import torch

from bench.method import SOLVER_SPECS, Artifact, Method, steps_for


def check_schedule(sigmas: torch.Tensor, steps: int, sigma_max: float) -> torch.Tensor:
    """``sigmas`` if it is a valid schedule of ``steps`` steps, else ValueError saying why."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if len(s) != steps + 1:
        raise ValueError(f"a schedule of {steps} steps has {steps + 1} noise levels, got {len(s)}")
    if not torch.isfinite(s).all() or s[-1] != 0 or not (s[:-1] > s[1:]).all():
        raise ValueError(f"a schedule must be finite, strictly decreasing and end at 0; got {s.tolist()}")
    if abs(float(s[0]) - sigma_max) > 1e-9 * sigma_max:
        raise ValueError(f"a schedule starts at the denoiser's sigma_max {sigma_max}, got {float(s[0])}")
    return s


class ScheduleMethod(Method):
    """Subclasses implement ``learn(ctx, steps) -> (sigmas, meta)``; the base fits, stores,
    checks and samples. ``solver`` picks the solver that runs the learned schedule."""
    family = "learned schedule"
    has_fit = True
    deterministic = True
    defaults = dict(solver="ipndm")
    choices = dict(solver=tuple(SOLVER_SPECS))

    def untrained(self):
        """EDM's rho schedule under the same solver: what a schedule learner starts from."""
        return SOLVER_SPECS[self.config["solver"]].classic, dict(schedule="edm", rho=self.config.get("rho", 7.0))

    def steps(self, nfe_budget: int) -> int:
        return steps_for(self.config["solver"], nfe_budget)

    def learn(self, ctx, steps: int):
        raise TypeError(f"method {self.name} defines no learn()")

    def teacher_error(self, denoiser, x, target, class_labels, sigmas) -> float:
        """RMS distance of this method's solver on ``sigmas`` from ``x`` to the teacher's ``target``:
        the objective a distilled schedule lowers. Its evaluations are not charged to the fit (a
        check, like the untrained-start probe)."""
        from bench.methods._common import unwrap
        with torch.no_grad():
            out = SOLVER_SPECS[self.config["solver"]].fn(unwrap(denoiser), x, sigmas.to(x.device),
                                                          class_labels=class_labels)
        return float(((out.double() - target.double()) ** 2).mean().sqrt())

    def fit(self, ctx):
        steps = self.steps(ctx.nfe_budget)
        sigmas, meta = self.learn(ctx, steps)
        sigmas = check_schedule(sigmas, steps, ctx.denoiser.sigma_max)
        return Artifact(meta=dict(meta, sigmas=sigmas.tolist()), tensors=dict(sigmas=sigmas))

    def load(self, artifact):
        self.sigmas = artifact.tensors["sigmas"].to(torch.float64)

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        sigmas = check_schedule(self.sigmas, self.steps(nfe_budget), denoiser.sigma_max).to(x.device)
        return SOLVER_SPECS[self.config["solver"]].fn(denoiser, x, sigmas, class_labels=class_labels, noise=noise)

    def describe_budget(self, nfe_budget):
        solver, n = self.config["solver"], self.steps(nfe_budget)
        out = dict(solver=solver, steps=n, nfe_formula=SOLVER_SPECS[solver].nfe(n))
        if getattr(self, "sigmas", None) is not None:
            out["sigmas"] = [float(s) for s in self.sigmas]
        return out
