"""The protocol (v2, v3): results identified by their configuration, independent fits per seed,
selection on the tuning split, privileged rewards labelled, paired verdicts that an independent
implementation confirms, and a slice of the published suite reproduced."""
from __future__ import annotations

import json
import warnings

import pytest

import bench
from bench.report.leaderboard import build

SMALL = dict(samples=64, denoiser="exact", progress=False)


def test_two_runs_with_different_settings_never_share_a_file_or_a_row(tmp_path):
    a = bench.run("euler", "gmm8", nfe=4, seeds=[0], out=tmp_path, config=dict(rho=5.0), **SMALL)[0]
    b = bench.run("euler", "gmm8", nfe=4, seeds=[0], out=tmp_path, config=dict(rho=6.0), **SMALL)[0]
    c = bench.run("euler", "gmm8", nfe=4, seeds=[0], out=tmp_path, **SMALL)[0]
    assert len({a["path"], b["path"], c["path"]}) == 3
    assert a["label"].startswith("euler@exact-") and c["label"] == "euler@exact"
    with pytest.raises(ValueError, match="another configuration.*own\n?.*--label"):
        bench.run("euler", "gmm8", nfe=4, seeds=[0], out=tmp_path, config=dict(rho=6.0), label=a["label"], **SMALL)
    assert json.loads(open(a["path"]).read())["method_config"]["rho"] == 5.0  # untouched
    # results of two configurations under one label (copied by hand): two rows, never one mean
    other = json.loads(open(b["path"]).read())
    other.update(label=a["label"], seed=1)
    (tmp_path / "gmm8" / a["label"] / "nfe4_seed1.json").write_text(json.dumps(other))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(tmp_path, tmp_path / "lb", task="gmm8", formats="csv")
    assert any("2 different method configurations" in str(w.message) for w in caught)
    csv = (tmp_path / "lb" / "gmm8.csv").read_text()
    assert f"{a['label']} [config " in csv and csv.count(f"{a['label']} [config ") == 2


def test_every_seed_is_an_independent_fit(tmp_path):
    cfg = dict(grid_gamma=[0.0, 0.2], grid_tmin=[0.05], grid_tmax=[50.0], grid_noise=[1.0], tune_samples=200)
    rs = bench.run("edm-grid", "gmm8", nfe=7, seeds=[0, 1], out=tmp_path, cache=tmp_path / "c", config=cfg,
                   **SMALL)
    paths = {r["fit_cost"]["artifact_path"] for r in rs}
    assert len(paths) == 2 and all(r["fit_cost"]["nfe"] > 0 and not r["fit_cost"]["reused"] for r in rs)


def test_selection_scores_on_the_tuning_split_never_the_true_density(monkeypatch):
    from bench.metrics import toy as M
    task = bench.get_task("gmm8")
    monkeypatch.setattr(M, "mmd_exact", lambda *a, **k: pytest.fail("selection used the exact target"))
    x, _ = task.sample_tuning(300, 1)
    ref, _ = task.sample_tuning(300, 2)
    assert task.score_against(x, None, ref, None) == pytest.approx(M.mmd(x.double().numpy(), ref.double().numpy()))


def test_the_exact_log_density_reward_is_privileged_and_not_the_default():
    task = bench.get_task("gmm8")
    assert bench.get_method("ddpo", task).config["reward"] == "disc"
    assert bench.get_method("ddpo", task).privileged() is None
    assert "exact log-density" in bench.get_method("ddpo", task, reward="logprob").privileged()


T_975_DF2 = 4.302652729749464  # the 97.5% quantile of Student's t with 2 degrees of freedom (tables)


def test_paired_t_interval_of_hand_made_numbers():
    import pandas as pd
    import scipy.stats

    from bench.report.paired import compare, probability_of_improvement
    rows = []
    for seed, (ref, good, same, bad, other, edge) in enumerate([(4, 1.9, 3, 5.9, 9, 1), (4, 2, 4, 6, 9, 2),
                                                                 (4, 2.1, 5, 6.1, 9, 3)]):
        rows += [dict(label="edm", family="classic", nfe=10, seed=seed, value=ref),
                 dict(label="euler", family="classic", nfe=10, seed=seed, value=other),
                 dict(label="good", family="learned dynamics", nfe=10, seed=seed, value=good),
                 dict(label="same", family="tuned", nfe=10, seed=seed, value=same),
                 dict(label="bad", family="tuned", nfe=10, seed=seed, value=bad),
                 dict(label="edge", family="tuned", nfe=10, seed=seed, value=edge),
                 dict(label="oracle", family="floor", nfe=10, seed=seed, value=0.0)]
    t = compare(pd.DataFrame(rows), higher_is_better=False).set_index("label")
    assert set(t.index) == {"euler", "good", "same", "bad", "edge"} and set(t["reference"]) == {"edm"}  # best classic
    # good - edm per seed: -2.1, -2, -1.9 -> mean -2, sd 0.1: -2 +- t(0.975, 2) 0.1 / sqrt(3)
    half = T_975_DF2 * 0.1 / 3**0.5
    assert t.loc["good", "diff"] == pytest.approx(-2.0)
    assert t.loc["good", "diff_low"] == pytest.approx(-2 - half) and t.loc["good", "diff_high"] == pytest.approx(-2 + half)
    assert t.loc["good", "verdict"] == "better" and t.loc["good", "p_improve"] == 1.0
    assert t.loc["good", "p_value"] == pytest.approx(scipy.stats.ttest_1samp([-2.1, -2, -1.9], 0).pvalue)
    # same: -1, 0, 1 -> 0 +- t 1 / sqrt(3): a tie
    assert t.loc["same", "diff_high"] == pytest.approx(T_975_DF2 / 3**0.5) and t.loc["same", "verdict"] == "tie"
    assert t.loc["bad", "verdict"] == "worse" and t.loc["bad", "p_improve"] == 0.0
    # edge: -3, -2, -1 -> -2 +- 2.48: a tie by t, though every seed is better and the 3-seed percentile
    # bootstrap, which is [min, max] = [-3, -1], calls it better
    assert t.loc["edge", "verdict"] == "tie" and t.loc["edge", "boot_verdict"] == "better"
    assert (t.loc["edge", "boot_low"], t.loc["edge", "boot_high"]) == (-3.0, -1.0)
    assert t.loc["edge", "p_value"] == pytest.approx(scipy.stats.ttest_1samp([-3, -2, -1], 0).pvalue)
    assert t.loc["edge", "close"]  # p = 0.074: between 0.01 and 0.10
    assert probability_of_improvement([1, 2], [2, 3], higher_is_better=False) == (1 + 1 + 0.5 + 1) / 4


def test_against_names_the_row_and_signs_the_difference_from_its_side():
    import pandas as pd

    from bench.report.paired import against
    rows = []
    for seed, (a, b, c) in enumerate([(1.9, 4, 1.9), (2, 4, 3), (2.1, 4, 1.2)]):
        rows += [dict(label="mine", family="learned dynamics", nfe=10, seed=seed, value=a),
                 dict(label="edm", family="classic", nfe=10, seed=seed, value=b),
                 dict(label="twin", family="tuned", nfe=10, seed=seed, value=c),
                 dict(label="edm", family="classic", nfe=20, seed=seed, value=b)]  # mine has no NFE 20
    rows.append(dict(label="late", family="tuned", nfe=10, seed=7, value=0.0))  # no common seed
    t = against(pd.DataFrame(rows), "mine", higher_is_better=False).set_index("reference")
    assert sorted(t.index) == ["edm", "late", "twin"] and set(t["nfe"]) == {10}
    # mine - edm per seed: -2.1, -2, -1.9 -> -2 +- t(0.975, 2) 0.1 / sqrt(3): better (lower is better)
    half = T_975_DF2 * 0.1 / 3**0.5
    assert t.loc["edm", "diff"] == pytest.approx(-2.0)
    assert (t.loc["edm", "diff_low"], t.loc["edm", "diff_high"]) == pytest.approx((-2 - half, -2 + half))
    assert t.loc["edm", "verdict"] == "better" and t.loc["edm", "p_improve"] == 1.0
    assert t.loc["twin", "verdict"] == "tie" and t.loc["twin", "diff"] == pytest.approx(-0.1 / 3)
    assert t.loc["late", "seeds"] == 0 and t.loc["late", "verdict"] == "n/a"
    assert against(pd.DataFrame(rows), "twin", False, others=["mine"])["verdict"].tolist() == ["tie"]


def test_results_pair_only_on_the_same_seed_at_the_same_sample_count():
    """A seed drawn at another sample count is another estimator of the metric (FID is biased in
    the count): the board never pairs it, on the reference row or against a chosen one."""
    import pandas as pd

    from bench.report.paired import against, compare
    rows = []
    for seed, (ref, same, fewer) in enumerate([(0.40, 0.30, 0.90), (0.55, 0.44, 0.95), (0.60, 0.51, 0.91)]):
        rows += [dict(label="edm", family="classic", nfe=10, seed=seed, samples=10_000, value=ref),
                 dict(label="same", family="tuned", nfe=10, seed=seed, samples=10_000, value=same),
                 dict(label="fewer", family="tuned", nfe=10, seed=seed, samples=1_000, value=fewer)]
    frame = pd.DataFrame(rows)
    t = compare(frame, higher_is_better=False).set_index("label")
    assert t.loc["same", "seeds"] == 3 and t.loc["same", "verdict"] == "better"
    assert t.loc["fewer", "seeds"] == 0 and t.loc["fewer", "verdict"] == "n/a"
    assert against(frame, "fewer", False).set_index("reference")["seeds"].to_dict() == {"edm": 0, "same": 0}
    # without the column (results that never recorded it) every seed pairs, as before
    t = compare(frame.drop(columns="samples"), higher_is_better=False).set_index("label")
    assert t.loc["fewer", "seeds"] == 3 and t.loc["fewer", "verdict"] == "worse"


def test_compare_command_on_result_files(tmp_path, capsys):
    from bench.cli import main
    from test_leaderboard import result, write
    for seed, (a, b) in enumerate([(0.1, 0.4), (0.2, 0.55), (0.3, 0.6)]):
        write(tmp_path, result("irl", 10, seed, a))
        write(tmp_path, result("edm", 10, seed, b))
    assert main(["compare", "irl", "--task", "gmm8", "--results", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "edm, irl: made by other code than this checkout's" in err  # hand-made results carry no code version
    line = next(x for x in out.splitlines() if "| edm" in x)
    assert "-0.3" in line and "better" in line and "mmd (lower is better)" in out
    assert main(["compare", "irl", "--task", "gmm8", "--results", str(tmp_path), "--metric", "precision"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "| edm" in x)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "0.03167" and cells[-1] == "better"  # precision = 1 - mmd / 10: higher is better
    for argv, says in ((["irl", "--task", "gmm8", "--against", "edn"], "did you mean edm? (labels there: edm, irl)"),
                       (["irk", "--task", "gmm8"], "no results labelled 'irk' for task gmm8; did you mean irl?"),
                       (["irl", "--task", "gmm8", "--nfe", "20"], "its budgets: 10"),
                       (["irl", "--task", "gmm8", "--metric", "w2"], "metrics there: mmd, precision"),
                       (["irl", "--task", "gmm25"], "tasks there: gmm8")):
        assert main(["compare", *argv, "--results", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err


def test_compare_pairs_your_row_with_the_published_rows_never_mixing_a_row_of_two_sources(tmp_path, capsys,
                                                                                          monkeypatch):
    """`compare LABEL --results YOURS --published`: your row against the published rows, paired; a
    label you also ran is taken whole from your results (the published seeds of it are not mixed
    in); a row of another sample count per seed is not paired; LABEL must be yours. `leaderboard
    --results YOURS --published` draws the same rows, into your folder."""
    import bench.report.board
    import bench.report.leaderboard as lb
    from bench.cli import main
    from test_leaderboard import result, write
    published, yours = tmp_path / "published", tmp_path / "yours"
    monkeypatch.setattr(lb, "PUBLISHED_RESULTS", published)
    monkeypatch.setattr(bench.report.board, "PUBLISHED_RESULTS", published)
    for seed, (edm, euler) in enumerate([(0.40, 0.30), (0.55, 0.35), (0.60, 0.32), (0.50, 0.31), (0.45, 0.36)]):
        write(published, result("edm", 10, seed, edm))
        write(published, result("euler", 10, seed, euler))
        write(published, result("euler", 20, seed, euler / 2))  # a budget you did not run: kept
        write(published, dict(result("big", 10, seed, 0.2), n_samples=10_000))
        write(published, result("edm", 10, seed, 0.1, task="gmm25"))  # a task you did not run: left out
    for seed, (mine, euler) in enumerate([(0.10, 9.0), (0.20, 9.1), (0.30, 9.2)]):  # seeds 0-2 only
        write(yours, result("mine", 10, seed, mine))
        write(yours, result("euler", 10, seed, euler))  # your euler: replaces the published row whole
    assert main(["compare", "mine", "--task", "gmm8", "--results", str(yours), "--published"]) == 0
    out, err = capsys.readouterr()
    rows = {c[2].split(" (")[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in out.splitlines()
                                            if line.startswith("|") and "mine" in line)}
    assert set(rows) == {"edm", "euler"}  # "big" has 10,000 samples per seed, yours none recorded
    assert rows["edm"][2] == "edm (reference)"  # the budget's best classic row, listed first
    assert "not paired with big" in err and "10000" in err
    # mine - edm over seeds 0-2; mine - euler over your euler's seeds, none of the published ones
    assert rows["edm"][3] == "3" and float(rows["edm"][4]) == pytest.approx(-0.95 / 3, abs=1e-4)
    assert rows["euler"][3] == "3" and float(rows["euler"][4]) == pytest.approx(-8.9, abs=1e-4)
    assert "from there; the rest published" in out
    assert main(["compare", "edm", "--task", "gmm8", "--results", str(yours), "--published"]) == 2
    assert "LABEL is a row of yours" in capsys.readouterr().err
    assert main(["compare", "edm", "--task", "gmm8", "--published"]) == 0  # published alone, as before
    assert "| euler" in capsys.readouterr().out
    # the boards of your rows beside the published ones: the same rows, into your folder
    argv = ["leaderboard", "--results", str(yours), "--published", "--format", "md,json"]
    assert main(argv) == 0
    index = (yours / "leaderboards" / "README.md").read_text()
    assert "beside the published rows" in index and "gmm25" not in index  # only the tasks you ran
    page = (yours / "leaderboards" / "gmm8.md").read_text().splitlines()
    marked = {line.split("|")[1].strip().strip("*") for line in page if line.startswith("|") and "your run" in line}
    assert marked == {"mine", "euler"}  # the rows of yours, not the published ones
    assert any("your run (in place of the published 5 seeds)" in line for line in page if "| euler" in line)
    board = json.loads((yours / "leaderboards" / "gmm8.json").read_text())
    rows = {(r["method"], r["nfe"]): r for r in board["measured"]}
    # your euler at NFE 10 replaces that cell; the published euler at NFE 20 stays, never dropped
    assert set(rows) == {("mine", 10), ("euler", 10), ("edm", 10), ("big", 10), ("euler", 20)}
    assert rows[("euler", 20)]["seeds"] == [0, 1, 2, 3, 4]
    assert rows[("euler", 10)]["seeds"] == [0, 1, 2]
    assert rows[("euler", 10)]["metrics"]["mmd"]["mean"] == pytest.approx(9.1)
    assert rows[("edm", 10)]["seeds"] == [0, 1, 2, 3, 4]
    assert all("published/gmm8/edm/" in f for f in rows[("edm", 10)]["files"])  # leaderboards/results/... when real
    assert all(f.startswith("gmm8/mine/") for f in rows[("mine", 10)]["files"])
    assert not (published / "leaderboards").exists()
    assert sorted(p.name for p in published.iterdir()) == ["gmm25", "gmm8"]  # nothing written there
    plot, table = tmp_path / "pictures" / "mine.png", tmp_path / "tables" / "mine.csv"  # their folders made
    assert main(["compare", "mine", "--task", "gmm8", "--results", str(yours), "--published", "--plot", str(plot),
                 "--csv", str(table)]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG") and f"plot: {plot}" in capsys.readouterr().out
    import pandas as pd
    written = pd.read_csv(table).set_index("reference")
    assert written.loc["edm", "diff"] == pytest.approx(-0.95 / 3, rel=1e-12)  # full precision, not 4 digits
    assert (written.loc["edm", "seeds"], written.loc["edm", "verdict"]) == (3, "better")
    assert written.loc["euler", "seeds"] == 3
    assert main(["compare", "mine", "--task", "gmm8", "--results", str(yours), "--csv", str(tmp_path / "m.txt")]) == 2
    assert "name a .csv file" in capsys.readouterr().err
    for where, says in ((tmp_path / "mine.jpg", "name a .png file"), (tmp_path, "is a folder"),
                        (lb.PUBLISHED / "mine.png", "inside the published leaderboards")):
        assert main(["compare", "mine", "--task", "gmm8", "--results", str(yours), "--plot", str(where)]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1 and not (lb.PUBLISHED / "mine.png").exists()
    for cmd in (["leaderboard"], ["compare", "mine", "--task", "gmm8"]):  # a mistyped folder of yours: nothing made
        assert main([*cmd, "--results", str(tmp_path / "yuors"), "--published"]) == 2
        assert "no result files under" in capsys.readouterr().err and not (tmp_path / "yuors").exists()


def test_every_method_declares_a_known_family():
    from bench import registry
    from bench.method import FAMILIES
    fams = {name: cls.family for name, cls in registry.methods().items()}
    assert set(fams.values()) <= set(FAMILIES) and "other" not in fams.values(), fams
    assert fams["edm"] == "classic" and fams["oracle"] == "floor"


# -- the suite ----------------------------------------------------------------------------------

MANIFEST = """
[defaults]
seeds = "0-2"
samples = 64

[[run]]
method = "euler"
task = "gmm8"
nfe = "4,6"
denoiser = "exact"

[[run]]
method = "euler"
task = "gmm8"
nfe = "4"
denoiser = "exact"
label = "euler-rho3"
settings = { rho = 3.0 }
"""


def test_suite_runs_once_and_shards_partition_the_jobs(tmp_path, monkeypatch, capsys):
    import bench.engine.runner as runner
    from bench.cli import main
    from bench.engine import suite
    (tmp_path / "suite.toml").write_text(MANIFEST)
    jobs = suite.load(tmp_path / "suite.toml")
    assert len(jobs) == 9
    parts = [suite.shard(jobs, k, 2) for k in (1, 2)]
    assert sorted(j.key for p in parts for j in p) == sorted(j.key for j in jobs) and all(parts)
    assert len({j.key for j in parts[0]} & {j.key for j in parts[1]}) == 0
    one, calls = runner._one, []
    monkeypatch.setattr(runner, "_one", lambda *a: (calls.append(a[4:6]), one(*a))[1])
    out = tmp_path / "results"
    for k in (1, 2):
        assert main(["suite", str(tmp_path / "suite.toml"), "--shard", f"{k}/2", "--out", str(out),
                     "--no-leaderboard"]) == 0
    assert len(calls) == 9  # every job exactly once over the two shards
    assert main(["suite", str(tmp_path / "suite.toml"), "--out", str(out)]) == 0
    assert len(calls) == 9  # the second run of the whole suite does no work
    printed = capsys.readouterr().out
    assert "9 jobs, 0 run, 9 kept, 0 failed" in printed and "leaderboards rebuilt" in printed
    assert (out / "leaderboards" / "gmm8.md").is_file()
    assert sorted(p.parent.name for p in out.rglob("nfe4_seed0.json")) == ["euler-rho3", "euler@exact"]


def test_a_bad_manifest_is_one_line(tmp_path, capsys):
    from bench.cli import main
    (tmp_path / "bad.toml").write_text('[[run]]\nmethod = "edm"\nnfe = "4"\n')
    assert main(["suite", str(tmp_path / "bad.toml")]) == 2
    assert "entry 1: needs task" in capsys.readouterr().err


def test_the_published_manifest_lists_known_methods_and_tasks():
    from pathlib import Path

    from bench import registry
    from bench.engine import suite
    jobs = suite.load(Path(__file__).resolve().parent.parent / "leaderboards" / "suite.toml")
    assert {j.method for j in jobs} <= set(registry.methods()) and {j.task for j in jobs} <= set(registry.tasks())
    for j in jobs:  # each entry's settings are valid for its method
        bench.get_method(j.method, bench.get_task(j.task), **{k: json.loads(v) for k, v in j.settings})
    assert {j.seed for j in jobs if j.method in ("edm", "irl") and j.task == "gmm8"} == set(range(5))


def test_the_code_version_follows_the_runs_own_modules(tmp_path, monkeypatch):
    import sys

    from bench.engine.results import code_version
    (tmp_path / "my_sampler_mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_sampler_mod  # noqa: F401
    before = code_version("bench.tasks.toy", "my_sampler_mod")
    other = code_version("bench.tasks.toy", "bench.methods.edm")
    (tmp_path / "my_sampler_mod.py").write_text("X = 2\n")
    code_version.cache_clear()
    assert code_version("bench.tasks.toy", "my_sampler_mod") != before  # its own code changed: redone
    assert code_version("bench.tasks.toy", "bench.methods.edm") == other  # another method's: kept
    sys.modules.pop("my_sampler_mod", None)


def test_cost_ratio_at_equal_quality_of_hand_made_curves():
    from bench.report.curves import cost_ratios, markdown, running_best
    grid = [dict(fit_nfe=100 * (i + 1), score=s) for i, s in enumerate([0.5, 0.3, 0.4, 0.2, 0.25])]
    fast = [dict(fit_nfe=10, score=0.6), dict(fit_nfe=30, score=0.19), dict(fit_nfe=50, score=0.1)]
    slow = [dict(fit_nfe=10, score=0.6), dict(fit_nfe=900, score=0.3)]
    x, best = running_best(grid, higher=False)
    assert best.tolist() == [0.5, 0.3, 0.3, 0.2, 0.2]
    curves = {("grid", 10, 0): grid, ("irl", 10, 0): fast, ("grid", 10, 1): grid, ("irl", 10, 1): slow}
    t = cost_ratios(curves, {"grid": "tuned", "irl": "learned dynamics"}, higher=False)
    assert len(t) == 1 and t.iloc[0]["reached"] == 1 and t.iloc[0]["seeds"] == 2
    # seed 0 reaches the grid's final 0.2 at 30 of the grid's 500 NFE; seed 1 never: the median is inf
    assert t.iloc[0]["median_ratio"] == float("inf")
    t1 = cost_ratios({k: v for k, v in curves.items() if k[2] == 0}, {"grid": "tuned", "irl": "learned dynamics"},
                     higher=False)
    assert t1.iloc[0]["median_ratio"] == 30 / 500 and t1.iloc[0]["at_first"] == 0
    # a learned fit already past the grid's final score at its first recorded score: an upper bound only
    early = {("grid", 10, 0): grid, ("irl", 10, 0): [dict(fit_nfe=40, score=0.1), dict(fit_nfe=80, score=0.05)]}
    t2 = cost_ratios(early, {"grid": "tuned", "irl": "learned dynamics"}, higher=False)
    assert t2.iloc[0]["at_first"] == 1 and t2.iloc[0]["median_ratio"] == 40 / 500
    assert "≤ 0.08" in markdown(t2) and "≤" not in markdown(t1)
    # one seed at its first score beside an exact one: each true ratio is at most its listed one, so
    # the median (here the mean of 40/500 and 30/500) is an upper bound as well
    mixed = {**{(k[0], k[1], 1): v for k, v in early.items()}, ("grid", 10, 0): grid, ("irl", 10, 0): fast}
    t3 = cost_ratios(mixed, {"grid": "tuned", "irl": "learned dynamics"}, higher=False)
    assert t3.iloc[0]["at_first"] == 1 and t3.iloc[0]["reached"] == 2
    assert t3.iloc[0]["median_ratio"] == (40 / 500 + 30 / 500) / 2 and "≤ 0.07" in markdown(t3)


def test_searches_record_their_cost_to_quality_curve(tmp_path):
    cfg = dict(grid_gamma=[0.0, 0.2], grid_tmin=[0.05], grid_tmax=[50.0], grid_noise=[1.0], tune_samples=200)
    r = bench.run("edm-grid", "gmm8", nfe=7, seeds=[0], out=tmp_path, cache=tmp_path / "c", config=cfg, **SMALL)[0]
    curve = r["fit_curve"]
    assert len(curve) == 2 and [p["fit_nfe"] for p in curve] == [200 * 7, 400 * 7]
    assert curve[-1]["fit_nfe"] == r["fit_cost"]["nfe"]


def test_gmm8_shift_has_unequal_weights_and_the_equal_weight_denoiser():
    import numpy as np
    task = bench.get_task("gmm8-shift")
    w = task.data_weights()
    assert abs(w.sum() - 1) < 1e-12 and w[0] / w[1] == pytest.approx(1 / 0.7)
    x, _ = task.sample_reference(10_000)
    m = task.metrics(x, None, x, None, names=["mmd", "mode_tv"])
    assert abs(m["mmd"]) < 1e-3 and m["mode_tv"] < 0.02  # its own data: near the floor
    plain = bench.get_task("gmm8").sample_reference(10_000)[0]
    assert task.metrics(plain, None, x, None, names=["mode_tv"])["mode_tv"] == pytest.approx(
        0.5 * np.abs(np.full(8, 1 / 8) - w).sum(), abs=0.02)  # equal weights are off by their TV
    assert task.weights_path().name == "gmm8.safetensors"


def test_the_code_version_follows_a_methods_own_helpers(tmp_path):
    from bench.engine.results import _suite_imports
    f = tmp_path / "m.py"
    f.write_text("import torch\nfrom ._common import ppo_loss\nfrom bench.tasks.toy import GMM8\n"
                 "def g():\n    from bench.methods import restart\n")
    got = _suite_imports(f, "bench.methods")
    assert {"bench.methods._common", "bench.tasks.toy", "bench.methods.restart"} <= got
    assert not any(n.startswith("torch") for n in got)


@pytest.mark.parametrize("method, nfe", [("euler", 5), ("ipndm", 4)])
def test_a_slice_of_the_suite_reproduces_the_published_results(tmp_path, method, nfe):
    """One published job of leaderboards/suite.toml, rerun from scratch, twice: the two runs on this
    machine are bit-identical (results are deterministic), and both match the published file, which
    another CPU made, to the precision of float32 arithmetic: the network and the metrics' kernel
    sums run in float32, and another CPU (Intel or AMD, another BLAS kernel) may order a sum of n
    terms otherwise, moving it by up to about log2(n) eps32 relative (pairwise summation), so the
    tolerance is that bound for the largest sum, the metrics' n^2 kernel terms, with a factor 8 of
    margin; a metric that is a fraction of the samples (precision, recall) may move by a sample or two.
    The measured NFE and sample count are exact."""
    import math as _math
    from pathlib import Path

    import torch as _torch

    from bench.engine import suite
    from tolerance import EPS32
    published = (Path(__file__).resolve().parent.parent / "leaderboards" / "results" / "gmm8" / method
                 / f"nfe{nfe}_seed0.json")
    want = json.loads(published.read_text())
    job = [j for j in suite.load(Path(__file__).resolve().parent.parent / "leaderboards" / "suite.toml")
           if (j.method, j.task, j.nfe, j.seed, j.label) == (method, "gmm8", nfe, 0, None)]
    assert len(job) == 1, "the slice is no longer in the published suite"
    threads = _torch.get_num_threads()
    _torch.set_num_threads(1)  # as the suite ran: a parallel reduction may round its last bit otherwise
    try:
        runs = [bench.run(method, "gmm8", nfe=nfe, seeds=[0], out=tmp_path / str(k), progress=False)[0] for k in (0, 1)]
    finally:
        _torch.set_num_threads(threads)
    assert runs[0]["metrics"] == runs[1]["metrics"], "two runs on one machine differ"
    got = runs[0]
    assert got["nfe"] == want["nfe"] and got["n_samples"] == want["n_samples"]
    n = want["n_samples"]
    rtol = 8 * _math.log2(n**2) * EPS32
    for name, value in want["metrics"].items():
        counted = abs(value * n - round(value * n)) < 1e-6  # a fraction of the samples: one may cross a threshold
        assert got["metrics"][name] == pytest.approx(value, rel=rtol, abs=2 / n if counted else 1e-12), \
            f"{name}: {got['metrics'][name]} vs {value} (written under {want['versions']}, tolerance {rtol:.2g} relative)"


def test_every_published_result_was_made_by_this_checkouts_code():
    """Each published row regenerates from this commit: every result file under
    leaderboards/results carries the code version this checkout gives its task and method. A
    harness or method edit without its rerun fails here, not silently on the boards' stale marks.
    While a rerun of the whole manifest is declared under way (leaderboards/rerun.json), every
    result must instead carry the code version the declaration pins for it (nothing of newer code
    mixed in before the set is whole), and the boards mark them stale."""
    from pathlib import Path

    from bench.report.board import code_status, load
    root = Path(__file__).resolve().parent.parent / "leaderboards" / "results"
    rerun = root.parent / "rerun.json"
    pinned = json.loads(rerun.read_text())["code"] if rerun.exists() else None
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert {p.name for p in folders} >= {"gmm8", "digits"}, "the published results moved"
    for folder in folders:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an unreadable published file is a failure too
            results, _ = load(folder)
        status = code_status(results)
        assert status["total"] > 0 and status["unknown"] == 0, (folder.name, status)
        if pinned is not None:
            mixed = sorted({f"{r['method']} ({r['code']})" for r in results
                            if r["code"] != pinned.get(r["task"], {}).get(r["method"])})
            assert not mixed, (f"{folder.name}: a rerun is under way (leaderboards/rerun.json) and these results are "
                               f"not the ones it pins: {', '.join(mixed)}; publish the rerun whole, then remove it")
            board = (root.parent / f"{folder.name}.md").read_text()
            assert not status["stale"] or "**Stale:**" in board, f"{folder.name}.md does not mark its stale rows"
            continue
        assert not status["stale"], (f"{folder.name}: results of {', '.join(status['stale'])} were made by other "
                                     f"code (`python -m bench suite leaderboards/suite.toml --only {folder.name} "
                                     f"--dry-run` lists them)")


def test_t_interval_of_equal_values_has_zero_width():
    """Three equal values: a point, not mean +- the rounding of their mean (0.1 * 3 / 3 != 0.1)."""
    from bench.report.paired import t_interval
    assert t_interval([0.1, 0.1, 0.1]) == (0.1, 0.1)
    lo, hi = t_interval([0.1, 0.1, 0.1 + 1e-12])
    assert lo < 0.1 < hi


def test_every_published_verdict_agrees_with_scipy_on_the_result_files():
    """The published paired verdicts recomputed from the result files alone, by scipy's one-sample t
    test on the seed-by-seed differences, not by bench.report: the same common seeds, mean
    difference, 95% interval, close flag (p in [0.01, 0.10)) and verdict for every row."""
    import collections
    import csv
    import math
    from pathlib import Path

    import numpy as np
    import scipy.stats

    boards = Path(__file__).resolve().parent.parent / "leaderboards"
    checked = 0
    for table in sorted(boards.glob("*.paired.csv")):
        task = table.name.split(".")[0]
        rows = list(csv.DictReader(table.open()))
        if not rows:
            continue
        primary = json.loads((boards / f"{task}.json").read_text())["primary_metric"]
        values = collections.defaultdict(dict)
        for f in (boards / "results" / task).glob("*/*.json"):
            r = json.loads(f.read_text())
            v = r.get("metrics", {}).get(primary) if r.get("status") == "ok" else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                values[(r["label"], int(r["nfe_budget"]))][int(r["seed"])] = float(v)
        for row in rows:
            a, b = values[(row["label"], int(row["nfe"]))], values[(row["reference"], int(row["nfe"]))]
            seeds = sorted(set(a) & set(b))
            d = np.array([a[s] - b[s] for s in seeds])
            where = f"{task} NFE {row['nfe']}: {row['label']} - {row['reference']}"
            assert len(seeds) == int(row["seeds"]) and len(seeds) >= 2, where
            if np.all(d == d[0]):  # no spread: the interval is the point, its p-value 0 or 1
                low, high, p = d[0], d[0], 1.0 if d[0] == 0 else 0.0
            else:
                test = scipy.stats.ttest_1samp(d, 0.0)
                low, high = test.confidence_interval(0.95)
                p = test.pvalue
            verdict = "tie" if low <= 0 <= high else ("better" if high < 0 else "worse")
            assert float(row["diff"]) == pytest.approx(d.mean(), rel=1e-9, abs=1e-15), where
            assert float(row["diff_low"]) == pytest.approx(low, rel=1e-7, abs=1e-13), where
            assert float(row["diff_high"]) == pytest.approx(high, rel=1e-7, abs=1e-13), where
            assert (row["verdict"], row["close"]) == (verdict, str(0.01 <= p < 0.10)), where
            checked += 1
    assert checked >= 300  # every task's board was read, not skipped


# A paired difference as the README quotes it: "(+0.0031 [0.0019, 0.0044])", mean [low, high].
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"
_QUOTE = r"\(({n})\s+\[({n}),\s+({n})\]".format(n=_NUM)  # a quote may wrap onto the next line


def _rounds_to(quoted: str, value):
    """``value`` written to ``quoted``'s last digit is ``quoted`` (0.00020 states 1e-5, 7.0e-5 1e-6);
    elementwise for an array, False where it is NaN."""
    import decimal

    import numpy as np
    step = 10.0 ** decimal.Decimal(quoted.lstrip("+")).as_tuple().exponent
    return np.abs(float(quoted) - np.asarray(value, dtype=float)) <= 0.5 * step * (1 + 1e-9)


def unmatched_quotes(text: str, results, primary) -> tuple[int, list[str]]:
    """Every paired difference quoted in ``text`` against the result files under ``results``: a
    quote stands when some pair of rows of one task (any labels and NFE budgets, over their common
    seeds) has that mean difference in the task's primary metric (``primary(task)``) and that 95%
    t-interval (scipy's one-sample t test), to the quoted digits; under a heading that names
    protocol v2 the percentile bootstrap interval (v2's) also stands. Returns the number of quotes
    and the ones that match no pair."""
    import collections
    import math
    import re
    from pathlib import Path

    import numpy as np
    import scipy.stats

    from bench.report.paired import bootstrap_interval

    diffs = []  # per task: the seed-by-seed differences of every pair of rows, NaN where a seed is missing
    for folder in sorted(p for p in Path(results).iterdir() if p.is_dir()):
        rows = collections.defaultdict(dict)
        for f in folder.glob("*/*.json"):
            r = json.loads(f.read_text())
            if r.get("status") == "ok":
                rows[(r["label"], int(r["nfe_budget"]))][int(r["seed"])] = r["metrics"].get(primary(r["task"]))
        if not rows:
            continue
        seeds = sorted({s for v in rows.values() for s in v})
        x = np.array([[float(v[s]) if isinstance(v.get(s), (int, float)) else math.nan for s in seeds]
                      for v in rows.values()])
        x[~np.isfinite(x)] = math.nan
        d = x[:, None, :] - x[None, :, :]
        n = np.sum(np.isfinite(d), axis=2)
        with np.errstate(invalid="ignore"):
            mean = np.where(n >= 2, np.nansum(d, axis=2) / np.maximum(n, 1), math.nan)
        diffs.append((d, mean))

    def stands(q: tuple[str, str, str], bootstrap: bool) -> bool:
        for d, mean in diffs:
            for i, j in zip(*np.nonzero(_rounds_to(q[0], mean))):
                v = d[i, j][np.isfinite(d[i, j])]
                if np.all(v == v[0]):
                    intervals = [(v[0], v[0])]
                else:
                    intervals = [tuple(scipy.stats.ttest_1samp(v, 0.0).confidence_interval(0.95))]
                    if bootstrap:
                        intervals.append(bootstrap_interval(v))
                if any(_rounds_to(q[1], lo) and _rounds_to(q[2], hi) for lo, hi in intervals):
                    return True
        return False

    headings, heading, code = [], "", False  # the heading each line is under
    for line in text.splitlines():
        code ^= line.startswith("```")
        if line.startswith("#") and not code:  # a comment in a code block is no heading
            heading = line
        headings.append(heading)
    count, bad = 0, []
    for m in re.finditer(_QUOTE, text):
        count += 1
        number = text.count("\n", 0, m.start()) + 1
        if not stands(m.groups(), bootstrap="protocol v2" in headings[number - 1]):
            bad.append(f"line {number}: ({m[1]} [{m[2]}, {m[3]}])")
    return count, bad


def test_every_paired_difference_the_readme_quotes_is_in_the_published_result_files():
    """The README's prose quotes paired differences by hand; each must be a pair of published rows'
    mean difference and 95% t-interval (v2's bootstrap in a section on v2 results), to its digits:
    a typo, or a number left behind when its results were rerun, fails here."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    count, bad = unmatched_quotes((root / "README.md").read_text(), root / "leaderboards" / "results",
                                  lambda task: bench.get_task(task).primary_metric)
    assert count >= 20, "the README's quotes were not found: has their format changed?"
    assert not bad, "quoted in the README but in no pair of published results:\n" + "\n".join(bad)


def test_a_quote_stands_only_on_its_own_numbers_interval_and_protocol(tmp_path):
    """The README check on hand-made results: the right quote stands (either way round); a digit
    off, an interval end off, a bootstrap interval outside a v2 section or the same pair's
    difference in a secondary metric does not."""
    import numpy as np
    import scipy.stats

    from bench.report.paired import bootstrap_interval

    def kid_is_primary(task):
        return "kid"

    a, b = [0.50, 0.61, 0.47, 0.55], [0.40, 0.42, 0.41, 0.39]
    for label, values in (("one", a), ("two", b)):
        for seed, v in enumerate(values):
            f = tmp_path / "task" / label / f"nfe10_seed{seed}.json"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(dict(status="ok", task="task", label=label, nfe_budget=10, seed=seed,
                                         metrics=dict(kid=v, fd=2 * v))))
    d = np.subtract(a, b)
    lo, hi = scipy.stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    blo, bhi = bootstrap_interval(d)
    def bad(text):
        return unmatched_quotes(text, tmp_path, kid_is_primary)[1]

    right = f"(+{d.mean():.4f} [{lo:.4f}, {hi:.4f}])"
    assert unmatched_quotes(f"# x\nit is worse {right}.", tmp_path, kid_is_primary) == (1, [])
    assert bad(f"# x\nthe other way (-{d.mean():.4f} [{-hi:.4f}, {-lo:.4f}]).") == []
    assert unmatched_quotes(f"# x\nand at NFE 10 {right}, {right}", tmp_path, kid_is_primary) == (2, [])
    assert bad(f"# x\n(+{d.mean() + 0.0002:.4f} [{lo:.4f}, {hi:.4f}])") == ["line 2: " + f"(+{d.mean() + 0.0002:.4f} "
                                                                             f"[{lo:.4f}, {hi:.4f}])"]
    assert len(bad(f"# x\n(+{d.mean():.4f} [{lo:.4f}, {hi + 0.001:.4f}])")) == 1
    boot = f"(+{d.mean():.4f} [{blo:.4f}, {bhi:.4f}])"
    assert f"{blo:.4f}" != f"{lo:.4f}"
    assert len(bad(f"# protocol v3\n{boot}")) == 1
    assert bad(f"### digits (protocol v2 results)\n{boot}") == []
    assert len(bad(f"### digits (protocol v2 results)\n```\n# a comment\n```\n{boot}")) == 0
    assert len(bad(f"### digits (protocol v2 results)\n# protocol v3\n{boot}")) == 1
    fd = f"(+{2 * d.mean():.4f} [{2 * lo:.4f}, {2 * hi:.4f}])"  # the same pair in a metric that is not primary
    assert len(bad(f"# x\n{fd}")) == 1
    # a quote wrapped onto the next line is read whole, and named by the line it starts on
    assert unmatched_quotes(f"# x\nworse (+{d.mean():.4f} [{lo:.4f},\n  {hi:.4f}]).", tmp_path, kid_is_primary) == (1, [])
    assert bad(f"# x\n\nworse (+{d.mean():.4f}\n  [{lo:.4f}, {hi + 0.001:.4f}])") == [
        f"line 3: (+{d.mean():.4f} [{lo:.4f}, {hi + 0.001:.4f}])"]


def test_the_code_version_ignores_comments_docstrings_and_layout_never_code(tmp_path, monkeypatch):
    import sys

    from bench.engine.results import code_version
    mod = tmp_path / "my_doc_mod.py"
    mod.write_text('"""Doc."""\nX = 1  # one\n\n\ndef f():\n    """What f does."""\n    return X\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_doc_mod  # noqa: F401
    before = code_version("bench.tasks.toy", "my_doc_mod")
    mod.write_text('"""Another doc,\non two lines."""\n# a comment\nX = 1\n\ndef f():\n    """Other words."""\n'
                   '    return X   \n')
    code_version.cache_clear()
    assert code_version("bench.tasks.toy", "my_doc_mod") == before  # documentation and layout only
    mod.write_text('"""Doc."""\nX = 2  # one\n\n\ndef f():\n    """What f does."""\n    return X\n')
    code_version.cache_clear()
    assert code_version("bench.tasks.toy", "my_doc_mod") != before  # the code
    mod.write_text('"""Doc."""\nX = "# 1"\n\n\ndef f():\n    """What f does."""\n    return X\n')
    code_version.cache_clear()
    assert code_version("bench.tasks.toy", "my_doc_mod") != before  # a string is code, a '#' in it too
    sys.modules.pop("my_doc_mod", None)
