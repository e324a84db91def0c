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


@pytest.mark.parametrize("solver, nfe", [("ipndm", 4), ("euler", 5), ("heun", 7), ("dpmpp-2m", 5)])
def test_a_learned_schedule_is_valid_and_fits_the_budget_under_every_solver(tmp_path, solver, nfe):
    r = bench.run("gits", "gmm8", nfe=nfe, seeds=[0], samples=200, out=tmp_path, progress=False,
                  config=dict(solver=solver, teacher_nfe=24, teacher_samples=32), cache=tmp_path / "cache")[0]
    assert r["status"] == "ok", r.get("error")
    assert r["nfe"] == r["budget_config"]["nfe_formula"] <= nfe
    s = torch.tensor(r["budget_config"]["sigmas"], dtype=torch.float64)
    check_schedule(s, r["budget_config"]["steps"], 80.0)
    teacher = bench.sampling.karras_sigmas(24, 0.002, 80.0)
    assert all(bool((teacher == v).any()) for v in s)  # every level is a point of the teacher's grid
    assert r["fit_cost"]["nfe"] == 24 * 32  # the teacher's evaluations, nothing else
