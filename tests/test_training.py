"""Protocol v3, issue 28: fits that train, searches without repeats, and a flag on every learned
result that equals its untrained start."""
import math

import pytest
import torch

import bench
from bench import sampling
from bench.method import EarlyStop, steps_for

SMALL = dict(samples=300, progress=False)


# -- early stopping -------------------------------------------------------------------------------

def test_early_stop_never_ends_before_min_iters_nor_before_the_sampler_moved():
    stop = EarlyStop(higher_is_better=False, patience=2, min_iters=50, tol=1.0)
    stop.offer(-1, 1.0, 0.01, "start", moved=False)
    for it in range(9, 100, 10):  # no improvement at all, and the sampler never moves
        stop.offer(it, 1.0, 0.01, f"s{it}", moved=False)
        assert not stop.stop(it)
    assert stop.best_state == "start" and stop.best_iter == -1
    stop.offer(109, 1.0, 0.01, "s109", moved=True)  # it moved: now patience may end it
    assert stop.stop(109)


def test_early_stop_counts_noise_as_no_improvement_but_keeps_the_best_point():
    stop = EarlyStop(higher_is_better=False, patience=3, min_iters=0, tol=2.0)
    stop.offer(-1, 1.0, 0.1, "start", moved=False)
    stop.offer(9, 0.9, 0.1, "a", moved=True)    # better by 1 se: within 2 se, no real improvement
    stop.offer(19, 0.85, 0.1, "b", moved=True)
    assert stop.best_state == "b" and stop.stale == 2 and not stop.stop(19)
    stop.offer(29, 0.7, 0.1, "c", moved=True)   # 3 se below the last real improvement (1.0): resets
    assert stop.stale == 0 and stop.best_state == "c"
    for it in (39, 49, 59):
        stop.offer(it, 0.69, 0.1, "d", moved=True)
    assert stop.stop(59) and stop.best_state == "d"


def test_early_stop_follows_the_metric_direction():
    stop = EarlyStop(higher_is_better=True, patience=1, min_iters=0, tol=0.0)
    stop.offer(-1, 0.5, math.nan, "start", moved=False)
    assert stop.offer(9, 0.6, math.nan, "up", moved=True) and stop.best_state == "up"
    assert not stop.offer(19, 0.4, math.nan, "down", moved=True) and stop.stop(19)


# -- the untrained start ------------------------------------------------------------------------

def test_a_fit_that_never_moved_is_flagged_and_a_trained_one_is_not(tmp_path):
    kw = dict(out=tmp_path / "r", cache=tmp_path / "c", seeds=[0], **SMALL)
    (still,) = bench.run("irl", "gmm8", nfe=6, config=dict(iters=0, eval_samples=300), label="still", **kw)
    u = still["untrained"]
    assert u["identical"] and u["max_abs_diff"] == 0 and u["method"] == "irl"
    assert u["settings"] == {"iters": 0, "eval_samples": 300}
    assert u["probe"] == 300 and u["nfe"] > 0
    (ld3,) = bench.run("ld3", "gmm8", nfe=6, config=dict(rounds=3, pairs=20), **kw)
    assert ld3["untrained"]["method"] == "ipndm" and not ld3["untrained"]["identical"]
    assert ld3["untrained"]["max_abs_diff"] > 1e-3


def test_the_untrained_start_samples_the_same_noise_streams(tmp_path):
    """A learned schedule equal to EDM's is its classic solver, sample for sample: the check compares
    like with like (the same per-sample noise), so equality means the fit did not move."""
    kw = dict(out=tmp_path / "r", cache=tmp_path / "c", seeds=[3], **SMALL)
    (grid,) = bench.run("edm-grid", "gmm8", nfe=7, config=dict(grid_gamma=[0.0], tune_samples=100), **kw)
    assert grid["untrained"]["method"] == "edm" and grid["untrained"]["identical"]
    (plain,) = bench.run("edm", "gmm8", nfe=7, **kw)
    assert plain["metrics"] == grid["metrics"] and "untrained" not in plain


def test_every_fitted_method_declares_its_untrained_start():
    from bench import registry
    task = bench.get_task("gmm8")
    for name, cls in registry.methods().items():
        m = cls(task=task)
        if m.has_fit:
            start = m.untrained()
            assert start is not None, name
            other = bench.get_method(start[0], task, **start[1])
            assert other.name == start[0]


# -- edm-grid: a grid without repeats ---------------------------------------------------------

def _gammas(point, denoiser, nfe):
    """Each Heun step's churn, read back off EDM's sampler: sigma_hat / sigma - 1."""
    sigmas = sampling.karras_sigmas(steps_for("heun", nfe), denoiser.sigma_min, denoiser.sigma_max, 7.0)
    seen = []
    sampling.heun(denoiser, torch.zeros(1, 2, dtype=torch.float64), sigmas, callback=lambda d: seen.append(
        round(float(d["sigma_hat"] / d["sigma"] - 1), 12)), **point)
    return tuple(seen)


@pytest.mark.parametrize("nfe,distinct", [(5, 7), (10, 13), (20, 25), (35, 25)])
def test_edm_grid_samples_each_distinct_sampler_once(nfe, distinct):
    import itertools
    task = bench.get_task("gmm8")
    den = task.exact_denoiser()
    m = bench.get_method("edm-grid", task)
    sigmas = sampling.karras_sigmas(steps_for("heun", nfe), den.sigma_min, den.sigma_max, 7.0)
    points = m.grid(sigmas)
    assert len(points) == distinct
    keys = [(_gammas(p, den, nfe), p["s_noise"] if any(_gammas(p, den, nfe)) else None) for p in points]
    assert len(set(keys)) == len(keys)  # no sampler twice
    assert all(g <= math.sqrt(2) - 1 + 1e-12 for k in keys for g in k[0])
    c = m.config
    for gamma, tmin, tmax, s_noise in itertools.product(c["grid_gamma"], c["grid_tmin"], c["grid_tmax"],
                                                        c["grid_noise"]):
        if gamma > 0 and tmin >= tmax:
            continue
        want = _gammas(dict(s_churn=gamma * (len(sigmas) - 1), s_tmin=tmin, s_tmax=tmax, s_noise=s_noise), den, nfe)
        assert (want, s_noise if any(want) else None) in keys  # none of the full product left out
        if any(want):  # the churn asked for is the churn applied: never clamped
            assert max(want) == pytest.approx(gamma, abs=1e-12)


def test_edm_grid_refuses_a_churn_it_would_clamp():
    with pytest.raises(ValueError, match=r"grid_gamma lists per-step churn levels in \[0, sqrt\(2\)-1"):
        bench.get_method("edm-grid", bench.get_task("gmm8"), grid_gamma=[0.0, 0.5])


def test_restart_searches_k_0_once():
    m = bench.get_method("restart", bench.get_task("gmm8"))
    cands = m.candidates(10)
    plain = [c for c in cands if not c["intervals"]]
    assert len(plain) == 1 and plain[0]["steps"] == 5
    assert all(c["intervals"][0][1] > 0 for c in cands if c["intervals"])
    assert len(cands) == len({str(c) for c in cands})


def test_searches_never_sample_a_candidate_twice(tmp_path):
    cfg = dict(grid_gamma=[0.0, 0.2], grid_tmin=[0.05, 0.06], grid_tmax=[50.0], grid_noise=[1.0], tune_samples=100)
    (r,) = bench.run("edm-grid", "gmm8", nfe=5, seeds=[0], out=tmp_path, cache=tmp_path / "c", config=cfg, **SMALL)
    # at NFE 5 both windows hold the same Karras levels: 2 distinct samplers, 2 x 100 x 5 NFE
    assert r["fit_cost"]["nfe"] == 2 * 100 * 5 and len(r["fit_curve"]) == 2


# -- the fit cache ---------------------------------------------------------------------------------

def test_a_cached_fit_of_other_code_is_never_reused(tmp_path, monkeypatch):
    from bench.engine import runner
    cfg = dict(grid_gamma=[0.0, 0.2], tune_samples=100)
    kw = dict(out=tmp_path / "r", cache=tmp_path / "c", config=cfg, seeds=[0], **SMALL)
    first = bench.run("edm-grid", "gmm8", nfe=5, **kw)[0]
    assert not first["fit_cost"]["reused"]
    again = bench.run("edm-grid", "gmm8", nfe=5, resume=False, **kw)[0]
    assert again["fit_cost"]["reused"]
    real = runner.code_version
    monkeypatch.setattr(runner, "code_version", lambda *m: "other-code-" + real(*m))
    changed = bench.run("edm-grid", "gmm8", nfe=5, resume=False, **kw)[0]
    assert not changed["fit_cost"]["reused"] and changed["fit_cost"]["nfe"] == first["fit_cost"]["nfe"]


def test_a_fits_objective_is_what_it_recorded_else_its_first_and_kept_tuning_scores():
    from bench.engine.runner import fit_objective
    from bench.method import objective
    task = bench.get_task("gmm8")
    curve = [dict(fit_nfe=0, score=0.5), dict(fit_nfe=10, score=0.2), dict(fit_nfe=20, score=0.3)]
    assert fit_objective(None, curve, task) == objective("tuning mmd", 0.5, 0.2)  # the start, then the best kept
    mine = objective("teacher error", 1.0, 0.5)
    assert fit_objective(mine, curve, task) is mine and fit_objective(None, None, task) is None
