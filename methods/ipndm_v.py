"""``ipndm-v``: iPNDM with variable step sizes (Zhang & Chen 2023; diff-sampler's iPNDM-v): the
Adams-Bashforth weights of the actual steps, order 4, EDM's rho = 7 schedule."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("ipndm-v")
class IPNDMv(SolverMethod):
    description = "iPNDM-v (variable-step Adams-Bashforth up to order 4), rho=7 schedule; NFE N"
    solver = "ipndm-v"
    defaults = dict(SCHEDULE_SETTINGS, max_order=4, afs=False)
    settings = ("max_order", "afs")
