"""``oracle``: fresh samples of the true distribution, at zero NFE.

Not a sampler: the noise floor of every metric at the task's sample size (two
independent true-sample sets are never at distance 0). A sampler whose metric
lies within the oracle's interval is indistinguishable from the data at that
sample size.
"""
from bench.method import Method
from bench.registry import register_method


@register_method("oracle")
class Oracle(Method):
    description = "true samples at NFE 0 (the metrics' noise floor; tasks with a true sampler)"
    family = "floor"
    needs = ("true_sampler",)

    def __init__(self, task=None, **config):
        super().__init__(task=task, **config)
        self.task = task

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        return self.task.sample_true(noise, class_labels).to(x.device)
