"""``deis``: DEIS-tAB3 (Zhang & Chen, ICLR 2023), Adams-Bashforth on the noise prediction in the VP
time t with exactly integrated weights, as the few-step tables run it (diff-sampler's code): the
time-quadratic schedule (time-uniform, time_rho = 2), a cubic through the last 4 levels."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("deis")
class DEIS(SolverMethod):
    description = "DEIS-tAB3 (cubic in VP time), time-quadratic schedule; NFE N"
    solver = "deis"
    defaults = dict(SCHEDULE_SETTINGS, schedule="time-uniform", time_rho=2.0, max_order=4, afs=False)
    settings = ("max_order", "afs")
