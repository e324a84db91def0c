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


# -- kernel sums: the MMD's cost ----------------------------------------------------------------
# Squared distances come from coordinate differences (not |a|^2 + |b|^2 - 2ab, which cancels for
# close pairs) and kernels are evaluated in float32 tiles, summed in float64: a kernel value is off
# by a few float32 ulps (~1e-7 relative), so a normalised sum by ~1e-7 absolute, far below the
# metric's floor (3e-5 on gmm8). Exponents are clamped at -80: below exp(-80) = 2e-35 the CPU's
# exp leaves its fast path for denormals (20x slower) while the clamped terms add < 1e-26.
EXP_FLOOR = -80.0
TILE = 256  # rows per tile: a tile of 256 x 10,000 float32 stays in cache


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)] squared distances from coordinate differences (float32)."""
    if a.shape[1] > 8:  # feature spaces: the matmul form, its cancellation harmless at those scales
        return torch.cdist(a, b).square_()
    d2 = (a[:, :1] - b[:, 0][None]).square_()
    for j in range(1, a.shape[1]):
        d2 += (a[:, j:j + 1] - b[:, j][None]).square_()
    return d2


def _kernel_tile_sums(d2: torch.Tensor, bandwidths, own: int = 0) -> torch.Tensor:
    """Per row of the tile, the sum over bandwidths h of exp(-d2 / (2 h^2)) (float64); with ``own``
    > 0 the tile's first ``own`` columns are its own rows (a diagonal block) and only the pairs
    above the diagonal count."""
    e = torch.empty_like(d2)
    rows = torch.zeros(len(d2), dtype=torch.float64)
    for h in bandwidths:
        torch.mul(d2, -0.5 / (h * h), out=e)
        e.clamp_min_(EXP_FLOOR).exp_()
        if own:
            e[:, :own].triu_(1)
        rows += e.sum(1)  # float32 sums of one row: ~1e-7 relative, as the kernel values
    return rows


def pair_sums(x, bandwidths=BANDWIDTHS) -> float:
    """Sum over pairs i < j and over bandwidths h of exp(-|x_i - x_j|^2 / (2 h^2))."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    total = 0.0
    for s in range(0, len(xt), TILE):
        a = xt[s:s + TILE]
        total += float(_kernel_tile_sums(_sq_dists(a, xt[s:]), bandwidths, own=len(a)).sum())
    return total


def cross_row_sums(x, y, bandwidths=BANDWIDTHS) -> np.ndarray:
    """Per point x_i, the sum over j and over bandwidths h of exp(-|x_i - y_j|^2 / (2 h^2))."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    return torch.cat([_kernel_tile_sums(_sq_dists(xt[s:s + TILE], yt), bandwidths)
                      for s in range(0, len(xt), TILE)]).numpy()


def mmd(x, y, bandwidths=BANDWIDTHS, max_points=None, seed=0) -> float:
    """Unbiased squared MMD (Gretton et al. 2012) between samples ``x`` and ``y`` with the sum of RBF
    kernels exp(-|a-b|^2 / (2 h^2)) at ``bandwidths``; subsamples of ``max_points`` when given."""
    if max_points is not None:
        rng = np.random.default_rng(seed)
        x, y = _sub(np.asarray(x), max_points, rng), _sub(np.asarray(y), max_points, rng)
    return MMDAgainst(y, bandwidths)(x)


class MMDAgainst:
    """The unbiased squared MMD of samples against a fixed set ``y`` (a method's tuning split): the
    set's own pair term is computed once, so each score costs only the sample's pairs and the
    cross pairs."""

    def __init__(self, y, bandwidths=BANDWIDTHS):
        self.y = np.asarray(y, np.float64)
        self.bandwidths = tuple(bandwidths)
        m = len(self.y)
        if m < 2:
            raise ValueError(f"the MMD needs at least 2 reference points, got {m}")
        self.self_term = 2 * pair_sums(self.y, self.bandwidths) / (m * (m - 1))

    def _score(self, x, cross_rows) -> float:
        n = len(x)
        if n < 2:
            raise ValueError(f"the MMD needs at least 2 samples, got {n}")
        pair = 2 * pair_sums(x, self.bandwidths) / (n * (n - 1))
        return pair + self.self_term - 2 * float(cross_rows.sum()) / (n * len(self.y))

    def __call__(self, x) -> float:
        x = np.asarray(x, np.float64)
        return self._score(x, cross_row_sums(x, self.y, self.bandwidths))

    def folds(self, x, k: int) -> tuple[float, list[float]]:
        """The score of ``x`` and of its ``k`` folds ``x[f::k]``, the cross pairs computed once."""
        x = np.asarray(x, np.float64)
        rows = cross_row_sums(x, self.y, self.bandwidths)
        return self._score(x, rows), [self._score(x[f::k], rows[f::k]) for f in range(k)]


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


def mmd_exact(x, target, bandwidths=BANDWIDTHS) -> float:
    """Unbiased squared MMD of the sample ``x`` against the distribution ``target`` itself
    (Gretton et al. 2012), with the sum of RBF kernels at ``bandwidths``:
    (1/(n(n-1))) sum_{i != j} k(x_i, x_j) - (2/n) sum_i m(x_i) + E k(Y, Y'), every term exact
    but the first; no reference set, so no reference-set noise."""
    x = np.asarray(x, np.float64)
    n = len(x)
    pair = 2 * pair_sums(x, bandwidths) / (n * (n - 1))
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


def _kth_radius(x, k) -> np.ndarray:
    """Distance from each point of ``x`` to its k-th nearest other point (a k-d tree: exact)."""
    from sklearn.neighbors import NearestNeighbors
    x = np.asarray(x, np.float64)
    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]  # column 0: the point itself


def _inside_balls(x, centres, radii) -> np.ndarray:
    """For each point of ``x``: is it within ``radii[j]`` of some ``centres[j]``? (float64 squared
    distances from coordinate differences, in tiles, so a boundary point is decided exactly.)"""
    xt, c = torch.as_tensor(np.asarray(x, np.float64)), torch.as_tensor(np.asarray(centres, np.float64))
    r2 = torch.as_tensor(np.asarray(radii, np.float64)).square()[None, :]
    out = []
    for s in range(0, len(xt), TILE):
        a = xt[s:s + TILE]
        d2 = (a[:, :1] - c[:, 0][None]).square_()
        for j in range(1, a.shape[1]):
            d2 += (a[:, j:j + 1] - c[:, j][None]).square_()
        out.append((d2 <= r2).any(dim=1))
    return torch.cat(out).numpy()


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
