"""ddpo, dxmi, qlearning: exact log-probabilities, PPO ratio, EBM/TD losses, end to end, divergence."""
import json
import math
from pathlib import Path

import pytest
import torch

import bench
from bench.denoiser import CountingDenoiser, EDMPrecond
from bench.engine.runner import FitContext
from bench.nets.toynet import MLPNet
from bench.methods._common import Charged, TrainingDiverged, check_finite
from bench.methods.ddpo import DDPO, normalise_advantages, ppo_loss, rollout, step_coeffs, step_logprobs


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return EDMPrecond(MLPNet(2, 0, width=16, depth=1, emb=8), shape=(2,), sigma_data=2.0).eval().requires_grad_(False)


def tiny_ctx(task_name="gmm8", nfe=5, denoiser=None):
    task = bench.get_task(task_name)
    den = CountingDenoiser(denoiser if denoiser is not None else task.denoiser("learned"))
    return FitContext(task, den, nfe, "cpu", 10_000, False)


# -- ddpo -------------------------------------------------------------------------------
def test_ddpo_step_is_the_ddim_eta_posterior():
    s, t = 3.0, 1.0
    a, c = step_coeffs(s, t, 1.0)
    assert c**2 == pytest.approx(t**2 * (s**2 - t**2) / s**2)
    assert a == pytest.approx((t / s) ** 2)  # eta = 1: DDPM's ancestral step
    a0, c0 = step_coeffs(s, t, 1e-12)
    assert a0 == pytest.approx(t / s) and c0 == pytest.approx(0, abs=1e-9)  # eta -> 0: DDIM


def test_ddpo_per_step_logprobs_match_torch_distributions():
    net = tiny_net()
    sig = bench.sampling.karras_sigmas(6, 0.002, 80.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64) * 80
    _, states, lps = rollout(net, x, sig, eta=0.7, generator=g, record=True)
    assert lps.shape == (5, 32) and len(states) == 6
    for i in range(5):
        x0 = net(states[i].float(), torch.full((32,), float(sig[i]))).double()
        a, c = step_coeffs(sig[i], sig[i + 1], 0.7)
        ref = torch.distributions.Normal(x0 + a * (states[i] - x0), c).log_prob(states[i + 1]).mean(1)
        torch.testing.assert_close(lps[i], ref, rtol=1e-6, atol=1e-6)
    # the recomputation used for learning gives the same numbers
    torch.testing.assert_close(step_logprobs(net, states, sig, eta=0.7), lps, rtol=1e-6, atol=1e-6)


def test_ddpo_ppo_ratio_is_one_on_the_first_update_after_sampling():
    net = tiny_net()
    net.requires_grad_(True)
    sig = bench.sampling.karras_sigmas(5, 0.002, 80.0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64) * 80
    with torch.no_grad():
        _, states, old = rollout(net, x, sig, generator=g, record=True)
    rows = torch.randperm(64, generator=g)[:16]
    lp = step_logprobs(net, states, sig, rows=rows)
    adv = torch.randn(16, generator=g, dtype=torch.float64)
    loss, ratio = ppo_loss(lp, old[:, rows], adv, clip=1e-4)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)
    # at ratio 1 the clipped surrogate's gradient is the score-function (DDPO-SF) gradient
    (g_is,) = torch.autograd.grad(loss, net.model.net[0].weight)
    lp = step_logprobs(net, states, sig, rows=rows)
    (g_sf,) = torch.autograd.grad(-(adv[None] * lp).mean(), net.model.net[0].weight)
    torch.testing.assert_close(g_is, g_sf, rtol=1e-3, atol=1e-6)


def test_ddpo_advantages_per_class_and_clipped():
    r = torch.tensor([1.0, 3.0, 10.0, 30.0, 5.0])
    labels = torch.tensor([0, 0, 1, 1, 2])
    a = normalise_advantages(r, labels, clip=5.0)
    s = math.sqrt(2.0)  # std (unbiased) of two values d apart is d / sqrt(2)
    torch.testing.assert_close(a[:4], torch.tensor([-1 / s, 1 / s, -1 / s, 1 / s], dtype=torch.float64))
    assert a[4] == pytest.approx(float((5.0 - r.mean()) / r.std()), rel=1e-6)  # lone class: batch statistics
    assert normalise_advantages(torch.tensor([0.0] * 99 + [1e6])).max() == 5.0


def test_ddpo_end_to_end_caches_and_plots(tmp_path):
    cfg = dict(iters=2, batch=32, minibatch=16, reward="logprob")  # no discriminator: only rollouts count
    kw = dict(nfe=5, out=tmp_path / "r", samples=200, progress=False, config=cfg, cache=tmp_path / "c",
              label="ddpo")
    base = bench.get_task("gmm8").denoiser("learned")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    first = bench.run("ddpo", "gmm8", **kw)[0]
    assert first["status"] == "ok", first.get("error")
    assert first["nfe"] == 5
    assert first["fit_cost"]["nfe"] == 2 * (32 * 5 + 32 * 4)  # rollouts + one recomputation per update
    assert (tmp_path / "r" / "gmm8" / "ddpo" / "nfe5_seed0.reward.png").exists()
    assert json.loads(open(first["path"]).read())["extras"] == ["nfe5_seed0.reward.png"]
    second = bench.run("ddpo", "gmm8", resume=False, **kw)[0]  # the fit is reused, the results redone
    assert second["fit_cost"]["reused"] and second["metrics"] == first["metrics"]
    meta = json.loads((Path(first["fit_cost"]["artifact_path"]) / "meta.json").read_text())["meta"]
    task = bench.get_task("gmm8")
    real, _ = task.sample_tuning(2000, 0)  # the reward's reference line: the tuning data's own reward
    assert meta["reward_data"] == pytest.approx(float(task.log_prob(real.double().numpy()).mean()), rel=1e-9)
    after = bench.get_task("gmm8").denoiser("learned").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ddpo_conditional_and_discriminator_reward():
    torch.manual_seed(0)
    cond_net = EDMPrecond(MLPNet(2, 8, width=16, depth=1, emb=8), shape=(2,), num_classes=8, sigma_data=2.0,
                          has_uncond=True).eval().requires_grad_(False)
    ctx = tiny_ctx("gmm8-cond", nfe=3, denoiser=cond_net)
    m = DDPO(ctx.task, iters=1, batch=16, minibatch=16, reward="disc", tune_samples=64, disc_steps=3,
             disc_batch=32, disc_width=16)
    art = m.fit(ctx)
    assert art.meta["reward"] == "disc" and any(k.startswith("disc.") for k in art.tensors)
    m2 = DDPO(ctx.task)
    m2.load(art)
    x, labels = bench.generate(m2.sample, ctx.task, CountingDenoiser(ctx.denoiser.inner), 8, 0, nfe_budget=3)
    assert torch.isfinite(x).all() and labels is not None


def test_ddpo_divergence_stops_with_a_clear_message_and_no_artifact(tmp_path, monkeypatch):
    kw = dict(nfe=3, out=tmp_path / "r", samples=100, progress=False, cache=tmp_path / "c")
    ok = bench.run("ddpo", "gmm8", config=dict(iters=1, batch=16, minibatch=16), **kw)[0]
    assert ok["status"] == "ok"
    art_dir = tmp_path / "c"
    files = {p: p.read_bytes() for p in art_dir.rglob("*") if p.is_file()}
    monkeypatch.setattr(DDPO, "reward", lambda self, task, x, labels=None: torch.full((x.shape[0],), math.nan))
    with pytest.raises(TrainingDiverged, match="reward became NaN at iteration 0"):
        DDPO(bench.get_task("gmm8"), iters=1, batch=16).fit(tiny_ctx(nfe=3))
    out = bench.run("ddpo", "gmm8", config=dict(iters=2, batch=16, minibatch=16), **kw)
    assert out[0]["status"] == "failed" and "reward became NaN" in out[0]["error"]
    assert {p: p.read_bytes() for p in art_dir.rglob("*") if p.is_file()} == files  # earlier artifact intact
    with pytest.raises(TrainingDiverged, match="exploded"):
        check_finite("m", "reward", torch.tensor([1e9]), 3, limit=1e6)


def test_ddpo_rejects_a_one_step_budget_and_bad_settings():
    with pytest.raises(bench.method.BudgetError, match="at least 2 steps"):
        DDPO().describe_budget(1)
    with pytest.raises(ValueError, match="variant"):
        DDPO(variant="ppo")
    with pytest.raises(ValueError, match="eta"):
        DDPO(eta=0.0)


def test_charged_counts_on_every_wrapper():
    inner = CountingDenoiser(tiny_net())
    outer = CountingDenoiser(inner)
    Charged(outer, tiny_net(1))(torch.zeros(7, 2), torch.ones(7))
    assert outer.rows == inner.rows == 7


# -- dxmi -------------------------------------------------------------------------------
def test_dxmi_ebm_loss_matches_a_hand_computation():
    from bench.methods.dxmi import ebm_loss
    e_data, e_samp = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])
    # mean E(data) - mean E(sample) + gamma (mean E(data)^2 + mean E(sample)^2) = 2 - 1 + gamma (5 + 2)
    assert ebm_loss(e_data, e_samp, 1.0).item() == pytest.approx(8.0)
    assert ebm_loss(e_data, e_samp, 0.5).item() == pytest.approx(4.5)


def test_dxmi_td_targets_match_a_hand_computation():
    from bench.methods.dxmi import td_targets
    v_next = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x = torch.zeros(2, 2, dtype=torch.float64)
    x_next = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    # V' + tau2 mean_d(dx^2) / (2 beta) - tau1 log sigma, with beta 2, sigma e, tau1 0.1, tau2 0.01
    got = td_targets(v_next, x_next, x, 2.0, math.e, tau1=0.1, tau2=0.01)
    torch.testing.assert_close(got, torch.tensor([1 + 0.01 * 2.5 / 4 - 0.1, -2 - 0.1], dtype=torch.float64))


def test_dxmi_sampler_starts_as_the_ancestral_sampler():
    from bench.methods.dxmi import Sampler
    net = tiny_net()
    sig = bench.sampling.karras_sigmas(4, 0.002, 80.0)
    s = Sampler(net, sig, 0.002)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 2, generator=g, dtype=torch.float64) * 80
    eps = torch.randn(8, 2, generator=g, dtype=torch.float64)
    x0 = net(x.float(), torch.full((8,), 80.0)).double()
    a, c = step_coeffs(sig[0], sig[1], 1.0)
    with torch.no_grad():
        torch.testing.assert_close(s.step(net, x, 0, eps), x0 + a * (x - x0) + c * eps)
    assert s.std(3).item() == pytest.approx(0.002)  # the last step's noise starts at sigma_min


def test_dxmi_end_to_end_caches_and_plots(tmp_path):
    cfg = dict(iters=2, warmup=1, batch=32, tune_samples=100, width=16)
    kw = dict(nfe=4, out=tmp_path / "r", samples=200, progress=False, config=cfg, cache=tmp_path / "c",
              label="dxmi")
    first = bench.run("dxmi", "gmm8", **kw)[0]
    assert first["status"] == "ok", first.get("error")
    assert first["nfe"] == 4 and first["budget_config"]["steps"] == 4
    assert first["fit_cost"]["nfe"] == 2 * 32 * 4 + 32 * 4  # two rollouts + one sampler update (after warm-up)
    assert (tmp_path / "r" / "gmm8" / "dxmi" / "nfe4_seed0.training.png").exists()
    second = bench.run("dxmi", "gmm8", resume=False, **kw)[0]  # the fit is reused, the results redone
    assert second["fit_cost"]["reused"] and second["metrics"] == first["metrics"]


def test_dxmi_divergence_stops_with_a_clear_message(monkeypatch):
    from bench.methods import dxmi as dxmi
    monkeypatch.setattr(dxmi, "ebm_loss", lambda *a, **k: torch.tensor(math.inf, requires_grad=True))
    with pytest.raises(TrainingDiverged, match="EBM loss became inf at iteration 0"):
        dxmi.DxMI(bench.get_task("gmm8"), iters=1, batch=8, tune_samples=16, width=8).fit(tiny_ctx(nfe=3))
    with pytest.raises(bench.method.BudgetError):
        dxmi.DxMI().describe_budget(1)


# -- qlearning --------------------------------------------------------------------------
def test_qlearning_ratio_estimator_by_hand_and_against_the_exact_score():
    from bench.methods.qlearning import ratio_score
    data = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    w = math.exp(-2) / (1 + math.exp(-2))  # weight of (2, 0) seen from (0, 0) at sigma 1
    torch.testing.assert_close(ratio_score(x, 1.0, data), torch.tensor([[0.0, 0.0], [2 * w, 0.0]], dtype=torch.float64))
    task = bench.get_task("gmm8")
    big, _ = task.sample_tuning(20000)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    exact = (task.denoiser("exact")(x, torch.full((64,), 1.0, dtype=torch.float64)) - x) / 1.0
    assert (ratio_score(x, 1.0, big.double()) - exact).abs().max() < 0.1


def test_qlearning_q_is_theta_log_of_the_known_covariance_gaussian_policy():
    from bench.methods.qlearning import q_value, td_errors
    g = torch.Generator().manual_seed(0)
    a, mu = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    s, th = 0.7, 0.05
    ref = th * torch.distributions.MultivariateNormal(mu, th / s**2 * torch.eye(2, dtype=torch.float64)).log_prob(a)
    torch.testing.assert_close(q_value(a, mu, s, th), ref)
    # TD error by hand: J' - J + (r - q) Delta, r = -(s^2/2)|a - score|^2; here a = mu = score
    one = torch.ones(1, 2, dtype=torch.float64)
    got = td_errors(torch.tensor([3.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), one, one, one,
                    1.0, 0.5, 0.1)
    q = -0.1 * math.log(2 * math.pi * 0.1)  # theta * log N(mu; mu, theta I) in 2 dimensions
    assert got.item() == pytest.approx(3 - 1 + (0 - q) * 0.5)


def test_qlearning_end_to_end_counts_only_policy_evaluations(tmp_path):
    cfg = dict(iters=2, batch=32, data_batch=64, tune_samples=200, width=16, depth=1)
    kw = dict(nfe=4, out=tmp_path / "r", samples=200, progress=False, config=cfg, cache=tmp_path / "c",
              label="qlearning")
    r = bench.run("qlearning", "gmm8", **kw)[0]
    assert r["status"] == "ok", r.get("error")
    assert r["nfe"] == 4 and r["fit_cost"]["nfe"] == 2 * (32 * 4 + 32 * 4)  # rollout + the policy means with grads
    assert (tmp_path / "r" / "gmm8" / "qlearning" / "nfe4_seed0.training.png").exists()
    again = bench.run("qlearning", "gmm8", resume=False, **kw)[0]  # the fit is reused, the results redone
    assert again["fit_cost"]["reused"] and again["metrics"] == r["metrics"]


def test_qlearning_is_for_vector_tasks_only():
    from types import SimpleNamespace

    from bench.methods.qlearning import QLearning
    with pytest.raises(ValueError, match="toy"):
        QLearning(SimpleNamespace(name="digits", shape=(1, 8, 8)))
    with pytest.raises(bench.method.BudgetError):
        QLearning().describe_budget(1)


# -- ddpo: running per-class reward statistics, LoRA ------------------------------------
def test_ddpo_class_stats_running_buffer_by_hand():
    from bench.methods.ddpo import ClassStats
    stats = ClassStats(buffer=3, min_count=3, eps=0.0)
    pop_std = lambda v: math.sqrt(sum((x - sum(v) / len(v)) ** 2 for x in v) / len(v))  # noqa: E731
    # batch 1: class 0 gets [1, 2, 4] (3 rewards: its own statistics); class 1 only [10] (the batch's)
    r1, l1 = torch.tensor([1.0, 2.0, 10.0, 4.0]), torch.tensor([0, 0, 1, 0])
    a1 = stats.advantages(r1, l1)
    m0, s0 = 7 / 3, pop_std([1, 2, 4])
    mb, sb = 17 / 4, pop_std([1, 2, 10, 4])
    torch.testing.assert_close(a1, torch.tensor([(1 - m0) / s0, (2 - m0) / s0, (10 - mb) / sb, (4 - m0) / s0],
                                                dtype=torch.float64))
    assert stats.recent == {0: [1.0, 2.0, 4.0], 1: [10.0]}
    # batch 2: class 1 -> [10, 6, 8] (mean 8); class 0 -> [2, 4, 0] (the oldest, 1, falls out; mean 2)
    a2 = stats.advantages(torch.tensor([6.0, 8.0, 0.0]), torch.tensor([1, 1, 0]))
    s = math.sqrt(8 / 3)  # population std of both buffers
    torch.testing.assert_close(a2, torch.tensor([-2 / s, 0.0, -2 / s], dtype=torch.float64))
    assert stats.recent == {0: [2.0, 4.0, 0.0], 1: [10.0, 6.0, 8.0]}
    with pytest.raises(ValueError, match="buffer"):
        DDPO(buffer=4, buffer_min=8)


def test_ddpo_fit_uses_the_running_buffer_on_conditional_tasks_only(monkeypatch):
    from bench.methods import ddpo as ddpo
    calls = []
    orig = ddpo.ClassStats.advantages
    monkeypatch.setattr(ddpo.ClassStats, "advantages", lambda self, r, lab: calls.append(len(r)) or orig(self, r, lab))
    torch.manual_seed(0)
    cond_net = EDMPrecond(MLPNet(2, 8, width=16, depth=1, emb=8), shape=(2,), num_classes=8, sigma_data=2.0,
                          has_uncond=True).eval().requires_grad_(False)
    DDPO(bench.get_task("gmm8-cond"), iters=2, batch=16, minibatch=16).fit(tiny_ctx("gmm8-cond", 3, cond_net))
    assert calls == [16, 16]
    DDPO(bench.get_task("gmm8-cond"), iters=1, batch=16, minibatch=16, buffer=0).fit(
        tiny_ctx("gmm8-cond", 3, cond_net))
    DDPO(bench.get_task("gmm8"), iters=1, batch=16, minibatch=16).fit(tiny_ctx(nfe=3))
    assert calls == [16, 16]


def test_ddpo_lora_end_to_end_stores_only_adapters(tmp_path):
    from bench.method import Artifact
    kw = dict(nfe=3, out=tmp_path / "r", samples=100, progress=False, cache=tmp_path / "c",
              config=dict(iters=1, batch=16, minibatch=16, lora_rank=2, reward="logprob"))
    first = bench.run("ddpo", "gmm8", **kw)[0]
    assert first["status"] == "ok", first.get("error")
    second = bench.run("ddpo", "gmm8", resume=False, **kw)[0]  # results redone; the adapters from the cache
    assert second["fit_cost"]["reused"] and second["metrics"] == first["metrics"]
    ctx = tiny_ctx(nfe=3)
    base = {k: v.clone() for k, v in ctx.denoiser.inner.state_dict().items()}
    m = DDPO(ctx.task, iters=2, batch=16, minibatch=8, lora_rank=2, lr=1e-2, reward="logprob")
    art = m.fit(ctx)
    assert art.tensors and all(k.startswith("lora.") for k in art.tensors)
    assert art.meta["lora"] == dict(rank=2, alpha=2.0, targets="all")
    assert any(v.abs().sum() > 0 for k, v in art.tensors.items() if k.endswith(".B"))  # B moved off zero
    m2 = DDPO(ctx.task)
    m2.load(Artifact(meta=json.loads(json.dumps(art.meta)), tensors=art.tensors))  # meta as the cache keeps it
    tuned = m2.finetuned(ctx.denoiser.inner)
    assert not any("parametrizations" in k for k in tuned.state_dict())  # merged for sampling
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and changed <= {f"{layer}.weight" for layer in art.meta["adapted"]}
    x, _ = bench.generate(m2.sample, ctx.task, CountingDenoiser(ctx.denoiser.inner), 8, 0, nfe_budget=3)
    assert torch.isfinite(x).all()
    assert all(torch.equal(v, base[k]) for k, v in ctx.denoiser.inner.state_dict().items())  # base untouched


def test_ddpo_lora_on_a_tiny_edm_network_with_the_image_presets():
    from types import SimpleNamespace

    from bench.nets.edm import networks as edm
    from bench.nets.lora import add_lora, adapted_layers
    presets = {t: DDPO(SimpleNamespace(name=t)).config for t in ("cifar10", "cifar10-cond", "imagenet64")}
    assert all(c["lora_rank"] == 4 for c in presets.values())
    song = dict(model_type="SongUNet", model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                dropout=0.0)
    adm = dict(model_type="DhariwalUNet", model_channels=64, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
               dropout=0.0)
    for c in presets.values():
        for kw, final in ((song, "model.dec.8x8_aux_conv"), (adm, "model.out_conv")):
            net = edm.EDMPrecond(img_resolution=8, img_channels=1, label_dim=10, **kw)
            add_lora(net, c["layers"], rank=c["lora_rank"])
            layers = adapted_layers(net)
            assert final in layers and any(n.endswith(".qkv") for n in layers)
    # end to end on digits (conditional, discriminator reward) with a tiny SongUNet
    torch.manual_seed(0)
    net = edm.EDMPrecond(img_resolution=8, img_channels=1, label_dim=10, **song).eval().requires_grad_(False)
    ctx = tiny_ctx("digits", nfe=2, denoiser=net)
    m = DDPO(ctx.task, iters=1, batch=8, minibatch=8, lora_rank=4, layers=presets["cifar10"]["layers"],
             tune_samples=32, disc_steps=2, disc_batch=16, disc_width=8)
    art = m.fit(ctx)
    assert art.meta["reward"] == "disc"
    assert all(k.startswith(("lora.", "disc.")) for k in art.tensors) and any(k.startswith("lora.") for k in art.tensors)
    m.load(art)
    x, labels = bench.generate(m.sample, ctx.task, CountingDenoiser(net), 4, 0, nfe_budget=2)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all() and labels is not None
