"""Published numbers (leaderboards/reported.csv, bench.report.reported): the data itself, loading, and their
place in the leaderboards: beside the measured rows, labelled with their source, never in a measured mean."""
from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path


from bench.report.leaderboard import build
from bench.report.reported import COLUMNS, DEFAULT_PATH, load_reported

REFERENCES = DEFAULT_PATH.parent / "references.md"  # shipped beside reported.csv
SECTION8 = {  # references.md section 8: few-step solvers on EDM's CIFAR-10 uncond net, FID at NFE 5, 6, 8, 10
    "DDIM (Euler)": ["49.66", "35.62", "22.32", "15.69"], "Heun": ["320.80", "103.86", "39.66", "16.57"],
    "DPM-Solver++": ["24.54", "11.85", "4.36", "2.91"], "UniPC-3": ["23.52", "11.10", "3.86", "2.85"],
    "iPNDM-4": ["13.59", "7.05", "3.69", "2.77"], "iPNDM + GITS": ["8.38", "4.88", "3.24", "2.49"],
    "AMED-Plugin": ["6.61", "6.67", "3.34", "2.48"], "DPM-Solver-v3": ["12.21", "8.56", "3.50", "2.51"]}


def load_quiet(path=DEFAULT_PATH):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = load_reported(path)
    return rows, [str(w.message) for w in caught]


def result(label, nfe, seed, fid, task="cifar10"):
    return dict(schema=1, method=label, label=label, task=task, task_version=1, nfe_budget=nfe, seed=seed,
                status="ok", nfe=float(nfe), metrics=dict(fid=fid), created="2026-01-01T00:00:00+00:00",
                fit_cost=dict(nfe=0, seconds=0.0), git_sha="a" * 40, sample_seconds=1.0,
                protocol=dict(n_samples=50000, reference_stats=dict(file="cifar10-32x32.npz"),
                              feature_extractor=dict(name="inception-v3-compat"), nfe_convention="measured",
                              eval_seeds=f"run seed {seed}"))


def write(root: Path, r: dict) -> Path:
    p = root / r["task"] / r["label"] / f"nfe{r['nfe_budget']}_seed{r['seed']}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(r))
    return p


# --- the data -------------------------------------------------------------------

def test_repository_file_loads_cleanly():
    rows, warned = load_quiet()
    assert DEFAULT_PATH.name == "reported.csv" and DEFAULT_PATH.parent.name == "leaderboards"
    assert warned == []
    assert {r["task"] for r in rows} == {"cifar10", "cifar10-cond", "imagenet64"}
    assert all(r["source"] and r["protocol"] and r["metric"] == "fid" and r["kind"] == "reported" for r in rows)
    assert list(csv.reader(DEFAULT_PATH.open()))[0] == list(COLUMNS)


def test_headline_numbers_and_solver_table():
    rows, _ = load_quiet()
    got = {(r["method"], r["task"], r["nfe"]): r["value_text"] for r in rows}
    assert got[("EDM (Heun, 18 steps)", "cifar10", 35)] == "1.97"
    assert got[("EDM (Heun, 18 steps)", "cifar10-cond", 35)] == "1.79"
    assert got[("EDM stochastic sampler (EDM-retrained ADM network)", "imagenet64", 511)] == "1.36"
    assert got[("Restart (36 main steps, 5 restart intervals)", "imagenet64", 203)] == "1.41"
    assert got[("Discriminator guidance (EDM + DG)", "cifar10", 35)] == "1.77"
    assert got[("Discriminator guidance (EDM + DG)", "cifar10-cond", 35)] == "1.64"
    assert got[("LD3", "cifar10", 10)] == "2.38"
    for method, values in SECTION8.items():
        assert [got[(method, "cifar10", n)] for n in (5, 6, 8, 10)] == values, method


def test_unknown_nfe_is_blank_and_said_so():
    rows, _ = load_quiet()
    blank = [r for r in rows if r["nfe"] is None]
    assert {(r["method"], r["task"], r["value_text"]) for r in blank} >= {("IRL sampler", "cifar10", "3.18"),
                                                                         ("IRL sampler", "imagenet64", "2.92")}
    assert all("NFE" in r["protocol"] and "not" in r["protocol"] for r in blank)


def test_every_number_is_in_the_section_it_cites():
    """Each reported row cites "references.md §N": leaderboards/references.md has that section, and the
    row's value and NFE are numbers of it."""
    sections = {m.group(1): m.group(2) for m in re.finditer(r"(?ms)^## (\d+)\.(.*?)(?=^## |\Z)",
                                                             REFERENCES.read_text())}
    rows, _ = load_quiet()
    for r in rows:
        cited = re.search(r"references\.md §(\d+)", r["source"])
        assert cited and cited.group(1) in sections, (r["method"], r["source"])
        numbers = set(re.findall(r"\d+(?:\.\d+)?", sections[cited.group(1)]))
        assert r["value_text"] in numbers, (r["method"], r["value_text"])
        assert r["nfe"] is None or str(r["nfe"]) in numbers, (r["method"], r["nfe"])


# --- loading ----------------------------------------------------------------------

def test_bad_rows_warn_and_are_skipped(tmp_path):
    p = tmp_path / "rep.csv"
    p.write_text("method,task,nfe,metric,value,protocol,source\n"
                 "good,cifar10,10,fid,2.5,50k samples,Paper A\n"
                 "nan-value,cifar10,10,fid,lots,50k samples,Paper A\n"
                 "silent-nfe,cifar10,,fid,2.5,50k samples,Paper A\n"
                 "no-source,cifar10,10,fid,2.5,50k samples,\n"
                 "bad-nfe,cifar10,ten,fid,2.5,50k samples,Paper A\n"
                 "good,cifar10,10,fid,2.6,50k samples,Paper A\n"
                 "unknown-nfe,cifar10,,fid,3.0,NFE not reported,Paper B\n")
    rows, warned = load_quiet(p)
    assert [(r["method"], r["nfe"], r["value"]) for r in rows] == [("good", 10, 2.5), ("unknown-nfe", None, 3.0)]
    for line, what in ((3, "not a number"), (4, "does not say why"), (5, "empty source"), (6, "not a non-negative"),
                       (7, "same method")):
        assert any(f"line {line}:" in w and what in w for w in warned), (line, warned)
    assert load_quiet(tmp_path / "missing.csv")[0] == []
    assert "not read" in load_quiet(tmp_path / "missing.csv")[1][0]
    assert load_reported(None) == []


# --- in the leaderboards ----------------------------------------------------------

def table_rows(md: str) -> list[list[str]]:
    """The cells of every markdown table row, stripped (the layout's padding aside)."""
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in md.splitlines()
            if ln.startswith("|") and not set(ln) <= set("|:- ")]

def test_cifar10_page_with_reported_rows_only(tmp_path):
    root = tmp_path / "r"
    write(root, result("edm", 5, 0, 1.0, task="gmm8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build(root, tmp_path / "lb", task="cifar10")
    md = (tmp_path / "lb" / "cifar10.md").read_text()
    rows = table_rows(md)
    edm = next(r for r in rows if r[0] == "EDM (Heun, 18 steps)")
    assert edm[1] == "35" and "1.97" in edm and any(c.startswith("Karras et al. 2022 (EDM)") for c in edm)
    for method, values in SECTION8.items():
        for nfe, v in zip((5, 6, 8, 10), values):
            assert any(r[:2] == [method, str(nfe)] and v in r and any("references.md §8" in c for c in r)
                       for r in rows), (method, nfe, v)
    assert "No measured results." in md and "## Reported numbers" in md
    assert "minimum over three seed sets" in md  # EDM's protocol, in the footnote of its row
    rows = list(csv.DictReader((tmp_path / "lb" / "cifar10.csv").open()))
    assert rows and all(r["kind"] == "reported" and r["source"] and r["protocol"] for r in rows)


def test_reported_numbers_never_enter_measured_means(tmp_path):
    root = tmp_path / "r"
    for seed, v in enumerate([3.0, 4.0, 5.0]):
        write(root, result("mine", 35, seed, v))
    rep = tmp_path / "rep.csv"
    rep.write_text("method,task,nfe,metric,value,protocol,source\n"
                   "mine,cifar10,35,fid,0.5,50k samples; NFE 35,Paper that also calls it mine\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build(root, tmp_path / "lb", reported=rep)
    rows = list(csv.DictReader((tmp_path / "lb" / "cifar10.csv").open()))
    measured = [r for r in rows if r["kind"] == "measured"]
    reported = [r for r in rows if r["kind"] == "reported"]
    assert len(measured) == 1 and float(measured[0]["fid_mean"]) == 4.0 and measured[0]["seeds"] == "3"
    assert len(reported) == 1 and reported[0]["reported_value"] == "0.5" and reported[0]["fid_mean"] == ""
    js = json.loads((tmp_path / "lb" / "cifar10.json").read_text())
    assert js["measured"][0]["metrics"]["fid"]["mean"] == 4.0 and js["measured"][0]["best"]
    assert js["reported"][0]["value"] == 0.5 and js["reported"][0]["source"] == "Paper that also calls it mine"
    md = (tmp_path / "lb" / "cifar10.md").read_text()
    rows = table_rows(md)
    assert any(r[:2] == ["**mine**", "35"] for r in rows) and any(r[:2] == ["mine", "35"] for r in rows)  # bold: measured
    assert any("Paper that also calls it mine" in r and "0.5" in r for r in rows)
    readme = (tmp_path / "lb" / "README.md").read_text()
    best = [r for r in table_rows(readme) if r[:2] == ["35", "mine"]]
    assert len(best) == 1 and best[0][2].startswith("4 ± ")  # the index ranks measured rows only
    assert "0.5" not in readme
