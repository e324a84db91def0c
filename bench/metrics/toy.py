"""Sample-quality metrics on point sets (toy tasks, or features of images).

Each function takes two float arrays ``[n, d]`` (generated, reference) and
returns a float; randomness (subsampling, projections) comes from an explicit
seed so a metric is a pure function of its inputs.
"""
from __future__ import annotations

import math

import numpy as np
import ot
import scipy.linalg
import scipy.special
import torch

BANDWIDTHS = (0.1, 0.3, 1.0, 3.0)  # RBF kernel lengths of the MMD (a sum of kernels)


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


def sw2(x, y, n_projections=1000, n_quantiles=2000, seed=0) -> float:
    """Sliced Wasserstein-2: root mean over random directions of the squared 1-D
    W2 between the projections (quantiles at matched levels), on every point."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((x.shape[1], n_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    qx, qy = _quantiles(x @ theta, levels), _quantiles(y @ theta, levels)
    return float(np.sqrt(np.mean((qx - qy) ** 2)))


def _quantiles(a, levels):
    """Per column of ``a``, its quantiles at ``levels`` (linear interpolation, numpy's default
    method), from one sort: np.quantile with many levels partitions once per level."""
    a = np.sort(a, axis=0)
    pos = levels * (len(a) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(a) - 1)
    frac = (pos - lo)[:, None]
    return a[lo] * (1 - frac) + a[hi] * frac


def mmd(x, y, bandwidths=BANDWIDTHS, max_points=2000, seed=0) -> float:
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


# -- against the exact target: no reference-set noise ----------------------------------------------

class GaussianMixture:
    """Isotropic Gaussian mixture: means [K, d], stds [K], weights [K] (summing to 1)."""

    def __init__(self, means, stds, weights):
        self.means = np.asarray(means, np.float64)
        self.stds = np.broadcast_to(np.asarray(stds, np.float64), (len(self.means),))
        self.weights = np.asarray(weights, np.float64)

    def kernel_mean(self, x, h) -> np.ndarray:
        """m(x) = E_P exp(-|x - Y|^2 / (2 h^2)) = sum_k w_k (h^2/(h^2+s_k^2))^(d/2) exp(-|x-mu_k|^2 / (2(h^2+s_k^2)))."""
        d = self.means.shape[1]
        v = h * h + self.stds**2
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        return (self.weights * (h * h / v) ** (d / 2) * np.exp(-d2 / (2 * v))).sum(1)

    def kernel_self(self, h) -> float:
        """E k(Y, Y') for independent Y, Y' ~ P: sum_kk' w_k w_k' (h^2/S)^(d/2) exp(-|mu_k - mu_k'|^2 / (2 S))."""
        d = self.means.shape[1]
        S = h * h + self.stds[:, None] ** 2 + self.stds[None, :] ** 2
        d2 = ((self.means[:, None, :] - self.means[None]) ** 2).sum(-1)
        return float((np.outer(self.weights, self.weights) * (h * h / S) ** (d / 2) * np.exp(-d2 / (2 * S))).sum())

    def sample(self, n, rng) -> np.ndarray:
        k = rng.choice(len(self.means), size=n, p=self.weights)
        return self.means[k] + self.stds[k, None] * rng.standard_normal((n, self.means.shape[1]))


def _erf_antiderivative(u, s):
    """H(u) = u erf(u/s) + s/sqrt(pi) exp(-u^2/s^2): d/du H = erf(u/s)."""
    return u * scipy.special.erf(u / s) + s / math.sqrt(math.pi) * np.exp(-(u / s) ** 2)


class BoxMixture:
    """A mixture of uniform distributions on boxes: lows, highs [K, d], weights [K]."""

    def __init__(self, lows, highs, weights):
        self.lows, self.highs = np.asarray(lows, np.float64), np.asarray(highs, np.float64)
        self.weights = np.asarray(weights, np.float64)

    def kernel_mean(self, x, h) -> np.ndarray:
        """m(x) = sum_k w_k prod_j (h sqrt(pi/2) / L_j) [erf((b_j - x_j)/(sqrt2 h)) - erf((a_j - x_j)/(sqrt2 h))]."""
        a, b = self.lows[None], self.highs[None]
        xx = x[:, None, :]
        r = 2**0.5 * h
        per = h * math.sqrt(math.pi / 2) / (b - a) * (scipy.special.erf((b - xx) / r) - scipy.special.erf((a - xx) / r))
        return (self.weights * per.prod(-1)).sum(1)

    def kernel_self(self, h) -> float:
        """E k(Y, Y'): per coordinate the 1-D double integral of exp(-(u-v)^2/(2h^2)) over
        [a, b] x [c, d], h sqrt(pi/2) [H(b-c) - H(a-c) - H(b-d) + H(a-d)] / (L1 L2)."""
        s = 2**0.5 * h
        a, b = self.lows[:, None, :], self.highs[:, None, :]
        c, d = self.lows[None], self.highs[None]
        H = _erf_antiderivative
        per = h * math.sqrt(math.pi / 2) * (H(b - c, s) - H(a - c, s) - H(b - d, s) + H(a - d, s)) / ((b - a) * (d - c))
        return float((np.outer(self.weights, self.weights) * per.prod(-1)).sum())

    def sample(self, n, rng) -> np.ndarray:
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.lows[k] + (self.highs[k] - self.lows[k]) * rng.random((n, self.lows.shape[1]))


def mmd_exact(x, target, bandwidths=BANDWIDTHS, chunk=2048) -> float:
    """Unbiased squared MMD of the sample ``x`` against the distribution ``target`` itself
    (Gretton et al. 2012), with the sum of RBF kernels at ``bandwidths``:
    (1/(n(n-1))) sum_{i != j} k(x_i, x_j) - (2/n) sum_i m(x_i) + E k(Y, Y'), every term exact
    but the first; no reference set, so no reference-set noise."""
    x = np.asarray(x, np.float64)
    n = len(x)
    xt = torch.as_tensor(x)
    pair = 0.0
    for start in range(0, n, chunk):  # the pairs i < j (the kernel is symmetric), in blocks of rows
        d2 = torch.cdist(xt[start:start + chunk], xt[start:]).pow_(2)
        for h in bandwidths:
            k = torch.exp(d2 * (-0.5 / (h * h)))
            pair += float(k.sum() - k[:, :len(k)].tril().sum())  # the block's own i >= j pairs left out
    pair = 2 * pair / (n * (n - 1))
    cross = sum(float(target.kernel_mean(x, h).mean()) for h in bandwidths)
    return pair - 2 * cross + sum(target.kernel_self(h) for h in bandwidths)


def knn_entropy(x, k=5) -> float:
    """Kozachenko-Leonenko estimate of the differential entropy (nats):
    psi(n) - psi(k) + log V_d + (d/n) sum_i log eps_i, eps_i the distance to the k-th neighbour."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    eps = np.maximum(_kth_radius(x, k), 1e-300)
    log_vd = d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)
    return float(scipy.special.digamma(n) - scipy.special.digamma(k) + log_vd + d * np.log(eps).mean())


def kl(x, log_prob, k=5) -> float:
    """KL(q || p) = E_q log q - E_q log p for samples ``x`` of q: the entropy by k-NN
    (``knn_entropy``), log p exact. 0 for q = p (up to the estimator's noise), positive otherwise;
    unlike E_q[-log p], not minimised by piling samples on the modes."""
    x = np.asarray(x, np.float64)
    return float(-knn_entropy(x, k) - np.mean(log_prob(x)))


def sinkhorn(x, y, reg=0.05, max_points=2000, seed=0) -> float:
    """The debiased Sinkhorn divergence (POT's empirical_sinkhorn_divergence, squared Euclidean
    cost, entropic regularisation ``reg``, float64) between subsamples of at most ``max_points``.
    inf where the solver's kernel underflows (samples tens of units off the support), which
    POT would otherwise report as a silent 0."""
    import warnings
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(_sub(np.asarray(x, np.float64), max_points, rng))
    y = torch.as_tensor(_sub(np.asarray(y, np.float64), max_points, rng))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(ot.bregman.empirical_sinkhorn_divergence(x, y, reg, numIterMax=500, stopThr=1e-5))
    if any("numerical errors" in str(w.message).lower() for w in caught) or not math.isfinite(value):
        return math.inf
    return value


def _kth_radius(x, k) -> np.ndarray:
    """Distance from each point of ``x`` to its k-th nearest other point (a k-d tree: exact)."""
    from sklearn.neighbors import NearestNeighbors
    x = np.asarray(x, np.float64)
    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]  # column 0: the point itself


def _inside_balls(x, centres, radii, chunk=2048) -> np.ndarray:
    """For each point of ``x``: is it within ``radii[j]`` of some ``centres[j]``?"""
    c, r = torch.as_tensor(centres), torch.as_tensor(radii)
    xt = torch.as_tensor(x)
    return torch.cat([(torch.cdist(xt[s:s + chunk], c) <= r[None, :]).any(dim=1)
                      for s in range(0, len(xt), chunk)]).numpy()


def precision_recall(x, y, k=5, max_points=5000, seed=0) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the
    fraction of generated points inside the union of k-NN balls of the reference
    points; recall the converse."""
    rng = np.random.default_rng(seed)
    x = _sub(np.asarray(x, np.float64), max_points, rng)
    y = _sub(np.asarray(y, np.float64), max_points, rng)
    precision = _inside_balls(x, y, _kth_radius(y, k)).mean()
    recall = _inside_balls(y, x, _kth_radius(x, k)).mean()
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
