"""A benchmark suite for diffusion-sampler learning.

    import bench
    results = bench.run("edm", "gmm8", nfe=[10, 35], seeds=[0, 1, 2])
"""
from bench.registry import register_method, register_task
from bench.runner import generate, get_method, get_task, run

__all__ = ["register_method", "register_task", "get_task", "get_method", "run", "generate"]
