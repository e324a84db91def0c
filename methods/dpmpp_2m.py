"""``dpmpp-2m``: DPM-Solver++(2M) (Lu et al. 2022) on the EDM schedule."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("dpmpp-2m")
class DPMpp2M(SolverMethod):
    description = "DPM-Solver++(2M) multistep, rho=7 schedule; NFE N"
    solver = "dpmpp-2m"
    defaults = dict(SCHEDULE_SETTINGS, lower_order_final=True, afs=False)
    settings = ("lower_order_final", "afs")
