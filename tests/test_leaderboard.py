"""Leaderboards from hand-made result files: statistics, failures, duplicates,
unreadable files, determinism, ranking and fit-cost accounting."""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest

from bench.report.leaderboard import build
from bench.engine.results import REQUIRED

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
                metrics=dict(mmd=w2, precision=1 - w2 / 10) if ok else {},
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
    """The half-width the boards promise: t_{0.975, n-1} sd / sqrt(n), by the definition (scipy's t
    quantile, numpy's sd)."""
    import numpy as np
    import scipy.stats
    v = np.asarray(values, float)
    return float(scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def test_bootstrap_interval_of_three_evenly_spaced_values():
    """Resampling {1, 2, 3}: the mean is 1 (or 3) with probability 1/27 > 2.5%, so the 95%
    percentile interval is exactly [1, 3]; of two values {1, 2} it is [1, 2]."""
    from bench.report.paired import bootstrap_interval
    assert bootstrap_interval([1.0, 2.0, 3.0]) == (1.0, 3.0)
    assert bootstrap_interval([1.0, 2.0]) == (1.0, 2.0)


def test_writes_only_the_task_asked_for(built):
    out = built["out"]
    names = [f"gmm8.{e}" for e in ("md", "csv", "paired.csv", "json", "tex", "png", "cost.png")]
    assert built["paths"] == [out / n for n in names]  # no README: it indexes every task, built without --task
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_csv_means_and_intervals_by_hand(built):
    rows = built["rows"]
    assert set(rows) == {("fast", 5), ("slow", 5), ("fast", 10), ("slow", 10), ("solo", 5)}
    r = rows[("fast", 5)]
    assert float(r["mmd_mean"]) == 2.0
    assert float(r["mmd_ci95"]) == pytest.approx(4.302652729749464 / 3**0.5)  # {1, 2, 3}: t(0.975, 2) sd / sqrt 3
    assert float(r["precision_mean"]) == pytest.approx(0.8, rel=1e-12)
    assert float(r["precision_ci95"]) == pytest.approx(ci([0.7, 0.8, 0.9]), rel=1e-9)
    for key, values in W2.items():
        assert float(rows[key]["mmd_mean"]) == pytest.approx(sum(values) / 3, rel=1e-12), key
        assert float(rows[key]["mmd_ci95"]) == pytest.approx(ci(values), rel=1e-9, abs=1e-15), key
        assert rows[key]["seeds"] == "3"
        assert float(rows[key]["nfe_measured"]) == key[1] - 1
        assert float(rows[key]["sample_seconds"]) == 0.25
    assert list(rows[("fast", 5)])[:9] == ["method", "nfe", "nfe_measured", "seeds", "failed", "mmd_mean",
                                          "mmd_ci95", "precision_mean", "precision_ci95"]
    assert list(rows[("fast", 5)])[-8:] == ["fit_nfe", "fit_seconds", "sample_seconds", "vs_start", "vs_start_diff",
                                           "vs_start_low", "vs_start_high", "vs_start_verdict"]
    # full precision in the csv
    assert rows[("slow", 10)]["mmd_mean"] == repr(sum([0.2, 0.3, 0.4]) / 3)


def test_one_seed_has_no_interval(built):
    assert built["rows"][("solo", 5)]["mmd_ci95"] == ""
    assert built["rows"][("solo", 5)]["seeds"] == "1"
    assert "7 ± n/a" in built["md"]


def test_failed_results_are_counted_not_averaged(built):
    rows = built["rows"]
    assert rows[("fast", 10)]["failed"] == "2"
    assert rows[("fast", 10)]["seeds"] == "3"
    assert float(rows[("fast", 10)]["mmd_mean"]) == 0.5
    assert all(rows[k]["failed"] == "0" for k in rows if k != ("fast", 10))


def test_duplicate_warns_and_keeps_the_newest(built):
    dup = [w for w in built["warnings"] if "duplicate" in w]
    assert len(dup) == 1
    assert str(built["dup"]) in dup[0]
    assert str(built["root"] / "gmm8" / "slow" / "nfe5_seed0.json") in dup[0]
    assert float(built["rows"][("slow", 5)]["mmd_mean"]) == 5.0  # not (100 + 5 + 6) / 3, nor averaged with it
    assert "git `" + "b" * 7 + "`" in built["md"] and "2026-02-01" in built["md"]  # the newest result behind it


def test_truncated_and_old_schema_files_warn_and_are_skipped(built):
    assert any(str(built["trunc"]) in w for w in built["warnings"])
    assert any(str(built["old"]) in w for w in built["warnings"])
    assert float(built["rows"][("fast", 5)]["mmd_mean"]) == 2.0
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
    assert "Primary metric: **mmd**" in md
    assert "![](gmm8.png)" in md
    header, body = md_table(md)
    assert header == ["method", "NFE", "seeds", "mmd ↓", "vs reference", "vs start", "fit", "flags",
                      "protocol"]  # nine at most
    assert [(r[0], r[1]) for r in body] == [("**fast**", "5"), ("slow", "5"), ("solo", "5"),
                                             ("**slow**", "10"), ("fast", "10")]
    w2 = header.index("mmd ↓")
    assert body[0][w2] == "**2 ± 2.484**"  # {1, 2, 3}: t(0.975, 2) / sqrt 3
    assert body[3][w2].startswith("**0.3 ± ")
    assert body[1][w2] == "5 ± 2.484"
    assert body[3][header.index("fit")].startswith("1200 NFE, ")
    assert "## Every metric" in md and "precision ↑" in md  # the secondary metrics in their own table


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
        paths = build(root, tmp_path / "lb", reported=None)
    assert [p.name for p in paths] == [f"{t}.{e}" for t in ("gmm8", "mytask")
                                       for e in ("md", "csv", "paired.csv", "json", "tex", "png", "cost.png")] + ["README.md"]
    assert any("mytask" in str(w.message) for w in caught)
    assert "Primary metric: **mmd**" in (tmp_path / "lb" / "mytask.md").read_text()  # its first metric


def test_no_results_says_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m bench run") as e:
        build(tmp_path / "empty", tmp_path / "lb")
    assert str(tmp_path / "empty") in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "lb").exists()


def test_cli(tmp_path, capsys):
    from bench.cli import main
    write(tmp_path / "r", result("a", 5, 0, 1.0))
    assert main(["leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb")]) == 0
    printed = capsys.readouterr().out.split()
    gmm8 = [str(tmp_path / "lb" / f"gmm8.{e}") for e in ("md", "csv", "paired.csv", "json", "tex", "png", "cost.png")]
    assert [p for p in printed if "gmm8" in p] == gmm8
    assert str(tmp_path / "lb" / "cifar10.md") in printed  # reported numbers only: still a page
    assert printed[-1] == str(tmp_path / "lb" / "README.md")
    assert main(["leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb2"), "--task", "gmm8",
                 "--format", "latex,csv"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "lb2" / f"gmm8.{e}") for e in ("csv", "paired.csv", "tex")]
    assert main(["leaderboard", "--results", str(tmp_path / "r"), "--format", "docx"]) == 2
    assert "unknown leaderboard format" in capsys.readouterr().err
    assert main(["leaderboard", "--results", str(tmp_path / "none")]) == 2
    assert "python -m bench run" in capsys.readouterr().err


def test_required_keys_are_all_written():
    assert all(k in result("a", 5, 0, 1.0) for k in REQUIRED)


# --- reported rows, formats, index, pictures, determinism -------------------------------------------

REPORTED_HEADER = "method,task,nfe,metric,value,protocol,source\n"


def reported_csv(path: Path, lines: list[str]) -> Path:
    path.write_text(REPORTED_HEADER + "".join(line + "\n" for line in lines))
    return path


def image_result(label, nfe, seed, fid, root: Path, *, n=12, task="cifar10", shape=(3, 32, 32), samples=True,
                 labels=True):
    """A hand-made image result with its saved samples (x in [-1, 1], sample i keyed by seed and i only)."""
    import numpy as np
    r = result(label, nfe, seed, 0.0, task=task)
    r["metrics"] = dict(fid=fid)
    r["protocol"] = dict(n_samples=n, n_reference=0, reference_stats=dict(file="cifar10-32x32.npz", sha256="c" * 64),
                         feature_extractor=dict(name="inception-v3-compat", weights="w.pth"),
                         nfe_convention="measured denoiser evaluations per sample (final step counted)",
                         eval_seeds=f"run seed {seed}, sample i from stream (seed, i)")
    p = write(root, r)
    if samples:
        rng = np.random.default_rng(seed)
        base = rng.uniform(-1, 1, size=(n, *shape))
        x = np.clip(base + 0.1 * (len(label) % 7) * np.sign(base), -1, 1).astype(np.float32)
        arrays = dict(x=x) if not labels else dict(x=x, labels=rng.integers(0, 10, n))
        np.savez_compressed(p.with_suffix(".npz"), **arrays)
        r["samples_file"] = p.with_suffix(".npz").name
        p.write_text(json.dumps(r, indent=1))
    return p


def build_quiet(*args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = build(*args, **kw)
    return paths, [str(w.message) for w in caught]


def md_table(md: str) -> tuple[list[str], list[list[str]]]:
    """The first table of a markdown page: header, rows."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| "))
    table = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        if ln.startswith("| "):
            table.append(ln)
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    return cells[0], cells[1:]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """cifar10: measured results with samples (two methods share NFE 10, one also has NFE 20), a result
    file of an older schema (no label, protocol, created) and the repository's reported numbers."""
    from bench.tasks import cifar10 as c10
    root = tmp_path_factory.mktemp("img-results")
    fids = {("heun", 10): [3.0, 3.5, 4.0], ("euler", 10): [5.0, 6.0, 7.0], ("heun", 20): [2.0, 2.1, 2.2]}
    for (label, nfe), vals in fids.items():
        for seed, v in enumerate(vals):
            image_result(label, nfe, seed, v, root, samples=seed < 2)
    old = dict(schema=0, method="legacy", task="cifar10", task_version=1, nfe_budget=10, seed=0, status="ok",
               metrics=dict(fid=9.0), nfe=9.0)  # no label, protocol, created, fit cost, git sha
    (root / "cifar10" / "legacy").mkdir(parents=True)
    (root / "cifar10" / "legacy" / "nfe10_seed0.json").write_text(json.dumps(old))
    write(root, result("a", 5, 0, 1.0))  # gmm8: another task in the same directory
    mp = pytest.MonkeyPatch()
    mp.setattr(c10.EDMImageTask, "seed_aggregate", "min", raising=False)  # EDM's min-over-seed-sets protocol
    try:
        out = tmp_path_factory.mktemp("img-lb")
        paths, warned = build_quiet(root, out)
        again = tmp_path_factory.mktemp("img-lb2")
        paths2, _ = build_quiet(root, again)
    finally:
        mp.undo()
    return dict(root=root, out=out, paths=paths, again=again, paths2=paths2, warnings=warned, fids=fids)


def test_every_file_is_byte_identical_across_builds(images):
    names = sorted(p.name for p in images["paths"])
    assert names == sorted(p.name for p in images["paths2"])
    for t in ("cifar10", "cifar10-cond", "imagenet64", "gmm8"):
        assert {f"{t}.{e}" for e in ("md", "csv", "paired.csv", "json", "tex", "png", "cost.png")} <= set(names), t
    assert "cifar10_samples.png" in names and "README.md" in names and "gmm8_samples.png" not in names
    for name in names:
        assert (images["out"] / name).read_bytes() == (images["again"] / name).read_bytes(), name
    assert sorted(p.name for p in images["out"].iterdir()) == names


def test_rebuilding_in_place_changes_nothing_even_with_results_inside_out(images, tmp_path):
    import shutil
    out = tmp_path / "leaderboards"
    shutil.copytree(images["root"], out / "results")
    first, _ = build_quiet(out / "results", out)
    before = {p.name: p.read_bytes() for p in first}
    (out / "references.md").write_text("# sources\n")  # shipped beside the boards, as in leaderboards/
    (out / "old-task.md").write_text("# a task without results now\n")
    second, warned = build_quiet(out / "results", out)
    assert {p.name: p.read_bytes() for p in second} == before
    assert [w for w in warned if "did not write" in w and "old-task.md" in w and "references.md" not in w]
    (out / "old-task.md").unlink()
    assert sorted(p.name for p in (out / "results").iterdir()) == ["cifar10", "gmm8"]  # results left alone
    # results read from the output directory itself: the builder's own JSON files are not result files
    third, warned = build_quiet(out, tmp_path / "elsewhere")
    assert not [w for w in warned if "cifar10.json" in w or "gmm8.json" in w]
    assert (tmp_path / "elsewhere" / "cifar10.csv").read_bytes() == before["cifar10.csv"]


def test_old_schema_result_is_used_without_crashing(images):
    rows = {(r["method"], r["nfe"]): r for r in csv.DictReader((images["out"] / "cifar10.csv").open())}
    assert float(rows[("legacy", "10")]["fid_mean"]) == 9.0
    assert "protocol not recorded" in rows[("legacy", "10")]["protocol"]
    assert any("legacy/nfe10_seed0.json is a result file of an older schema" in w for w in images["warnings"])


def test_measured_image_rows_min_over_seeds_and_interval(images):
    rows = {(r["method"], r["nfe"]): r for r in csv.DictReader((images["out"] / "cifar10.csv").open())
            if r["kind"] == "measured"}
    for (label, nfe), vals in images["fids"].items():
        r = rows[(label, str(nfe))]
        assert float(r["fid_mean"]) == pytest.approx(sum(vals) / 3, rel=1e-12)
        assert float(r["fid_ci95"]) == pytest.approx(ci(vals), rel=1e-9)
        assert float(r["fid_min"]) == min(vals)
        assert r["seed_list"] == "0 1 2" and r["protocol_id"] == "P1"
    md = (images["out"] / "cifar10.md").read_text()
    header, body = md_table(md)
    assert "min over seeds ↓" in header
    heun = next(b for b in body if b[0] == "**heun**" and b[1] == "10")
    assert heun[header.index("min over seeds ↓")] == "3"
    assert heun[header.index("fid ↓")] == f"**3.5 ± {ci([3.0, 3.5, 4.0]):.4g}**"
    assert heun[header.index("protocol")] == "P1, seeds 0-2"
    assert "- **P1** (measured): n_samples = 12;" in md and "cifar10-32x32.npz" in md
    assert "inception-v3-compat" in md and "final step counted" in md and "eval_seeds = run seed <seed>" in md


def test_reported_rows_beside_measured_never_in_means_or_best(images):
    out = images["out"]
    md = (out / "cifar10.md").read_text()
    header, body = md_table(md)  # the measured rows: no reported row among them
    at10 = [b for b in body if b[1] == "10"]
    assert [b[0] for b in at10] == ["**heun**", "euler", "legacy"]
    # the reported rows in their own table, where the reported 2.38 (LD3) at NFE 10 is never bold
    header, body = md_table(md.split("## Reported numbers", 1)[1])
    assert header == ["method", "NFE", "metric", "value", "source", "protocol"]
    edm = [b for b in body if b[0] == "EDM (Heun, 18 steps)"]
    assert len(edm) == 1 and edm[0][1] == "35" and edm[0][header.index("value")] == "1.97"
    assert edm[0][header.index("source")] == "Karras et al. 2022 (EDM), headline FID; references.md §1"
    assert any(b[:2] == ["LD3", "10"] and b[3] == "2.38" for b in body)
    assert not any(b[0].startswith("**") for b in body)
    rows = list(csv.DictReader((out / "cifar10.csv").open()))
    rep = [r for r in rows if r["kind"] == "reported"]
    assert rep and all(r["fid_mean"] == "" and r["fid_ci95"] == "" and r["source"] for r in rep)
    assert {r["reported_value"] for r in rep if r["nfe"] == "10"} >= {"2.38", "15.69", "16.57", "2.91", "2.85"}
    js = json.loads((out / "cifar10.json").read_text())
    assert {m["method"] for m in js["measured"]} == {"heun", "euler", "legacy"}
    assert all(r["protocol"].startswith("R") and js["protocols"][r["protocol"]] for r in js["reported"])
    irl = next(r for r in js["reported"] if r["method"] == "IRL sampler")
    assert irl["nfe"] is None and "NFE" in js["protocols"][irl["protocol"]]


def test_reported_only_task_page(images):
    md = (images["out"] / "imagenet64.md").read_text()
    assert "No measured results." in md
    header, body = md_table(md.split("## Reported numbers", 1)[1])
    assert ("Restart (36 main steps, 5 restart intervals)", "203") in [(b[0], b[1]) for b in body]
    assert all(b[header.index("protocol")].startswith("R") for b in body)
    assert "R1" in md and "## Protocols" in md


def test_sample_grid_same_seed_and_indices_across_methods(images):
    import matplotlib.image
    js = json.loads((images["out"] / "cifar10.json").read_text())
    s = js["samples"]
    # NFE 10 is the budget both methods saved samples at (NFE 20: heun only); seed 0, indices 0..9
    assert (s["nfe"], s["seed"], s["indices"]) == (10, 0, list(range(10)))
    assert s["methods"] == ["heun", "euler"]  # ranked as in the table
    assert s["files"] == ["cifar10/heun/nfe10_seed0.npz", "cifar10/euler/nfe10_seed0.npz"]
    assert s["labels"] is not None and len(s["labels"]) == 10
    md = (images["out"] / "cifar10.md").read_text()
    assert "](cifar10_samples.png)" in md and "seed 0 at NFE 10" in md
    img = matplotlib.image.imread(images["out"] / "cifar10_samples.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 400


def test_npz_head_reads_only_the_first_rows(tmp_path):
    import numpy as np
    from bench.report.board import npz_head as _npz_head
    x = np.random.default_rng(0).standard_normal((50, 1, 8, 8)).astype(np.float32)
    np.savez_compressed(tmp_path / "s.npz", x=x, labels=np.arange(50))
    head, shape = _npz_head(tmp_path / "s.npz", "x", 10)
    assert shape == (50, 1, 8, 8) and np.array_equal(head, x[:10])
    assert np.array_equal(_npz_head(tmp_path / "s.npz", "labels", 3)[0], [0, 1, 2])
    assert _npz_head(tmp_path / "s.npz", "nope", 3) == (None, None)


def test_broken_samples_warn_and_points_make_no_grid(tmp_path):
    import numpy as np
    root = tmp_path / "r"
    image_result("heun", 10, 0, 3.0, root, task="digits", shape=(1, 8, 8), labels=False)
    p = image_result("euler", 10, 0, 4.0, root, task="digits", shape=(1, 8, 8))
    p.with_suffix(".npz").write_bytes(b"PK\x03\x04 truncated")
    r = result("pts", 5, 0, 1.0)
    r["samples_file"] = "nfe5_seed0.npz"
    np.savez_compressed(write(root, r).with_suffix(".npz"), x=np.zeros((10, 2), np.float32))
    paths, warned = build_quiet(root, tmp_path / "lb", reported=None)
    names = {p.name for p in paths}
    assert "digits_samples.png" in names and "gmm8_samples.png" not in names
    assert any("unreadable" in w and "nfe10_seed0.npz" in w for w in warned)
    s = json.loads((tmp_path / "lb" / "digits.json").read_text())["samples"]
    assert s["methods"] == ["heun"] and s["labels"] is None


def test_latex_is_booktabs_and_escaped(tmp_path):
    root = tmp_path / "r"
    for seed, v in enumerate([1.0, 2.0, 3.0]):
        write(root, result("my_method", 5, seed, v))
    rep = reported_csv(tmp_path / "rep.csv", ['A&B sampler,gmm8,5,mmd,0.5,"100% of samples; NFE final step #counted",'
                                              'Someone_2024 Table {1}'])
    build_quiet(root, tmp_path / "lb", task="gmm8", reported=rep)
    tex = (tmp_path / "lb" / "gmm8.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table}"):
        assert cmd in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"\textbf{my\_method}" in tex and r"$\mathbf{2 \pm " in tex
    assert r"A\&B sampler" in tex and r"100\% of samples" in tex and r"\#counted" in tex
    assert r"Someone\_2024 Table \{1\}" in tex and r"95\%" in tex
    body = "\n".join(ln for ln in tex.splitlines() if not ln.startswith("%") and not ln.startswith(r"\label"))
    import re
    cells = body.replace(r"\\", "").replace(" & ", " ")  # row ends and column separators are LaTeX, not text
    assert not re.search(r"(?<!\\)[_%&#]", cells), "unescaped special character"


def test_json_round_trips_and_matches_csv(built):
    text = (built["out"] / "gmm8.json").read_text()
    obj = json.loads(text)
    assert json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n" == text
    assert obj["generated_by"] == "bench.leaderboard" and obj["primary_metric"] == "mmd"
    assert obj["interval"].startswith("95% t-interval over seeds")  # what ci95 is (the CSV's, checked by hand above)
    by = {(m["method"], m["nfe"]): m for m in obj["measured"]}
    for (label, nfe), row in built["rows"].items():
        m = by[(label, nfe)]
        assert m["metrics"]["mmd"]["mean"] == float(row["mmd_mean"])
        assert m["metrics"]["mmd"]["ci95"] == (float(row["mmd_ci95"]) if row["mmd_ci95"] else None)
        assert m["seeds"] == [int(s) for s in row["seed_list"].split()]
    assert by[("fast", 5)]["best"] and not by[("slow", 5)]["best"]
    assert obj["newest_result"]["git_sha"] == "b" * 40
    assert obj["newest_result"]["file"] == "gmm8/slow-rerun/nfe5_seed0.json"
    assert obj["protocols"]["P1"]["reference"] == PROTOCOL["reference"]


def test_readme_index_best_per_nfe_with_links_and_sha(tmp_path):
    root = tmp_path / "r"
    for seed in range(2):
        write(root, result("a", 5, seed, 1.0 + seed, created=f"2026-03-0{seed + 1}T00:00:00+00:00", sha=f"{seed}" * 40))
        write(root, result("b", 5, seed, 4.0 + seed))
        write(root, result("b", 10, seed, 0.5 + seed))
        o = result("oracle", 10, seed, 0.01)
        o["nfe"] = 0.0  # true samples: the noise floor, never "best"
        write(root, o)
    rep = reported_csv(tmp_path / "rep.csv", ['Paper sampler,gmm8,5,mmd,0.1,"n=1000, NFE final step counted",Paper 2025',
                                              'Vague,gmm8,,mmd,0.2,NFE not reported,Other 2024'])
    build_quiet(root, tmp_path / "lb", reported=rep)
    readme = (tmp_path / "lb" / "README.md").read_text()
    assert "[gmm8.md](gmm8.md)" in readme and "[gmm8.png](gmm8.png)" in readme and "[LaTeX](gmm8.tex)" in readme
    assert "2026-03-02" in readme and "`1111111`" in readme and "1" * 8 not in readme  # short hashes
    header, body = md_table(readme.split("## gmm8")[1])
    assert header == ["NFE", "best", "mmd ↓", "best classic", "vs best classic", "fit cost", "flags"]
    assert body[0][:3] == ["5", "a", "1.5 ± 6.353"]  # {1, 2}: t(0.975, 1) 0.707 / sqrt 2
    assert body[1][:2] == ["10", "b"]  # not the oracle
    assert len(body) == 2 and "Paper sampler" not in readme  # reported numbers: on the task's page only
    md = (tmp_path / "lb" / "gmm8.md").read_text()
    assert "Paper 2025" in md and "**R1** (reported): n=1000, NFE final step counted" in md
    # a personal board says nothing of the published suite
    assert "suite.toml" not in readme and "Only the tasks you ran are here" in readme



def test_malformed_result_warns_and_is_skipped(tmp_path):
    root = tmp_path / "r"
    write(root, result("a", 5, 0, 1.0))
    bad = result("a", 5, 1, 99.0)
    bad["nfe_budget"] = "five"
    write(root, bad, name="bad.json")
    bad2 = result("a", 5, 2, 1.0)
    bad2["metrics"] = dict(mmd="lots", precision=0.9)
    write(root, bad2, name="bad2.json")
    paths, warned = build_quiet(root, tmp_path / "lb", task="gmm8", formats="csv")
    assert [p.name for p in paths] == ["gmm8.csv", "gmm8.paired.csv"]
    assert any("bad.json" in w and "nfe_budget" in w for w in warned)
    assert any("bad2.json" in w and "mmd" in w for w in warned)
    row = next(csv.DictReader((tmp_path / "lb" / "gmm8.csv").open()))
    assert row["mmd_mean"] == "1.0" and row["seeds"] == "1"


def test_reported_only_task_with_task_option(tmp_path):
    write(tmp_path / "r", result("a", 5, 0, 1.0))
    paths, _ = build_quiet(tmp_path / "r", tmp_path / "lb", task="cifar10")
    assert [p.name for p in paths] == [f"cifar10.{e}" for e in ("md", "csv", "paired.csv", "json", "tex", "png", "cost.png")]
    md = (tmp_path / "lb" / "cifar10.md").read_text()
    _, body = md_table(md)
    assert any(row[:2] == ["EDM (Heun, 18 steps)", "35"] for row in body) and "1.97" in md
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        build(tmp_path / "r", tmp_path / "lb", task="nope")


def test_the_index_says_which_results_this_checkout_reproduces(tmp_path):
    from bench.engine.results import code_version
    from bench.registry import method_class, task_class
    current = code_version(task_class("gmm8").__module__, method_class("euler").__module__)
    for seed in range(2):
        write(tmp_path / "r", dict(result("euler", 5, seed, 1.0), code=current))
    write(tmp_path / "r", dict(result("ipndm", 5, 0, 0.5), code="0" * 16))  # made by other code
    write(tmp_path / "r", result("mine", 5, 0, 0.7))  # a plugin not registered here: cannot be checked
    build(tmp_path / "r", tmp_path / "lb")
    line = next(ln for ln in (tmp_path / "lb" / "README.md").read_text().splitlines() if ln.startswith("| [gmm8]"))
    assert line.endswith("| 2 current; 1 label stale (`ipndm`); 1 unchecked |"), line
    # said in words too, on the index and on the task's page, before a reader cites a stale number
    assert "**Stale:** gmm8: 1 result made by other code" in (tmp_path / "lb" / "README.md").read_text()
    assert "**Stale:** 1 of 4 results (1 method label) were made by other code" in (tmp_path / "lb" / "gmm8.md").read_text()


def test_overhead_is_the_median_over_seeds_and_only_for_methods_that_time_a_base(tmp_path):
    for seed, ratio in enumerate([0.02, 0.50, 0.04]):
        write(tmp_path, dict(result("irl", 10, seed, 0.1), overhead=dict(base_seconds=1.0, ratio=ratio)))
        write(tmp_path, result("edm", 10, seed, 0.2))
    build_quiet(tmp_path, tmp_path / "lb", task="gmm8", formats="md,json")
    md = (tmp_path / "lb" / "gmm8.md").read_text()
    section = md.split("## Inference overhead", 1)[1].split("##", 1)[0]
    assert "| irl " in section and "+4.0%" in section and "| edm " not in section
    rows = {r["method"]: r for r in json.loads((tmp_path / "lb" / "gmm8.json").read_text())["measured"]}
    assert rows["irl"]["overhead"] == 0.04 and rows["edm"]["overhead"] is None


def test_tex_numbers_are_math():
    from bench.report.latex import tex_num as _tex_num
    assert _tex_num(12340.0) == r"1.234\times10^{4}"
    assert _tex_num(float("inf")) == r"\infty" and _tex_num(float("-inf")) == r"-\infty"
    assert _tex_num(float("nan")) == "--" and _tex_num(0.02519) == "0.02519"


def test_the_index_lays_every_paired_verdict_out_by_task():
    import pandas as pd

    from bench.report.markdown import verdict_matrix as _verdict_matrix
    cols = ["nfe", "label", "reference", "seeds", "diff", "diff_low", "diff_high", "p_improve", "verdict", "close"]
    a = pd.DataFrame([[10, "ld3", "ipndm", 5, -0.002, -0.003, -0.001, 1.0, "better", False],
                      [10, "edm", "ipndm", 3, 0.3, 0.2, 0.4, 0.0, "worse", True]], columns=cols)
    b = pd.DataFrame([[10, "ld3", "dpmpp-2m", 5, 0.001, -0.001, 0.002, 0.4, "tie", False]], columns=cols)
    boards = [dict(task="t1", primary="mmd", paired=a, families={"ld3": "learned schedule", "edm": "classic",
                                                                  "ipndm": "classic"}),
              dict(task="t2", primary="kid", paired=b, families={"ld3": "learned schedule", "dpmpp-2m": "classic"}),
              dict(task="t3", primary="mmd", paired=pd.DataFrame(columns=cols), families={})]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in "\n".join(_verdict_matrix(boards)).splitlines()
            if line.startswith("|") and not set(line) <= set("|:- ")]
    assert rows[0] == ["method", "NFE", "t1 (mmd)", "t2 (kid)"]  # a task without comparisons has no column
    # classic before learned, each row's cells in task order, fewer seeds said, close marked, absent dashed
    assert rows[1:] == [["dpmpp-2m", "10", "—", "reference"],
                        ["edm", "10", "worse* +0.3 (3 seeds)", "—"],
                        ["ipndm", "10", "reference", "—"],
                        ["ld3", "10", "better -0.002", "tie +0.001"]]
    assert _verdict_matrix(boards[2:]) == []


def test_the_value_axis_is_log_when_positive_and_symlog_when_signs_mix_across_decades():
    from matplotlib.figure import Figure

    from bench.report.plots import value_scale
    ax = Figure().add_subplot()
    assert value_scale(ax, [0.02, 0.5, float("nan")]) == "log" and ax.get_yscale() == "log"
    ax = Figure().add_subplot()
    values = [-0.003, -0.0001, 0.0004, 0.02, 0.8]  # KID near 0 beside a failing sampler
    assert value_scale(ax, values) == "symlog" and ax.get_yscale() == "symlog"
    assert ax.yaxis.get_transform().linthresh == 0.0001  # the smallest tenth of the magnitudes
    ax = Figure().add_subplot()
    assert value_scale(ax, [-0.1, 0.2]) == "linear" and ax.get_yscale() == "linear"


def test_manifest_coverage_matches_runs_by_label_denoiser_settings_budget_and_seed(tmp_path):
    from bench.engine import suite
    from bench.report.coverage import coverage, missing_text
    manifest = tmp_path / "suite.toml"
    manifest.write_text('[defaults]\nseeds = "0-2"\n'
                        '[[run]]\nmethod = "edm"\ntask = "gmm8"\nnfe = "10,20"\n'
                        '[[run]]\nmethod = "edm"\ntask = "gmm8"\nnfe = "10"\ndenoiser = "exact"\n'
                        '[[run]]\nmethod = "irl"\ntask = "gmm8"\nnfe = "10"\nseeds = "0"\nlabel = "irl-js"\n'
                        'settings = { divergence = "js" }\n'
                        '[[run]]\nmethod = "edm"\ntask = "digits"\nnfe = "10"\nseeds = "0"\n')
    jobs = suite.load(manifest)
    results = [result("edm", 10, s, 0.1) for s in range(3)] + [result("edm", 20, 1, 0.1)]
    results.append(dict(result("edm@exact", 10, 0, 0.1, method="edm"), denoiser="exact"))
    results.append(result("edm", 20, 0, status="failed"))  # a failed run is not a published one
    results.append(dict(result("irl-js", 10, 0, 0.1, method="irl"), method_config=dict(divergence="rkl")))
    results.append(result("edm", 10, 0, 0.1, task="checkerboard"))  # a task the manifest does not list
    got = coverage(jobs, results)
    assert set(got) == {"gmm8", "digits"}
    assert (got["gmm8"]["listed"], got["gmm8"]["done"]) == (10, 5)
    # the irl-js result was made with other settings than the manifest's: still to run
    assert got["gmm8"]["missing"] == [("edm", 20, 2, 3), ("edm@exact", 10, 2, 3), ("irl-js", 10, 1, 1)]
    assert got["digits"] == dict(listed=1, done=0, missing=[("edm", 10, 1, 1)])
    assert missing_text(got["gmm8"]["missing"]) == "edm NFE 20 (2 of 3 seeds); edm@exact NFE 10 (2 of 3 seeds); irl-js NFE 10"


def test_a_row_on_another_denoiser_is_never_the_reference_nor_the_best(tmp_path):
    """gmm8's exact denoiser samples another model than the task's learned one: its Heun may beat
    every solver on the learned denoiser, yet the verdicts stay against the best solver on the task's
    own denoiser and the bold best is that solver."""
    for seed, (own, exact, ipndm) in enumerate([(0.30, 0.01, 0.20), (0.32, 0.02, 0.21), (0.31, 0.03, 0.22)]):
        for label, v, den in (("edm", own, "learned"), ("edm@exact", exact, "exact"), ("ipndm", ipndm, "learned")):
            r = result(label, 10, seed, v, method=label.split("@")[0])
            r["denoiser"] = den
            write(tmp_path / "res", r)
    build(tmp_path / "res", tmp_path / "lb", task="gmm8", reported=None)
    paired = (tmp_path / "lb" / "gmm8.paired.csv").read_text().splitlines()
    assert [line.split(",")[1:3] for line in paired[1:]] == [["edm", "ipndm"], ["edm@exact", "ipndm"]]
    md = (tmp_path / "lb" / "gmm8.md").read_text()
    header, body = md_table(md)
    assert any(b[0] == "**ipndm**" for b in body) and not any(b[0] == "**edm@exact**" for b in body)
    exact = next(b for b in body if b[0] == "edm@exact")
    assert "another denoiser" in exact[header.index("flags")]


def test_a_row_equal_to_its_untrained_start_is_flagged_with_why(tmp_path):
    """Seed 0 never moved (one score on its curve), seed 1 scored others and kept its start, seed 2
    learned: the row is flagged in 2 of 3 seeds, and says which is which."""
    start = dict(method="irl", identical=True, max_abs_diff=0.0)
    curves = [[dict(fit_nfe=10, score=0.3), dict(fit_nfe=20, score=0.3)],
              [dict(fit_nfe=10, score=0.3), dict(fit_nfe=20, score=0.31)],
              [dict(fit_nfe=10, score=0.3), dict(fit_nfe=20, score=0.2)]]
    for seed, curve in enumerate(curves):
        write(tmp_path, dict(result("irl", 10, seed, 0.1), fit_curve=curve,
                             untrained=dict(start, identical=seed < 2)))
        write(tmp_path, result("edm", 10, seed, 0.2))
    build_quiet(tmp_path, tmp_path / "lb", task="gmm8", formats="md")
    line = next(ln for ln in (tmp_path / "lb" / "gmm8.md").read_text().splitlines() if ln.startswith("| **irl** "))
    assert "= untrained start (irl) in 2 of 3 seeds (1 never moved, 1 scored others, none better)" in line
    assert "untrained" not in next(ln for ln in (tmp_path / "lb" / "gmm8.md").read_text().splitlines()
                                   if ln.startswith("| edm "))
    # a row configured as its start (iters=0, the baseline of a fine-tuning row) is that by design: no flag
    for seed in range(3):
        write(tmp_path, dict(result("irl-untuned", 10, seed, 0.3, method="irl"), method_config=dict(iters=0, lr=1),
                             untrained=dict(start, settings=dict(iters=0))))
    build_quiet(tmp_path, tmp_path / "lb", task="gmm8", formats="md")
    line = next(ln for ln in (tmp_path / "lb" / "gmm8.md").read_text().splitlines() if ln.startswith("| irl-untuned "))
    assert "untrained" not in line


def test_the_index_counts_the_core_hours_the_results_record(tmp_path):
    """Fit (the artifact's own cost when reused), sampling, metrics, the untrained check and the
    overhead timing of every result, by hand: 2 x (3600 + 0.25) + (0 reused -> 1800 + 0.25 + 900
    + 450 + 90 + 360) seconds."""
    write(tmp_path, dict(result("irl", 10, 0, 0.1), fit_cost=dict(nfe=5, seconds=3600.0)))
    write(tmp_path, dict(result("irl", 10, 1, 0.1), fit_cost=dict(nfe=5, seconds=3600.0)))
    write(tmp_path, dict(result("irl", 10, 2, 0.1), metric_seconds=900.0, untrained=dict(seconds=450.0),
                         overhead=dict(base_seconds=90.0, ratio=0.1), sample_seconds=360.25,
                         fit_cost=dict(nfe=0, seconds=0.0, reused=True, artifact=dict(nfe=5, seconds=1800.0))))
    build_quiet(tmp_path, tmp_path / "lb", formats="md")
    head, rows = md_table((tmp_path / "lb" / "README.md").read_text())
    cell = next(r for r in rows if r[0].startswith("[gmm8]"))[head.index("core-hours")]
    assert cell == f"{(2 * 3600.25 + 1800 + 360.25 + 900 + 450 + 90) / 3600:.2f}", cell


def test_the_index_pictures_its_verdicts_only_when_there_are_some(tmp_path):
    for seed in range(3):
        write(tmp_path / "r", result("ipndm", 10, seed, 0.1 + 0.01 * seed, method="ipndm"))
        write(tmp_path / "r", result("ld3", 10, seed, 0.05 + 0.02 * seed, method="ld3"))
    paths, _ = build_quiet(tmp_path / "r", tmp_path / "lb")
    names = {p.name for p in paths}
    assert {"README.md", "verdicts.png"} <= names
    assert (tmp_path / "lb" / "verdicts.png").read_bytes().startswith(b"\x89PNG")
    assert "![every verdict across tasks](verdicts.png)" in (tmp_path / "lb" / "README.md").read_text()
    paths, _ = build_quiet(tmp_path / "r", tmp_path / "md", formats="md")  # no pictures asked for: no link
    assert "verdicts.png" not in (tmp_path / "md" / "README.md").read_text()
    alone = tmp_path / "alone"
    write(alone, result("ipndm", 10, 0, 0.1, method="ipndm"))  # a reference with nothing to compare
    paths, _ = build_quiet(alone, tmp_path / "lb2")
    assert "verdicts.png" not in {p.name for p in paths}


def test_a_learned_row_is_judged_against_its_own_untrained_start(tmp_path):
    """``vs_start``: the paired verdict of a learned row against its start's row on the same seeds,
    in the board model, the page, the CSV, the JSON and the index; a row worse than its start is
    flagged. A start with its own settings (irl with iters = 0) is matched on the row's whole
    configuration, so a variant on another solver is never judged against the default's start."""
    import pandas as pd

    from bench.report import board, data, markdown
    rows = []
    for seed, (start, learned, other) in enumerate([(0.10, 0.05, 0.20), (0.12, 0.06, 0.21), (0.11, 0.04, 0.22)]):
        rows.append(result("ipndm", 10, seed, start))
        g = result("gits", 10, seed, learned)
        g["untrained"] = dict(identical=False, method="ipndm", settings={})
        rows.append(g)
        for label, v, solver in [("irl", other, "ipndm"), ("irl-euler", other, "euler")]:
            r = result(label, 10, seed, v, method="irl")
            r["method_config"] = dict(iters=100, solver=solver)
            r["untrained"] = dict(identical=False, method="irl", settings=dict(iters=0))
            r["objective"] = dict(name="tuning mmd", start=0.3, end=0.1 + seed / 100, higher_is_better=False)
            rows.append(r)
        u = result("irl-untuned", 10, seed, 0.15, method="irl")
        u["method_config"] = dict(iters=0, solver="ipndm")
        u["untrained"] = dict(identical=True, method="irl", settings=dict(iters=0))
        rows.append(u)
    for r in rows:
        write(tmp_path, r)
    results, _ = board.load(tmp_path / "gmm8")
    assert board.start_labels(results) == {"gits": "ipndm", "irl": "irl-untuned"}  # irl-euler's start is not there
    b = board.make("gmm8", results, [], [tmp_path])
    by = {row["method"]: row for row in b["rows"]}
    g, i = by["gits"]["vs_start"], by["irl"]["vs_start"]
    diff = pd.Series([0.05 - 0.10, 0.06 - 0.12, 0.04 - 0.11])
    assert g["start"] == "ipndm" and g["verdict"] == "better" and g["seeds"] == 3
    assert g["diff"] == pytest.approx(diff.mean())
    assert i["start"] == "irl-untuned" and i["verdict"] == "worse"
    assert by["irl-euler"]["vs_start"] is None and by["irl-untuned"]["vs_start"] is None
    page = markdown.page(b).decode()
    assert "worse than its untrained start (irl-untuned; its tuning mmd improved in 3 of 3 seeds (0.3 → 0.11): " \
           "an objective that misses the metric)" in page and "better -0.06 (ipndm)" in page
    csv = pd.read_csv(__import__("io").BytesIO(data.csv_bytes(b)))
    assert csv.set_index("method").loc["irl", "vs_start_verdict"] == "worse"
    js = json.loads(data.json_bytes(b))
    assert next(m for m in js["measured"] if m["method"] == "gits")["vs_start"]["verdict"] == "better"
    index = "\n".join(markdown.start_summary([b]))
    assert "| gits" in index and "gmm8 10" in index
    from bench.report.leaderboard import comparisons
    with pytest.warns(UserWarning):  # hand-made results carry no code version: said, and still compared
        table, _, _ = comparisons("irl", "gmm8", tmp_path)
    assert list(table["reference"])[:2] == ["ipndm", "irl-untuned"]  # the reference, then irl's own start
    assert list(table["role"])[:2] == ["reference", "its start"]


def test_verdicts_within_the_metrics_floor_and_undetermined_three_seed_ties(tmp_path):
    """The floor is the standard deviation over seeds of the metric on true samples (the oracle's
    row); a significant difference smaller than it is marked 'within floor' and never heads the
    index; a 3-seed tie whose seeds all point one way reads 'undetermined (3 seeds)'."""
    import statistics

    from bench.report import board, markdown
    oracle = [0.010, 0.014, 0.012, 0.016, 0.011]
    ipndm = [0.030, 0.031, 0.032, 0.033, 0.034]
    near = [v - 0.002 + 0.0001 * k for k, v in enumerate(ipndm)]  # better by 0.0018 < the floor 0.0024
    for seed in range(5):
        write(tmp_path, dict(result("oracle", 10, seed, oracle[seed]), nfe=0.0))  # true samples: no evaluation
        write(tmp_path, result("ipndm", 10, seed, ipndm[seed]))
        write(tmp_path, result("ld3", 10, seed, near[seed]))
    for seed, v in enumerate([0.0299, 0.0308, 0.03195]):  # every seed below ipndm's, interval spans 0
        write(tmp_path, result("slow3", 10, seed, v))
    results, _ = board.load(tmp_path / "gmm8")
    b = board.make("gmm8", results, [], [tmp_path])
    assert b["floors"][10] == pytest.approx(statistics.stdev(oracle))
    t = b["paired"].set_index("label")
    assert t.loc["ld3", "verdict"] == "better" and bool(t.loc["ld3", "within_floor"])
    assert t.loc["slow3", "verdict"] == "tie" and bool(t.loc["slow3", "undetermined"])
    assert not t.loc["ld3", "undetermined"] and not t.loc["slow3", "within_floor"]
    page = markdown.page(b).decode()
    assert "better, within floor" in page and "undetermined (3 seeds)" in page
    best, note = markdown.headline(b, 10)
    assert b["best"][10][0]["method"] == "ld3"  # the best mean, bold on the page
    assert [r["method"] for r in best] == ["ipndm"] and "lowest mean: ld3 (better, within floor" in note


def test_core_hours_are_the_recorded_cpu_time_with_a_reused_fits_own():
    from bench.report import board
    r = dict(result("ld3", 10, 0, 0.1), cpu_seconds=30.0, wall_seconds=90.0,
             fit_cost=dict(nfe=0, seconds=0.0, reused=True, artifact=dict(nfe=500, seconds=50.0, cpu_seconds=40.0)))
    assert board.recorded_cpu_seconds(r) == 70.0  # the job's CPU time and the cached fit's, never wall time
    old = result("ld3", 10, 1, 0.1)  # written before CPU time was recorded: its wall times
    assert board.recorded_cpu_seconds(old) == board.recorded_seconds(old) == 0.25
