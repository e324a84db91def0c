"""``dpmpp-3m``: multistep DPM-Solver++(3M) (Lu et al. 2022), data prediction, as the few-step
tables run it (DPM-Solver's and diff-sampler's code): the logSNR-uniform schedule, lower orders on
the last steps, DPM-Solver's weight of the second difference (``--set third_order=taylor`` for the
exact Taylor weight)."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("dpmpp-3m")
class DPMpp3M(SolverMethod):
    description = "DPM-Solver++(3M) multistep, logSNR schedule, lower-order final steps; NFE N"
    solver = "dpmpp-3m"
    defaults = dict(SCHEDULE_SETTINGS, schedule="logsnr", max_order=3, lower_order_final=True, afs=False,
                    third_order="dpm-solver")
    choices = dict(SolverMethod.choices, third_order=("dpm-solver", "taylor"))
    settings = ("max_order", "lower_order_final", "afs", "third_order")
