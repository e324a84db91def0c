"""``edm-sde``: EDM's stochastic Heun sampler at hand-tuned churn settings.

Presets are EDM's published Table 5 settings where the task has them; the
default (used on tasks without a preset, the toys among them) is EDM's
ImageNet-64 setting for EDM-trained networks, the widest churn window of the
table, chosen without looking at any toy result.
"""
from bench.method import SolverMethod
from bench.registry import register_method


@register_method("edm-sde")
class EDMSDE(SolverMethod):
    description = "EDM stochastic Heun (churn) at EDM's published settings; NFE 2N-1"
    deterministic = False  # draws noise while it samples
    solver = "heun"
    settings = ("s_churn", "s_tmin", "s_tmax", "s_noise")
    defaults = dict(rho=7.0, s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)
    presets = {
        "cifar10": dict(s_churn=30.0, s_tmin=0.01, s_tmax=1.0, s_noise=1.007),
        "cifar10-cond": dict(s_churn=30.0, s_tmin=0.01, s_tmax=1.0, s_noise=1.007),
        "imagenet64": dict(s_churn=80.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003),
    }
