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


# -- the fast kernel sums (float32 tiles) against float64 by the definition --------------------------

def _kernel64(a, b):
    d2 = ((a[:, None, :] - b[None]) ** 2).sum(-1)
    return sum(np.exp(-d2 / (2 * h * h)) for h in M.BANDWIDTHS)


def _float32_bound(n_row_terms, total):
    """Each kernel value is off by at most 3 |z| eps32 (its float32 exponent z, |z| <= 80 after the
    clamp) plus the float32 sum of a row of ``n_row_terms`` (Higham's n eps bound): relative to the
    total of the (positive) terms."""
    from tolerance import EPS32
    return (n_row_terms + 3 * 80) * EPS32 * total


@pytest.mark.parametrize("n,m", [(7, 5), (300, 257), (600, 1000)])
def test_kernel_sums_match_the_definition_in_float64(n, m):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 2)) * 2
    y = np.concatenate([rng.standard_normal((m - 1, 2)) * 2, [[40.0, -40.0]]])  # one far point: the exp floor
    k = _kernel64(x, x)
    want_pairs = np.triu(k, 1).sum()
    assert abs(M.pair_sums(x) - want_pairs) <= _float32_bound(n, want_pairs)
    want_rows = _kernel64(x, y).sum(1)
    got_rows = M.cross_row_sums(x, y)
    assert np.all(np.abs(got_rows - want_rows) <= _float32_bound(m, want_rows))


def test_mmd_against_a_fixed_set_is_the_unbiased_two_sample_statistic():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((400, 2)), rng.standard_normal((500, 2)) + 0.3
    kxx, kyy, kxy = _kernel64(x, x), _kernel64(y, y), _kernel64(x, y)
    want = ((kxx.sum() - np.trace(kxx)) / (400 * 399) + (kyy.sum() - np.trace(kyy)) / (500 * 499) - 2 * kxy.mean())
    scorer = M.MMDAgainst(y)
    assert scorer(x) == pytest.approx(want, abs=_float32_bound(500, 8.0))
    assert M.mmd(x, y) == scorer(x)
    full, folds = scorer.folds(x, 4)
    assert full == scorer(x) and len(folds) == 4
    for f in range(4):  # each fold is the statistic of the fold alone
        assert folds[f] == pytest.approx(scorer(x[f::4]), abs=_float32_bound(500, 8.0))


def test_exact_mmd_matches_its_definition():
    rng = np.random.default_rng(4)
    x = GMM.sample(500, rng) + 0.1
    k = _kernel64(x, x)
    pair = (k.sum() - np.trace(k)) / (500 * 499)
    cross = sum(GMM.kernel_mean(x, h).mean() for h in M.BANDWIDTHS)
    want = pair - 2 * cross + sum(GMM.kernel_self(h) for h in M.BANDWIDTHS)
    assert M.mmd_exact(x, GMM) == pytest.approx(want, abs=_float32_bound(500, 4.0))


def test_precision_recall_decides_ball_membership_exactly():
    centres = np.array([[0.0, 0.0], [3.0, 4.0]])
    x = np.array([[0.6, 0.8], [0.6, 0.8000001], [3.0, 5.0], [3.0, 9.0]])
    inside = M._inside_balls(x, centres, np.array([1.0, 1.0]))
    assert inside.tolist() == [True, False, True, False]  # |(0.6, 0.8)| = 1 exactly: inside
