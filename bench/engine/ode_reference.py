"""``ode_error``: how far a deterministic sampler lands from the probability-flow ODE's solution.

For a sampler that maps its initial noise to a sample without drawing more noise, the error of
the solve is measurable sample by sample, free of the sampling noise of a distribution metric:
``ode_error`` is the root mean square, over the run's first ``ODE_SAMPLES`` samples and their
dimensions, of (sample - reference), the reference being EDM's Heun with ``REF_STEPS`` steps on
the rho = 7 schedule from the same initial noise (the same ``Noise(seed, i)`` streams and labels).
The reference is solved once per (task, denoiser, seed) and cached (``ArtifactStore``, verified
by checksum); the same solve at half the steps shows its convergence: ``reference_error`` is the
RMS difference of the two, about 3 times the finer solve's own error for a second-order solver,
so the metric's floor is ``reference_error / 3`` plus float32 rounding. A sampler that draws noise
gets no value, and the result says why.
"""
from __future__ import annotations

import math
import time

import torch

from bench import sampling
from bench.engine.draw import generate
from bench.method import Artifact

REF_STEPS = 256  # NFE 511; the convergence check at 128 steps adds 255
ODE_SAMPLES = 1000
VERSION = 1  # bump to recompute every cached reference


def _heun(steps: int):
    def sample(denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        sig = sampling.karras_sigmas(steps, denoiser.sigma_min, denoiser.sigma_max, 7.0).to(x.device)
        return sampling.heun(denoiser, x, sig, class_labels=class_labels)
    return sample


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean().sqrt())


def reference(task, denoiser, denoiser_key: dict, seed: int, k: int, device, batch_size: int, store) -> tuple:
    """(the reference samples of run ``seed``'s first ``k`` noise streams, its reference_error, the
    NFE and seconds it cost when solved now: 0 when read from the cache)."""
    key = dict(method="_ode_reference", task=task.name, task_version=task.version, denoiser=denoiser_key, seed=seed,
               samples=k, steps=REF_STEPS, version=VERSION)
    cached = store.load(key)
    if cached is not None:
        artifact, _ = cached
        x = artifact.tensors.get("x")
        if x is not None and x.shape == (k, *denoiser.shape):
            return x, float(artifact.meta["reference_error"]), 0, 0.0
    t0 = time.perf_counter()
    idx = torch.arange(k)
    with torch.no_grad():
        fine, _ = generate(_heun(REF_STEPS), task, denoiser, k, seed, nfe_budget=2 * REF_STEPS - 1, device=device,
                           batch_size=batch_size, indices=idx)
        coarse, _ = generate(_heun(REF_STEPS // 2), task, denoiser, k, seed, nfe_budget=REF_STEPS - 1, device=device,
                             batch_size=batch_size, indices=idx)
    err = rms(fine, coarse)
    nfe, seconds = k * (3 * REF_STEPS - 2), time.perf_counter() - t0
    store.save(key, Artifact(meta=dict(reference_error=err), tensors=dict(x=fine)), dict(nfe=nfe, seconds=seconds))
    return fine, err, nfe, seconds


def measure(method, task, denoiser, denoiser_key: dict, seed: int, x: torch.Tensor, device, batch_size: int,
            store) -> dict:
    """The ``ode_error`` record of a result whose samples are ``x`` (all of the run's, in stream order)."""
    if not method.deterministic:
        return dict(value=None, reason=f"{method.name} draws noise while it samples: no ODE solution to compare with")
    k = min(len(x), ODE_SAMPLES)
    ref, ref_err, nfe, seconds = reference(task, denoiser, denoiser_key, seed, k, device, batch_size, store)
    value = rms(x[:k], ref)
    return dict(value=value if math.isfinite(value) else None, samples=k, reference=f"heun, {REF_STEPS} steps, rho 7",
                reference_error=ref_err, floor=ref_err / 3, reference_nfe=nfe, seconds=seconds)
