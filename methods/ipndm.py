"""``ipndm``: improved PNDM (Zhang & Chen 2023), 4th-order Adams-Bashforth with warm-up."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("ipndm")
class IPNDM(SolverMethod):
    description = "iPNDM (Adams-Bashforth up to order 4), rho=7 schedule; NFE N"
    solver = "ipndm"
    defaults = dict(SCHEDULE_SETTINGS, max_order=4, afs=False)
    settings = ("max_order", "afs")
