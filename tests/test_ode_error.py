"""``ode_error``: a deterministic sampler's RMS distance to the probability-flow ODE's solution from
the same initial noise (bench.engine.ode_reference), checked against an independent solve."""
from __future__ import annotations

import math
import types

import pytest
import torch
from scipy import integrate

import bench
from bench.engine import ode_reference
from bench.engine.artifacts import ArtifactStore
from bench.engine.runner import generate
from bench.noise import Noise


@pytest.fixture(scope="module")
def gmm():
    task = bench.get_task("gmm8")
    return task, task.exact_denoiser()


def _method(name, deterministic=True):
    return types.SimpleNamespace(name=name, deterministic=deterministic)


def test_the_reference_is_the_ode_solution_from_the_runs_own_noise(gmm, tmp_path):
    """The cached reference of seed 3's first 6 streams against scipy's DOP853 on the same ODE from
    Noise(3, i) * sigma_max: Heun with 256 steps to its stated accuracy."""
    task, den = gmm
    ref, ref_err, nfe, _ = ode_reference.reference(task, den, dict(name="exact"), 3, 6, "cpu", 100,
                                                   ArtifactStore(tmp_path))
    assert nfe == 6 * (3 * ode_reference.REF_STEPS - 2)
    x0 = Noise(3, torch.arange(6)).randn(den.shape, dtype=torch.float64) * den.sigma_max

    def rhs(s, y):
        x = torch.tensor(y.reshape(6, -1))
        return ((x - den(x, torch.full((6,), s, dtype=torch.float64))) / s).numpy().ravel()
    lo = den.sigma_min
    sol = integrate.solve_ivp(rhs, (den.sigma_max, lo), x0.numpy().ravel(), method="DOP853", rtol=1e-10, atol=1e-10)
    end = torch.tensor(sol.y[:, -1].reshape(6, -1))
    exact = end - lo * (end - den(end, torch.full((6,), lo, dtype=torch.float64))) / lo  # Heun's last Euler step to 0
    err = ode_reference.rms(ref, exact)
    assert err < ref_err, (err, ref_err)  # within its own convergence estimate
    assert 0 < ref_err < 1e-2


def test_ode_error_is_zero_for_the_reference_itself_and_falls_with_nfe(gmm, tmp_path):
    task, den = gmm
    store = ArtifactStore(tmp_path)
    first = ode_reference.measure(_method("heun256"), task, den, dict(name="exact"), 0,
                                  generate(ode_reference._heun(ode_reference.REF_STEPS), task, den, 40, 0,
                                           nfe_budget=511)[0], "cpu", 100, store)
    assert first["value"] == 0.0 and first["samples"] == 40 and first["reference_nfe"] > 0
    errs = []
    for nfe in (5, 10, 20):
        m = bench.get_method("ipndm", task)
        x, _ = generate(m.sample, task, den, 40, 0, nfe_budget=nfe)
        rec = ode_reference.measure(m, task, den, dict(name="exact"), 0, x, "cpu", 100, store)
        assert rec["reference_nfe"] == 0  # read from the cache, verified
        errs.append(rec["value"])
    assert errs[0] > errs[1] > errs[2] > first["floor"], errs


def test_a_sampler_that_draws_noise_gets_no_value_and_the_reason(gmm, tmp_path):
    task, den = gmm
    rec = ode_reference.measure(_method("edm-sde", False), task, den, dict(name="exact"), 0,
                                torch.zeros(10, 2), "cpu", 100, ArtifactStore(tmp_path))
    assert rec["value"] is None and "draws noise" in rec["reason"]
    assert bench.get_method("edm-sde").deterministic is False and bench.get_method("unipc").deterministic


def test_a_run_records_ode_error_beside_its_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    r = bench.run("dpmpp-3m", "gmm8", nfe=[6], seeds=[0], samples=300, out=tmp_path / "out", progress=False)[0]
    assert r["metrics"]["ode_error"] == r["ode_error"]["value"] > r["ode_error"]["floor"] > 0
    assert math.isfinite(r["metrics"]["mmd"])
    assert r["cpu_seconds"] > 0 and r["wall_seconds"] > 0  # compute as CPU time, wall time beside it
