"""The field's few-step solvers (DPM-Solver++(3M), UniPC, DEIS-tAB, iPNDM-v, DPM-Solver-2), AFS and
the schedules, each against an independent derivation:

- one step given the exact history on N(mu, s^2 I), whose probability-flow ODE has a closed form: the
  local error's order in the step (p + 1 for a method of order p);
- the step against an independent implementation of the paper's update, its coefficients re-derived in
  float64 by scipy's quadrature;
- whole solves on the gmm8 mixture against scipy's DOP853 at tolerance 1e-12: the global order, which
  the first-order first step of every multistep solver caps at 2 (so it is measured, not assumed 3-4);
- exact denoiser-call counts on both schedule tails, with and without AFS, and gradients to the sigmas
  (the learned schedules differentiate through the solver).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, interpolate

import bench
from bench import sampling
from bench.denoiser import CountingDenoiser
from bench.method import SOLVER_SPECS, steps_for

T = torch.float64
MU, S, SIG_TOP = torch.tensor([1.0, -2.0], dtype=T), 0.5, 2.0
X_TOP = torch.tensor([[3.0, 1.0], [-2.0, -4.0], [0.5, 2.5]], dtype=T)
NEW = ["dpmpp-3m", "unipc", "deis", "ipndm-v", "dpm2"]


def traj(sigma: float):
    """The exact ODE solution through X_TOP at SIG_TOP for N(MU, S^2 I)."""
    return MU + (X_TOP - MU) * math.sqrt(S**2 + sigma**2) / math.sqrt(S**2 + SIG_TOP**2)


def den(x, sigma: float):
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def t(v):
    return torch.tensor(float(v), dtype=T)


def slopes(err, hs):
    e = [err(h) for h in hs]
    return [math.log2(a / b) for a, b in zip(e, e[1:])]


# uneven spacings of the history (the variable-step formulas must hold on any grid)
RATIOS = (1.0, 1.3, 0.8)


def lam_history(h, k):
    """k (lambda, D) pairs at lambda = 0 (sigma = 1) and earlier, newest first, on the exact path."""
    lams, acc = [0.0], 0.0
    for j in range(k - 1):
        acc += h * RATIOS[j]
        lams.append(-acc)
    return [(t(lam), den(traj(math.exp(-lam)), math.exp(-lam))) for lam in lams]


def sigma_history(h, k, key=lambda s: t(s)):
    """k (key(sigma), d) pairs at sigma = 1 and above, newest first, on the exact path."""
    sig, acc = [1.0], 1.0
    for j in range(k - 1):
        acc += h * RATIOS[j]
        sig.append(acc)
    return [(key(s), (traj(s) - den(traj(s), s)) / s) for s in sig]


# ---------------------------------------------------------------------------
# Local order of one step with the exact history.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("order, third, want", [(1, "dpm-solver", 2), (2, "dpm-solver", 3), (3, "dpm-solver", 3),
                                                (3, "taylor", 4)])
def test_dpmpp_local_order(order, third, want):
    """DPM-Solver's own 3rd-order multistep weighs the second difference D2 by phi_3 where the Taylor
    integral of the quadratic needs 2 phi_3: its local error is O(h^3), a second-order method; the
    'taylor' weight gives O(h^4)."""
    def err(h):
        out = sampling.dpmpp_step(traj(1.0), t(1.0), t(math.exp(-h)), lam_history(h, order), third)
        return (out - traj(math.exp(-h))).abs().max().item()
    p = slopes(err, (0.05, 0.025, 0.0125, 0.00625))
    assert abs(p[-1] - want) < 0.2, p


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_local_order_of_predictor_and_corrector(order, variant):
    """UniP-p has order p (local error h^(p+1)); UniC after it raises the order by one."""
    def err(h, correct):
        sn = math.exp(-h)
        hist = lam_history(h, order)
        out = sampling.unipc_step(traj(1.0), t(1.0), t(sn), hist, variant)
        if correct:
            out = sampling.unipc_step(traj(1.0), t(1.0), t(sn), hist, variant, den(out, sn))
        return (out - traj(sn)).abs().max().item()
    hs = (0.05, 0.025, 0.0125, 0.00625)
    p_pred, p_corr = slopes(lambda h: err(h, False), hs), slopes(lambda h: err(h, True), hs)
    assert p_pred[-1] > order + 1 - 0.2, p_pred
    assert abs(p_corr[-1] - (order + 2)) < 0.25, p_corr


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("solver", ["ipndm-v", "deis"])
def test_adams_bashforth_local_order_on_uneven_steps(order, solver):
    t_of = sampling.vp_map(0.002, 80.0)[1]

    def err(h):
        if solver == "deis":
            out = sampling.deis_step(traj(1.0), t(1.0), t(1.0 - h), sigma_history(h, order, lambda s: t_of(t(s))), t_of)
        else:
            out = sampling.ipndm_v_step(traj(1.0), t(1.0), t(1.0 - h), sigma_history(h, order))
        return (out - traj(1.0 - h)).abs().max().item()
    p = slopes(err, (0.1, 0.05, 0.025, 0.0125))
    assert abs(p[-1] - (order + 1)) < 0.2, p


# ---------------------------------------------------------------------------
# Each step against an independent implementation, coefficients by quadrature.
# ---------------------------------------------------------------------------

def kdiffusion_3m_update(x, sigma, sigma_next, d0, d1, d2, h_1, h_2):
    """The order-3 update of k-diffusion's sample_dpmpp_3m_sde at eta = 0, in its own variables
    (t = -log sigma; h, h_1, h_2 the last three log-sigma steps), re-written from its description."""
    h = math.log(sigma) - math.log(sigma_next)
    x = math.exp(-h) * x + (-math.expm1(-h)) * d0
    r0, r1 = h_1 / h, h_2 / h
    d1_0, d1_1 = (d0 - d1) / r0, (d1 - d2) / r1
    dd1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    dd2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = math.expm1(-h) / h + 1
    phi_3 = phi_2 / h - 0.5
    return x + phi_2 * dd1 - phi_3 * dd2


def test_dpmpp_3m_step_is_k_diffusions_and_taylor_is_the_exact_integral_of_the_quadratic():
    h = 0.4
    hist = lam_history(h, 3)
    lams = [float(lam) for lam, _ in hist]
    x, sn = traj(1.0), math.exp(-h)
    ours = sampling.dpmpp_step(x, t(1.0), t(sn), hist)
    ref = kdiffusion_3m_update(x, 1.0, sn, hist[0][1], hist[1][1], hist[2][1], lams[0] - lams[1], lams[1] - lams[2])
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-13)
    # x' = e^-h x + sum_j D_j int_0^h e^(s-h) l_j(s) ds, l_j the quadratic Lagrange basis in lambda
    w = []
    for j in range(3):
        basis = interpolate.lagrange(lams, np.eye(3)[j])
        w.append(integrate.quad(lambda s: math.exp(s - h) * basis(s), 0.0, h, epsabs=1e-14, epsrel=1e-12)[0])
    exact = math.exp(-h) * x + sum(wj * dj for wj, (_, dj) in zip(w, hist))
    torch.testing.assert_close(sampling.dpmpp_step(x, t(1.0), t(sn), hist, "taylor"), exact, rtol=1e-12, atol=1e-12)


def g_quad(h, n):
    """G_n(h) = e^-h int_0^h e^s s^n / n! ds / h^n, by quadrature."""
    return integrate.quad(lambda s: math.exp(s - h) * s**n / math.factorial(n), 0, h, epsabs=1e-14,
                          epsrel=1e-12)[0] / h**n


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_step_against_the_papers_linear_system_by_quadrature(order, variant):
    """Zhao et al. 2023, eq. (8)-(9): sum_k a_k r_k^(n-1) = n! G_n(h) / B(h), solved in numpy; the
    order-2 predictor and order-1 corrector take the paper's a = 1/2."""
    h = 0.3
    hist = lam_history(h, order)
    lams = [float(lam) for lam, _ in hist]
    b_h = -math.expm1(-h) if variant == "bh2" else h
    x, sn = traj(1.0), math.exp(-h)
    base = sn * x - math.expm1(-h) * hist[0][1]
    rks = [(lam - lams[0]) / h for lam in lams[1:]]
    diffs = [(d - hist[0][1]) / r for (_, d), r in zip(hist[1:], rks)]

    def solve(rs, m):
        mat = np.array([[r**j for r in rs[:m]] for j in range(m)])
        return np.linalg.solve(mat, [math.factorial(n) * g_quad(h, n) / b_h for n in range(1, m + 1)])
    a = [] if order == 1 else [0.5] if order == 2 else solve(rks, order - 1)
    pred = base + b_h * sum(ak * dk for ak, dk in zip(a, diffs))
    torch.testing.assert_close(sampling.unipc_step(x, t(1.0), t(sn), hist, variant), pred, rtol=1e-12, atol=1e-12)
    new = den(pred, sn)
    c = [0.5] if order == 1 else solve(rks + [1.0], order)
    corr = base + b_h * (sum(ck * dk for ck, dk in zip(c[:-1], diffs)) + c[-1] * (new - hist[0][1]))
    torch.testing.assert_close(sampling.unipc_step(x, t(1.0), t(sn), hist, variant, new), corr, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("sigma_next", [0.55, 0.0])
def test_deis_weights_are_the_integrals_of_the_lagrange_basis_in_vp_time(sigma_next):
    """int_sigma^sigma' L_j(t(s)) ds by adaptive quadrature in t (dsigma = sigma'(t) dt, sigma'(t) =
    e^B B' / (2 sigma), B = beta_d t^2/2 + beta_min t), against the step's Gauss-Legendre weights."""
    smin, smax = 0.002, 80.0
    big, small = math.log1p(smax**2), math.log1p(smin**2)
    beta_d = 2 * (small / 1e-3 - big) / (1e-3 - 1)
    beta_min = big - beta_d / 2

    def sigma_of(tt):
        return math.sqrt(math.expm1(beta_d * tt**2 / 2 + beta_min * tt))

    def t_of(s):
        return (math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(s**2)) - beta_min) / beta_d
    assert sigma_of(1.0) == pytest.approx(smax, rel=1e-12) and sigma_of(1e-3) == pytest.approx(smin, rel=1e-9)
    sig = [0.7, 1.0, 1.6, 2.5]
    ts = [t_of(s) for s in sig]
    for j in range(4):
        basis = interpolate.lagrange(ts, np.eye(4)[j])
        if sigma_next > 0:
            def dsig(tt):
                return math.exp(beta_d * tt**2 / 2 + beta_min * tt) * (beta_d * tt + beta_min) / (2 * sigma_of(tt))
            want = integrate.quad(lambda tt: dsig(tt) * basis(tt), ts[0], t_of(sigma_next), epsabs=1e-14,
                                  epsrel=1e-13)[0]
        else:  # sigma'(t) ~ t^(-1/2) at 0: integrate in sigma instead
            want = integrate.quad(lambda s: basis(t_of(s)), sig[0], 0.0, epsabs=1e-14, epsrel=1e-13)[0]
        hist = [(t(tt), torch.full((1, 2), float(k == j), dtype=T)) for k, tt in enumerate(ts)]
        got = sampling.deis_step(torch.zeros(1, 2, dtype=T), t(sig[0]), t(sigma_next), hist,
                                 sampling.vp_map(smin, smax)[1])
        assert got[0, 0].item() == pytest.approx(want, rel=1e-11, abs=1e-13), j


def test_ipndm_v_weights_are_adams_bashforth_and_ipndms_on_equal_steps():
    for k in range(1, 5):
        nodes = [1.0 + 0.3 * j for j in range(k)]  # equal steps of 0.3 downwards to 0.7
        for j in range(k):
            want = np.polyint(interpolate.lagrange(nodes, np.eye(k)[j]))
            hist = [(t(s), torch.full((1,), float(m == j), dtype=T)) for m, s in enumerate(nodes)]
            got = sampling.ipndm_v_step(torch.zeros(1, dtype=T), t(1.0), t(0.7), hist)
            assert got.item() == pytest.approx(want(0.7) - want(1.0), rel=1e-12)
            assert got.item() == pytest.approx(-0.3 * sampling._AB[k][j], rel=1e-12)
        uneven = [1.0, 1.2, 1.9, 2.1][:k]
        hist = [(t(s), torch.full((1,), float(m == 0), dtype=T)) for m, s in enumerate(uneven)]
        want = np.polyint(interpolate.lagrange(uneven, np.eye(k)[0]))
        got = sampling.ipndm_v_step(torch.zeros(1, dtype=T), t(1.0), t(0.0), hist)
        assert got.item() == pytest.approx(want(0.0) - want(1.0), rel=1e-11)


def ref_dpm_2(D, x, sigmas):
    """k-diffusion's sample_dpm_2 (its description): the midpoint in log sigma, then the whole step
    with the midpoint's derivative; Euler on the step to 0."""
    x = x.clone()
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = (x - D(x.float(), torch.full((len(x),), s)).double()) / s
        if s_next == 0:
            x = x + d * (s_next - s)
            continue
        mid = math.exp((math.log(s) + math.log(s_next)) / 2)
        x2 = x + d * (mid - s)
        d2 = (x2 - D(x2.float(), torch.full((len(x),), mid)).double()) / mid
        x = x + d2 * (s_next - s)
    return x


@pytest.mark.parametrize("final", ["zero", "sigma-min"])
def test_dpm2_is_k_diffusions_midpoint_solver(final):
    gmm = bench.get_task("gmm8").exact_denoiser()
    sig = sampling.schedule("edm", 5, gmm.sigma_min, gmm.sigma_max, final=final)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(3), dtype=T) * gmm.sigma_max
    torch.testing.assert_close(sampling.dpm2(gmm, x, sig), ref_dpm_2(gmm, x, sig), rtol=1e-12, atol=1e-12)


def ref_unipc(D, x, sigmas, order=3):
    """UniPC-p with lower orders at both ends, bh2, written from the paper's Algorithm (data
    prediction): a predictor and a corrector per step, the corrector's call reused, no corrector on a
    step whose call would serve only it; the step to 0 returns the last denoised value."""
    lam = [-math.log(s) if s > 0 else math.inf for s in sigmas.tolist()]
    n = len(sigmas) - 1

    def D64(x, s):
        return D(x.float(), torch.full((len(x),), s)).double()
    ms, ls = [D64(x, sigmas[0].item())], [lam[0]]
    for i in range(n):
        if sigmas[i + 1] == 0:
            return ms[-1]
        p = min(order, i + 1, n - i, len(ms))
        h = lam[i + 1] - lam[i]
        b = -math.expm1(-h)
        rk = [(ls[-1 - k] - lam[i]) / h for k in range(1, p)]
        dk = [(ms[-1 - k] - ms[-1]) / r for k, r in zip(range(1, p), rk)]
        base = math.exp(-h) * x + b * ms[-1]

        def coef(rs):
            m = len(rs)
            rhs = [math.factorial(q) * g_quad(h, q) / b for q in range(1, m + 1)]
            return np.linalg.solve(np.array([[r**j for r in rs] for j in range(m)]), rhs)
        a = [] if p == 1 else [0.5] if p == 2 else coef(rk)
        pred = base + b * sum(ak * d for ak, d in zip(a, dk))
        if i == n - 1:
            return pred
        m_new = D64(pred, sigmas[i + 1].item())
        c = [0.5] if p == 1 else coef(rk + [1.0])
        x = base + b * (sum(ck * d for ck, d in zip(c[:-1], dk)) + c[-1] * (m_new - ms[-1]))
        ms.append(m_new)
        ls.append(lam[i + 1])
    return x


@pytest.mark.parametrize("final", ["zero", "sigma-min"])
@pytest.mark.parametrize("steps", [3, 6])
def test_unipc_solve_matches_an_independent_algorithm(final, steps):
    gmm = bench.get_task("gmm8").exact_denoiser()
    sig = sampling.schedule("logsnr", steps, gmm.sigma_min, gmm.sigma_max, final=final)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(4), dtype=T) * gmm.sigma_max
    torch.testing.assert_close(sampling.unipc(gmm, x, sig), ref_unipc(gmm, x, sig), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# Global order on the gmm8 mixture, against scipy's DOP853.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixture_reference():
    gmm = bench.get_task("gmm8").exact_denoiser()
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(5), dtype=T) * 3.0
    hi, lo = 3.0, 0.3

    def rhs(s, y):
        x = torch.tensor(y.reshape(-1, 2))
        return ((x - gmm(x, torch.full((len(x),), s, dtype=T))) / s).numpy().ravel()
    sol = integrate.solve_ivp(rhs, (hi, lo), x0.numpy().ravel(), method="DOP853", rtol=1e-12, atol=1e-12)
    return gmm, x0, hi, lo, torch.tensor(sol.y[:, -1].reshape(-1, 2))


@pytest.mark.parametrize("solver, kwargs", [("dpmpp-3m", dict(lower_order_final=False)), ("unipc", {}),
                                            ("deis", {}), ("ipndm-v", {}), ("dpm2", {}),
                                            ("dpmpp-3m", dict(third_order="taylor"))])
def test_global_order_on_the_mixture(mixture_reference, solver, kwargs):
    gmm, x0, hi, lo, exact = mixture_reference
    errs = []
    for n in (8, 16, 32):
        sig = torch.exp(torch.linspace(math.log(hi), math.log(lo), n + 1, dtype=T))
        errs.append((sampling.SOLVERS[solver](gmm, x0, sig, **kwargs) - exact).abs().max().item())
    euler = [(sampling.euler(gmm, x0, torch.exp(torch.linspace(math.log(hi), math.log(lo), n + 1, dtype=T)))
              - exact).abs().max().item() for n in (8, 16, 32)]
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(p > 1.8 for p in orders), (errs, orders)
    assert errs[-1] < 0.1 * euler[-1], (errs, euler)


# ---------------------------------------------------------------------------
# Schedules, AFS, denoiser-call counts, gradients.
# ---------------------------------------------------------------------------

def test_schedules_hit_their_ends_and_spacing():
    smin, smax = 0.002, 80.0
    s = sampling.schedule("logsnr", 6, smin, smax)
    assert s[0] == smax and s[-2] == smin and s[-1] == 0 and len(s) == 7
    torch.testing.assert_close(s[:-1].log().diff(), torch.full((5,), math.log(smin / smax) / 5, dtype=T))
    for rho in (1.0, 2.0):
        s = sampling.schedule("time-uniform", 5, smin, smax, time_rho=rho, final="sigma-min")
        assert len(s) == 6 and s[0] == smax and s[-1] == smin
        tt = sampling.vp_map(smin, smax)[1](s)
        want = (1 + torch.arange(6, dtype=T) / 5 * (1e-3 ** (1 / rho) - 1)) ** rho
        torch.testing.assert_close(tt, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sampling.schedule("edm", 5, smin, smax), sampling.karras_sigmas(5, smin, smax),
                               rtol=0, atol=0)
    torch.testing.assert_close(sampling.schedule("edm", 5, smin, smax, final="sigma-min"),
                               sampling.karras_sigmas(6, smin, smax)[:-1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="schedule is one of"):
        sampling.schedule("cosine", 5, smin, smax)


@pytest.mark.parametrize("solver", sorted(SOLVER_SPECS))
@pytest.mark.parametrize("final", ["zero", "sigma-min"])
@pytest.mark.parametrize("afs", [False, True])
def test_denoiser_calls_are_the_specs_nfe(solver, final, afs):
    spec = SOLVER_SPECS[solver]
    if afs and not spec.afs:
        pytest.skip(f"{solver} takes no AFS")
    gmm = bench.get_task("gmm8").exact_denoiser()
    for budget in (4, 5, 6, 8, 10):
        n = steps_for(solver, budget, final, afs)
        counted = CountingDenoiser(gmm)
        sig = sampling.schedule("edm", n, gmm.sigma_min, gmm.sigma_max, final=final)
        x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=T) * gmm.sigma_max
        spec.fn(counted, x, sig, **(dict(afs=True) if afs else {}))
        assert counted.rows == 3 * spec.nfe(n, final, afs) and spec.nfe(n, final, afs) <= budget
        assert budget - spec.nfe(n, final, afs) < spec.calls_per_step  # the budget is spent


def test_afs_replaces_the_first_call_by_its_analytical_guess():
    gmm = bench.get_task("gmm8").exact_denoiser()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=T) * gmm.sigma_max
    sig = sampling.schedule("edm", 5, gmm.sigma_min, gmm.sigma_max)
    for solver in [s for s, spec in SOLVER_SPECS.items() if spec.afs]:
        seen = []
        SOLVER_SPECS[solver].fn(gmm, x, sig, afs=True, callback=lambda info: seen.append(info["denoised"]))
        s0 = float(sig[0])
        torch.testing.assert_close(seen[0], x - s0 * x / math.sqrt(1 + s0**2), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("solver", NEW + ["dpmpp-2m"])
def test_gradients_reach_every_sigma(solver):
    gmm = bench.get_task("gmm8").exact_denoiser()
    sig = sampling.schedule("edm", 6, gmm.sigma_min, gmm.sigma_max).requires_grad_(True)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=T) * gmm.sigma_max
    out = SOLVER_SPECS[solver].fn(gmm, x, sig)
    (g,) = torch.autograd.grad(out.square().sum(), sig)
    assert torch.isfinite(g).all() and (g[1:-1] != 0).all(), g


@pytest.mark.parametrize("name", NEW)
def test_the_new_methods_are_registered_with_the_tables_conventions(name):
    m = bench.get_method(name)
    cfg = m.config
    assert cfg["schedule"] == {"dpmpp-3m": "logsnr", "unipc": "logsnr", "deis": "time-uniform"}.get(name, "edm")
    assert cfg.get("max_order", 4) == {"dpmpp-3m": 3, "unipc": 3}.get(name, 4)
    gmm = bench.get_task("gmm8").exact_denoiser()
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=T) * gmm.sigma_max
    counted = CountingDenoiser(gmm)
    m.sample(counted, x, nfe_budget=6)
    assert counted.rows == 3 * m.describe_budget(6)["nfe_formula"] <= 3 * 6


def test_a_bad_setting_of_a_new_solver_is_one_line_before_any_work():
    with pytest.raises(ValueError, match="variant"):
        bench.get_method("unipc", variant="bh3")
    with pytest.raises(ValueError, match="schedule"):
        bench.get_method("deis", schedule="cosine")
    with pytest.raises(ValueError, match="third_order"):
        bench.get_method("dpmpp-3m", third_order="exact")
