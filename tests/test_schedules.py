"""Learned schedules (gits, ld3): the programmes against brute force, the schedules' validity and
exact NFE under every solver."""
import itertools

import pytest
import torch

import bench
from bench.methods._schedule import check_schedule
from bench.methods.gits import gits_programme, jump_costs


def brute_force_path(cost, steps, coeff):
    g = cost.shape[0] - 1
    best, best_path = float("inf"), None
    for inner in itertools.combinations(range(1, g), steps - 1):
        path = (0, *inner, g)
        total = sum(coeff ** m * float(cost[a, b]) for m, (a, b) in enumerate(zip(path, path[1:])))
        if total < best:
            best, best_path = total, list(path)
    return best_path


@pytest.mark.parametrize("coeff", [1.0, 1.15, 0.7])
def test_the_gits_programme_finds_the_optimal_path_of_a_hand_made_cost_matrix(coeff):
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(8, 8, generator=gen, dtype=torch.float64)
    for steps in range(1, 8):
        assert gits_programme(cost, steps, coeff) == brute_force_path(cost, steps, coeff), steps
    # a matrix whose optimum is plain to see: jumps of two grid points are free, all others cost 1
    easy = torch.ones(7, 7, dtype=torch.float64)
    for i in range(5):
        easy[i, i + 2] = 0
    assert gits_programme(easy, 3, coeff) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="holds schedules of 1 to 7 steps, not 8"):
        gits_programme(cost, 8)


def test_jump_costs_are_the_mean_euler_error():
    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([4.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    xs = torch.randn(4, 5, 2, generator=gen, dtype=torch.float64)
    ds = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    cost = jump_costs(xs, ds, t)
    for i in range(3):
        for j in range(i + 1, 4):
            want = sum(float((xs[i, n] + (t[j] - t[i]) * ds[i, n] - xs[j, n]).norm()) for n in range(5)) / 5
            assert float(cost[i, j]) == pytest.approx(want, rel=1e-12)
    assert torch.isinf(cost[2, 1]) and torch.isinf(cost[1, 1])


def test_a_schedule_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match="strictly decreasing and end at 0"):
        check_schedule(torch.tensor([80.0, 1.0, 1.0, 0.0]), 3, 80.0)
    with pytest.raises(ValueError, match="strictly decreasing and end at 0"):
        check_schedule(torch.tensor([80.0, 1.0, 0.5]), 2, 80.0)
    with pytest.raises(ValueError, match="of 3 steps has 4 noise levels, got 3"):
        check_schedule(torch.tensor([80.0, 1.0, 0.0]), 3, 80.0)
    with pytest.raises(ValueError, match="starts at the denoiser's sigma_max 80.0"):
        check_schedule(torch.tensor([40.0, 1.0, 0.0]), 2, 80.0)


@pytest.mark.parametrize("method, solver, nfe", [(m, s, n) for m in ("gits", "ld3", "art-rl")
                                              for s, n in [("ipndm", 4), ("euler", 5), ("heun", 7), ("dpmpp-2m", 5)]]
                         + [("ld3", s, 6) for s in ("unipc", "dpmpp-3m", "deis", "ipndm-v", "dpm2")]
                         + [("gits", s, 6) for s in ("unipc", "dpmpp-3m")])
def test_a_learned_schedule_is_valid_and_fits_the_budget_under_every_solver(tmp_path, method, solver, nfe):
    small = dict(gits=dict(teacher_nfe=24, teacher_samples=32), ld3=dict(teacher_nfe=24, pairs=8, rounds=1),
                 **{"art-rl": dict(iters=2, batch=4, substeps=1, average=1)})
    r = bench.run(method, "gmm8", nfe=nfe, seeds=[0], samples=200, out=tmp_path, progress=False,
                  config=dict(solver=solver, **small[method]), cache=tmp_path / "cache")[0]
    assert r["status"] == "ok", r.get("error")
    assert r["nfe"] == r["budget_config"]["nfe_formula"] <= nfe
    s = torch.tensor(r["budget_config"]["sigmas"], dtype=torch.float64)
    check_schedule(s, r["budget_config"]["steps"], 80.0)
    aim = r["objective"]  # the fit's own objective at its start (EDM's schedule) and its end
    assert aim["start"] >= 0 and aim["end"] >= 0 and not aim["higher_is_better"] or method == "art-rl"
    if method == "ld3":
        assert aim["end"] <= aim["start"]  # it keeps its best validation distance, the start included
    if method == "gits":
        assert aim["name"].startswith("teacher error")
        teacher = bench.sampling.karras_sigmas(24, 0.002, 80.0)
        assert all(bool((teacher == v).any()) for v in s)  # every level is a point of the teacher's grid
        assert r["fit_cost"]["nfe"] == 24 * 32  # the teacher's evaluations, nothing else
    elif method == "ld3":  # the teacher on every pair, the student twice per training pair (soft step) and on validation
        assert r["fit_cost"]["nfe"] > 24 * 8 + r["nfe"] * 4


# --- ld3 -----------------------------------------------------------------------------------

def test_ld3_levels_are_a_schedule_for_any_parameters_and_invert_the_edm_schedule():
    from bench.methods.ld3 import levels, xi_for
    gen = torch.Generator().manual_seed(1)
    for n in (2, 3, 9):
        s = levels(3 * torch.randn(n - 1, generator=gen, dtype=torch.float64), 0.002, 80.0)
        check_schedule(s, n, 80.0)
        assert float(s[-2]) == 0.002  # the published end points: sigma_max ... sigma_min, then 0
        edm = bench.sampling.karras_sigmas(n, 0.002, 80.0)
        torch.testing.assert_close(levels(xi_for(edm), 0.002, 80.0), edm, rtol=64 * 2.2e-16, atol=0)


def test_ld3_student_equal_to_its_teacher_has_zero_loss_so_the_teacher_is_finer(tmp_path):
    """The student with the teacher's solver and steps, started at the teacher's schedule, reproduces the
    teacher (float64 state, float32 network: up to the float64 rounding of the levels): nothing to learn.
    So the teacher takes at least twice the student's NFE, and a fit asked for a teacher as coarse as
    its student distils a finer one and moves off its start."""
    from bench.methods.ld3 import l2, levels, xi_for
    task = bench.get_task("gmm8")
    den = task.denoiser()
    edm = bench.sampling.karras_sigmas(6, den.sigma_min, den.sigma_max)
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
    with torch.no_grad():
        teacher = bench.sampling.ipndm(den, x, edm)
        student = bench.sampling.ipndm(den, x, levels(xi_for(edm), den.sigma_min, den.sigma_max))
    assert float(l2(student, teacher).max()) <= 1e-9 * float(teacher.abs().max())
    r = bench.run("ld3", "gmm8", nfe=6, seeds=[0], samples=100, out=tmp_path, progress=False, cache=tmp_path / "c",
                  config=dict(solver="ipndm", teacher_nfe=6, pairs=20, rounds=2))[0]
    assert r["budget_config"]["teacher_nfe"] == 12 and r["fit_cost"]["nfe"] >= 12 * 20
    moved = torch.tensor(r["budget_config"]["sigmas"], dtype=torch.float64) - edm
    assert float(moved.abs().max()) > 1e-6 and r["untrained"]["identical"] is False


def test_ld3_soft_start_stays_in_the_ball_and_never_raises_the_loss():
    from bench.methods.ld3 import l2, soft_start
    gen = torch.Generator().manual_seed(2)
    x_t = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(64, 3, generator=gen, dtype=torch.float64)

    def run(x):
        return torch.sin(3 * x) + x ** 2

    for radius, lr in [(0.05, 0.1), (10.0, 5.0)]:
        moved = soft_start(run, l2, x_t, target, radius, lr)
        assert float((moved - x_t).norm(dim=1).max()) <= radius * (1 + 1e-12)
        assert bool((l2(run(moved), target) <= l2(run(x_t), target)).all())
        if radius < 1:  # a short step lowers the loss of most samples: it is taken there
            assert float((moved != x_t).any(dim=1).double().mean()) > 0.5


# --- art-rl --------------------------------------------------------------------------------

class GaussianDenoiser(bench.denoiser.Denoiser):
    """The exact denoiser of N(0, sigma_data^2 I): D(x, sigma) = x sigma_data^2 / (sigma^2 + sigma_data^2)."""
    shape = (3,)

    def forward(self, x, sigma, class_labels=None):
        s = sigma.view(-1, 1).to(x.dtype)
        return x * self.sigma_data ** 2 / (s ** 2 + self.sigma_data ** 2)


def test_art_rl_stiffness_vanishes_on_a_gaussian_whose_vp_trajectories_are_constant():
    """For Gaussian data of std sigma_data the probability-flow ODE's solution is x(sigma) proportional to
    sqrt(sigma^2 + sigma_data^2): constant in variance-preserving scale, so Q = 0; the field is exact too."""
    from bench.methods.art_rl import field, stiffness
    den = GaussianDenoiser()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    tau = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    f, q = stiffness(den, x, tau, None)
    c = torch.log(torch.tensor(0.002 / 80.0, dtype=torch.float64))
    sigma = 80.0 * torch.exp(tau * c)
    want = c * x * sigma[:, None] ** 2 / (sigma[:, None] ** 2 + 0.25)  # c (x - D)
    # the network sees float32: x - D loses |x| eps32 where D is nearly x
    torch.testing.assert_close(f, want, rtol=0, atol=16 * 1.2e-7 * float(c.abs() * x.abs().max()))
    assert float(q.max()) <= 1e-4 * float(f.abs().max())
    torch.testing.assert_close(field(den, x, tau, None), f, rtol=0, atol=0)


def test_art_rl_speeds_map_to_the_schedule_and_the_edm_speeds_to_edm():
    from bench.methods.art_rl import schedule_from_speeds
    edm = bench.sampling.karras_sigmas(7, 0.002, 80.0)
    tau = torch.log(edm[:-1] / 80.0) / torch.log(torch.tensor(0.002 / 80.0, dtype=torch.float64))
    speeds = (tau[1:] - tau[:-1]) * 6
    torch.testing.assert_close(schedule_from_speeds(3.7 * speeds, 0.002, 80.0), edm, rtol=64 * 2.2e-16, atol=0)
    check_schedule(schedule_from_speeds(torch.rand(5, dtype=torch.float64) + 0.01, 0.002, 80.0), 6, 80.0)


def test_art_rl_counts_every_field_evaluation_and_jvp(tmp_path):
    cfg = dict(iters=3, batch=4, substeps=2, average=2)
    r = bench.run("art-rl", "gmm8", nfe=5, seeds=[0], samples=50, out=tmp_path, progress=False, config=cfg,
                  cache=tmp_path / "c")[0]
    assert r["status"] == "ok", r.get("error")
    ticks = r["budget_config"]["steps"] - 1
    assert r["fit_cost"]["nfe"] == 3 * 4 * ticks * 2 * 2  # iterations x batch x ticks x substeps x (F + JVP)


def test_ld3_measures_distance_in_the_tasks_perceptual_features_when_it_has_them():
    from bench.methods.ld3 import distance_for, l2
    a = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    b = a + 0.1
    assert distance_for(bench.get_task("gmm8")) is l2
    digits = bench.get_task("digits")
    d = distance_for(digits)(a, b)
    want = (digits.perceptual_features(a) - digits.perceptual_features(b)).norm(dim=1)
    torch.testing.assert_close(d, want, rtol=0, atol=0)
    assert not torch.allclose(d, l2(a, b))  # not the pixel distance
