"""Hostile input (issue 29): every bad or poor case is one line and exit code 2 before any work,
and nothing on disk is lost or replaced."""
import errno
import json
import os
from pathlib import Path

import pytest

import bench
from bench.cli import main
from bench.engine import suite
from bench.engine.results import PUBLISHED_RESULTS, load_results, read_result
from bench.report.markdown import flags

SMALL = ["--samples", "64", "--no-progress", "--seeds", "0"]


def cli(capsys, *args):
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(err: str, *words):
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def files_under(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# -- 1. a label is a name, never a path ---------------------------------------------------------

@pytest.mark.parametrize("label", ["../../evil", "../gmm8/euler", "/tmp/abs-label", "a/b", "..", ".hidden", "",
                                   "x" * 101, "a\\b"])
def test_a_label_that_is_a_path_is_refused(tmp_path, capsys, label):
    out = tmp_path / "results"
    rc, _, err = cli(capsys, "run", "--method", "edm", "--task", "gmm8", "--nfe", "5", "--label", label,
                     "--out", out, *SMALL)
    assert rc == 2
    one_line_error(err, "is not a name")
    assert not any(tmp_path.rglob("*.json"))


def test_a_manifest_label_that_is_a_path_is_refused(tmp_path, capsys):
    (tmp_path / "s.toml").write_text('[[run]]\nmethod = "edm"\ntask = "gmm8"\nnfe = 5\nseeds = 0\n'
                                     'label = "../gmm8/euler"\n')
    rc, _, err = cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / "r")
    assert rc == 2
    one_line_error(err, "entry 1", "is not a name")
    assert not (tmp_path / "r").exists()


# -- 2. a result of another configuration is never replaced, the published folder never written --

def test_a_rerun_with_other_samples_refuses_to_replace(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli(capsys, "run", "--method", "euler", "--task", "gmm8", "--nfe", "5", "--out", out, *SMALL)[0] == 0
    path = out / "gmm8" / "euler" / "nfe5_seed0.json"
    before = path.read_bytes()
    rc, _, err = cli(capsys, "run", "--method", "euler", "--task", "gmm8", "--nfe", "5", "--out", out,
                     "--samples", "32", "--no-progress", "--seeds", "0")
    assert rc == 2
    one_line_error(err, "another configuration", "n_samples 64 there, 32 here", "--rerun")
    assert path.read_bytes() == before
    # asked explicitly, it is replaced
    assert cli(capsys, "run", "--method", "euler", "--task", "gmm8", "--nfe", "5", "--out", out, "--samples", "32",
               "--no-progress", "--seeds", "0", "--rerun")[0] == 0
    assert json.loads(path.read_text())["n_samples"] == 32


def test_run_never_writes_into_the_published_folder(capsys):
    before = {p: p.stat().st_mtime_ns for p in (PUBLISHED_RESULTS / "gmm8" / "edm").glob("*.json")}
    for out in (PUBLISHED_RESULTS, PUBLISHED_RESULTS / "gmm8" / ".."):
        rc, _, err = cli(capsys, "run", "--method", "edm", "--task", "gmm8", "--nfe", "5", "--out", out, *SMALL)
        assert rc == 2
        one_line_error(err, "published results folder", "suite")
    assert {p: p.stat().st_mtime_ns for p in (PUBLISHED_RESULTS / "gmm8" / "edm").glob("*.json")} == before


# -- 3. memory and job counts estimated before any work ----------------------------------------

def test_too_many_samples_are_refused_before_any_work(tmp_path, capsys):
    rc, _, err = cli(capsys, "run", "--method", "edm", "--task", "gmm8", "--nfe", "5", "--seeds", "0",
                     "--samples", "1000000000", "--out", tmp_path / "r", "--no-progress")
    assert rc == 2
    one_line_error(err, "--samples 1,000,000,000 needs about", "of memory", "samples fit")
    assert not any(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("flag,value", [("--seeds", "0-9999999"), ("--nfe", "1-20000")])
def test_huge_ranges_are_refused_at_once(tmp_path, capsys, flag, value):
    rc, _, err = cli(capsys, "run", "--method", "edm", "--task", "gmm8", flag, value, "--out", tmp_path)
    assert rc == 2
    assert "at most 10,000" in err and len(err.strip().splitlines()) == 1



@pytest.mark.parametrize("flag,value,twice", [("--seeds", "0,0", "0"), ("--seeds", "0-3,2", "2"),
                                              ("--nfe", "5,10,5-6", "5")])
def test_a_seed_or_budget_named_twice_is_refused_before_any_work(tmp_path, capsys, flag, value, twice):
    # run twice, such a job would be counted twice in the run's summary ("2/2 seeds" for one seed)
    rc, _, err = cli(capsys, "run", "--method", "edm", "--task", "gmm8", flag, value, "--out", tmp_path / "r")
    assert rc == 2
    one_line_error(err, f"names {twice} more than once")
    assert not (tmp_path / "r").exists()

def test_too_many_runs_in_one_command_are_refused(tmp_path):
    with pytest.raises(ValueError, match="split them over several commands"):
        bench.run("edm", "gmm8", nfe=list(range(3, 103)), seeds=list(range(200)), out=tmp_path, progress=False)


@pytest.mark.parametrize("n", [2, 5])
def test_too_few_samples_are_refused_up_front(tmp_path, capsys, n):
    rc, _, err = cli(capsys, "run", "--method", "edm", "--task", "gmm8", "--nfe", "5", "--seeds", "0",
                     "--samples", n, "--out", tmp_path / "r")
    assert rc == 2
    one_line_error(err, "need at least 6 samples")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.json"))


# -- 4. a full disk: one line, no traceback, no orphan files ------------------------------------

def test_a_full_disk_is_one_line_and_leaves_no_orphan_samples(tmp_path, capsys, monkeypatch):
    import bench.engine.io as bio
    real_fsync = bio.os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".json.tmp") or ".json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    monkeypatch.setattr(bio.os, "fsync", fsync)
    out = tmp_path / "r"
    rc, _, err = cli(capsys, "run", "--method", "euler", "--task", "gmm8", "--nfe", "5", "--out", out,
                     "--save-samples", *SMALL)
    assert rc == 2
    one_line_error(err, "no space left", "nfe5_seed0.json")
    assert files_under(out) == set()  # neither the samples, nor a temporary file, nor a result


# -- 5. tampered result files are named, never read half --------------------------------------

@pytest.mark.parametrize("tamper", [dict(metrics={"mmd": "oops"}), dict(nfe_budget="5"), dict(seed=-1),
                                    dict(metrics=[1, 2]), dict(status="great"), dict(nfe=None)])
def test_a_tampered_result_is_named_and_redone(tmp_path, capsys, tamper):
    out = tmp_path / "r"
    args = ["run", "--method", "euler", "--task", "gmm8", "--nfe", "5", "--out", out, *SMALL]
    assert cli(capsys, *args)[0] == 0
    path = out / "gmm8" / "euler" / "nfe5_seed0.json"
    r = json.loads(path.read_text())
    r.update(tamper)
    path.write_text(json.dumps(r))
    with pytest.warns(UserWarning, match="nfe5_seed0.json"):
        assert load_results(out) == []
    rc, stdout, err = cli(capsys, *args)  # the summary never reads the tampered file
    assert rc == 0 and "is not a usable result" in err and str(path) in err
    assert read_result(path)[1] is None  # redone: a usable result again


def test_a_nan_metric_in_a_successful_result_is_warned_naming_the_file(tmp_path):
    out = tmp_path / "r"
    bench.run("euler", "gmm8", nfe=5, seeds=[0], samples=64, out=out, progress=False)
    path = out / "gmm8" / "euler" / "nfe5_seed0.json"
    r = json.loads(path.read_text())
    r["metrics"]["w2"] = "nan"
    path.write_text(json.dumps(r))
    with pytest.warns(UserWarning, match=r"nfe5_seed0.json: metric\(s\) w2 are NaN"):
        (got,) = load_results(out)
    assert "w2" not in got["metrics"] and "mmd" in got["metrics"]


def test_a_seed_without_a_primary_value_is_neither_counted_nor_paired(tmp_path):
    from bench.report.board import make
    out = tmp_path / "r"
    for m in ("euler", "ipndm"):
        bench.run(m, "gmm8", nfe=5, seeds=[0, 1, 2, 3], samples=64, out=out, progress=False)
    path = out / "gmm8" / "ipndm" / "nfe5_seed3.json"
    r = json.loads(path.read_text())
    r["metrics"]["mmd"] = "nan"
    path.write_text(json.dumps(r))
    with pytest.warns(UserWarning, match="nfe5_seed3.json"):
        b = make("gmm8", load_results(out), [], [out])
    row = next(e for e in b["rows"] if e["method"] == "ipndm")
    assert (row["seeds"], row["seed_list"], row["unscored"]) == (3, [0, 1, 2], 1)
    assert "1 without mmd" in flags(b, row)
    (cmp,) = b["paired"].to_dict("records")  # euler against ipndm, whichever is the reference
    mmd = {e["method"]: {x["seed"]: x["metrics"]["mmd"] for x in e["results"] if "mmd" in x["metrics"]}
           for e in b["rows"]}
    sign = 1 if cmp["label"] == "ipndm" else -1
    assert cmp["seeds"] == 3 and cmp["diff"] == pytest.approx(
        sign * sum(mmd["ipndm"][s] - mmd["euler"][s] for s in (0, 1, 2)) / 3, rel=1e-9)


def test_the_leaderboard_skips_a_tampered_result_naming_it(tmp_path, capsys):
    out = tmp_path / "r"
    bench.run("euler", "gmm8", nfe=5, seeds=[0, 1], samples=64, out=out, progress=False)
    path = out / "gmm8" / "euler" / "nfe5_seed1.json"
    r = json.loads(path.read_text())
    r["metrics"]["mmd"] = {"evil": 1}
    path.write_text(json.dumps(r))
    rc, _, err = cli(capsys, "leaderboard", "--results", out, "--format", "md")
    assert rc == 0 and "skipping" in err and "nfe5_seed1.json" in err


# -- suite manifests: checked whole before the first job ----------------------------------------

GOOD = '[[run]]\nmethod = "euler"\ntask = "gmm8"\nnfe = 5\nseeds = 0\nsamples = 64\n'


@pytest.mark.parametrize("entry,words", [
    ('method = "eulr"\ntask = "gmm8"\nnfe = 5', ["entry 2", "unknown method 'eulr'", "did you mean euler"]),
    ('method = "euler"\ntask = "gmm9"\nnfe = 5', ["entry 2", "unknown task 'gmm9'"]),
    ('method = "irl"\ntask = "gmm8"\nnfe = 10\nsettings = { itres = 3 }', ["entry 2", "no setting itres"]),
    ('method = "irl"\ntask = "gmm8"\nnfe = 10\nsettings = { iters = "many" }', ["entry 2", "iters", "an integer"]),
    ('method = "euler"\ntask = "gmm8"\nnfe = [10.7]', ["entry 2", "integers only"]),
    ('method = "euler"\ntask = "gmm8"\nnfe = 10\nsamples = "500"', ["entry 2", "samples '500' is not an integer"]),
    ('method = "euler"\ntask = "gmm8"\nnfe = 10\nsamples = 2', ["entry 2", "need at least 6"]),
    ('method = "euler"\ntask = "gmm8"\nnfe = true', ["entry 2", "not an integer"]),
    ('method = "edm"\ntask = "gmm8"\nnfe = 1', ["entry 2", "too small"]),
    ('method = "euler"\ntask = "gmm8"\nnfe = 5\ndenoiser = "exakt"', ["entry 2", "no denoiser 'exakt'"]),
    ('method = "euler"\ntask = "gmm8"\nnfe = 5\nlable = "x"', ["entry 2", "unknown key(s) lable"]),
    ('method = 3\ntask = "gmm8"\nnfe = 5', ["entry 2", "method 3 is not a string"]),
])
@pytest.mark.parametrize("dry", [False, True])
def test_a_bad_manifest_entry_stops_the_suite_before_any_job(tmp_path, capsys, entry, words, dry):
    (tmp_path / "s.toml").write_text(GOOD + "[[run]]\n" + entry + "\n")
    rc, _, err = cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / "r", *(["--dry-run"] if dry else []))
    assert rc == 2
    one_line_error(err, *words)
    assert not (tmp_path / "r").exists()  # entry 1 is fine, and did not run either


def test_more_jobs_than_cores_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    # each job is a process with its own copy of the network: --jobs 1000 on 2 cores ran out of memory
    monkeypatch.setattr("bench.cli._cores", lambda: 2)
    (tmp_path / "s.toml").write_text(GOOD)
    rc, _, err = cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / "r", "--jobs", 3)
    assert rc == 2
    one_line_error(err, "--jobs 3", "2 CPU cores", "use --jobs 2 or fewer")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args", [["run", "--out"], ["run", "--task", "cifar10", "--checkpoint"],
                                  ["suite", "leaderboards/suite.toml", "--out"], ["suite"], ["leaderboard", "--results"],
                                  ["leaderboard", "--out"], ["compare", "edm", "--task", "gmm8", "--results"],
                                  ["train-denoiser", "--task", "gmm8", "--out"], ["convert", "x.pkl"]])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder_or_a_default(tmp_path, capsys, monkeypatch, args):
    # `--out $OUT` with OUT unset wrote results into the current folder; an empty --checkpoint meant the download
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(capsys, *args, "")
    assert rc == 2
    one_line_error(err, "empty path")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("only", ["", ",,", " "])
def test_an_empty_only_is_refused_not_taken_for_every_task(tmp_path, capsys, only):
    # `--only $TASKS` with TASKS unset ran the whole manifest
    (tmp_path / "s.toml").write_text(GOOD)
    rc, _, err = cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / "r", "--only", only)
    assert rc == 2
    one_line_error(err, "names no task")
    assert not (tmp_path / "r").exists()


def test_a_suite_with_no_jobs_exits_0_and_says_so(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(GOOD)
    (job,) = suite.load(tmp_path / "s.toml")
    empty = next(k for k in (1, 2) if not suite.shard([job], k, 2))
    rc, out, _ = cli(capsys, "suite", tmp_path / "s.toml", "--shard", f"{empty}/2", "--out", tmp_path / "r")
    assert rc == 0 and "no jobs (nothing to do)" in out
    rc, _, err = cli(capsys, "suite", tmp_path / "s.toml", "--only", "gmm9", "--out", tmp_path / "r")
    assert rc == 2 and "did you mean gmm8" in err


def test_dry_run_says_which_jobs_would_run(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(GOOD.replace("seeds = 0", 'seeds = "0-1"'))
    rc, out, _ = cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / "r", "--dry-run")
    assert rc == 0 and out.count("\nrun ") + out.startswith("run ") == 2 and "2 to run, 0 to rerun" in out
    bench.run("euler", "gmm8", nfe=5, seeds=[0], samples=64, out=tmp_path / "r", progress=False)
    rc, out, _ = cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / "r", "--dry-run")
    assert "1 to run, 0 to rerun (older code or failed), 1 kept" in out
    # each job named as a researcher names it, the one left to run with its estimated time
    assert "kept  euler on gmm8 nfe=5 seed=0 (samples=64)\n" in out
    assert "run   euler on gmm8 nfe=5 seed=1 (samples=64)  ~" in out and "of one core" in out
    assert not (tmp_path / "r" / "gmm8" / "euler" / "nfe5_seed1.json").exists()


def test_ctrl_c_counts_the_whole_suite(tmp_path, capsys, monkeypatch):
    (tmp_path / "s.toml").write_text(GOOD.replace("seeds = 0", 'seeds = "0-2"'))
    real, calls = suite._run_one, []

    def one(job, *a, **k):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, *a, **k)
    monkeypatch.setattr(suite, "_run_one", one)
    rc, _, err = cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / "r", "--no-leaderboard")
    assert rc == 130
    assert "interrupted: 1 of 3 jobs run this time (0 failed), 0 kept" in err


# -- convert, the cache ------------------------------------------------------------------------

def test_convert_never_replaces_a_device_node_and_says_the_truth(tmp_path, capsys):
    weights = Path(bench.__file__).resolve().parent / "tasks" / "weights" / "gmm8.safetensors"
    if not weights.exists():
        weights = Path(__file__).resolve().parent.parent / "tasks" / "weights" / "gmm8.safetensors"
    rc, _, err = cli(capsys, "convert", "/dev/null", tmp_path / "x.safetensors")
    assert rc == 2
    one_line_error(err, "/dev/null is not a regular file")
    rc, _, err = cli(capsys, "convert", tmp_path / "missing.pkl", "/dev/null", "--force")
    assert rc == 2 and "does not exist" in err
    (tmp_path / "ok.pkl").write_bytes(b"\x80\x04K\x01.")
    rc, _, err = cli(capsys, "convert", tmp_path / "ok.pkl", "/dev/null", "--force")
    assert rc == 2
    one_line_error(err, "/dev/null is not a regular file", "never replaced")
    assert Path("/dev/null").is_char_device()
    rc, _, err = cli(capsys, "convert", weights, tmp_path / "y.safetensors")
    assert rc == 2
    one_line_error(err, "already a .safetensors file")
    assert not (tmp_path / "y.safetensors").exists()


def _refuse_training(*a, **k):
    raise AssertionError("trained although the output was refused")


def _no_training(monkeypatch):
    import bench.nets.train
    monkeypatch.setattr(bench.nets.train, "train_denoiser", _refuse_training)


@pytest.mark.parametrize("out,words", [(None, ["shipped weights", "--out PATH", "--force"]),
                                       ("existing", ["exists", "--force"]),
                                       ("folder", ["is a folder"]),
                                       ("/dev/null", ["not a regular file"])])
def test_training_never_writes_over_weights_unasked_and_says_so_before_it_starts(tmp_path, capsys, monkeypatch,
                                                                                  out, words):
    from bench.engine.runner import get_task
    _no_training(monkeypatch)
    shipped = get_task("gmm8").weights_path()
    before = shipped.read_bytes()
    (tmp_path / "existing").write_bytes(b"mine")
    target = {None: [], "existing": ["--out", tmp_path / "existing"], "folder": ["--out", tmp_path],
              "/dev/null": ["--out", "/dev/null"]}[out]
    rc, _, err = cli(capsys, "train-denoiser", "--task", "gmm8", *target)
    assert rc == 2
    one_line_error(err, *words)
    assert shipped.read_bytes() == before and (tmp_path / "existing").read_bytes() == b"mine"


def test_training_a_pretrained_tasks_network_is_refused_naming_the_tasks_that_train(capsys, monkeypatch):
    _no_training(monkeypatch)
    rc, _, err = cli(capsys, "train-denoiser", "--task", "cifar10")
    assert rc == 2
    one_line_error(err, "cifar10 has no denoiser of its own", "gmm8", "digits")


def test_training_the_classifier_over_the_shipped_one_needs_force(tmp_path, capsys, monkeypatch):
    from bench.engine.runner import get_task
    monkeypatch.setattr(type(get_task("digits")), "train_classifier", _refuse_training)
    rc, _, err = cli(capsys, "train-classifier", "--task", "digits")
    assert rc == 2
    one_line_error(err, "shipped classifier", "--out PATH", "--force")
    (tmp_path / "c.safetensors").write_bytes(b"mine")
    rc, _, err = cli(capsys, "train-classifier", "--task", "digits", "--out", tmp_path / "c.safetensors")
    assert rc == 2
    one_line_error(err, "exists", "--force")
    assert (tmp_path / "c.safetensors").read_bytes() == b"mine"


def test_training_writes_a_new_file_and_replaces_one_only_with_force(tmp_path, capsys):
    from bench.nets.toynet import load_denoiser
    out = tmp_path / "w" / "mine.safetensors"
    rc, stdout, _ = cli(capsys, "train-denoiser", "--task", "gmm8", "--steps", "2", "--out", out)
    assert rc == 0 and f"wrote {out}" in stdout
    first = out.read_bytes()
    load_denoiser(out)  # readable, architecture and sha recorded
    rc, _, err = cli(capsys, "train-denoiser", "--task", "gmm8", "--steps", "2", "--seed", "1", "--out", out)
    assert rc == 2 and out.read_bytes() == first
    rc, _, _ = cli(capsys, "train-denoiser", "--task", "gmm8", "--steps", "2", "--seed", "1", "--out", out, "--force")
    assert rc == 0 and out.read_bytes() != first


def test_an_unwritable_cache_is_refused_before_the_fit(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BENCH_CACHE", str(blocker / "cache"))
    rc, _, err = cli(capsys, "run", "--method", "edm-grid", "--task", "gmm8", "--nfe", "10", "--out",
                     tmp_path / "r", *SMALL)
    assert rc == 2
    one_line_error(err, "the fit cache", "not writable", "BENCH_CACHE")
    assert not any((tmp_path / "r").rglob("*.json"))


# -- help ----------------------------------------------------------------------------------------

def test_help_lists_every_command_and_no_empty_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("run", "list", "suite", "leaderboard", "compare", "train-denoiser", "convert"):
        assert cmd in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "(default: )" not in capsys.readouterr().out


def test_a_local_pool_gives_the_same_results_as_one_process(tmp_path, capsys, one_thread, monkeypatch):
    """--jobs 2: each job in its own single-threaded process, longest first; the same numbers."""
    monkeypatch.setattr("bench.cli._cores", lambda: 2)  # the invariance holds on a one-core machine too
    (tmp_path / "s.toml").write_text(GOOD.replace("seeds = 0", 'seeds = "0-1"').replace("nfe = 5", "nfe = [5, 6]"))
    for workers, out in ((1, "one"), (2, "two")):
        assert cli(capsys, "suite", tmp_path / "s.toml", "--out", tmp_path / out, "--jobs", workers,
                   "--no-leaderboard")[0] == 0
    one, two = (sorted(load_results(tmp_path / d), key=lambda r: r["_path"][-20:]) for d in ("one", "two"))
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert (a["nfe_budget"], a["seed"], a["metrics"]) == (b["nfe_budget"], b["seed"], b["metrics"])


def test_list_shows_a_methods_settings(capsys):
    rc, out, _ = cli(capsys, "list", "--method", "irl")
    assert rc == 0 and "fits on the tuning split" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("solver "))
    assert "a string" in line and '"ipndm"' in line and '"euler"' in line  # type, default, allowed values
    line = next(ln for ln in out.splitlines() if ln.startswith("iters "))
    assert "an integer" in line and "200" in line
    rc, _, err = cli(capsys, "list", "--method", "eulr")
    assert rc == 2 and "did you mean euler" in err


def test_compare_says_why_there_is_nothing_to_pair(tmp_path, capsys):
    bench.run("euler", "gmm8", nfe=5, seeds=[0, 1, 2], samples=64, out=tmp_path, progress=False)
    rc, out, err = cli(capsys, "compare", "euler", "--task", "gmm8", "--results", tmp_path, "--plot",
                       tmp_path / "c.png")
    assert rc == 0 and "No other row of gmm8 has results" in out and "classic reference" not in out
    assert "made by other code" not in err  # this checkout's own results
    assert "no plot written" in out and not (tmp_path / "c.png").exists()


def test_a_suite_replaces_results_of_another_configuration_and_says_so(tmp_path, capsys):
    """The manifest says what each result is: a result of another configuration under its label (a
    changed default, another sample count) is replaced by the suite, in a line; `run` refuses."""
    out = tmp_path / "r"
    bench.run("euler", "gmm8", nfe=5, seeds=[0], samples=32, out=out, progress=False)
    (tmp_path / "s.toml").write_text(GOOD)  # samples = 64
    rc, _, err = cli(capsys, "suite", tmp_path / "s.toml", "--out", out, "--no-leaderboard")
    assert rc == 0 and "replacing 1 result(s) made under another configuration" in err
    assert json.loads((out / "gmm8" / "euler" / "nfe5_seed0.json").read_text())["n_samples"] == 64


def test_a_fifo_or_a_device_among_the_results_is_skipped_never_read(tmp_path):
    """A FIFO named *.json would block a reader forever and a link to /dev/zero would fill the
    memory: only regular files of a bounded size are read, the others are skipped with a warning."""
    import os
    import warnings

    from bench.engine.io import NotARegularFile, read_regular
    from bench.engine.results import load_results
    folder = tmp_path / "gmm8" / "x"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "nfe5_seed0.json")
    (folder / "nfe6_seed0.json").symlink_to("/dev/zero")
    (folder / "big.json").write_bytes(b" " * 2048)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert load_results(tmp_path) == []
    said = " ".join(str(w.message) for w in seen)
    assert "a FIFO, not a file" in said and "a device, not a file" in said
    with pytest.raises(NotARegularFile, match="larger than"):
        read_regular(folder / "big.json", cap=1024)


def test_a_manifest_that_is_a_device_or_nests_too_deep_is_one_line(tmp_path, capsys):
    from bench.cli import main
    assert main(["suite", "/dev/zero", "--dry-run"]) == 2
    assert "is a device, not a file" in capsys.readouterr().err
    deep = tmp_path / "gmm8" / "x" / "nfe5_seed0.json"
    deep.parent.mkdir(parents=True)
    deep.write_text("[" * 200_000 + "]" * 200_000)
    from bench.engine.results import read_result
    assert read_result(deep) == (None, "not a result (nested too deeply)")


def test_a_budget_beyond_the_declared_cap_is_refused_before_any_work(tmp_path, capsys):
    from bench.cli import main
    from bench.method import MAX_NFE
    assert main(["run", "--nfe", str(10**9), "--out", str(tmp_path)]) == 2
    assert f"integers in 1..{MAX_NFE:,}" in capsys.readouterr().err
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[run]]\nmethod = "edm"\ntask = "gmm8"\nnfe = 1000000000\n')
    assert main(["suite", str(manifest), "--dry-run"]) == 2
    assert "NFE budget 1000000000 out of range" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("device", ["cpu; x", "cpux", "cuda:a", "gpu"])
def test_a_device_that_is_not_one_is_refused_in_one_line(device, capsys):
    from bench.cli import main
    assert main(["run", "--device", device]) == 2
    assert "use cpu, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, said", [(dict(seeds=[0, 0]), "seed 0 is named twice"),
                                          (dict(seeds=[0.5]), "seeds are integers"),
                                          (dict(seeds=[True]), "seeds are integers"),
                                          (dict(nfe=[5, 5]), "NFE budget 5 is named twice")])
def test_the_api_refuses_repeated_or_non_integer_seeds_and_budgets(tmp_path, kwargs, said):
    import bench
    with pytest.raises(ValueError, match=said):
        bench.run("edm", "gmm8", **{"nfe": [5], "seeds": [0], **kwargs}, out=tmp_path, progress=False)
    assert not any(tmp_path.rglob("*.json"))


def test_suite_workers_die_with_a_killed_suite(tmp_path):
    """SIGKILL of the suite's process leaves its pool no chance to stop its workers: each worker asks
    the kernel to end it with its parent (PR_SET_PDEATHSIG), so none goes on writing results."""
    import os
    import signal
    import subprocess
    import sys
    import time
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    pidfile = tmp_path / "worker.pid"
    script = tmp_path / "pool.py"
    script.write_text(
        "import concurrent.futures as cf, multiprocessing, os, time, sys\n"
        "from bench.engine.suite import _worker_init\n"
        "def job(path):\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)) as p:\n"
        f"        p.submit(job, {str(pidfile)!r}).result()\n")
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    deadline = time.time() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.time() < deadline and parent.poll() is None, "the worker never started"
        time.sleep(0.2)
    worker = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its killed suite")


def test_no_writer_reaches_the_published_folder_through_a_link_or_a_named_path(tmp_path, capsys):
    """A link at OUT/TASK/LABEL into leaderboards/results, `convert X leaderboards/README.md --force`
    and `train-denoiser --out leaderboards/...` are each refused in one line, before any work."""
    from bench.cli import main
    from bench.engine.results import PUBLISHED, PUBLISHED_RESULTS
    before = {p: p.stat().st_mtime_ns for p in PUBLISHED.glob("*") if p.is_file()}
    (tmp_path / "out" / "gmm8").mkdir(parents=True)
    (tmp_path / "out" / "gmm8" / "edm").symlink_to(PUBLISHED_RESULTS / "gmm8" / "edm")
    assert main(["run", "--method", "edm", "--task", "gmm8", "--nfe", "5", "--seeds", "0", "--out",
                 str(tmp_path / "out"), "--rerun"]) == 2
    assert "leads into the published results folder" in capsys.readouterr().err
    ckpt = tmp_path / "net.pkl"
    ckpt.write_bytes(b"not a checkpoint")
    assert main(["convert", str(ckpt), str(PUBLISHED / "README.md"), "--force"]) == 2
    assert "inside the published leaderboards" in capsys.readouterr().err
    assert main(["train-denoiser", "--task", "gmm8", "--out", str(PUBLISHED / "w.safetensors")]) == 2
    assert "inside the published leaderboards" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in PUBLISHED.glob("*") if p.is_file()} == before
    assert not (PUBLISHED / "w.safetensors").exists()


def test_small_input_mistakes_are_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """An empty BENCH_CACHE (it would put the cache in the working folder), a shard with a non-ASCII
    digit, a label that looks like a result file, a result file given as --results."""
    from bench.cli import main
    from bench.engine.results import PUBLISHED_RESULTS
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CACHE", " ")
    assert main(["run", "--method", "ld3", "--nfe", "5", "--seeds", "0", "--samples", "300", "--out",
                 str(tmp_path / "o"), "--no-ode-error"]) == 2
    assert "BENCH_CACHE is set but empty" in capsys.readouterr().err and not (tmp_path / "artifacts").exists()
    monkeypatch.delenv("BENCH_CACHE")
    cases = [(["suite", str(PUBLISHED_RESULTS.parent / "suite.toml"), "--shard", "\\u00b2/2", "--dry-run"], "use K/N"),
             (["run", "--label", "a.json", "--out", str(tmp_path / "o")], "ends like a result file"),
             (["leaderboard", "--results", str(PUBLISHED_RESULTS / "gmm8" / "edm" / "nfe5_seed0.json")], "is a file"),
             (["compare", "edm", "--task", "gmm8", "--results",
               str(PUBLISHED_RESULTS / "gmm8" / "edm" / "nfe5_seed0.json")], "is a file")]
    for argv, said in cases:
        argv = [a.encode().decode("unicode_escape") for a in argv]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
