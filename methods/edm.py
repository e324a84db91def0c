"""``edm``: EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 2 with S_churn = 0)."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("edm")
class EDM(SolverMethod):
    description = "EDM Heun (deterministic), rho=7 schedule; NFE 2N-1"
    solver = "heun"
    defaults = dict(SCHEDULE_SETTINGS)
