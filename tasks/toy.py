"""Two-dimensional toy tasks: Gaussian mixtures and a checkerboard.

| task | data | classes |
|---|---|---|
| gmm8-v2 | 8 isotropic Gaussians, equal weights, means on a ring of radius 4/sqrt(2), std 0.5/sqrt(2) (DxMI's 8 Gaussians) | - |
| gmm25-v2 | 25 isotropic Gaussians, equal weights, means on the grid {-2,-1,0,1,2}^2, std 0.1 | - |
| gmm8-cond-v2 | gmm8, the label picks the component | 8 |
| checkerboard-v2 | uniform on the 8 dark squares of a 4x4 board covering [-2, 2]^2 | - |
| gmm8-shift-v1 | gmm8's 8 Gaussians with geometric weights w_k = 0.7^k / sum (0.30 down to 0.025), sampled with gmm8's denoisers, which learned equal weights | - |

``gmm8-shift`` asks whether a sampler can correct its denoiser's bias: the tuning and
evaluation data follow the unequal weights, the denoisers (``learned``: gmm8's network;
``exact``: gmm8's equal-weight posterior mean) do not. Besides the v2 metrics against the
shifted target, ``mode_tv`` is the total variation between the samples' mode weights (each
sample to its nearest mean) and the target's.

Metrics (v2; v1 results are not comparable): the primary ``mmd`` is the unbiased squared MMD
of all samples (10,000 per seed) against the exact target distribution, through the
closed-form kernel means of the mixture (``bench.metrics.toy.mmd_exact``; the sum of RBF
kernels at lengths 0.1, 0.3, 1, 3): no reference set, hence no reference-set noise; its
expectation is 0 for true samples. Secondary, against 10,000 reference points: the debiased
Sinkhorn divergence (``sinkhorn``), sliced W2 on every point (``sw2``), exact W2 on 2,000 points
(``w2``, kept for continuity: the ``oracle`` row shows its noise floor), k-NN precision and
recall, ``modes``, and on the Gaussian mixtures ``kl`` = KL(q || p) (k-NN entropy of the
samples, exact log-density), which replaces v1's ``nll`` (E_q[-log p] is smallest when the
samples pile on the mode centres, not when q = p).

Splits are independent draws from the true distribution under different seed
keys (``ref``: evaluation, ``tune``: tuning, ``train``: the denoiser's
training), so they are disjoint with probability one. The default denoiser
is a learned MLP with EDM preconditioning (weights in ``tasks/weights``),
because real denoisers are imperfect; ``exact`` is the closed-form posterior
mean where the mixture has one.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bench.metrics import toy as M
from bench.denoiser import Denoiser, EDMPrecond
from bench.registry import register_task
from bench.task import Task, np_rng
from bench.nets.toynet import MLPNet, load_denoiser

WEIGHTS = Path(__file__).parent / "weights"


class GMMDenoiser(Denoiser):
    """E[x0 | x_sigma] for an isotropic Gaussian mixture (float64).

    Noising adds sigma^2 I to each component's covariance; the posterior mean is
    the responsibility-weighted sum of each component's posterior mean
    ``m_k + s_k^2 / (s_k^2 + sigma^2) (x - m_k)``. With labels, the label is the
    component and the responsibilities are one-hot."""

    def __init__(self, means, stds, weights, *, conditional=False, sigma_data=1.0):
        super().__init__()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        self.logw = torch.as_tensor(weights, dtype=torch.float64).log()
        self.shape, self.sigma_data = (self.means.shape[1],), sigma_data
        self.num_classes = len(self.means) if conditional else 0
        self.has_uncond = conditional

    def forward(self, x, sigma, class_labels=None):
        x64 = x.to(torch.float64)
        var = self.stds[None, :] ** 2 + sigma.to(torch.float64)[:, None] ** 2  # [b, K]
        diff = x64[:, None, :] - self.means[None]  # [b, K, d]
        d = x64.shape[1]
        logp = self.logw[None] - 0.5 * (diff**2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var)
        resp = torch.softmax(logp, dim=1)
        if class_labels is not None:
            resp = torch.nn.functional.one_hot(class_labels.long(), len(self.means)).to(torch.float64)
        post = self.means[None] + (self.stds[None, :, None] ** 2 / var[..., None]) * diff
        return (resp[..., None] * post).sum(1).to(x.dtype)


class _Scorer:
    """A toy task's tuning score: the MMD against a fixed set, also by folds (``FitContext.score``)."""

    def __init__(self, against):
        self.against = against

    def __call__(self, x, labels):
        return self.against(x.double().numpy())

    def folds(self, x, labels, k):
        return self.against.folds(x.double().numpy(), k)


class ToyTask(Task):
    version = 3
    shape = (2,)
    default_samples = 10_000
    reference_size = 10_000
    min_samples = 6  # k-NN metrics (k = 5) need k + 1 points
    primary_metric = "mmd"
    higher_is_better = {"precision": True, "recall": True, "modes": True, "class_acc": True, "support": True}
    metric_notes = dict(
        mmd="unbiased squared MMD of all samples against the exact target distribution (closed-form kernel means; "
            "sum of RBF kernels of lengths 0.1, 0.3, 1, 3): 0 in expectation for true samples",
        sw2="sliced W2 against the reference set, every point, 1000 directions",
        w2="exact optimal-transport W2 on at most 2000 points against the reference set (its noise floor: the "
           "oracle row)",
        kl="KL(q || p): k-NN entropy of the samples (k = 5) minus their mean exact log-density",
        modes="how many mixture components hold at least a quarter of their expected share of samples within "
              "3 std of their mean (0 when no sample lands that close, even with recall high)",
        precision="share of samples inside the reference set's k-NN balls (k = 5)",
        recall="share of reference points inside the samples' k-NN balls (k = 5)")
    sigma_data = 1.0
    net_config = dict(width=128, depth=3, emb=32)

    def _split(self, split, n, seed):
        x, y = self._draw(n, np_rng(self.name, split, seed))
        return torch.as_tensor(x, dtype=torch.float32), (None if not self.num_classes else torch.as_tensor(y))

    def sample_reference(self, n, seed=0):
        return self._split("ref", n, seed)

    def sample_tuning(self, n, seed=0):
        return self._split("tune", n, seed)

    def sample_train(self, n, seed=0):
        return self._split("train", n, seed)

    def sample_true(self, noise, class_labels=None):
        """Fresh draws from the true distribution, sample i from its own stream (the oracle)."""
        return self._true(noise.child(11), class_labels)

    def build_denoiser(self):
        net = MLPNet(2, self.num_classes, **self.net_config)
        return EDMPrecond(net, shape=self.shape, num_classes=self.num_classes, sigma_data=self.sigma_data,
                          has_uncond=bool(self.num_classes))

    def weights_path(self):
        return WEIGHTS / f"{self.name}.safetensors"

    def denoisers(self):
        out = {"learned": lambda: load_denoiser(self.weights_path())}
        if self.exact_denoiser() is not None:
            out["exact"] = self.exact_denoiser
        return out

    def exact_denoiser(self):
        return None

    def target(self):
        """The true distribution as a kernel-mean object (``bench.metrics.toy``)."""
        raise TypeError(f"{type(self).__name__} must define target()")

    def metrics(self, x, labels, ref_x, ref_labels, seed=0, names=None):
        x, ref = x.double().numpy(), ref_x.double().numpy()
        fns = dict(mmd=lambda: M.mmd_exact(x, self.target()), w2=lambda: M.w2(x, ref, seed=seed),
                   sw2=lambda: M.sw2(x, ref, seed=seed))
        out = {k: f() for k, f in fns.items() if names is None or k in names}
        if names is None or {"precision", "recall"} & set(names):
            out["precision"], out["recall"] = M.precision_recall(x, ref, max_points=10_000, seed=seed)
        if names is None or set(names) - set(out):
            out.update(self.extra_metrics(x, labels))
        return out if names is None else {k: out[k] for k in names}

    def scorer(self, ref_x, ref_labels):
        """The primary metric's kernel, two-sample: unbiased MMD^2 against ``ref_x`` (the tuning
        split), its own pair term computed once; the exact target is knowledge no sampler may use."""
        return _Scorer(M.MMDAgainst(ref_x.double().numpy()))

    def protocol(self, n_samples, n_reference):
        return dict(reference=f"{self.id} split 'ref', seed 0", n_samples=n_samples, n_reference=n_reference,
                    mmd="unbiased MMD^2 against the exact target (closed-form kernel means), RBF h in 0.1,0.3,1,3",
                    w2="exact OT (POT emd) on <=2000 points each",
                    precision_recall="k-NN k=5 (Kynkaanniemi 2019) on <=10000 points",
                    kl="k-NN (k=5) Kozachenko-Leonenko entropy minus E log p")


class GMMTask(ToyTask):
    means: np.ndarray
    std: float
    weights: np.ndarray | None = None  # the data's component weights (None: equal)

    def data_weights(self) -> np.ndarray:
        K = len(self.means)
        return np.full(K, 1.0 / K) if self.weights is None else np.asarray(self.weights, np.float64)

    def _draw(self, n, rng):
        k = rng.choice(len(self.means), size=n, p=self.data_weights()) if self.weights is not None \
            else rng.integers(len(self.means), size=n)
        return self.means[k] + self.std * rng.standard_normal((n, 2)), k

    def _true(self, noise, class_labels):
        if class_labels is not None:
            k = class_labels.cpu().long()
        elif self.weights is None:
            k = (noise.rand(()) * len(self.means)).long()
        else:
            cdf = torch.as_tensor(np.cumsum(self.data_weights()), dtype=torch.float64)
            k = torch.searchsorted(cdf, noise.rand((), dtype=torch.float64)).clamp_max(len(self.means) - 1)
        m = torch.as_tensor(self.means, dtype=torch.float64)[k]
        return m + self.std * noise.randn((2,), dtype=torch.float64)

    def exact_denoiser(self):
        K = len(self.means)
        return GMMDenoiser(self.means, [self.std] * K, [1.0 / K] * K, conditional=bool(self.num_classes),
                           sigma_data=self.sigma_data)

    def log_prob(self, x):
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        logp = -0.5 * d2 / self.std**2 - np.log(2 * np.pi * self.std**2) + np.log(self.data_weights())[None]
        return np.logaddexp.reduce(logp, axis=1)

    def target(self):
        K = len(self.means)
        return M.GaussianMixture(self.means, np.full(K, self.std), self.data_weights())

    def extra_metrics(self, x, labels):
        """``kl``: KL(q || p), k-NN entropy of the samples, exact log-density.
        ``modes``: components holding at least a quarter of their expected share
        of samples within 3 std of their mean."""
        d = np.sqrt(((x[:, None, :] - self.means[None]) ** 2).sum(-1))
        nearest = d.argmin(1)
        close = d.min(1) <= 3 * self.std
        counts = np.bincount(nearest[close], minlength=len(self.means))
        out = dict(kl=M.kl(x, self.log_prob), modes=int((counts >= 0.25 * len(x) / len(self.means)).sum()))
        if self.weights is not None:
            share = np.bincount(nearest, minlength=len(self.means)) / len(x)
            out["mode_tv"] = float(0.5 * np.abs(share - self.data_weights()).sum())
        if labels is not None:
            out["class_acc"] = float((nearest == np.asarray(labels)).mean())
        return out


def _ring(k, radius):
    a = 2 * np.pi * np.arange(k) / k
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


@register_task("gmm8")
class GMM8(GMMTask):
    description = "8 Gaussians on a ring (radius 2.83, std 0.354); exact denoiser available"
    means = _ring(8, 4 / math.sqrt(2))
    std = 0.5 / math.sqrt(2)
    sigma_data = 2.0


@register_task("gmm8-shift")
class GMM8Shift(GMM8):
    description = "gmm8 with geometric weights 0.7^k, sampled with gmm8's equal-weight denoisers (bias correction)"
    version = 2
    weights = 0.7 ** np.arange(8) / (0.7 ** np.arange(8)).sum()
    metric_notes = dict(GMM8.metric_notes, mode_tv="total variation between the samples' nearest-mode shares and "
                                                    "the target weights")

    def weights_path(self):
        return WEIGHTS / "gmm8.safetensors"  # gmm8's network: it learned equal weights


@register_task("gmm25")
class GMM25(GMMTask):
    description = "25 Gaussians on a 5x5 grid (spacing 1, std 0.1); exact denoiser available"
    means = np.stack(np.meshgrid(np.arange(-2.0, 3.0), np.arange(-2.0, 3.0), indexing="ij"), -1).reshape(-1, 2)
    std = 0.1
    sigma_data = 1.4


@register_task("gmm8-cond")
class GMM8Cond(GMM8):
    description = "gmm8, class-conditional (the label picks the component); classifier-free guidance"
    num_classes = 8


@register_task("checkerboard")
class Checkerboard(ToyTask):
    description = "uniform on the 8 dark squares of a 4x4 board on [-2,2]^2; no closed-form denoiser"
    sigma_data = 1.15

    def _draw(self, n, rng):
        # Pick a dark square uniformly, then a uniform point in it.
        cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64)
        c = cells[rng.integers(len(cells), size=n)]
        return c - 2.0 + rng.random((n, 2)), None

    def target(self):
        cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64) - 2.0
        return M.BoxMixture(cells, cells + 1.0, np.full(len(cells), 1.0 / len(cells)))

    def _true(self, noise, class_labels):
        cells = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64)
        c = cells[(noise.rand(()) * len(cells)).long()]
        return c - 2.0 + noise.rand((2,), dtype=torch.float64)

    def extra_metrics(self, x, labels):
        """``support``: fraction of samples on a dark square. ``modes``: dark
        squares holding at least a quarter of their expected share."""
        inside = (np.abs(x) < 2).all(1)
        cell = np.floor(x + 2.0).clip(0, 3).astype(int)
        dark = inside & ((cell.sum(1) % 2) == 0)
        counts = np.bincount((cell[dark, 0] * 4 + cell[dark, 1]), minlength=16)
        return dict(support=float(dark.mean()), modes=int((counts >= 0.25 * len(x) / 8).sum()))
