"""The harness end to end: registry, CLI, result files, NFE accounting, failures."""
import json
import os
import subprocess
import sys

import pytest
import torch

import bench
from bench import registry
from bench.cli import main, parse_ints
from bench.method import BudgetError, SolverMethod
from bench.engine.results import load_results, write_result

SMALL = dict(samples=300, progress=False)


def run_cli(*args):
    return main(list(args))


def test_registry_did_you_mean():
    with pytest.raises(registry.UnknownNameError, match="did you mean edm"):
        bench.get_method("edn")
    with pytest.raises(registry.UnknownNameError, match="did you mean gmm8"):
        bench.get_task("gmm9")


def test_versioned_task_ids():
    assert bench.get_task("gmm8-v3").id == "gmm8-v3"
    with pytest.raises(ValueError, match="version 3, not 7"):
        bench.get_task("gmm8-v7")


def test_every_listed_task_and_method_has_a_description(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    for name, cls in {**registry.tasks(), **registry.methods()}.items():
        assert name in out and cls.description


def test_result_file_fields_and_measured_nfe(tmp_path):
    (r,) = bench.run("edm", "gmm8", nfe=10, seed=0, out=tmp_path, denoiser="exact", **SMALL)
    on_disk = json.loads(open(r["path"]).read())
    for key in ("method", "method_config", "task", "task_version", "nfe_budget", "nfe", "seed", "n_samples",
                "metrics", "fit_cost", "sample_seconds", "status", "protocol", "versions", "git_sha", "created"):
        assert key in on_disk, key
    # Heun with 5 steps: 2*5-1 = 9 evaluations per sample, counted from real calls
    assert on_disk["nfe"] == 9 and on_disk["budget_config"]["steps"] == 5
    assert on_disk["status"] == "ok" and set(on_disk["metrics"]) == {"w2", "sw2", "mmd", "kl", "precision", "recall",
                                                                   "modes", "ode_error"}  # Heun: deterministic


@pytest.mark.parametrize("method,budget,expected", [("euler", 7, 7), ("dpmpp-2m", 7, 7), ("ipndm", 7, 7),
                                                    ("edm", 8, 7), ("edm-sde", 35, 35)])
def test_measured_nfe_matches_solver_formula(tmp_path, method, budget, expected):
    (r,) = bench.run(method, "gmm8", nfe=budget, out=tmp_path, denoiser="exact", **SMALL)
    assert r["nfe"] == expected <= budget


def test_same_seed_same_result_and_batch_invariance(tmp_path):
    a = bench.run("edm-sde", "gmm8", nfe=10, out=tmp_path / "a", denoiser="exact", save_samples=True,
                  batch_size=64, **SMALL)[0]
    b = bench.run("edm-sde", "gmm8", nfe=10, out=tmp_path / "b", denoiser="exact", save_samples=True,
                  batch_size=1000, **SMALL)[0]
    import numpy as np
    xa = np.load(tmp_path / "a" / "gmm8" / "edm-sde@exact" / a["samples_file"])["x"]
    xb = np.load(tmp_path / "b" / "gmm8" / "edm-sde@exact" / b["samples_file"])["x"]
    assert np.array_equal(xa, xb) and a["metrics"] == b["metrics"]


def test_nfe_too_small_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(BudgetError, match="too small for heun"):
        bench.run("edm", "gmm8", nfe=2, out=tmp_path, **SMALL)
    assert run_cli("run", "--method", "ipndm", "--nfe", "1", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NFE budget 1 is too small for ipndm" in err[0]


@pytest.mark.parametrize("text", ["3-1", "a-b", "0-", "1,,2", "-1"])
def test_malformed_seed_range(text):
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="malformed"):
        parse_ints(text, "seed range")


def test_seed_range_parsing():
    assert parse_ints("0-2", "seeds") == [0, 1, 2] and parse_ints("5,10,20-21", "nfe") == [5, 10, 20, 21]


def test_unknown_names_on_the_cli(tmp_path, capsys):
    assert run_cli("run", "--method", "heun2", "--out", str(tmp_path)) == 2
    assert "unknown method 'heun2'" in capsys.readouterr().err
    assert run_cli("run", "--task", "checkerbord", "--out", str(tmp_path)) == 2
    assert "did you mean checkerboard" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: permissions do not bind")
def test_unwritable_output_directory(tmp_path, capsys):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    assert run_cli("run", "--nfe", "5", "--seeds", "0", "--samples", "50", "--out", str(d)) == 2
    assert "not writable" in capsys.readouterr().err


def test_output_path_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert run_cli("run", "--nfe", "5", "--seeds", "0", "--samples", "50", "--out", str(f / "sub")) == 2
    assert "not writable" in capsys.readouterr().err


class NaNMethod(SolverMethod):
    """A method whose samples go NaN: the harness must record a failure, not a number."""
    solver = "euler"
    defaults = dict(rho=7.0)

    def sample(self, denoiser, x, **kw):
        out = super().sample(denoiser, x, **kw)
        out[::2] = float("nan")
        return out


def test_nan_samples_are_a_failed_result_that_keeps_the_earlier_one(tmp_path):
    registry._METHODS["nan-test"] = NaNMethod
    NaNMethod.name = "nan-test"
    try:
        ok = bench.run("euler", "gmm8", nfe=5, out=tmp_path, denoiser="exact", label="x", **SMALL)[0]
        before = open(ok["path"]).read()
        with pytest.raises(ValueError, match="another configuration.*--rerun"):  # another method under label x
            bench.run("nan-test", "gmm8", nfe=5, out=tmp_path, denoiser="exact", label="x", **SMALL)
        bad = bench.run("nan-test", "gmm8", nfe=5, out=tmp_path, denoiser="exact", label="x", resume=False,
                        **SMALL)[0]
    finally:
        del registry._METHODS["nan-test"]
    assert bad["status"] == "failed" and "NaN" in bad["error"] and bad["metrics"] == {}
    assert open(ok["path"]).read() == before  # the earlier result is intact
    assert bad["path"].endswith(".failed.json")
    with pytest.warns(UserWarning, match=None) if False else _nowarn():
        kept = load_results(tmp_path)
    assert {r["status"] for r in kept} == {"ok", "failed"}


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_result(path, dict(status="ok", value=1))
    import bench.engine.io as bio

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(bio.os, "replace", boom)
    with pytest.raises(OSError):
        write_result(path, dict(status="ok", value=2))
    assert json.loads(path.read_text())["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_fit_is_cached_and_reused(tmp_path):
    cfg = dict(grid_gamma=[0.0, 0.2], grid_tmin=[0.05], grid_tmax=[10.0], grid_noise=[1.0], tune_samples=200)
    kw = dict(out=tmp_path / "r", denoiser="exact", config=cfg, cache=tmp_path / "cache", samples=200,
              progress=False)
    first = bench.run("edm-grid", "gmm8", nfe=7, **kw)[0]
    second = bench.run("edm-grid", "gmm8", nfe=7, resume=False, **kw)[0]  # the fit is reused, the results redone
    # 2 grid points x 200 tuning samples x 7 NFE
    assert first["fit_cost"]["nfe"] == 2 * 200 * 7 and not first["fit_cost"]["reused"]
    assert second["fit_cost"]["nfe"] == 0 and second["fit_cost"]["reused"]
    assert second["fit_cost"]["artifact"]["nfe"] == first["fit_cost"]["nfe"]
    assert first["metrics"] == second["metrics"]
    assert first["budget_config"]["chosen"] == second["budget_config"]["chosen"]


def test_methods_that_tune_need_tuning_data(tmp_path, no_tuning_task):
    from bench.task import Unsupported
    with pytest.raises(Unsupported, match="no tuning split"):
        bench.run("edm-grid", no_tuning_task, nfe=7, out=tmp_path, **SMALL)


def test_a_new_method_is_one_file_with_a_decorator(tmp_path):
    """Third-party style: a module registers a method; the harness runs it untouched."""
    mod = tmp_path / "my_method.py"
    mod.write_text(
        "from bench import register_method\n"
        "from bench.method import SolverMethod\n"
        "@register_method('my-euler')\n"
        "class MyEuler(SolverMethod):\n"
        "    description = 'test'\n"
        "    solver = 'euler'\n"
        "    defaults = dict(rho=3.0)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import my_method  # noqa: F401
        (r,) = bench.run("my-euler", "gmm8", nfe=6, out=tmp_path / "r", denoiser="exact", **SMALL)
    finally:
        sys.path.remove(str(tmp_path))
        registry._METHODS.pop("my-euler", None)
    assert r["status"] == "ok" and r["nfe"] == 6 and r["method_config"] == {"rho": 3.0}


def test_exact_denoiser_beats_learned_or_matches_oracle(tmp_path):
    """With the exact denoiser at NFE 35 the W2 is at the noise floor of two true sets."""
    kw = dict(out=tmp_path, samples=2000, progress=False)
    exact = [bench.run("edm", "gmm8", nfe=35, seed=s, denoiser="exact", **kw)[0]["metrics"]["w2"] for s in (0, 1)]
    floor = [bench.run("oracle", "gmm8", nfe=35, seed=s, denoiser="exact", **kw)[0]["metrics"]["w2"]
             for s in (0, 1)]
    assert max(exact) < 1.5 * max(floor)


def test_python_m_bench_runs_as_a_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench", "run", "--method", "euler", "--task", "gmm8",
                          "--denoiser", "exact", "--nfe", "5", "--seeds", "0", "--samples", "100", "--out",
                          str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "gmm8" / "euler@exact" / "nfe5_seed0.json").exists()
    assert torch.__version__  # torch imported fine alongside


def test_a_fit_that_diverges_gives_failed_results_and_caches_nothing(tmp_path):
    from bench.method import Method

    class Diverging(Method):
        description = "test"
        has_fit = True

        def fit(self, ctx):
            raise FloatingPointError("loss is NaN at iteration 3")

    registry._METHODS["diverging-test"] = Diverging
    Diverging.name = "diverging-test"
    try:
        rs = bench.run("diverging-test", "gmm8", nfe=5, seeds=[0, 1], out=tmp_path / "r", denoiser="exact",
                       cache=tmp_path / "c", **SMALL)
    finally:
        del registry._METHODS["diverging-test"]
    assert [r["status"] for r in rs] == ["failed", "failed"]
    assert all("fit failed: FloatingPointError: loss is NaN" in r["error"] for r in rs)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("meta.json"))
