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

A schedule ends either in 0 (EDM's convention: the last step goes to sigma = 0, a first-order
step for every solver, i.e. ``x = D(x, sigma)`` for the exponential integrators) or at a positive
sigma_min (the convention of DPM-Solver's, UniPC's and diff-sampler's code, whose tables end at
sigma_min without a final denoising call). ``lambda = -log sigma`` is the half log-SNR. Multistep
solvers take ``afs``: the analytical first step (AFS; Dockhorn et al. 2022, as used by AMED, Zhou et
al. 2024) replaces the first denoiser call by ``D = x - sigma x / sqrt(1 + sigma^2)``, so N steps
cost N - 1 evaluations.
"""
from __future__ import annotations

import math

import numpy as np
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


def _tail(t, final: str):
    if final == "zero":
        return torch.cat([t, torch.zeros(1, dtype=t.dtype, device=t.device)])
    if final == "sigma-min":
        return t
    raise ValueError(f"final is 'zero' or 'sigma-min', got {final!r}")


def logsnr_sigmas(num_steps: int, sigma_min: float, sigma_max: float, device="cpu"):
    """The logSNR-uniform schedule (Lu et al. 2022, DPM-Solver's 'logSNR'): ``num_steps`` levels
    from sigma_max to sigma_min spaced uniformly in lambda = -log sigma, then 0. float64."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if num_steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64, device=device)
    lam = torch.linspace(-math.log(sigma_max), -math.log(sigma_min), num_steps, dtype=torch.float64, device=device)
    t = (-lam).exp()
    t[0], t[-1] = sigma_max, sigma_min  # exact ends, not exp(log(.)) rounded
    return _tail(t, "zero")


def vp_map(sigma_min: float, sigma_max: float, eps_s: float = 1e-3):
    """The VP-SDE time of an EDM noise level (Song et al. 2021; DPM-Solver's and DEIS's time t):
    ``sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)`` with (beta_min, beta_d) solved so that
    sigma(1) = sigma_max and sigma(eps_s) = sigma_min. Returns (sigma_of_t, t_of_sigma), both on
    tensors (float64, differentiable)."""
    big = torch.log1p(torch.as_tensor(sigma_max, dtype=torch.float64) ** 2)
    small = torch.log1p(torch.as_tensor(sigma_min, dtype=torch.float64) ** 2)
    beta_d = 2 * (small / eps_s - big) / (eps_s - 1)
    beta_min = big - beta_d / 2

    def sigma_of_t(t):
        return torch.expm1(beta_d * t**2 / 2 + beta_min * t).sqrt()

    def t_of_sigma(sigma):
        return ((beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)).sqrt() - beta_min) / beta_d

    return sigma_of_t, t_of_sigma


def time_uniform_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0, eps_s: float = 1e-3,
                        device="cpu"):
    """The time-uniform schedule (DPM-Solver's 'time_uniform' on the VP time t of :func:`vp_map`):
    ``t_i = (1 + i/(N-1) (eps_s^(1/rho) - 1))^rho`` from t = 1 to eps_s (rho = 1: uniform; DEIS's
    tables use rho = 2), mapped to sigma, then 0. float64."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if num_steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64, device=device)
    sigma_of_t, _ = vp_map(sigma_min, sigma_max, eps_s)
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    t = sigma_of_t((1 + i / (num_steps - 1) * (eps_s ** (1 / rho) - 1)) ** rho)
    t[0], t[-1] = sigma_max, sigma_min
    return _tail(t, "zero")


SCHEDULES = ("edm", "logsnr", "time-uniform")


def schedule(name: str, num_steps: int, sigma_min: float, sigma_max: float, *, rho: float = 7.0,
             time_rho: float = 1.0, final: str = "zero", device="cpu"):
    """The noise levels of a named schedule for ``num_steps`` steps: ``edm`` (Karras et al.'s rho
    polynomial, ``rho``), ``logsnr`` (uniform in log sigma) or ``time-uniform`` (VP time,
    ``time_rho``). ``final='zero'``: num_steps levels from sigma_max down to sigma_min, then 0 (EDM:
    the last step goes to 0); ``'sigma-min'``: num_steps + 1 levels ending at sigma_min (the reference
    code of the few-step tables), no step to 0."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule is one of {', '.join(SCHEDULES)}, got {name!r}")
    levels = num_steps if final == "zero" else num_steps + 1
    if final == "sigma-min" and num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if name == "edm":
        t = karras_sigmas(levels, sigma_min, sigma_max, rho, device=device)
    elif name == "logsnr":
        t = logsnr_sigmas(levels, sigma_min, sigma_max, device=device)
    else:
        t = time_uniform_sigmas(levels, sigma_min, sigma_max, time_rho, device=device)
    return _tail(t[:-1], final)


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


def _denoised(denoiser, x, sigma, class_labels, analytic: bool):
    """D(x, sigma): the denoiser's, or with ``analytic`` (AFS, the first step) its analytical guess
    ``x - sigma x / sqrt(1 + sigma^2)``, no call."""
    if analytic:
        return x - sigma * x / (1 + sigma**2).sqrt()
    return denoise(denoiser, x, sigma, class_labels)


def _order(i, n, max_order, lower_order_final):
    """The order of step i of n of a multistep solver: ramping up 1, 2, ... from the history and,
    with ``lower_order_final``, down again at the end (DPM-Solver's and UniPC's code: at most n - i)."""
    return min(max_order, i + 1, n - i) if lower_order_final else min(max_order, i + 1)


def dpmpp_step(x, sigma, sigma_next, hist, third_order="dpm-solver"):
    """One step of multistep DPM-Solver++ from sigma to sigma_next > 0 of the order len(hist) (1..3),
    ``hist`` the (lambda, denoised) pairs, newest (sigma's) first. See :func:`dpmpp_3m`."""
    (lam, denoised), order = hist[0], len(hist)
    h = -sigma_next.log() - lam
    phi_1 = torch.expm1(-h)
    x = (sigma_next / sigma) * x - phi_1 * denoised
    if order == 2:
        d1 = (denoised - hist[1][1]) * h / (lam - hist[1][0])
        x = x - 0.5 * phi_1 * d1
    elif order == 3:
        h0, h1 = lam - hist[1][0], hist[1][0] - hist[2][0]
        d1_0 = (denoised - hist[1][1]) * h / h0
        d1_1 = (hist[1][1] - hist[2][1]) * h / h1
        d1 = d1_0 + (d1_0 - d1_1) * h0 / (h0 + h1)
        d2 = (d1_0 - d1_1) * h / (h0 + h1)
        phi_2 = phi_1 / h + 1
        phi_3 = phi_2 / h - 0.5
        x = x + phi_2 * d1 - (2 if third_order == "taylor" else 1) * phi_3 * d2
    return x


def dpmpp_3m(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, max_order=3,
             lower_order_final=True, afs=False, third_order="dpm-solver"):
    """Multistep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++", Sec. 4 and its 3rd-order multistep):
    the exponential integrator in data prediction, ``x' = (sigma'/sigma) x - expm1(-h) D + ...`` with
    h = lambda' - lambda. Order 2: ``- 0.5 expm1(-h) D1`` (Algorithm 2, DPM-Solver++(2M)); order 3:
    ``+ phi_2 D1 - phi_3 D2`` with phi_2 = expm1(-h)/h + 1, phi_3 = phi_2/h - 1/2 and D1, D2 the first
    and second divided differences of the last three denoised values scaled by h and h^2/2.
    ``third_order='dpm-solver'`` weighs D2 as DPM-Solver's, diff-sampler's and k-diffusion's code do
    (the tables' solver: half the Taylor weight, so its local error is O(h^3), second order);
    ``'taylor'`` weighs it ``2 phi_3`` (the exact integral of the quadratic: local error O(h^4)).
    A step to sigma = 0 is ``x = D``. NFE = N (N - 1 with ``afs``)."""
    if max_order not in (1, 2, 3):
        raise ValueError(f"dpmpp max_order must be 1..3, got {max_order}")
    if third_order not in ("dpm-solver", "taylor"):
        raise ValueError(f"third_order is 'dpm-solver' or 'taylor', got {third_order!r}")
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    n = len(sigmas) - 1
    hist = []  # (lambda, denoised), newest first
    for i in range(n):
        denoised = _denoised(denoiser, x, sigmas[i], class_labels, afs and i == 0)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        hist.insert(0, (-sigmas[i].log(), denoised))
        del hist[3:]
        order = min(len(hist), _order(i, n, max_order, lower_order_final))
        x = dpmpp_step(x, sigmas[i], sigmas[i + 1], hist[:order], third_order)
    return x


def dpmpp_2m(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, lower_order_final=True,
             afs=False):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): :func:`dpmpp_3m` at order 2. With the
    schedule ending in 0 the step to 0 is first order and ``lower_order_final`` changes nothing;
    ending at sigma_min, the last step is first order as in DPM-Solver's code. NFE = N."""
    return dpmpp_3m(denoiser, x, sigmas, class_labels=class_labels, callback=callback, max_order=2,
                    lower_order_final=lower_order_final, afs=afs)


def _uni_weights(rks, h, b_h, m):
    """UniPC's coefficients (Zhao et al. 2023, Theorem 3.1, data prediction): the a_k solving
    ``sum_k a_k r_k^(n-1) = n! G_n(h) / B(h)``, n = 1..m, where ``G_n(h) = e^-h int_0^h e^s s^n/n! ds
    / h^n`` is the Taylor weight of the n-th derivative of D in lambda (G_0 = 1 - e^-h,
    G_n = 1/n! - G_(n-1)/h)."""
    g, rhs = -torch.expm1(-h), []
    for k in range(1, m + 1):
        g = 1 / math.factorial(k) - g / h
        rhs.append(math.factorial(k) * g / b_h)
    r = torch.stack([torch.stack([rk**j for rk in rks[:m]]) for j in range(m)])
    return torch.linalg.solve(r, torch.stack(rhs))


def unipc_step(x, sigma, sigma_next, hist, variant="bh2", new=None):
    """One UniPC step from sigma to sigma_next > 0, ``hist`` the (lambda, denoised) pairs, newest
    (sigma's) first: the UniP predictor of order len(hist), or with ``new`` (D at the predicted point,
    sigma_next) the UniC corrector of order len(hist) + 1. See :func:`unipc`."""
    (lam, denoised), order = hist[0], len(hist)
    h = -sigma_next.log() - lam
    b_h = -torch.expm1(-h) if variant == "bh2" else h
    x = (sigma_next / sigma) * x - torch.expm1(-h) * denoised
    rks = [(hist[k][0] - lam) / h for k in range(1, order)]
    diffs = [(hist[k][1] - denoised) / rks[k - 1] for k in range(1, order)]
    if new is None:
        a = [] if order == 1 else [0.5] if order == 2 else _uni_weights(rks, h, b_h, order - 1)
        return x + b_h * sum(ak * dk for ak, dk in zip(a, diffs)) if diffs else x
    c = [0.5] if order == 1 else _uni_weights(rks + [torch.ones_like(h)], h, b_h, order)
    return x + b_h * (sum(ck * dk for ck, dk in zip(c[:-1], diffs)) + c[-1] * (new - denoised))


def unipc(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, max_order=3, variant="bh2",
          corrector=True, lower_order_final=True, afs=False):
    """UniPC (Zhao et al., NeurIPS 2023): the UniP-p predictor and the UniC corrector in data
    prediction, ``x' = (sigma'/sigma) x - expm1(-h) D + B(h) sum_k a_k (D_k - D) / r_k`` with
    r_k = (lambda_k - lambda) / h, B(h) = 1 - e^-h (``bh2``) or h (``bh1``), and the a_k of
    :func:`_uni_weights` (the paper's simplified a = 1/2 for the order-2 predictor and the order-1
    corrector). The corrector reuses the denoiser call at the predicted point, which is also the
    value kept in the history (no extra NFE); the last step, whose call would serve only the
    corrector, is the predictor alone. A step to sigma = 0 is ``x = D``. NFE = N (N - 1 with ``afs``)."""
    if max_order not in (1, 2, 3):
        raise ValueError(f"unipc max_order must be 1..3, got {max_order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unipc variant is 'bh1' or 'bh2', got {variant!r}")
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    n = len(sigmas) - 1
    denoised = _denoised(denoiser, x, sigmas[0], class_labels, afs)
    hist = []  # (lambda, denoised), newest first
    for i in range(n):
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        if sigmas[i + 1] == 0:
            return denoised
        hist.insert(0, (-sigmas[i].log(), denoised))
        del hist[max_order:]
        order = min(len(hist), _order(i, n, max_order, lower_order_final))
        pred = unipc_step(x, sigmas[i], sigmas[i + 1], hist[:order], variant)
        if i == n - 1:
            return pred
        new = denoise(denoiser, pred, sigmas[i + 1], class_labels)
        x = unipc_step(x, sigmas[i], sigmas[i + 1], hist[:order], variant, new) if corrector else pred
        denoised = new
    return x


_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def ipndm(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, max_order=4, afs=False):
    """Improved PNDM (Zhang & Chen 2023): Adams-Bashforth on the ODE derivative
    with the fixed-step coefficients, order ramping up 1..max_order from
    the derivative history. NFE = N (N - 1 with ``afs``)."""
    if max_order not in _AB:
        raise ValueError(f"ipndm max_order must be 1..4, got {max_order}")
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    history = []
    for i in range(len(sigmas) - 1):
        denoised = _denoised(denoiser, x, sigmas[i], class_labels, afs and i == 0)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        history.insert(0, (x - denoised) / sigmas[i])
        del history[max_order:]
        coef = _AB[len(history)]
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(c * d for c, d in zip(coef, history))
    return x


def _lagrange_integrals(nodes, a, b):
    """``int_a^b L_j(s) ds`` for the Lagrange basis polynomials L_j of ``nodes`` (0-d float64
    tensors, autograd kept), exactly: each L_j expanded about ``a`` and integrated term by term."""
    out = []
    for j, nj in enumerate(nodes):
        coef = [torch.ones_like(a)]  # prod over m != j of (u - (n_m - a)), low to high degree
        denom = torch.ones_like(a)
        for m, nm in enumerate(nodes):
            if m != j:
                root = nm - a
                coef = [-root * coef[0]] + [coef[k - 1] - root * coef[k] for k in range(1, len(coef))] + [coef[-1]]
                denom = denom * (nj - nm)
        out.append(sum(c * (b - a) ** (k + 1) / (k + 1) for k, c in enumerate(coef)) / denom)
    return out


def ipndm_v_step(x, sigma, sigma_next, hist):
    """One variable-step Adams-Bashforth step in sigma, ``hist`` the (sigma, d) pairs, newest first."""
    weights = _lagrange_integrals([s for s, _ in hist], sigma, sigma_next)
    return x + sum(w * d for w, (_, d) in zip(weights, hist))


def ipndm_v(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, max_order=4, afs=False):
    """iPNDM-v (Zhang & Chen 2023; diff-sampler's variable-step iPNDM): Adams-Bashforth in sigma
    with the weights of the actual, unequal steps, ``x' = x + sum_j d_j int L_j(s) ds`` over the
    step, L_j the Lagrange basis of the last ``max_order`` levels (on equal steps: iPNDM's fixed
    weights). NFE = N (N - 1 with ``afs``)."""
    if max_order not in _AB:
        raise ValueError(f"ipndm-v max_order must be 1..4, got {max_order}")
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    history = []  # (sigma, d), newest first
    for i in range(len(sigmas) - 1):
        denoised = _denoised(denoiser, x, sigmas[i], class_labels, afs and i == 0)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        history.insert(0, (sigmas[i], (x - denoised) / sigmas[i]))
        del history[max_order:]
        x = ipndm_v_step(x, sigmas[i], sigmas[i + 1], history)
    return x


_GAUSS = tuple(torch.tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(20))


# panels of Gauss-Legendre graded toward the step's lower end: t(sigma) has branch points at
# sigma = +-i s0 with s0 ~ 1e-3 (where beta_min^2 + 2 beta_d log(1 + sigma^2) = 0), which a single
# panel resolves only to ~1e-6 on a step to 0; graded panels keep each one far from them
_GRADING = torch.tensor([4.0 ** -k for k in range(13)] + [0.0], dtype=torch.float64)


def deis_step(x, sigma, sigma_next, hist, t_of):
    """One DEIS-tAB step from sigma to sigma_next, ``hist`` the (t, d) pairs, newest first, ``t_of``
    the VP time of a noise level: ``x + sum_j d_j int_sigma^sigma_next L_j(t(s)) ds``."""
    nodes, weights = (v.to(x.device) for v in _GAUSS)
    edges = sigma_next + (sigma - sigma_next) * _GRADING.to(x.device)
    lo, hi = edges[1:, None], edges[:-1, None]
    s_q = (lo + (hi - lo) * (nodes + 1) / 2).flatten()
    w_q = ((hi - lo) / 2 * weights).flatten()  # int over [sigma_next, sigma]: the step is its negative
    t_q = t_of(s_q)
    for j, (tj, dj) in enumerate(hist):
        basis = torch.ones_like(t_q)
        for m, (tm, _) in enumerate(hist):
            if m != j:
                basis = basis * (t_q - tm) / (tj - tm)
        x = x - (w_q * basis).sum() * dj
    return x


def deis(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, max_order=4, afs=False):
    """DEIS-tAB (Zhang & Chen, ICLR 2023, eq. 14 with the polynomial in t): the noise prediction
    d = (x - D)/sigma extrapolated by the Lagrange polynomial through the last ``max_order`` levels
    in the VP time t of :func:`vp_map` (fitted to the schedule's first and last positive levels),
    and ``x' = x + sum_j d_j int L_j(t(s)) ds`` over the step in sigma, each weight integrated by
    Gauss-Legendre on panels graded toward the step's end (to 1e-12). ``max_order=4`` is the tables'
    DEIS-tAB3 (a cubic through 4 levels). NFE = N (N - 1 with ``afs``)."""
    if max_order not in _AB:
        raise ValueError(f"deis max_order must be 1..4, got {max_order}")
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    positive = sigmas[sigmas > 0]
    t_of = vp_map(positive[-1], positive[0])[1] if len(positive) > 1 else None
    history = []  # (t, d), newest first
    for i in range(len(sigmas) - 1):
        denoised = _denoised(denoiser, x, sigmas[i], class_labels, afs and i == 0)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        d = (x - denoised) / sigmas[i]
        if t_of is None:  # one step: Euler
            x = x + (sigmas[i + 1] - sigmas[i]) * d
            continue
        history.insert(0, (t_of(sigmas[i]), d))
        del history[max_order:]
        x = deis_step(x, sigmas[i], sigmas[i + 1], history, t_of)
    return x


def dpm2(denoiser, x, sigmas, *, class_labels=None, noise=None, callback=None, r=0.5):
    """DPM-Solver-2 (Lu et al. 2022, Algorithm 1 with the noise prediction, in EDM's
    parameterisation): an Euler step to s = sigma^(1-r) sigma'^r (r = 1/2: the midpoint in lambda),
    then ``x' = x + (sigma' - sigma) ((1 - 1/(2r)) d + 1/(2r) d(s))``. A step to sigma = 0 is Euler.
    NFE = 2N - 1 (2N ending at sigma_min)."""
    if not 0 < r <= 1:
        raise ValueError(f"dpm2 r must be in (0, 1], got {r}")
    sigmas = sigmas.to(torch.float64)
    x = x.to(torch.float64)
    for i in range(len(sigmas) - 1):
        denoised = denoise(denoiser, x, sigmas[i], class_labels)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigmas[i], sigma_hat=sigmas[i], denoised=denoised))
        d = (x - denoised) / sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + (sigmas[i + 1] - sigmas[i]) * d
            continue
        mid = sigmas[i] ** (1 - r) * sigmas[i + 1] ** r
        x_mid = x + (mid - sigmas[i]) * d
        d_mid = (x_mid - denoise(denoiser, x_mid, mid, class_labels)) / mid
        x = x + (sigmas[i + 1] - sigmas[i]) * ((1 - 1 / (2 * r)) * d + 1 / (2 * r) * d_mid)
    return x


SOLVERS = {"euler": euler, "heun": heun, "dpmpp-2m": dpmpp_2m, "ipndm": ipndm, "dpmpp-3m": dpmpp_3m,
           "unipc": unipc, "deis": deis, "ipndm-v": ipndm_v, "dpm2": dpm2}
