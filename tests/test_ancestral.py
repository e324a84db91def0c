"""The ancestral samplers: euler-a at eta 0 is Euler bit for bit; ddpm's posterior steps equal
Euler-ancestral at eta 1 on the same schedule (two derivations of one step); costs exact."""
from __future__ import annotations

import torch

import bench
from bench.methods.ddpm import ddpm_sample, vp_sigma, vp_sigmas, vp_time
from bench.methods.euler_a import euler_ancestral
from bench.noise import Noise

SMALL = dict(samples=200, denoiser="exact", progress=False)


def test_euler_a_with_eta_zero_is_euler_bit_for_bit(tmp_path):
    task = bench.get_task("gmm8")
    den = task.denoiser("exact")
    a, _ = bench.generate(bench.get_method("euler-a", task, eta=0.0).sample, task, den, 300, 3, nfe_budget=7)
    b, _ = bench.generate(bench.get_method("euler", task).sample, task, den, 300, 3, nfe_budget=7)
    assert torch.equal(a, b)


def test_ddpm_steps_equal_euler_ancestral_at_eta_one():
    den = bench.get_task("gmm8").denoiser("exact")
    sig = vp_sigmas(12, den.sigma_min, den.sigma_max)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * den.sigma_max
    a = ddpm_sample(den, x, sig, noise=Noise(5, torch.arange(64)))
    b = euler_ancestral(den, x, sig, noise=Noise(5, torch.arange(64)), eta=1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # float32 denoiser inputs may round differently
    assert (a - ddpm_sample(den, x, sig, noise=Noise(6, torch.arange(64)))).abs().max() > 1e-3  # noise matters


def test_vp_schedule_is_ddpms_and_spans_the_denoiser():
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    assert all(abs(vp_time(float(s)) - float(tt)) < 1e-12 for s, tt in zip(vp_sigma(t), t))
    sig = vp_sigmas(10, 0.002, 80.0)
    assert sig[0] == 80.0 and abs(float(sig[-2]) - 0.002) < 1e-12 and sig[-1] == 0 and (sig[1:] < sig[:-1]).all()


def test_ancestral_costs_are_one_evaluation_per_step(tmp_path):
    for method in ("euler-a", "ddpm"):
        r = bench.run(method, "gmm8", nfe=6, seeds=[0], out=tmp_path, **SMALL)[0]
        assert r["status"] == "ok" and r["nfe"] == 6, r.get("error")
