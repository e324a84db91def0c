"""Sample-quality metrics on point sets (toy tasks, or features of images).

Each function takes two float arrays ``[n, d]`` (generated, reference) and
returns a float; randomness (subsampling, projections) comes from an explicit
seed so a metric is a pure function of its inputs.
"""
from __future__ import annotations

import numpy as np
import ot
import scipy.linalg
import torch


def _sub(x, n, rng):
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def w2(x, y, max_points=2000, seed=0) -> float:
    """Wasserstein-2 by exact optimal transport (POT's network simplex) between
    uniform weights on subsamples of at most ``max_points`` each."""
    rng = np.random.default_rng(seed)
    x, y = _sub(np.asarray(x, np.float64), max_points, rng), _sub(np.asarray(y, np.float64), max_points, rng)
    cost = ot.dist(x, y, metric="sqeuclidean")
    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    return float(np.sqrt(ot.emd2(a, b, cost, numItermax=10_000_000)))


def sw2(x, y, n_projections=256, seed=0) -> float:
    """Sliced Wasserstein-2: root mean over random directions of the squared 1-D
    W2 between the projections (quantiles at matched levels)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((x.shape[1], n_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    levels = (np.arange(1000) + 0.5) / 1000
    qx = np.quantile(x @ theta, levels, axis=0)
    qy = np.quantile(y @ theta, levels, axis=0)
    return float(np.sqrt(np.mean((qx - qy) ** 2)))


def mmd(x, y, bandwidths=(0.1, 0.3, 1.0, 3.0), max_points=2000, seed=0) -> float:
    """Unbiased squared MMD with a sum of RBF kernels exp(-|a-b|^2 / (2 h^2))."""
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(_sub(np.asarray(x, np.float64), max_points, rng))
    y = torch.as_tensor(_sub(np.asarray(y, np.float64), max_points, rng))

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def _kth_radius(x, k):
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(x, y, k=5, max_points=5000, seed=0) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the
    fraction of generated points inside the union of k-NN balls of the reference
    points; recall the converse."""
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(_sub(np.asarray(x, np.float64), max_points, rng))
    y = torch.as_tensor(_sub(np.asarray(y, np.float64), max_points, rng))
    rx, ry = _kth_radius(x, k), _kth_radius(y, k)
    precision = (torch.cdist(x, y) <= ry[None, :]).any(dim=1).double().mean()
    recall = (torch.cdist(y, x) <= rx[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_stats(f) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(f, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)
