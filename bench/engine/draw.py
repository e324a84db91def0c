"""Drawing samples: every sample from its own noise stream, so any batch split gives the same ones."""
from __future__ import annotations

import torch

from bench.noise import Noise


def generate(sample_fn, task, denoiser, n: int, seed: int, *, nfe_budget: int, device="cpu",
             batch_size: int = 10_000, indices=None):
    """Draw samples ``indices`` (default 0..n-1) of run ``seed``: each starts from its
    own stream ``Noise(seed, i)``. Returns (x float32 on the CPU, labels or None)."""
    indices = torch.arange(n) if indices is None else indices
    xs, ls = [], []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        noise = Noise(seed, chunk, device=device)
        x = noise.randn(denoiser.shape, dtype=torch.float64) * denoiser.sigma_max
        labels = task.class_labels(seed, chunk, device)
        out = sample_fn(denoiser, x, nfe_budget=nfe_budget, class_labels=labels, noise=noise)
        xs.append(out.detach().to(torch.float32).cpu())
        ls.append(None if labels is None else labels.cpu())
    x = torch.cat(xs) if xs else torch.empty(0, *denoiser.shape)
    return x, (None if not ls or ls[0] is None else torch.cat(ls))
