"""Protocol v2's toy metrics: the closed-form MMD against the exact target checked by Monte Carlo,
the k-NN KL estimate on true and perturbed samples."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics import toy as M

GMM = M.GaussianMixture(np.array([[0.0, 0.0], [2.0, 1.0], [-1.0, 2.5]]), np.array([0.3, 0.5, 0.2]),
                        np.array([0.5, 0.3, 0.2]))
BOXES = M.BoxMixture(np.array([[-2.0, -2.0], [0.0, 0.0], [0.5, -1.0]]), np.array([[-1.0, -1.5], [1.0, 1.0], [2.0, 1.0]]),
                     np.array([0.25, 0.25, 0.5]))
N_MC = 10**6


@pytest.mark.parametrize("target", [GMM, BOXES], ids=["gaussian-mixture", "boxes"])
@pytest.mark.parametrize("h", M.BANDWIDTHS)
def test_kernel_means_match_monte_carlo(target, h):
    rng = np.random.default_rng(0)
    y = target.sample(N_MC, rng)
    x = np.array([[0.0, 0.0], [1.0, 1.0], [-1.5, -1.8], [2.2, 0.6], [0.7, 0.2]])  # where P has mass: Monte Carlo sees it
    k = np.exp(-((x[:, None, :] - y[None]) ** 2).sum(-1) / (2 * h * h))  # [5, N]
    mc, se = k.mean(1), k.std(1) / math.sqrt(N_MC)
    assert np.all(np.abs(target.kernel_mean(x, h) - mc) <= 4 * se + 1e-12), (target.kernel_mean(x, h), mc, se)
    y2 = target.sample(N_MC, rng)
    kk = np.exp(-((y - y2) ** 2).sum(-1) / (2 * h * h))
    assert abs(target.kernel_self(h) - kk.mean()) <= 4 * kk.std() / math.sqrt(N_MC)


@pytest.mark.parametrize("target", [GMM, BOXES], ids=["gaussian-mixture", "boxes"])
def test_exact_mmd_is_unbiased_and_separates(target):
    rng = np.random.default_rng(1)
    vals = [M.mmd_exact(target.sample(1000, rng), target) for _ in range(20)]
    assert abs(np.mean(vals)) <= 4 * np.std(vals) / math.sqrt(len(vals))  # E = 0 for true samples
    shifted = target.sample(1000, rng) + 0.2
    assert M.mmd_exact(shifted, target) > max(vals)
    # agrees with the two-sample estimator against many true samples (its reference noise is small)
    x = target.sample(2000, rng)
    two = M.mmd(x + 0.2, target.sample(2000, rng), max_points=2000)
    assert M.mmd_exact(x + 0.2, target) == pytest.approx(two, rel=0.2)


def test_kl_is_near_zero_for_true_samples_and_grows_under_perturbation():
    rng = np.random.default_rng(2)
    gmm = M.GaussianMixture(np.array([[-3.0, 0.0], [3.0, 0.0]]), np.array([0.5, 0.5]), np.array([0.5, 0.5]))

    def log_prob(x):
        d2 = ((x[:, None, :] - gmm.means[None]) ** 2).sum(-1)
        return np.logaddexp.reduce(np.log(0.5) - d2 / (2 * 0.25) - np.log(2 * np.pi * 0.25), axis=1)
    true = [M.kl(gmm.sample(10_000, rng), log_prob) for _ in range(3)]
    assert all(abs(v) < 0.03 for v in true), true
    narrow = M.GaussianMixture(gmm.means, gmm.stds * 0.8, gmm.weights)
    # KL(N(0, (0.8 s)^2 I) || N(0, s^2 I)) in 2-D, per well-separated component
    want = 2 * (0.8**2 / 2 - 0.5 - math.log(0.8))
    got = M.kl(narrow.sample(10_000, rng), log_prob)
    assert got == pytest.approx(want, abs=0.03) and got > max(true) + 0.04
