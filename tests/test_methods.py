"""restart, dg and irl: costs, budgets, determinism, caching, bad input."""
import json

import numpy as np
import pytest
import torch

import bench
from bench.nets import discriminator as disc_lib
from bench.denoiser import CountingDenoiser, EDMPrecond
from bench.method import BudgetError
from bench.task import Unsupported
from bench.nets.toynet import MLPNet
from bench.methods.irl import IRLSampler, Policy, policy_loss, returns_to_go
from bench.methods.restart import Restart, restart_nfe


def tiny_net():
    torch.manual_seed(0)
    return EDMPrecond(MLPNet(2, 0, width=16, depth=1, emb=8), shape=(2,)).eval().requires_grad_(False)


# -- restart ------------------------------------------------------------------------
def test_restart_imagenet64_nfe_formula_equals_counted_nfe():
    m = Restart(**Restart.presets["imagenet64"])
    cfg = m.configured(203)
    assert restart_nfe(cfg["steps"], cfg["intervals"]) == 203
    d = CountingDenoiser(tiny_net())
    task = bench.get_task("gmm8")
    bench.generate(m.sample, task, d, 16, 0, nfe_budget=203)
    assert d.rows / 16 == 203


@pytest.mark.parametrize("budget,k,nfe", [(43, 2, 43), (60, 5, 55), (80, 10, 75), (200, 20, 115)])
def test_restart_cifar10_preset_picks_the_largest_k_that_fits(budget, k, nfe):
    m = Restart(**Restart.presets["cifar10"])
    cfg = m.configured(budget)
    assert cfg["intervals"][0][1] == k and restart_nfe(cfg["steps"], cfg["intervals"]) == nfe
    d = CountingDenoiser(tiny_net())
    bench.generate(m.sample, bench.get_task("gmm8"), d, 4, 0, nfe_budget=budget)
    assert d.rows / 4 == nfe


def test_restart_bad_configurations(tmp_path):
    with pytest.raises(BudgetError, match="over the budget"):
        Restart(**Restart.presets["cifar10"]).describe_budget(40)
    with pytest.raises(BudgetError, match="sigma_min <= t_min < t_max <= sigma_max"):
        bench.run("restart", "gmm8", nfe=20, out=tmp_path, progress=False, samples=10,
                  config=dict(steps=5, intervals=[[3, 1, 0.05, 500.0]]))
    with pytest.raises(BudgetError, match="needs NFE 13, over the budget 10"):
        bench.run("restart", "gmm8", nfe=10, out=tmp_path, progress=False, samples=10,
                  config=dict(steps=5, intervals=[[3, 1, 0.05, 0.5]]))


def test_restart_search_respects_the_budget(tmp_path):
    cfg = dict(search_tmin=[0.1, 1.0], search_ratio=[4.0], search_nrestart=[2], search_k=[1], tune_samples=100)
    (r,) = bench.run("restart", "gmm8", nfe=10, denoiser="exact", out=tmp_path, samples=100, progress=False,
                     config=cfg, cache=tmp_path / "c")
    assert r["status"] == "ok" and r["nfe"] <= 10 and r["fit_cost"]["nfe"] > 0
    assert r["budget_config"]["nfe_formula"] == r["nfe"]


# -- discriminator and dg -----------------------------------------------------------------
def test_discriminator_training_is_deterministic():
    real, fake = torch.randn(200, 2), torch.randn(200, 2) + 1

    def once():
        torch.manual_seed(123)  # the initialisation comes from the caller's seed
        d = disc_lib.for_shape((2,), 1.0, width=16)
        disc_lib.train(d, real, fake, steps=30, batch=64, seed=5)
        return d.state_dict()
    a, b = once(), once()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_discriminator_learns_the_log_density_ratio():
    """Two 1-D Gaussians N(0,1) vs N(1,1): at tiny sigma the optimal logit is 0.5 - x."""
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(4000, 1, generator=g), torch.randn(4000, 1, generator=g) + 1
    torch.manual_seed(0)
    d = disc_lib.MLPDiscriminator(1, 1.0, width=32)
    disc_lib.train(d, real, fake, steps=800, batch=256, lr=3e-3, seed=0, sigmas=[0.002])
    x = torch.linspace(-1, 2, 7)[:, None]
    logit = d(x, torch.full((7,), 0.002)).detach()
    assert torch.allclose(logit, 0.5 - x[:, 0], atol=0.25)


def test_dg_caches_its_discriminator_and_counts_aux_evals(tmp_path):
    cfg = dict(train_samples=300, disc_steps=30, disc_batch=64, disc_width=16)
    kw = dict(nfe=7, denoiser="exact", out=tmp_path / "r", samples=100, progress=False, config=cfg,
              cache=tmp_path / "c")
    first = bench.run("dg", "gmm8", **kw)[0]
    second = bench.run("dg", "gmm8", resume=False, **kw)[0]  # the fit is reused, the results redone
    assert first["fit_cost"]["nfe"] == 300 * 7 and not first["fit_cost"]["reused"]
    assert second["fit_cost"] == dict(first["fit_cost"], nfe=0, seconds=0.0, cpu_seconds=0.0, reused=True)
    assert first["metrics"] == second["metrics"]
    # Heun with 4 steps: every Euler part at sigma inside the window gets one discriminator gradient
    window = first["budget_config"]["sigma_window"]
    sig = bench.sampling.karras_sigmas(4, 0.002, 80.0)[:-1]
    assert first["aux_evals"] == sum(window[0] <= float(s) <= window[1] for s in sig)


# -- irl ------------------------------------------------------------------------------------
def test_policy_gradient_is_unbiased_on_a_one_step_bandit():
    """One step, two churn levels with known rewards r = (1, 0): the exact gradient of
    J = sum_a pi_a r_a with respect to the logits is pi_a (r_a - J). The estimator
    (REINFORCE on returns, with the raw reward as advantage) averages to it."""
    pol = Policy(10, [2], steps=1, time_only=True)
    with torch.no_grad():
        pol.table[0] = torch.tensor([0.3, -0.2])
    pi = torch.softmax(pol.table[0].detach(), 0)
    r = torch.tensor([1.0, 0.0])
    exact = pi * (r - (pi * r).sum())
    g = torch.Generator().manual_seed(0)
    a = torch.multinomial(pi.expand(200_000, 2), 1, replacement=True, generator=g).squeeze(1)
    lp = torch.log_softmax(pol(torch.zeros(len(a), 10), 0), 1).gather(1, a[:, None]).squeeze(1)
    loss = policy_loss(lp[None], lp[None].detach(), r[a][None])
    (grad,) = torch.autograd.grad(-loss, pol.table, retain_graph=True)
    assert torch.allclose(grad[0], exact, atol=4e-3)
    # the clipped (PPO) surrogate has the same gradient on its first update (ratio 1)
    (grad_ppo,) = torch.autograd.grad(-policy_loss(lp[None], lp[None].detach(), r[a][None], clip=0.2), pol.table)
    assert torch.allclose(grad_ppo, grad)


def test_returns_to_go_average_each_samples_remaining_rewards():
    rew = torch.tensor([[1.0, 3.0], [2.0, 2.0], [6.0, 7.0]])  # [steps, batch]
    valid = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # the second sample finished after 2 steps
    assert torch.equal(returns_to_go(rew, valid), torch.tensor([[3.0, 2.5], [4.0, 2.0], [6.0, 0.0]]))


def _random_policy(m, budget, seed):
    with torch.random.fork_rng(devices=[]):  # the network's other layers too: not the test order's draw
        torch.manual_seed(seed)
        m.policy = m._new_policy(budget)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.policy.net[-1].bias.copy_(torch.randn(m.policy.net[-1].bias.shape, generator=g) * 3)
        m.policy.net[-1].weight.copy_(torch.randn(m.policy.net[-1].weight.shape, generator=g))
    return m


@pytest.mark.parametrize("solver", ["heun", "euler", "dpmpp-2m", "ipndm"])
@pytest.mark.parametrize("budget", [3, 4, 7, 10])
def test_irl_never_exceeds_the_nfe_budget_under_random_actions(solver, budget):
    """Random policies (schedule, churn and guidance actions sampled): every sample ends at
    sigma = 0, spends at most the budget, and the counted evaluations agree."""
    from bench.noise import Noise
    task = bench.get_task("gmm8-cond")
    for seed in range(3):
        m = _random_policy(IRLSampler(task=task, solver=solver, greedy=False), budget, seed)
        d = CountingDenoiser(task.exact_denoiser())
        noise = Noise(seed, torch.arange(128))
        x = noise.randn((2,), dtype=torch.float64) * 80.0
        with torch.no_grad():
            _, traj = m.rollout(d, x, nfe_budget=budget, class_labels=task.class_labels(0, torch.arange(128)),
                                noise=noise, record=True)
        assert traj["spent"].max() <= budget and d.rows == traj["spent"].sum()
        finished = torch.zeros(128, dtype=torch.bool)
        for act, active in zip(traj["act"], traj["active"]):
            finished |= active & (torch.tensor(m.families()["advance"])[act["advance"]] == 0)
        assert finished.all()  # every trajectory ends with its step to sigma = 0
        used = set(torch.cat([a["guidance"] for a in traj["act"]]).tolist())
        assert len(used) > 1  # the guidance actions were really taken


@pytest.mark.parametrize("solver", ["heun", "euler", "dpmpp-2m", "ipndm"])
def test_irl_restricted_to_edms_schedule_is_its_base_solver_bit_for_bit(solver):
    from bench.method import SOLVER_SPECS, steps_for
    task = bench.get_task("gmm8")
    den = task.denoiser("exact")
    m = IRLSampler(task=task, solver=solver, advance=[4], grid=4, churn=[0.0])
    m.policy = m._new_policy(11)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * den.sigma_max
    sig = bench.sampling.karras_sigmas(steps_for(solver, 11), den.sigma_min, den.sigma_max)
    with torch.no_grad():
        assert torch.equal(m.sample(den, x, nfe_budget=11), SOLVER_SPECS[solver].fn(den, x, sig))


def test_irl_greedy_evaluation_is_deterministic_and_split_invariant():
    task = bench.get_task("gmm8-cond")
    den = task.denoiser("exact")
    m = _random_policy(IRLSampler(task=task), 10, 1)
    a, la = bench.generate(m.sample, task, den, 96, 5, nfe_budget=10)
    b, lb = bench.generate(m.sample, task, den, 96, 5, nfe_budget=10, batch_size=17)
    assert torch.equal(a, b) and torch.equal(la, lb)
    m.config["greedy"] = False  # sampled actions: still a function of the seed's streams
    c, _ = bench.generate(m.sample, task, den, 96, 5, nfe_budget=10)
    d, _ = bench.generate(m.sample, task, den, 96, 5, nfe_budget=10, batch_size=17)
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_irl_trains_saves_and_reloads_to_identical_samples(tmp_path):
    cfg = dict(iters=2, batch=32, disc_steps=5, disc_batch=32, tune_samples=200, eval_every=1, eval_samples=200)
    kw = dict(nfe=7, denoiser="exact", out=tmp_path / "r", samples=200, progress=False, config=cfg,
              cache=tmp_path / "c", save_samples=True)
    first = bench.run("irl", "gmm8", **kw)[0]
    (tmp_path / "r").rename(tmp_path / "r1")
    second = bench.run("irl", "gmm8", resume=False, **kw)[0]  # the fit is reused, the results redone
    assert first["status"] == second["status"] == "ok"
    assert first["fit_cost"]["nfe"] > 0 and second["fit_cost"]["reused"]
    label = first["label"]  # settings other than the published: a label of their own
    assert label.startswith("irl@exact-") and second["label"] == label
    a = np.load(tmp_path / "r1" / "gmm8" / label / "nfe7_seed0.npz")["x"]
    b = np.load(tmp_path / "r" / "gmm8" / label / "nfe7_seed0.npz")["x"]
    assert np.array_equal(a, b)
    assert (tmp_path / "r" / "gmm8" / label / "nfe7_seed0.actions.png").exists()
    assert "overhead" in first and first["nfe"] <= 7
    meta = json.loads(open(first["path"]).read())
    assert meta["extras"] == ["nfe7_seed0.actions.png"]


def test_irl_bad_input(tmp_path, no_tuning_task):
    with pytest.raises(ValueError, match='setting divergence of method irl is one of .*got "kl"'):
        bench.get_method("irl", bench.get_task("gmm8"), divergence="kl")
    with pytest.raises(BudgetError, match="NFE budget 2 is too small for irl with heun: it needs at least 3"):
        bench.run("irl", "gmm8", nfe=2, out=tmp_path, samples=10, progress=False, config={"solver": "heun"})
    with pytest.raises(BudgetError, match="NFE budget 1 is too small for irl with ipndm: it needs at least 2"):
        bench.run("irl", "gmm8", nfe=1, out=tmp_path, samples=10, progress=False)
    with pytest.raises(ValueError, match="advance lists grid steps"):
        bench.get_method("irl", bench.get_task("gmm8"), advance=[0])
    with pytest.raises(Unsupported, match="no tuning split"):
        bench.run("irl", no_tuning_task, nfe=9, out=tmp_path, samples=10, progress=False)


def test_every_fit_leaves_a_cost_card_in_its_result(tmp_path, monkeypatch):
    """The learned numbers stored per checkpoint, the teacher's NFE, whether the fit reads real data
    and its precomputation per checkpoint (issue 39), recorded in the result and shown on the page."""
    from bench.report import board, markdown
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    (r,) = bench.run("gits", "gmm8", nfe=[5], seeds=[0], samples=300, out=tmp_path / "out", progress=False,
                     ode_error=False)
    card = r["cost_card"]
    assert card["teacher_nfe"] == 60 and card["needs_real_data"] is False
    assert card["learned_parameters"] == r["budget_config"]["steps"] + 1  # the stored noise levels
    assert card["precompute"]["nfe"] == r["fit_cost"]["nfe"] > 0
    assert card["sampling_nfe"] == dict(sequential=r["nfe"], total=r["nfe"])
    assert bench.get_method("edm-grid").cost_card(10) == dict(needs_real_data=True, teacher_nfe=None)
    assert bench.get_method("ld3").cost_card(10)["teacher_nfe"] == 20  # max(20, 2 x 10)
    results, _ = board.load(tmp_path / "out" / "gmm8")
    page = markdown.page(board.make("gmm8", results, [], [tmp_path / "out"])).decode()
    assert "**Cost cards**" in page and "| gits " in page
