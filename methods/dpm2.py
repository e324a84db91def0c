"""``dpm2``: DPM-Solver-2 (Lu et al. 2022), single-step second order with the midpoint in lambda
(r = 1/2), EDM's rho = 7 schedule, as the few-step tables run it."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("dpm2")
class DPM2(SolverMethod):
    description = "DPM-Solver-2 (single step, midpoint in log sigma), rho=7 schedule; NFE 2N-1"
    solver = "dpm2"
    defaults = dict(SCHEDULE_SETTINGS, r=0.5)
    settings = ("r",)
