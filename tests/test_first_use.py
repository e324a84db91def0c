"""First use and bad input: nothing in the working directory shadows the suite, nothing
published is overwritten, nothing corrupt is trusted, every mistake gets one line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_cli(*args, cwd=None, env=None, timeout=600):
    """``python -m bench ARGS`` in a fresh process; (returncode, stdout, stderr)."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd or ROOT, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("files", [{"tasks.py": "raise SystemExit('the user tasks.py was imported')",
                                    "methods/__init__.py": "raise SystemExit('the user methods/ was imported')"},
                                   {"methods.py": "raise SystemExit('the user methods.py was imported')",
                                    "tasks/__init__.py": ""}],
                         ids=["tasks.py+methods/", "methods.py+tasks/"])
def test_a_users_tasks_or_methods_module_changes_nothing(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    rc, out, err = bench_cli("list", cwd=tmp_path, env=dict(PYTHONPATH=str(tmp_path)))
    assert rc == 0, err
    assert out == bench_cli("list")[1]
    assert "edm" in out and "gmm8" in out


def test_the_wheel_lists_every_package():
    """A wheel installs the folders tasks/ and methods/ inside bench; every package must be listed."""
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bench").rglob("__init__.py")}
    found |= {f"bench.{p.parent.name}" for p in ROOT.glob("*/__init__.py") if p.parent.name in ("tasks", "methods")}
    assert set(cfg["packages"]) == found
    assert cfg["package-dir"] == {"bench.tasks": "tasks", "bench.methods": "methods"}


# -- one line, exit code 2, before any work ------------------------------------------------------

def one_line_error(capsys, argv) -> str:
    """Run the CLI in this process; it must exit 2 with exactly one line on stderr."""
    from bench.cli import main
    try:
        rc = main(list(map(str, argv)))
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "weights_only" not in err and "Traceback" not in err
    return lines[0]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache, and every download pointed at a closed local port."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_URL_BASE", f"http://127.0.0.1:{port}")
    return tmp_path / "cache"


@pytest.fixture
def image_files(tmp_path):
    """FID statistics and Inception weights that load, so that only the checkpoint is at fault."""
    import numpy as np
    import torch
    np.savez(tmp_path / "ref.npz", mu=np.zeros(4), sigma=np.eye(4))
    torch.save({"w": torch.zeros(2)}, tmp_path / "inception.pth")
    return ["--ref-stats", tmp_path / "ref.npz", "--feature-weights", tmp_path / "inception.pth"]


class Hostile:
    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return os.system, (f"touch {self.mark}",)


def _checkpoint_bytes(kind: str, tmp_path) -> bytes:
    import pickle
    import torch
    if kind == "empty":
        return b""
    if kind == "random":
        return bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist())
    if kind == "truncated":
        return pickle.dumps(dict(ema=dict(a=list(range(1000)))), protocol=4)[:200]
    if kind == "hostile":
        return pickle.dumps(dict(ema=Hostile(tmp_path / "PWNED")))
    raise ValueError(kind)


@pytest.mark.parametrize("suffix", [".pkl", ".safetensors"])
@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "hostile", "folder"])
def test_a_bad_checkpoint_is_one_line(capsys, offline, image_files, tmp_path, kind, suffix):
    path = tmp_path / f"net{suffix}"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(_checkpoint_bytes(kind, tmp_path))
    line = one_line_error(capsys, ["run", "--task", "cifar10", "--nfe", 5, "--samples", 4, "--checkpoint", path,
                                   "--out", tmp_path / "out", *image_files])
    assert str(path) in line
    assert not (tmp_path / "PWNED").exists()
    assert not list((tmp_path / "out").rglob("*.json"))


@pytest.mark.parametrize("argv, says", [
    (["run", "--set", "=5"], "malformed setting '=5'"),
    (["run", "--method", "edm-sde", "--set", "s_churn=abc"], 'setting s_churn of method edm-sde is a number'),
    (["run", "--method", "edm-sde", "--set", "s_churn=true"], 'is a number (default 40.0), got true'),
    (["run", "--method", "irl", "--set", 'iters="abc"'], 'setting iters of method irl is an integer'),
    (["run", "--method", "irl", "--set", "use_guidance=no"], 'is one of "auto", true, false'),
    (["run", "--batch-size", "0"], "'0' is not a positive integer"),
    (["run", "--samples", "-3"], "is not a positive integer"),
    (["run", "--method", "edn"], "did you mean edm"),
    (["leaderboard", "--task", "gmm9"], "did you mean gmm8"),
    (["convert", "nowhere.pkl", "out.safetensors"], "does not exist"),
])
def test_bad_arguments_are_one_line(capsys, tmp_path, argv, says):
    assert says in one_line_error(capsys, argv + (["--out", tmp_path / "out"] if argv[0] == "run" else []))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.json"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    assert "no CUDA GPU" in one_line_error(capsys, ["run", "--device", "cuda", "--out", tmp_path])


def test_out_whose_task_folder_is_a_file_fails_before_sampling(capsys, tmp_path, monkeypatch):
    import bench.engine.runner as runner
    (tmp_path / "gmm8").write_text("a file where the task's folder goes")
    monkeypatch.setattr(runner, "generate", lambda *a, **k: pytest.fail("sampled before checking --out"))
    assert "--out" in one_line_error(capsys, ["run", "--nfe", 5, "--seeds", 0, "--out", tmp_path])


def test_leaderboard_out_file_and_published_folder_are_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    assert "is a file" in one_line_error(capsys, ["leaderboard", "--out", tmp_path / "file"])
    line = one_line_error(capsys, ["leaderboard", "--results", ROOT / "leaderboards" / "results",
                                   "--out", ROOT / "leaderboards"])
    assert "--published" in line


@pytest.mark.parametrize("target", ["empty", "into-folder", "same-file", "existing"])
def test_convert_refuses(capsys, tmp_path, target):
    src = tmp_path / "net.pkl"
    src.write_bytes(b"" if target == "empty" else b"not looked at")
    out = {"empty": tmp_path / "o.safetensors", "into-folder": tmp_path, "same-file": src,
           "existing": tmp_path / "there.safetensors"}[target]
    if target == "existing":
        out.write_bytes(b"keep me")
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    line = one_line_error(capsys, ["convert", src, out])
    assert {"empty": "is empty", "into-folder": "is a folder", "same-file": "is the input checkpoint",
            "existing": "--force"}[target] in line
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


# -- nothing lost, nothing redone, nothing corrupt trusted ----------------------------------------

SMALL = dict(samples=64, denoiser="exact", progress=False)


def test_a_killed_run_reruns_only_the_missing_results(tmp_path, monkeypatch):
    import bench
    import bench.engine.runner as runner
    one, calls = runner._one, []

    def dying(m, t, counted, denoiser_name, b, s, *args):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append((b, s))
        return one(m, t, counted, denoiser_name, b, s, *args)
    monkeypatch.setattr(runner, "_one", dying)
    kw = dict(nfe=[4, 6, 8], seeds=[0, 1, 2], out=tmp_path, **SMALL)
    with pytest.raises(runner.Interrupted, match="4 new result"):
        bench.run("euler", "gmm8", **kw)
    assert len(list(tmp_path.rglob("*.json"))) == 4
    first = {p: p.read_bytes() for p in tmp_path.rglob("*.json")}
    calls.clear()
    monkeypatch.setattr(runner, "_one", lambda *a: (calls.append(a[4:6]), one(*a))[1])
    results = bench.run("euler", "gmm8", **kw)
    assert len(calls) == 5 and sorted(calls) == sorted(set((b, s) for b in (4, 6, 8) for s in (0, 1, 2))
                                                       - set([(4, 0), (4, 1), (4, 2), (6, 0)]))
    assert [r["nfe_budget"] for r in results] == [4, 4, 4, 6, 6, 6, 8, 8, 8]
    assert sum(bool(r.get("kept")) for r in results) == 4
    assert all(p.read_bytes() == data for p, data in first.items())  # kept, not rewritten
    calls.clear()
    bench.run("euler", "gmm8", **kw)  # everything is there: nothing runs
    assert calls == []
    bench.run("euler", "gmm8", **dict(kw, seeds=[0]), config=dict(rho=5.0))  # other settings: redone
    assert len(calls) == 3


def test_ctrl_c_is_one_line_saying_what_was_kept(capsys, tmp_path, monkeypatch):
    import bench.engine.runner as runner
    from bench.cli import main

    def interrupt(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "_one", interrupt)
    assert main(["run", "--method", "euler", "--nfe", "4", "--seeds", "0", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: 0 new result(s) written") and "rerun" in err[0]


def test_a_corrupted_or_truncated_artifact_is_refitted(tmp_path):
    import bench
    cfg = dict(train_samples=200, disc_steps=10, disc_batch=64, disc_width=8)
    kw = dict(nfe=7, out=tmp_path / "r", cache=tmp_path / "c", config=cfg, resume=False, **SMALL)
    first = bench.run("dg", "gmm8", **kw)[0]
    folder = Path(first["fit_cost"]["artifact_path"])
    tensors, meta = folder / "tensors.safetensors", folder / "meta.json"
    assert bench.run("dg", "gmm8", **kw)[0]["fit_cost"]["reused"]

    def flip_last_byte(p):
        data = bytearray(p.read_bytes())
        data[-1] ^= 0x01
        p.write_bytes(bytes(data))

    damage = [(tensors, flip_last_byte), (meta, lambda p: p.write_text(p.read_text().replace("200", "201", 1))),
              (meta, lambda p: p.write_bytes(p.read_bytes()[:50])), (tensors, lambda p: p.unlink())]
    for path, hurt in damage:
        size = path.stat().st_size
        hurt(path)
        assert not path.exists() or path.stat().st_size <= size
        with pytest.warns(UserWarning, match=f"cached fit {folder} is unusable .*{path.name}"):
            again = bench.run("dg", "gmm8", **kw)[0]
        assert again["status"] == "ok" and not again["fit_cost"]["reused"] and again["fit_cost"]["nfe"] > 0
        assert again["metrics"] == first["metrics"]  # the refit is the same fit
        assert bench.run("dg", "gmm8", **kw)[0]["fit_cost"]["reused"]  # and its artifact is whole again


def test_a_personal_leaderboard_leaves_the_published_one_untouched(tmp_path):
    published = {p: p.read_bytes() for p in (ROOT / "leaderboards").rglob("*") if p.is_file()}
    rc, out, err = bench_cli("run", "--method", "euler", "--task", "gmm8", "--denoiser", "exact", "--nfe", "4",
                             "--seeds", "0", "--samples", "64", "--no-progress", cwd=tmp_path)
    assert rc == 0, err
    rc, out, err = bench_cli("leaderboard", cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "results" / "leaderboards" / "gmm8.md").is_file()
    assert {p: p.read_bytes() for p in (ROOT / "leaderboards").rglob("*") if p.is_file()} == published


# -- what a newcomer sees -------------------------------------------------------------------------

def test_run_prints_a_summary_and_plain_lines_in_a_log(tmp_path):
    rc, out, err = bench_cli("run", "--method", "euler", "--denoiser", "exact", "--nfe", "4,6", "--seeds", "0,1",
                             "--samples", "64", "--out", tmp_path)
    assert rc == 0, err
    assert "\r" not in err and "\x1b" not in err  # no live bars when stderr is not a terminal
    assert [line.split(":")[0] for line in err.splitlines()] == [
        f"[{k}/4] euler@exact on gmm8 nfe={b} seed={s}".replace("euler@exact", "euler")
        for k, (b, s) in enumerate([(4, 0), (4, 1), (6, 0), (6, 1)], 1)]
    lines = out.splitlines()
    assert lines[0].startswith("euler@exact on gmm8: mmd (lower is better), mean ± the half-width of the 95% "
                               "t-interval over seeds")
    assert lines[1].split() == ["NFE", "budget", "mmd", "seeds", "NFE", "measured", "fit", "flags"]
    cells = lines[2].split()
    assert [line.split()[0] for line in lines[2:4]] == ["4", "6"] and cells[2] == "±" and cells[4] == "2/2"
    assert cells[6] == "-"  # euler has no fit
    assert "4 results written under" in out
    assert "against the published rows" not in out  # 64 samples a seed pair with none of the published 10,000
    rc, out, err = bench_cli("run", "--method", "euler", "--denoiser", "exact", "--nfe", "4", "--seeds", "0",
                             "--out", tmp_path / "full")
    assert rc == 0, err
    assert (f"against the published rows: python -m bench compare euler@exact --task gmm8 --results {tmp_path / 'full'} "
            f"--published") in out
    rc, out, err = bench_cli("run", "--method", "euler", "--denoiser", "exact", "--nfe", "4,6", "--seeds", "0,1",
                             "--samples", "64", "--out", tmp_path)
    assert rc == 0 and "4 of 4 results already written" in err and "4 kept" in out


def test_every_option_says_what_it_does(capsys):
    from bench.cli import parser
    p = parser()
    subs = next(a for a in p._actions if a.dest == "cmd").choices
    for name, sub in subs.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
    text = subs["run"].format_help()
    assert "(default: 5,10,20,35)" in text and "python -m bench list" in text
    assert "default: results" in subs["leaderboard"].format_help()


def test_a_long_fit_says_how_long_it_will_take(capsys, monkeypatch):
    import bench
    import bench.engine.runner as runner
    monkeypatch.setattr(runner, "ANNOUNCE_FIT_S", 0.0)
    task = bench.get_task("gmm8")
    ctx = runner.FitContext(task, None, 10, "cpu", 100, progress=False)
    assert list(ctx.progress_iter(range(5), "toy fit")) == list(range(5))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("toy fit: 5 iterations; the first took") and "in all" in err[0]
    monkeypatch.setattr(runner, "ANNOUNCE_FIT_S", 60.0)
    list(ctx.progress_iter(range(5), "toy fit"))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args, rc", [(["--help"], 0), (["list"], 0), (["run", "--method", "irll"], 2),
                                      (["run", "--task", "gmm88"], 2), (["run", "--nfe", "x"], 2)])
def test_what_needs_no_computation_never_imports_torch(args, rc):
    """``--help``, ``list`` and a mistyped name or list answer from the sources alone (the tasks'
    and methods' names and descriptions read without importing them): torch is never imported."""
    import subprocess
    import sys
    code = ("import sys\nfrom bench.cli import main\n"
            f"try:\n    rc = main({args!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('RC', rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == f"RC {rc} False", (out.stdout[-300:], out.stderr[-300:])


def test_the_source_index_names_every_registered_task_and_method_with_its_description():
    from bench import registry
    for kind, table in (("tasks", registry.tasks()), ("methods", registry.methods())):
        assert registry.index(kind) == {name: cls.description for name, cls in table.items()}


def test_the_run_summary_gives_the_interval_the_fit_cost_and_the_start_flag(tmp_path):
    from bench.cli import summary
    rs = [dict(task="gmm8", label="ld3", nfe_budget=5, status="ok", metrics=dict(mmd=v), nfe=5.0, n_samples=64,
               fit_cost=dict(nfe=0, reused=True, artifact=dict(nfe=1000)), path=str(tmp_path / f"r{k}.json"),
               untrained=dict(identical=k == 0)) for k, v in enumerate([0.01, 0.02, 0.03])]
    text = summary(rs)
    row = next(line for line in text.splitlines() if line.strip().startswith("5 "))
    assert "0.02 ± 0.025" in row and "1e+03 NFE" in row and "= untrained start in 1 of 3 seeds" in row


def test_import_bench_is_light_and_its_parts_load_on_first_use():
    import subprocess
    import sys
    code = ("import sys, bench\nlight = 'torch' not in sys.modules\n"
            "print(light, bench.sampling.karras_sigmas(2, 0.002, 80.0).tolist()[-1], bench.denoiser.Denoiser.__name__,"
            " callable(bench.run))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "0.0", "Denoiser", "True"], out.stderr[-500:]
