"""Markdown: a task's page (``<task>.md``) and the index of all boards (``README.md``), every
table through tabulate."""
from __future__ import annotations

import math
import re


from bench.report import coverage, curves, paired
from bench.report.board import is_floor, protocol_text, row_protocol, seed_text, verdict


def _code_text(c: dict) -> str:
    if not c["current"] and not c["stale"] and not c["unknown"]:
        return "—"
    parts = [f"{c['current']} current"]
    if c["stale"]:
        parts.append("stale: " + ", ".join(f"`{x}`" for x in c["stale"]))
    if c["unknown"]:
        parts.append(f"{c['unknown']} unchecked")
    return "; ".join(parts)


def md_num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{float(v):.4g}"


def pipe_table(header: list, rows: list, align: list) -> str:
    """A markdown table (tabulate's pipe format), cells taken as the strings they are."""
    from tabulate import tabulate
    return tabulate(rows, headers=header, tablefmt="pipe", colalign=align, disable_numparse=True)


def md_text(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def arrow(higher: dict, m: str) -> str:
    return "↑" if higher.get(m, False) else "↓"


def page(b: dict) -> bytes:
    task, primary, higher, order = b["task"], b["primary"], b["higher"], b["order"]
    mins = b["aggregate"] == "min" and primary in b["metrics"]
    title = f"# Leaderboard: {task}" + (f" (v{b['version']})" if b["version"] is not None else "")
    lines = [title, ""]
    lines.append(f"Primary metric: **{primary or 'n/a'}** ({'higher' if higher.get(primary, False) else 'lower'} "
                 f"is better; ↑/↓ mark each metric's direction). Measured rows: mean ± the larger side of the 95% "
                 f"percentile bootstrap interval over seeds (scipy.stats.bootstrap; n/a with one seed); failed runs "
                 f"are counted, not averaged. Bold: the best measured mean on {primary or 'the primary metric'} at "
                 f"each NFE budget, a ranking, not a claim: whether a row beats the reference is the paired column's "
                 f"verdict (better or worse only when the paired interval excludes 0, else tie)."
                 + (" Rows with measured NFE 0 (true samples, e.g. `oracle`) are the metrics' noise floor, never "
                    "bold." if any(is_floor(r) for r in b["rows"]) else "")
                 + (" Rows on another denoiser than the task's own (`method@denoiser`, e.g. the exact posterior "
                    "mean) sample another model: never bold, never the reference."
                    if any(not r["own"] for r in b["rows"]) else "")
                 + (f" The task follows EDM's protocol of the minimum over seed sets: the column "
                    f"\"{primary} min over seeds\" gives it beside the mean." if mins else ""))
    if b["reported"]:
        lines += ["", "Rows whose source is **reported** are published numbers (the source column names the paper), "
                      "shown beside the measured ones under their own protocol; they are not measured here and never "
                      "enter a mean, an interval or the bold best."]
    lines.append("")
    if b["newest"] is not None:
        n = b["newest"]
        lines.append(f"Newest result: {n.get('created', 'unknown')}, git {n.get('git_sha', 'unknown')}"
                     + (f" (results span {len(b['shas'])} commits)" if len(b["shas"]) > 1 else "") + ".")
    else:
        lines.append("Newest result: none (no measured results for this task yet; reported numbers only).")
    lines += ["", "Columns: *measured NFE* is the denoiser evaluations per sample, counted, never declared "
                  "(Heun with N steps spends 2N-1, so a budget of 10 spends 9)"
              + "".join(f"; *{m}*: {text}" for m, text in b["notes"].items()) + "."]
    if b["differ"]:
        lines += ["", f"**Warning:** the measured results differ in {', '.join(b['differ'])}; rows under different "
                      f"protocols may not be comparable."]
    lines.append("")
    header = (["method", "NFE (budget)", "measured NFE", "seeds", "failed"]
              + [f"{m} {arrow(higher, m)}" for m in order]
              + ([f"{primary} min over seeds {arrow(higher, primary)}"] if mins else [])
              + [f"paired vs reference ({primary})", "fit NFE", "fit s", "sample s", "source", "protocol"])
    align = ["left"] + ["right"] * (len(header) - 7) + ["left"] + ["right"] * 3 + ["left", "left"]
    body = []
    best = {(row["method"], row["nfe"]) for rs in b["best"].values() for row in rs}
    for e in b["table"]:
        if e["kind"] == "measured":
            bold = (e["method"], e["nfe"]) in best
            cells = [md_text(e["method"]), str(e["nfe"]), md_num(e["nfe_measured"]), str(e["seeds"]),
                     str(e["failed"])]
            for m in order:
                mean, ci = e["mean"][m], e["ci"][m]
                cell = "—" if math.isnan(mean) else f"{md_num(mean)} ± {md_num(ci)}"
                cells.append(f"**{cell}**" if bold and m == primary else cell)
            if mins:
                cells.append("—" if math.isnan(e["min"][primary]) else md_num(e["min"][primary]))
            if bold:
                cells[0] = f"**{cells[0]}**"
            cells += [verdict(b, e), md_num(e["fit_nfe"]), md_num(e["fit_seconds"]),
                      md_num(e["sample_seconds"]), "measured", row_protocol(e)]
            if e["method"] in b["privileged"]:
                cells[0] += " (privileged)"
        else:
            cells = [md_text(e["method"]), "n/a" if e["nfe"] is None else str(e["nfe"]), "—", "—", "—"]
            cells += [e["value_text"] if m == e["metric"] else "—" for m in order]
            cells += (["—"] if mins else []) + ["—", "—", "—", "—", f"reported: {md_text(e['source'])}",
                                                row_protocol(e)]
        body.append(cells)
    lines.append(pipe_table(header, body, align))
    lines += ["", f"Also as [CSV]({task}.csv), [JSON]({task}.json) and [LaTeX]({task}.tex) (booktabs).", "",
              f"![]({task}.png)", "", f"Quality against total cost (fit plus sampling denoiser evaluations):", "",
              f"![]({task}.cost.png)", ""]
    lines += ["## Paired comparisons", "",
              f"Each row against the reference row at its NFE budget (the best classic solver there on the task's "
              f"own denoiser), seed by seed on "
              f"{primary}: the mean paired difference ({'positive' if higher.get(primary, False) else 'negative'} "
              f"is better), its 95% percentile bootstrap interval over seeds (scipy.stats.bootstrap, 10,000 resamples), "
                "the probability of improvement, and the verdict: better or worse only when the interval excludes "
                "0, otherwise tie.", "", paired.markdown(b["paired"], primary), ""]
    if b["fit_curves"]:
        lines += ["## Fit cost to quality", "", "The task's primary metric on the tuning split against the fit's "
                  "denoiser evaluations so far (a search's candidates as the grid grows, a learned sampler's "
                  "evaluations as it trains), and the cost ratio at equal quality: the fit NFE at which a learned "
                  "row first reaches a tuned row's final tuning score, over the tuned row's whole fit NFE "
                  "(median over seeds; under 1: cheaper). A learned fit that is already there at its first recorded "
                  "score gives only an upper bound: it may have got there sooner, unrecorded; a median with any such "
                  "seed is then an upper bound too (≤).", "",
                  curves.markdown(b["cost_ratios"]), "",
                  f"![]({task}.fit.png)", ""]
    over = [e for e in b["table"] if e["kind"] == "measured" and not math.isnan(e["overhead"])]
    if over:
        lines += ["## Inference overhead", "", "Sampling time beyond the method's own base solver on EDM's schedule at "
                  "the same budget, both timed in the same run on the same samples (`overhead.ratio` of each result; "
                  "median over seeds, one timing each, so a loaded machine moves it: "
                  "`tests/benchmarks/test_irl_overhead.py` interleaves the two for a steadier figure).", "",
                  pipe_table(["method", "NFE (budget)", "seeds", "overhead", "sample s"],
                              [[md_text(e["method"]), str(e["nfe"]), str(e["seeds"]), f"{100 * e['overhead']:+.1f}%",
                                md_num(e["sample_seconds"])] for e in over],
                              ["left", "right", "right", "right", "right"]), ""]
    s = b["samples"]
    if s is not None:
        lines += ["## Samples", "", f"![{task}: samples per method]({s['file']})", "",
                  f"One row per method: samples {seed_text(s['indices'])} of seed {s['seed']} at NFE {s['nfe']} "
                  f"(the same noise{' and class labels' if s['labels'] is not None else ''} for every method), "
                  f"from the samples saved beside each result ({', '.join(f'`{f}`' for f in s['files'])}).", ""]
    lines += ["## Protocols", ""]
    for pid, p in b["protocols"].items():
        if pid.startswith("P"):
            lines.append(f"- **{pid}** (measured): {md_text(protocol_text(p))}. Full protocol: `protocols.{pid}` "
                         f"in [{task}.json]({task}.json).")
        else:
            lines.append(f"- **{pid}** (reported): {md_text(p)}.")
    if not b["protocols"]:
        lines.append("- none (no successful results)")
    lines.append("")
    return "\n".join(lines).encode()


def index(boards: list[dict], formats: tuple[str, ...]) -> bytes:
    lines = ["# Leaderboards", "",
             "Generated by `python -m bench leaderboard` from the result files in [`results/`](results/) and the "
             "published numbers in [`reported.csv`](reported.csv); do not edit by hand: rebuilding from the same "
             "files gives the same bytes. The published boards are regenerated, runs included, by "
             "`python -m bench suite leaderboards/suite.toml`; the commit(s) behind each task's rows are listed "
             "below (`-dirty`: made from a tree with uncommitted changes). A result records the version of the "
             "code that made it (the harness, its task and its method); *code* counts the results whose version "
             "is this checkout's, which this one commit therefore reproduces, and names the rows whose code "
             "changed since (stale: the suite command reruns them).", "",
             "Per task: the best **measured** method at each NFE budget by the task's primary metric (mean ± 95% "
             "bootstrap interval over seeds), and beside it the best **reported** (published) number at that NFE "
             "with its source. Reported numbers are never averaged with or ranked against measured ones; protocols "
             "(P = measured, R = reported) are spelled out on each task's page.", "",
             ]
    manifest = any("coverage" in b for b in boards)
    if manifest:
        lines += ["*manifest* counts the runs (row, NFE, seed) that [`suite.toml`](suite.toml) lists for the task "
                  "and how many of them have a result here; each task's section below names the rows still to run.",
                  ""]
    lines += ["| task | primary metric | measured rows | reported numbers | newest result | results from commit(s) | code |"
              + (" manifest |" if manifest else ""),
              "|:--|:--|--:|--:|:--|:--|:--|" + ("--:|" if manifest else "")]
    for b in boards:
        n = b["newest"]
        lines.append(f"| [{b['task']}](#{_anchor(b['task'])}) | {b['primary']} {arrow(b['higher'], b['primary'])} | "
                     f"{len(b['rows'])} | {len(b['reported'])} | "
                     + ("—" if n is None else f"{n.get('created', 'unknown')}, git `{n.get('git_sha', 'unknown')}`")
                     + " | " + (", ".join(f"`{sha}`" for sha in sorted(b["shas"])) or "—") + " | "
                     + _code_text(b["code"]) + " |" + (f" {_coverage_count(b)} |" if manifest else ""))
    lines.append("")
    lines += verdict_matrix(boards)
    for b in boards:
        task, primary, higher = b["task"], b["primary"], b["higher"]
        lines += [f"## {task}", ""]
        links = [f"full table: [{task}.md]({task}.md)"]
        links += [f"[{f.upper() if f != 'tex' else 'LaTeX'}]({task}.{f})" for f in ("csv", "json", "tex")
                  if f in formats]
        if "png" in formats:
            links.append(f"plot: [{task}.png]({task}.png)")
            if b["samples"] is not None:
                links.append(f"samples: [{b['samples']['file']}]({b['samples']['file']})")
        lines.append(" · ".join(links))
        lines.append("")
        n = b["newest"]
        version = f" (task version {b['version']})" if b["version"] is not None else ""
        lines.append(f"Primary metric: **{primary}** ({'higher' if higher.get(primary, False) else 'lower'} is "
                     f"better){version}. " + (
                         f"Newest result behind it: {n.get('created', 'unknown')}, git `{n.get('git_sha', 'unknown')}`"
                         + (f" (results span {len(b['shas'])} commits)" if len(b["shas"]) > 1 else "") + "."
                         if n is not None else "No measured results yet: reported numbers only."))
        lines.append("")
        c = b.get("coverage")
        if c and c["missing"]:
            lines += [f"Not yet run ({c['listed'] - c['done']} of the manifest's {c['listed']} runs of this task; "
                      f"a budget alone: all its seeds): "
                      f"{md_text(coverage.missing_text(c['missing']))}.", ""]
        budgets = sorted(set(b["best"]) | {x for x in b["best_reported"] if x is not None})
        if None in b["best_reported"]:
            budgets.append(None)
        if not budgets:
            lines += ["No successful results.", ""]
            continue
        direction = arrow(higher, primary)
        header = ["NFE", "best measured", f"{primary} {direction}", "protocol"]
        if b["reported"]:
            header += ["best reported", f"{primary} {direction} (reported)", "source"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["--:", ":--", "--:", ":--"] + ([":--", "--:", ":--"] if b["reported"] else []))
                     + "|")
        for nfe in budgets:
            rows = b["best"].get(nfe, [])
            if rows:
                cells = [str(nfe), ", ".join(md_text(r["method"]) for r in rows),
                         f"{md_num(rows[0]['mean'][primary])} ± {md_num(rows[0]['ci'][primary])}",
                         "; ".join(f"[{row_protocol(r)}]({task}.md#protocols)" for r in rows)]
            else:
                cells = ["n/a" if nfe is None else str(nfe), "—", "—", "—"]
            if b["reported"]:
                rep = b["best_reported"].get(nfe, [])
                cells += ([", ".join(md_text(r["method"]) for r in rep), rep[0]["value_text"],
                           "; ".join(sorted({md_text(r["source"]) for r in rep}))] if rep else ["—", "—", "—"])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).encode()


def _coverage_count(b: dict) -> str:
    c = b.get("coverage")
    return "—" if c is None else f"{c['done']} of {c['listed']}"


def verdict_matrix(boards: list[dict]) -> list[str]:
    """Every row's paired verdict against its budget's reference, one column per task: where a
    method wins, ties or loses across tasks reads off one table."""
    from bench.method import FAMILIES
    shown = [b for b in boards if not b["paired"].empty]
    cells: dict[tuple[str, int], dict[str, str]] = {}
    families: dict[str, str] = {}
    for b in shown:
        t = b["paired"]
        most = int(t["seeds"].max())
        for r in t.itertuples(index=False):
            text = r.verdict if r.verdict == "n/a" else f"{r.verdict} {'+' if r.diff > 0 else ''}{md_num(r.diff)}"
            cells.setdefault((r.label, int(r.nfe)), {})[b["task"]] = text + (f" ({r.seeds} seeds)" if r.seeds < most else "")
        for nfe, ref in sorted(set(zip(t["nfe"], t["reference"]))):
            cells.setdefault((ref, int(nfe)), {})[b["task"]] = "reference"
        families.update(b["families"])
    if not shown:
        return []
    tasks = [b["task"] for b in shown]
    rank = {f: i for i, f in enumerate(FAMILIES)}
    keys = sorted(cells, key=lambda k: (rank.get(families.get(k[0], "other"), len(rank)), k[0], k[1]))
    lines = ["## Verdicts across tasks", "",
             "Each row against the reference row of its task at its NFE budget (the best classic solver there on "
             "the task's own denoiser), "
             "paired over seeds on the task's primary metric: *better* or *worse* only when the paired 95% "
             "bootstrap interval excludes 0, with the mean paired difference (negative is better for a metric "
             "to be lowered); the seed count where a row has fewer seeds than the task's others; — where the "
             "row was not run. Each task's page has the intervals.", "",
             "| method | NFE | " + " | ".join(f"{b['task']} ({b['primary']})" for b in shown) + " |",
             "|:--|--:|" + ":--|" * len(tasks)]
    for label, nfe in keys:
        lines.append(f"| {md_text(label)} | {nfe} | " + " | ".join(cells[label, nfe].get(t, "—") for t in tasks) + " |")
    return lines + [""]


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")

