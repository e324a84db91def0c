"""Tests of bench.sampling: the solvers against an independent EDM Algorithm 2,
convergence orders on a Gaussian whose probability-flow ODE has a closed form,
denoiser-call counts, autograd and the callback."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bench
from bench import sampling
from bench.denoiser import CountingDenoiser, Denoiser
from bench.noise import Noise

SOLVER_NAMES = ["euler", "heun", "dpmpp-2m", "ipndm"]


@pytest.fixture(scope="module")
def gmm():
    return bench.get_task("gmm8").exact_denoiser()


# ---------------------------------------------------------------------------
# An independent EDM Algorithm 2 (Karras et al. 2022), from the equations.
# ---------------------------------------------------------------------------

def ref_time_steps(n, smin, smax, rho):
    """t_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < N; t_N = 0 (plain floats)."""
    ts = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    return ts + [0.0]


def ref_edm(D, x, ts, *, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0, noise=None, second_order=True):
    """EDM Algorithm 2, one step at a time. The denoiser sees float32 (the
    project's documented convention); everything else is float64 scalars."""
    def den(x, t):
        sig = torch.full((x.shape[0],), t, dtype=torch.float32)
        return D(x.to(torch.float32), sig).to(torch.float64)

    x = x.to(torch.float64).clone()
    n = len(ts) - 1
    for i in range(n):
        t_cur, t_next = float(ts[i]), float(ts[i + 1])
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t_cur <= s_tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            eps = noise.randn(x.shape[1:], dtype=torch.float64)
            x_hat = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * eps
        else:
            x_hat = x
        d = (x_hat - den(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d
        if second_order and t_next != 0:
            d_prime = (x_next - den(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (d / 2 + d_prime / 2)
        x = x_next
    return x


def _start(n, seed=123, sigma_max=80.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64) * sigma_max


CHURN = dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)  # edm-sde defaults


@pytest.mark.parametrize("num_steps", [2, 5, 18])
def test_karras_sigmas_match_formula(num_steps):
    smin, smax, rho = 0.002, 80.0, 7.0
    s = sampling.karras_sigmas(num_steps, smin, smax, rho)
    assert s.dtype == torch.float64
    assert s.shape == (num_steps + 1,)
    assert s[-1].item() == 0.0
    want = torch.tensor(ref_time_steps(num_steps, smin, smax, rho), dtype=torch.float64)
    torch.testing.assert_close(s, want, rtol=1e-12, atol=0)
    assert s[0].item() == pytest.approx(smax, rel=1e-12)
    assert s[num_steps - 1].item() == pytest.approx(smin, rel=1e-12)
    assert (s[1:] < s[:-1]).all()


def test_karras_sigmas_other_rho_and_edge_cases():
    s = sampling.karras_sigmas(10, 0.01, 5.0, rho=3.0)
    torch.testing.assert_close(s, torch.tensor(ref_time_steps(10, 0.01, 5.0, 3.0), dtype=torch.float64),
                               rtol=1e-12, atol=0)
    one = sampling.karras_sigmas(1, 0.002, 80.0)
    assert one.tolist() == [80.0, 0.0] and one.dtype == torch.float64
    with pytest.raises(ValueError):
        sampling.karras_sigmas(0, 0.002, 80.0)


@pytest.mark.parametrize("num_steps", [3, 10, 18])
def test_heun_and_euler_match_reference_deterministic(gmm, num_steps):
    ts = ref_time_steps(num_steps, gmm.sigma_min, gmm.sigma_max, 7.0)
    sigmas = sampling.karras_sigmas(num_steps, gmm.sigma_min, gmm.sigma_max)
    x = _start(64)
    heun = sampling.heun(gmm, x, sigmas)
    euler = sampling.euler(gmm, x, sigmas)
    ref_h = ref_edm(gmm, x, ts)
    ref_e = ref_edm(gmm, x, ts, second_order=False)
    assert heun.dtype == torch.float64 and heun.shape == x.shape
    torch.testing.assert_close(heun, ref_h, rtol=0, atol=1e-5)
    torch.testing.assert_close(euler, ref_e, rtol=0, atol=1e-5)
    # The comparison can tell the two methods apart.
    assert (heun - euler).abs().max() > 1e-2
    assert (heun - ref_e).abs().max() > 1e-2


@pytest.mark.parametrize("solver,second_order", [(sampling.heun, True), (sampling.euler, False)])
def test_churn_matches_reference_with_same_noise(gmm, solver, second_order):
    n_steps = 18
    idx = torch.arange(100, 148)
    ts = ref_time_steps(n_steps, gmm.sigma_min, gmm.sigma_max, 7.0)
    sigmas = sampling.karras_sigmas(n_steps, gmm.sigma_min, gmm.sigma_max)
    # Some steps lie outside [S_tmin, S_tmax] (no churn, no draw), some inside.
    inside = [CHURN["s_tmin"] <= t <= CHURN["s_tmax"] for t in ts[:-1]]
    assert any(inside) and not all(inside)
    x = _start(len(idx), seed=7)
    noise = Noise(11, idx)
    out = solver(gmm, x, sigmas, noise=noise, **CHURN)
    ref_noise = Noise(11, idx)
    ref = ref_edm(gmm, x, ts, noise=ref_noise, second_order=second_order, **CHURN)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # Both drew exactly once per churned step.
    assert noise.draws == ref_noise.draws == sum(inside)
    # Churn does change the result, by more than the tolerance.
    det = solver(gmm, x, sigmas)
    assert (out - det).abs().max() > 1e-2
    # Different noise gives a different result (the noise is really used).
    other = solver(gmm, x, sigmas, noise=Noise(12, idx), **CHURN)
    assert (out - other).abs().max() > 1e-2


def _den32(D, x, t):
    return D(x.to(torch.float32), torch.full((x.shape[0],), float(t), dtype=torch.float32)).to(torch.float64)


def ref_dpmpp_2m(D, x, ts):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) with alpha = 1, lambda = -log sigma;
    the step to sigma = 0 returns the denoised estimate."""
    x = x.to(torch.float64).clone()
    prev = None
    for i in range(len(ts) - 1):
        den = _den32(D, x, ts[i])
        if ts[i + 1] == 0:
            x = den
            break
        h = math.log(ts[i]) - math.log(ts[i + 1])
        dd = den
        if prev is not None:
            r = (math.log(ts[i - 1]) - math.log(ts[i])) / h
            dd = (1 + 1 / (2 * r)) * den - 1 / (2 * r) * prev
        x = ts[i + 1] / ts[i] * x - (math.exp(-h) - 1) * dd
        prev = den
    return x


AB = [[1], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24]]


def ref_ipndm(D, x, ts, max_order=4):
    """iPNDM (Zhang & Chen 2023): Adams-Bashforth with the fixed-step coefficients
    on d = (x - D)/sigma, order min(i+1, max_order) at step i."""
    x = x.to(torch.float64).clone()
    ds = []
    for i in range(len(ts) - 1):
        ds.append((x - _den32(D, x, ts[i])) / ts[i])
        k = min(i + 1, max_order)
        upd = sum(c * ds[-1 - j] for j, c in enumerate(AB[k - 1]))
        x = x + (ts[i + 1] - ts[i]) * upd
    return x


@pytest.mark.parametrize("num_steps", [2, 6, 12])
def test_dpmpp_2m_matches_reference(gmm, num_steps):
    ts = ref_time_steps(num_steps, gmm.sigma_min, gmm.sigma_max, 7.0)
    sigmas = sampling.karras_sigmas(num_steps, gmm.sigma_min, gmm.sigma_max)
    x = _start(64)
    torch.testing.assert_close(sampling.dpmpp_2m(gmm, x, sigmas), ref_dpmpp_2m(gmm, x, ts), rtol=0, atol=1e-5)


@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
def test_ipndm_matches_reference(gmm, max_order):
    n = 10
    ts = ref_time_steps(n, gmm.sigma_min, gmm.sigma_max, 7.0)
    sigmas = sampling.karras_sigmas(n, gmm.sigma_min, gmm.sigma_max)
    x = _start(64)
    out = sampling.ipndm(gmm, x, sigmas, max_order=max_order)
    torch.testing.assert_close(out, ref_ipndm(gmm, x, ts, max_order), rtol=0, atol=1e-5)
    if max_order > 1:  # the history matters: not plain Euler
        assert (out - ref_edm(gmm, x, ts, second_order=False)).abs().max() > 1e-2
    with pytest.raises(ValueError):
        sampling.ipndm(gmm, x, sigmas, max_order=5)


def test_deterministic_heun_draws_no_noise(gmm):
    noise = Noise(0, torch.arange(8))
    sigmas = sampling.karras_sigmas(6, gmm.sigma_min, gmm.sigma_max)
    a = sampling.heun(gmm, _start(8), sigmas, noise=noise)
    assert noise.draws == 0
    torch.testing.assert_close(a, sampling.heun(gmm, _start(8), sigmas))


@pytest.mark.parametrize("name,nfe", [("heun", lambda n: 2 * n - 1), ("euler", lambda n: n),
                                      ("dpmpp-2m", lambda n: n), ("ipndm", lambda n: n)])
@pytest.mark.parametrize("num_steps", [2, 7])
def test_denoiser_call_counts(gmm, name, nfe, num_steps):
    batch = 5
    counted = CountingDenoiser(gmm)
    sigmas = sampling.karras_sigmas(num_steps, gmm.sigma_min, gmm.sigma_max)
    sampling.SOLVERS[name](counted, _start(batch), sigmas)
    assert counted.rows == batch * nfe(num_steps)


def test_heun_call_count_with_churn(gmm):
    counted = CountingDenoiser(gmm)
    sigmas = sampling.karras_sigmas(10, gmm.sigma_min, gmm.sigma_max)
    sampling.heun(counted, _start(3), sigmas, noise=Noise(0, torch.arange(3)), **CHURN)
    assert counted.rows == 3 * (2 * 10 - 1)


# ---------------------------------------------------------------------------
# Convergence order on N(mu, s^2 I), whose probability-flow ODE is solvable.
# ---------------------------------------------------------------------------

class GaussianDenoiser(Denoiser):
    """Exact denoiser of N(mu, s^2 I): D(x, sigma) = mu + s^2/(s^2+sigma^2) (x - mu), in float64."""

    def __init__(self, mu, s):
        super().__init__()
        self.mu = torch.as_tensor(mu, dtype=torch.float64)
        self.s = float(s)
        self.shape = (len(self.mu),)

    def forward(self, x, sigma, class_labels=None):
        sig = sigma.to(torch.float64)[:, None]
        return self.mu + self.s**2 / (self.s**2 + sig**2) * (x.to(torch.float64) - self.mu)


MU, S = (1.0, -2.0), 0.5
SIG_HI, SIG_LO = 2.0, 0.5
STEPS = [8, 16, 32, 64]


def _ode_errors(name):
    D = GaussianDenoiser(MU, S)
    x0 = torch.tensor([[3.0, 1.0], [-2.0, -4.0], [0.5, 2.5], [4.0, -1.0]], dtype=torch.float64)
    exact = D.mu + (x0 - D.mu) * math.sqrt(S**2 + SIG_LO**2) / math.sqrt(S**2 + SIG_HI**2)
    errs = []
    for n in STEPS:
        # geometric schedule from 2 to 0.5, not ending in 0 (float32 rounding stays negligible)
        sigmas = torch.exp(torch.linspace(math.log(SIG_HI), math.log(SIG_LO), n + 1, dtype=torch.float64))
        out = sampling.SOLVERS[name](D, x0.clone(), sigmas)
        errs.append((out - exact).abs().max().item())
    return errs


def _orders(errs):
    return [math.log2(a / b) for a, b in zip(errs, errs[1:])]


def test_gaussian_denoiser_and_closed_form_are_consistent():
    # The closed form solves dx/dsigma = (x - D(x, sigma)) / sigma: check by finite differences.
    D = GaussianDenoiser(MU, S)
    x_top = torch.tensor([[3.0, 1.0]], dtype=torch.float64)

    def sol(sig):
        return D.mu + (x_top - D.mu) * math.sqrt(S**2 + sig**2) / math.sqrt(S**2 + SIG_HI**2)

    for sig in (0.6, 1.0, 1.7):
        h = 1e-5
        deriv = (sol(sig + h) - sol(sig - h)) / (2 * h)
        x = sol(sig)
        rhs = (x - D(x, torch.tensor([sig], dtype=torch.float64))) / sig
        torch.testing.assert_close(deriv, rhs, rtol=1e-7, atol=1e-9)


def test_convergence_heun_second_order():
    errs = _ode_errors("heun")
    assert min(errs) > 1e-5  # far above float32 rounding at the denoiser boundary
    for p in _orders(errs):
        assert 1.7 <= p <= 2.3, (errs, _orders(errs))


def test_convergence_euler_first_order():
    errs = _ode_errors("euler")
    for p in _orders(errs):
        assert 0.85 <= p <= 1.15, (errs, _orders(errs))


def test_convergence_dpmpp_2m_second_order():
    errs = _ode_errors("dpmpp-2m")
    assert min(errs) > 1e-5
    for p in _orders(errs):
        assert 1.7 <= p <= 2.4, (errs, _orders(errs))


def test_convergence_ipndm_higher_than_first_order():
    errs = _ode_errors("ipndm")
    euler = _ode_errors("euler")
    assert min(errs) > 1e-6
    for p in _orders(errs):
        assert p >= 1.8, (errs, _orders(errs))
    assert all(e < 0.1 * u for e, u in zip(errs, euler))


# ---------------------------------------------------------------------------
# Autograd and callback.
# ---------------------------------------------------------------------------

class ScaledGaussian(Denoiser):
    """A toy denoiser with a learnable scale: D = a * s^2/(s^2+sigma^2) x."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.9))
        self.shape = (2,)

    def forward(self, x, sigma, class_labels=None):
        return self.a * x / (1 + sigma[:, None] ** 2)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_gradient_flows_to_denoiser_parameter(name):
    assert torch.is_grad_enabled()
    D = ScaledGaussian()
    sigmas = sampling.karras_sigmas(6, 0.01, 5.0)
    x = _start(4, sigma_max=5.0)
    out = sampling.SOLVERS[name](D, x, sigmas)
    assert out.requires_grad
    loss = out.pow(2).sum()
    loss.backward()
    g = D.a.grad
    assert g is not None and torch.isfinite(g) and g.abs() > 0
    # and it is the right gradient: central finite difference
    with torch.no_grad():
        h = 1e-3
        vals = []
        for a in (0.9 + h, 0.9 - h):
            D.a.fill_(a)
            vals.append(sampling.SOLVERS[name](D, x, sigmas).pow(2).sum().item())
    fd = (vals[0] - vals[1]) / (2 * h)
    assert g.item() == pytest.approx(fd, rel=2e-3)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_callback_once_per_step(gmm, name):
    n = 7
    sigmas = sampling.karras_sigmas(n, gmm.sigma_min, gmm.sigma_max)
    x = _start(5)
    seen = []
    out = sampling.SOLVERS[name](gmm, x, sigmas, callback=seen.append)
    assert [c["i"] for c in seen] == list(range(n))
    for i, c in enumerate(seen):
        assert set(c) == {"i", "x", "sigma", "sigma_hat", "denoised"}
        assert float(c["sigma"]) == float(sigmas[i])
        assert float(c["sigma_hat"]) == float(sigmas[i])  # no churn
        assert c["x"].shape == x.shape and c["denoised"].shape == x.shape
        assert torch.isfinite(c["denoised"]).all()
    torch.testing.assert_close(seen[0]["x"], x)  # the first step starts from the initial state
    # the callback does not change the result
    torch.testing.assert_close(out, sampling.SOLVERS[name](gmm, x, sigmas))


def test_callback_reports_churned_sigma_hat(gmm):
    n = 10
    sigmas = sampling.karras_sigmas(n, gmm.sigma_min, gmm.sigma_max)
    gamma = min(CHURN["s_churn"] / n, math.sqrt(2) - 1)
    seen = []
    sampling.heun(gmm, _start(5), sigmas, noise=Noise(0, torch.arange(5)), callback=seen.append, **CHURN)
    assert len(seen) == n
    for i, c in enumerate(seen):
        s = float(sigmas[i])
        inside = CHURN["s_tmin"] <= s <= CHURN["s_tmax"]
        assert float(c["sigma_hat"]) == pytest.approx(s * (1 + gamma) if inside else s, rel=1e-12)
        # denoised is D at (x_hat, sigma_hat)
        want = gmm(c["x"].float(), torch.full((5,), float(c["sigma_hat"]))).double()
        torch.testing.assert_close(c["denoised"], want, rtol=1e-5, atol=1e-5)
