"""``euler``: Euler on the probability-flow ODE (DDIM in the EDM parameterisation)."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("euler")
class Euler(SolverMethod):
    description = "Euler / DDIM on the probability-flow ODE, rho=7 schedule; NFE N"
    solver = "euler"
    defaults = dict(SCHEDULE_SETTINGS)
