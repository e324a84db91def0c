"""Sampling core: noise schedules and solvers, in the style of k-diffusion.

Every solver is a pure function with one signature::

    solver(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, **settings) -> x0

``x`` is the initial state already at noise level ``sigmas[0]`` (``randn * sigma_max``);
``sigmas`` the decreasing noise levels ending in 0 (the schedule is separate
from the solver); ``noise`` a :class:`bench.noise.Noise` (per-sample streams)
or None for ``torch.randn_like``; ``callback`` receives a dict with ``i``,
``x``, ``sigma``, ``sigma_hat`` and ``denoised`` after every denoiser call
that completes a step. Following EDM, the state and the update are kept in
float64; the denoiser sees float32. Nothing here disables autograd.
"""
from __future__ import annotations

import math

import torch


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu"):
    """EDM time steps (Karras et al. 2022, eq. 5): ``num_steps`` levels from
    sigma_max to sigma_min spaced uniformly in sigma^(1/rho), then 0. float64."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    if num_steps == 1:
        t = torch.tensor([sigma_max], dtype=torch.float64, device=device)
    else:
        t = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64, device=device)])


def denoise(denoiser, x, sigma, class_labels=None):
    """D(x, sigma) on a float64 state, the helper for writing samplers: the denoiser sees float32
    (EDM's convention), the result comes back as float64; ``sigma`` is a number or a per-sample
    tensor. Each call is one counted denoiser evaluation per sample."""
    s = torch.as_tensor(sigma, dtype=torch.float64).to(x.device)
    s = s.expand(x.shape[0]) if s.ndim == 0 else s
    return denoiser(x.to(torch.float32), s.to(torch.float32), class_labels).to(torch.float64)


def _randn(noise, x):
    return torch.randn_like(x) if noise is None else noise.randn_like(x)


def _churn(x, sigma, num_steps, s_churn, s_tmin, s_tmax, s_noise, noise):
    """EDM Algorithm 2, lines 4-6: raise the noise level of x from sigma to sigma_hat."""
    level = float(sigma.detach()) if torch.is_tensor(sigma) else float(sigma)  # sigma may carry a gradient (ld3)
    gamma = min(s_churn / num_steps, math.sqrt(2) - 1) if s_tmin <= level <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    return x + (sigma_hat**2 - sigma**2).sqrt() * s_noise * _randn(noise, x), sigma_hat


def euler(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None,
          s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler on the probability-flow ODE (DDIM in the EDM parameterisation), with
    EDM's optional churn. NFE = N."""
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    n = len(sigmas) - 1
    for i in range(n):
        x_hat, s_hat = _churn(x, sigmas[i], n, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = denoise(denoiser, x_hat, s_hat, class_labels)
        x = x_hat + (sigmas[i + 1] - s_hat) * (x_hat - denoised) / s_hat
        if callback is not None:
            callback(dict(i=i, x=x_hat, sigma=sigmas[i], sigma_hat=s_hat, denoised=denoised))
    return x


def heun(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None,
         s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """EDM Algorithm 2 (Karras et al. 2022): Heun's 2nd-order method with churn
    ``gamma = min(S_churn/N, sqrt(2)-1)`` inside ``[S_tmin, S_tmax]``; Euler on
    the last step to sigma = 0. NFE = 2N - 1."""
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    n = len(sigmas) - 1
    for i in range(n):
        x_hat, s_hat = _churn(x, sigmas[i], n, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = denoise(denoiser, x_hat, s_hat, class_labels)
        d = (x_hat - denoised) / s_hat
        x = x_hat + (sigmas[i + 1] - s_hat) * d
        if sigmas[i + 1] > 0:
            d_next = (x - denoise(denoiser, x, sigmas[i + 1], class_labels)) / sigmas[i + 1]
            x = x_hat + (sigmas[i + 1] - s_hat) * (0.5 * d + 0.5 * d_next)
        if callback is not None:
            callback(dict(i=i, x=x_hat, sigma=sigmas[i], sigma_hat=s_hat, denoised=denoised))
    return x


def dpmpp_2m(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022), multistep 2nd order in log-sigma,
    first order on the first step and on the final step to 0. NFE = N."""
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    old = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(denoiser, x, sigmas[i], class_labels)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            d = denoised
            if old is not None:
                r = (sigmas[i - 1].log() - sigmas[i].log()) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old = denoised
    return x


_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def ipndm(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, max_order=4):
    """Improved PNDM (Zhang & Chen 2023): Adams-Bashforth on the ODE derivative
    with the fixed-step coefficients, order ramping up 1..max_order from
    the derivative history. NFE = N."""
    if max_order not in _AB:
        raise ValueError(f"ipndm max_order must be 1..4, got {max_order}")
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    history = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(denoiser, x, sigmas[i], class_labels)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        history.insert(0, (x - denoised) / sigmas[i])
        del history[max_order:]
        coef = _AB[len(history)]
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(c * d for c, d in zip(coef, history))
    return x


SOLVERS = {"euler": euler, "heun": heun, "dpmpp-2m": dpmpp_2m, "ipndm": ipndm}
