"""``torchrun`` scale-out: sharding by sample index gives the single-process results exactly.

Each test launches 2 CPU processes (gloo) with ``python -m torch.distributed.run``
and compares with a run in this process.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch built without distributed support", allow_module_level=True)

from bench import run  # noqa: E402

# edm-sde: its churn noise is drawn while sampling, so the per-sample streams are exercised.
ARGS = dict(method="edm-sde", task="gmm8", denoiser="exact", nfe=10, samples=200)
RESULT = "gmm8/edm-sde@exact/nfe10_seed{}"


def torchrun(tmp_path, target, argv, nproc=2, timeout=180):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", BENCH_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", *target, *argv]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def cli_args(out, seeds):
    return ["run", "--method", ARGS["method"], "--task", ARGS["task"], "--denoiser", ARGS["denoiser"],
            "--nfe", str(ARGS["nfe"]), "--seeds", seeds, "--samples", str(ARGS["samples"]),
            "--out", str(out), "--save-samples", "--no-progress"]


def load(out, seed):
    base = out / RESULT.format(seed)
    with open(base.with_suffix(".json")) as f:
        result = json.load(f)
    samples = np.load(base.with_suffix(".npz"))["x"] if base.with_suffix(".npz").exists() else None
    return result, samples


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run(ARGS["method"], ARGS["task"], nfe=[ARGS["nfe"]], seeds=[0, 1], samples=ARGS["samples"],
        denoiser=ARGS["denoiser"], out=out, save_samples=True, progress=False,
        cache=tmp_path_factory.mktemp("cache"))
    return out


def test_two_processes_match_one(tmp_path, single):
    out = tmp_path / "dist"
    p = torchrun(tmp_path, ["-m", "bench"], cli_args(out, "0"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("results written") == 1  # rank 0 alone reports
    got, x = load(out, 0)
    want, x1 = load(single, 0)
    assert got["status"] == want["status"] == "ok"
    assert got["world_size"] == 2 and want["world_size"] == 1
    assert x.shape == (ARGS["samples"], 2)
    assert np.array_equal(x, x1)
    assert got["metrics"] == want["metrics"]
    assert got["nfe"] == want["nfe"]
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert files == [RESULT.format(0) + ".json", RESULT.format(0) + ".npz"]  # no strays from rank 1


def test_failure_on_one_rank_neither_hangs_nor_mixes_seeds(tmp_path, single):
    """Rank 1 fails on seed 0: that result fails on rank 0 too, and seed 1 is still exact."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent("""
        import os, sys
        import bench.engine.runner as runner
        from bench.cli import main
        generate = runner.generate
        def failing(sample_fn, task, denoiser, n, seed, **kw):
            if os.environ["RANK"] == "1" and seed == 0:
                raise RuntimeError("injected failure")
            return generate(sample_fn, task, denoiser, n, seed, **kw)
        runner.generate = failing
        sys.exit(main(sys.argv[1:]))
    """))
    out = tmp_path / "dist"
    p = torchrun(tmp_path, [str(driver)], cli_args(out, "0,1"))
    assert p.returncode != 0
    assert p.stderr.count("FAILED nfe=10 seed=0") == 1, p.stderr
    failed, x0 = load(out, 0)
    assert failed["status"] == "failed" and x0 is None
    assert "rank 1" in failed["error"] and "injected failure" in failed["error"]
    got, x = load(out, 1)
    want, x1 = load(single, 1)
    assert got["status"] == "ok"
    assert np.array_equal(x, x1)
    assert got["metrics"] == want["metrics"]
