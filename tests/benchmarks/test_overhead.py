"""Harness overhead: sampling through the harness vs the same number of bare denoiser calls.

Run with ``python -m pytest -m perf tests/benchmarks``. The harness path is
``bench.generate`` with ``edm`` (Heun, 35 NFE): per-sample Philox noise, the
float64 state, NFE counting; the bare path calls the denoiser 35 times on a
batch of the same size. Target: at most 5% overhead.
"""
import pytest
import torch

import bench
from bench.denoiser import CountingDenoiser

pytestmark = pytest.mark.perf
N, NFE = 5000, 35


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
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
