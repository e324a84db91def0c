"""Leaderboards from hand-made result files: statistics, failures, duplicates,
unreadable files, determinism, ranking and fit-cost accounting."""
from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import pytest

from bench.leaderboard import build
from bench.results import REQUIRED

T975_2 = 4.302652729749464  # Student t, 0.975 quantile, 2 degrees of freedom
PROTOCOL = dict(n_samples=500, n_reference=500, reference="gmm8-v1 split 'ref', seed 0",
                nfe_convention="measured denoiser evaluations per sample")

# (label, nfe budget) -> w2 per seed 0, 1, 2 (precision is 1 - w2/10)
W2 = {("fast", 5): [1.0, 2.0, 3.0], ("slow", 5): [4.0, 5.0, 6.0],
      ("fast", 10): [0.5, 0.5, 0.5], ("slow", 10): [0.2, 0.3, 0.4]}
ARTIFACT = dict(nfe=0, seconds=0.0, reused=True, artifact=dict(nfe=1200, seconds=2.5), artifact_path="x")


def result(label, nfe, seed, w2=None, *, status="ok", created="2026-01-01T00:00:00+00:00", method=None,
           task="gmm8", fit_cost=None, sha="a" * 40):
    ok = status == "ok"
    return dict(schema=1, method=method or label, label=label, task=task, task_version=1, nfe_budget=nfe,
                seed=seed, status=status, nfe=float(nfe - 1) if ok else None,
                metrics=dict(w2=w2, precision=1 - w2 / 10) if ok else {},
                created=created, fit_cost=fit_cost or dict(nfe=0, seconds=0.0), protocol=PROTOCOL if ok else {},
                sample_seconds=0.25 if ok else None, git_sha=sha, **({} if ok else dict(error="RuntimeError: boom")))


def write(root: Path, r: dict, name: str | None = None, folder: str | None = None) -> Path:
    p = root / r["task"] / (folder or r["label"]) / (name or f"nfe{r['nfe_budget']}_seed{r['seed']}.json")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(r, indent=1))
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for (label, nfe), values in W2.items():
        for seed, v in enumerate(values):
            fit = ARTIFACT if label == "slow" else None
            if (label, nfe, seed) == ("slow", 5, 0):  # an older result, replaced by the newer duplicate below
                write(root, result(label, nfe, seed, 100.0, created="2025-06-01T00:00:00+00:00", fit_cost=fit))
                new = write(root, result(label, nfe, seed, v, created="2026-02-01T00:00:00+00:00", fit_cost=fit,
                                         sha="b" * 40), folder="slow-rerun")
                continue
            write(root, result(label, nfe, seed, v, fit_cost=fit))
    write(root, result("fast", 10, 3, status="failed"))
    write(root, result("fast", 10, 0, status="failed"), name="nfe10_seed0.failed.json")
    write(root, result("solo", 5, 0, 7.0))
    write(root, result("other", 5, 0, 1.0, task="checkerboard"))
    trunc = root / "gmm8" / "fast" / "nfe5_seed9.json"
    trunc.write_text(json.dumps(result("fast", 5, 9, 1000.0))[:40])
    old = result("fast", 5, 7, 1000.0)
    del old["nfe"], old["status"]
    oldp = write(root, old)
    out = tmp_path_factory.mktemp("leaderboards")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = build(root, out, task="gmm8")
    rows = {(r["method"], int(r["nfe"])): r for r in csv.DictReader((out / "gmm8.csv").open())}
    return dict(root=root, out=out, paths=paths, rows=rows, md=(out / "gmm8.md").read_text(),
                warnings=[str(w.message) for w in caught], trunc=trunc, old=oldp, dup=new)


def ci(values):
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    assert n == 3
    return T975_2 * sd / math.sqrt(n)


def test_writes_only_the_task_asked_for(built):
    out = built["out"]
    assert built["paths"] == [out / "gmm8.csv", out / "gmm8.md", out / "gmm8.png"]
    assert sorted(p.name for p in out.iterdir()) == ["gmm8.csv", "gmm8.md", "gmm8.png"]


def test_csv_means_and_intervals_by_hand(built):
    rows = built["rows"]
    assert set(rows) == {("fast", 5), ("slow", 5), ("fast", 10), ("slow", 10), ("solo", 5)}
    r = rows[("fast", 5)]
    assert float(r["w2_mean"]) == 2.0
    assert float(r["w2_ci95"]) == pytest.approx(T975_2 / math.sqrt(3), rel=1e-12)
    assert float(r["precision_mean"]) == pytest.approx(0.8, rel=1e-12)
    assert float(r["precision_ci95"]) == pytest.approx(T975_2 * 0.1 / math.sqrt(3), rel=1e-9)
    for key, values in W2.items():
        assert float(rows[key]["w2_mean"]) == pytest.approx(sum(values) / 3, rel=1e-12), key
        assert float(rows[key]["w2_ci95"]) == pytest.approx(ci(values), rel=1e-9, abs=1e-15), key
        assert rows[key]["seeds"] == "3"
        assert float(rows[key]["nfe_measured"]) == key[1] - 1
        assert float(rows[key]["sample_seconds"]) == 0.25
    assert list(rows[("fast", 5)])[:9] == ["method", "nfe", "nfe_measured", "seeds", "failed", "precision_mean",
                                          "precision_ci95", "w2_mean", "w2_ci95"]
    assert list(rows[("fast", 5)])[-3:] == ["fit_nfe", "fit_seconds", "sample_seconds"]
    # full precision in the csv
    assert rows[("slow", 10)]["w2_mean"] == repr(sum([0.2, 0.3, 0.4]) / 3)


def test_one_seed_has_no_interval(built):
    assert built["rows"][("solo", 5)]["w2_ci95"] == ""
    assert built["rows"][("solo", 5)]["seeds"] == "1"
    assert "7 ± n/a" in built["md"]


def test_failed_results_are_counted_not_averaged(built):
    rows = built["rows"]
    assert rows[("fast", 10)]["failed"] == "2"
    assert rows[("fast", 10)]["seeds"] == "3"
    assert float(rows[("fast", 10)]["w2_mean"]) == 0.5
    assert all(rows[k]["failed"] == "0" for k in rows if k != ("fast", 10))


def test_duplicate_warns_and_keeps_the_newest(built):
    dup = [w for w in built["warnings"] if "duplicate" in w]
    assert len(dup) == 1
    assert str(built["dup"]) in dup[0]
    assert str(built["root"] / "gmm8" / "slow" / "nfe5_seed0.json") in dup[0]
    assert float(built["rows"][("slow", 5)]["w2_mean"]) == 5.0  # not (100 + 5 + 6) / 3, nor averaged with it
    assert "git " + "b" * 40 in built["md"] and "2026-02-01" in built["md"]  # the newest result behind the table


def test_truncated_and_old_schema_files_warn_and_are_skipped(built):
    assert any(str(built["trunc"]) in w for w in built["warnings"])
    assert any(str(built["old"]) in w for w in built["warnings"])
    assert float(built["rows"][("fast", 5)]["w2_mean"]) == 2.0
    assert built["rows"][("fast", 5)]["seeds"] == "3"


def test_reused_artifact_fit_cost(built):
    assert float(built["rows"][("slow", 5)]["fit_nfe"]) == 1200.0
    assert float(built["rows"][("slow", 5)]["fit_seconds"]) == 2.5
    assert float(built["rows"][("fast", 5)]["fit_nfe"]) == 0.0


def test_markdown_bolds_the_best_per_budget(built):
    md = built["md"]
    lines = md.splitlines()
    assert lines[0].startswith("# ") and "gmm8" in lines[0]
    assert "n_samples = 500" in md and "gmm8-v1 split 'ref'" in md and "measured denoiser evaluations" in md
    assert "Primary metric: **w2**" in md
    assert "![](gmm8.png)" in md
    table = [ln for ln in lines if ln.startswith("| ")]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in table[1:]]
    assert [(r[0], r[1]) for r in body] == [("**fast**", "5"), ("slow", "5"), ("solo", "5"),
                                             ("**slow**", "10"), ("fast", "10")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    w2 = header.index("w2 ↓")
    assert body[0][w2] == f"**2 ± {T975_2 / math.sqrt(3):.4g}**"
    assert body[3][w2].startswith("**0.3 ± ")
    assert body[1][w2] == f"5 ± {T975_2 / math.sqrt(3):.4g}"
    assert body[3][header.index("fit NFE")] == "1200"


def test_rebuild_is_byte_identical(built, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = build(built["root"], tmp_path, task="gmm8")
    for p in again:
        assert p.read_bytes() == (built["out"] / p.name).read_bytes(), p.name


def test_all_tasks_and_unknown_task(tmp_path):
    root = tmp_path / "r"
    for seed in range(2):
        write(root, result("a", 5, seed, 1.0 + seed, task="mytask"))
        write(root, result("a", 5, seed, 2.0 + seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = build(root, tmp_path / "lb")
    assert [p.name for p in paths] == ["gmm8.csv", "gmm8.md", "gmm8.png", "mytask.csv", "mytask.md", "mytask.png"]
    assert any("mytask" in str(w.message) for w in caught)
    assert "Primary metric: **precision**" in (tmp_path / "lb" / "mytask.md").read_text()


def test_no_results_says_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m bench run") as e:
        build(tmp_path / "empty", tmp_path / "lb")
    assert str(tmp_path / "empty") in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "lb").exists()


def test_cli(tmp_path, capsys):
    from bench.cli import main
    write(tmp_path / "r", result("a", 5, 0, 1.0))
    assert main(["leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "lb" / f"gmm8.{e}") for e in ("csv", "md", "png")]
    assert main(["leaderboard", "--results", str(tmp_path / "none")]) == 2
    assert "python -m bench run" in capsys.readouterr().err


def test_required_keys_are_all_written():
    assert all(k in result("a", 5, 0, 1.0) for k in REQUIRED)
