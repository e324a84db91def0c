"""``unipc``: UniPC (Zhao et al., NeurIPS 2023), the order-3 UniP predictor with the UniC corrector,
B(h) = bh2, data prediction, as the few-step tables run it (UniPC's and diff-sampler's code): the
logSNR-uniform schedule and lower orders on the last steps."""
from bench.method import SCHEDULE_SETTINGS, SolverMethod
from bench.registry import register_method


@register_method("unipc")
class UniPC(SolverMethod):
    description = "UniPC-3 (bh2) predictor-corrector, logSNR schedule, lower-order final steps; NFE N"
    solver = "unipc"
    defaults = dict(SCHEDULE_SETTINGS, schedule="logsnr", max_order=3, variant="bh2", corrector=True,
                    lower_order_final=True, afs=False)
    choices = dict(SolverMethod.choices, variant=("bh1", "bh2"))
    settings = ("max_order", "variant", "corrector", "lower_order_final", "afs")
