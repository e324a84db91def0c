"""Harness overhead: sampling through the harness vs the same number of bare denoiser calls.

Run with ``python -m pytest -m perf tests/benchmarks``. The harness path is
``bench.generate`` with ``edm`` (Heun, 35 NFE): per-sample Philox noise, the
float64 state, NFE counting; the bare path calls the denoiser 35 times on a
batch of the same size. Target: at most 5% overhead.
"""
import time

import pytest
import torch

import bench
from bench.denoiser import CountingDenoiser

pytestmark = pytest.mark.perf
N, NFE = 5000, 35


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)  # two intra-op threads on a 2-core machine made the timings bimodal
    task = bench.get_task("gmm8")
    return task, task.denoiser("learned"), bench.get_method("edm", task)


def test_bare_denoiser_calls(benchmark, setup):
    task, net, _ = setup
    x = torch.randn(N, 2)
    sigma = torch.tensor(1.0).expand(N)  # as the samplers pass it: one level for the batch

    def bare():
        with torch.no_grad():
            for _ in range(NFE):
                net(x, sigma)
    benchmark.pedantic(bare, rounds=30, warmup_rounds=5)


def test_through_harness(benchmark, setup):
    task, net, method = setup
    counted = CountingDenoiser(net)

    def harness():
        counted.reset()
        with torch.no_grad():
            bench.generate(method.sample, task, counted, N, 0, nfe_budget=NFE)
        assert counted.rows == N * NFE
    benchmark.pedantic(harness, rounds=30, warmup_rounds=5)


def test_overhead_ratio_interleaved(benchmark, setup):
    """The two paths alternated in one loop, so the machine's drift hits both alike; the ratio of
    their minimum times is recorded in ``extra_info`` and held to the 5% target."""
    task, net, method = setup
    counted = CountingDenoiser(net)
    x = torch.randn(N, 2)
    sigma = torch.tensor(1.0).expand(N)
    times = {"bare": [], "harness": []}

    def both():
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(NFE):
                net(x, sigma)
            t1 = time.perf_counter()
            counted.reset()
            bench.generate(method.sample, task, counted, N, 0, nfe_budget=NFE)
            t2 = time.perf_counter()
        times["bare"].append(t1 - t0)
        times["harness"].append(t2 - t1)
    benchmark.pedantic(both, rounds=30, warmup_rounds=5)
    ratio = min(times["harness"]) / min(times["bare"])
    benchmark.extra_info.update(ratio=ratio, bare_min_s=min(times["bare"]), harness_min_s=min(times["harness"]))
    assert ratio <= 1.05, f"harness overhead {100 * (ratio - 1):.1f}% > 5%"
