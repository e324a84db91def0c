"""Markdown: a task's page (``<task>.md``) and the index of all boards (``README.md``), every
table through tabulate."""
from __future__ import annotations

import math
import re


from bench.report import coverage, curves, paired
from bench.report.board import (is_floor, mean_of, pair_of, protocol_text, reference_of, row_protocol, seed_text,
                                verdict, verdict_cells)


def _code_text(c: dict) -> str:
    """``all 340 current``, or how many are current and which rows are stale (the first three)."""
    if not c["current"] and not c["stale"] and not c["unknown"]:
        return "—"
    if not c["stale"] and not c["unknown"]:
        return f"all {c['current']} current"
    parts = [f"{c['current']} current"]
    if c["stale"]:
        names = ", ".join(f"`{x}`" for x in c["stale"][:3]) + (", …" if len(c["stale"]) > 3 else "")
        parts.append(f"{_plural(len(c['stale']), 'label')} stale ({names})")
    if c["unknown"]:
        parts.append(f"{c['unknown']} unchecked")
    return "; ".join(parts)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


STALE_NOTE = "their numbers are what that code measured; `python -m bench suite` reruns exactly these"


def _stale_count(c: dict) -> int:
    return c["total"] - c["current"] - c["unknown"]


def _stale_text(b: dict) -> str:
    c = b["code"]
    return (f"**Stale:** {_stale_count(c)} of {c['total']} results ({_plural(len(c['stale']), 'method label')}) were "
            f"made by other code than this checkout's ({STALE_NOTE}).")


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


def short_sha(sha) -> str:
    """A commit as people cite it: 7 hex digits (and ``-dirty`` when the tree was)."""
    text = str(sha or "unknown")
    base, dirty = (text[:-6], "-dirty") if text.endswith("-dirty") else (text, "")
    return (base[:7] if re.fullmatch(r"[0-9a-f]{8,40}", base) else base) + dirty


def verdict_cell(b: dict, e: dict) -> str:
    """``better -0.0012`` (``*``: close, p between 0.01 and 0.10), ``reference``, or ``—``."""
    hit = pair_of(b, e)
    if hit is None:
        return verdict(b, e)
    if hit["verdict"] == "n/a":
        return f"n/a ({_plural(hit['seeds'], 'common seed')})"
    return f"{verdict_word(hit)} {_signed(hit['diff'])}"


def _signed(v: float) -> str:
    return ("+" if v > 0 else "") + md_num(v)


def verdict_word(hit) -> str:
    """``better``, ``worse*`` (close), ``tie``, ``undetermined (3 seeds)`` (a tie whose every seed points
    one way) or ``better, within floor`` (significant, smaller than the metric's floor)."""
    if hit.get("undetermined"):
        return f"undetermined ({hit['seeds']} seeds)"
    word = f"{hit['verdict']}{'*' if hit['close'] else ''}"
    return word + (", within floor" if hit.get("within_floor") else "")


def start_cell(e: dict) -> str:
    """``worse +0.0011 (ipndm)``: a learned row's paired verdict against its untrained start, or ``—``."""
    v = e.get("vs_start")
    if not v:
        return "—"
    if v["verdict"] == "n/a":
        return f"n/a ({_plural(v['seeds'], 'common seed')}; {v['start']})"
    return f"{verdict_word(v)} {_signed(v['diff'])} ({v['start']})"


def cost_cards(measured: list[dict]) -> list[str]:
    """Per fitted label, what its fit asks of a user (``cost_card`` of its results): the numbers it
    learns and stores per checkpoint, the teacher's NFE, whether it reads real data, and the
    precomputation per checkpoint (NFE and time, by budget; mean over seeds)."""
    cards: dict[str, dict] = {}
    for e in measured:
        for r in e["results"]:
            c = r.get("cost_card") if isinstance(r.get("cost_card"), dict) else None
            if c is None:
                continue
            card = cards.setdefault(e["method"], dict(params=set(), teacher=set(), data=set(), pre={}))
            card["params"].add(c.get("learned_parameters"))
            card["teacher"].add(c.get("teacher_nfe"))
            card["data"].add(bool(c.get("needs_real_data")))
            pre = c.get("precompute") or {}
            card["pre"].setdefault(e["nfe"], []).append((pre.get("nfe"), pre.get("seconds")))
    if not cards:
        return []

    def span(values) -> str:
        v = sorted(x for x in values if x is not None)
        return "—" if not v else md_num(v[0]) if v[0] == v[-1] else f"{md_num(v[0])}-{md_num(v[-1])}"

    def pre(by_nfe) -> str:
        return "; ".join(f"NFE {nfe}: {md_num(mean_of(n for n, _ in runs))} NFE, "
                         f"{duration_text(mean_of(t for _, t in runs))}" for nfe, runs in sorted(by_nfe.items()))
    rows = [[md_text(label), span(c["params"]), span(c["teacher"]), "yes" if True in c["data"] else "no", pre(c["pre"])]
            for label, c in sorted(cards.items())]
    return ["", "**Cost cards** of the fitted rows: the numbers each fit learns and stores per checkpoint, its "
            "teacher's NFE, whether it reads real data (the tuning split), and its precomputation per checkpoint "
            "(denoiser evaluations and time, mean over seeds).", "",
            pipe_table(["method", "learned numbers", "teacher NFE", "real data", "precomputation per checkpoint"],
                       rows, ["left", "right", "right", "left", "left"])]


def flags(b: dict, e: dict) -> str:
    """What a reader must know before citing a row: failed seeds, seeds without a primary value
    (warned as NaN at load), privileged knowledge, a fit whose samples equal its untrained start's,
    and on a board of your rows beside the published ones, which rows are yours."""
    out = []
    u = e.get("untrained")
    if u and u["identical"]:
        why = ("it scored others, none better on the tuning split" if u["tried"] == u["identical"] else
               "it never moved" if not u["tried"] else
               f"{u['identical'] - u['tried']} never moved, {u['tried']} scored others, none better")
        out.append(f"= untrained start ({u['start']}) in {u['identical']} of {u['checked']} seeds ({why})")
    v = e.get("vs_start")
    if v and v["verdict"] == "worse":
        o = e.get("objective")
        why = ("its own objective not recorded" if not o else
               f"its {o['name']} improved in {o['improved']} of {o['recorded']} seeds "
               f"({md_num(o['start'])} → {md_num(o['end'])}): an objective that misses the metric"
               if o["improved"] == o["recorded"] else
               f"its {o['name']} did not improve in {o['recorded'] - o['improved']} of {o['recorded']} seeds "
               f"({md_num(o['start'])} → {md_num(o['end'])})")
        out.append(f"worse than its untrained start ({v['start']}; {why})")
    if e["failed"]:
        out.append(f"{e['failed']} failed")
    if e.get("unscored"):
        out.append(f"{e['unscored']} without {b['primary']}")
    if e["method"] in b["privileged"]:
        out.append("privileged")
    if (e["method"], e["nfe"]) in b.get("yours", {}):
        replaced = b["yours"][e["method"], e["nfe"]]
        out.append(f"your run (in place of the published {_plural(replaced, 'seed')})" if replaced else "your run")
    if not e["own"]:
        out.append("another denoiser")
    if is_floor(e):
        out.append("noise floor")
    return "; ".join(out) or ""


def _cost(e: dict) -> str:
    if math.isnan(e["fit_nfe"]) or not e["fit_nfe"]:
        return "—"
    return f"{md_num(e['fit_nfe'])} NFE, {duration_text(e['fit_seconds'])}"


def duration_text(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "n/a"
    seconds = float(seconds)
    return f"{seconds:.3g} s" if seconds < 90 else f"{seconds / 60:.3g} min" if seconds < 5400 else \
        f"{seconds / 3600:.3g} h"


def page(b: dict) -> bytes:
    """A task's page: the main table (primary metric, verdict, fit cost, flags: what a reader needs,
    in nine columns), every metric in a second table, the reported numbers in a third, then the
    paired comparisons, the fits' cost to quality, the overhead, samples and protocols."""
    task, primary, higher, order = b["task"], b["primary"], b["higher"], b["order"]
    mins = b["aggregate"] == "min" and primary in b["metrics"]
    title = f"# Leaderboard: {task}" + (f" (v{b['version']})" if b["version"] is not None else "")
    lines = [title, ""]
    n = b["newest"]
    lines.append(f"Primary metric: **{primary or 'n/a'}** ({'higher' if higher.get(primary, False) else 'lower'} is "
                 f"better). Mean ± the half-width of the 95% t-interval over seeds. *vs reference*: the paired "
                 f"verdict against the best classic solver at the budget (better or worse only when the paired "
                 f"95% t-interval excludes 0; `*` a close verdict, p between 0.01 and 0.10) and the mean paired "
                 f"difference. *vs start*: a learned row's paired verdict against its own untrained start's row (the "
                 f"sampler its fit starts from, on the same seeds and initial noise), the mean paired difference and "
                 f"the start. Bold: the best mean at each budget, a ranking, not a claim. *fit*: the denoiser "
                 f"evaluations and time of one fit (mean over seeds). *flags*: a learned row whose samples equal "
                 f"its untrained start's (the fit never moved, or it scored other samplers and none was better "
                 f"on the tuning split: the start is what it found best), a row worse than its untrained start, failed "
                 f"seeds, privileged knowledge, another "
                 f"denoiser, a noise floor"
                 + ("; *your run*: a row of your results, beside the published ones (a budget you ran replaces "
                    "the published results of that row at that budget whole)" if b.get("yours") else "") + "."
                 + (" EDM's protocol, the minimum over seed sets, is the column *min over seeds*." if mins else ""))
    lines.append("")
    lines.append("Newest result: " + ("none (reported numbers only)." if n is None else
                                      f"{n.get('created', 'unknown')}, git `{short_sha(n.get('git_sha'))}`"
                                      + (f" (results span {len(b['shas'])} commits)" if len(b["shas"]) > 1 else "")
                                      + "."))
    if b["code"]["stale"]:
        lines += ["", _stale_text(b)]
    if b["differ"]:
        lines += ["", f"**Warning:** the measured results differ in {', '.join(b['differ'])}; rows under different "
                      f"protocols may not be comparable."]
    close = int(b["paired"]["close"].sum()) if not b["paired"].empty else 0
    if not b["paired"].empty:
        t = b["paired"]
        lines += ["", f"Verdicts: {int((t['verdict'] == 'better').sum())} better, {int((t['verdict'] == 'worse').sum())} "
                      f"worse, {int((t['verdict'] == 'tie').sum())} tie; {close} close to the line; "
                      f"{int((t['verdict'] != t['boot_verdict']).sum())} differ from the percentile bootstrap's."]
    lines.append("")
    measured = [e for e in b["table"] if e["kind"] == "measured"]
    best = {(row["method"], row["nfe"]) for rs in b["best"].values() for row in rs}
    header = ["method", "NFE", "seeds", f"{primary} {arrow(higher, primary)}"] \
        + ([f"min over seeds {arrow(higher, primary)}"] if mins else []) \
        + ["vs reference", "vs start", "fit", "flags", "protocol"]
    body = []
    for e in measured:
        bold = (e["method"], e["nfe"]) in best
        mean, ci = e["mean"].get(primary, math.nan), e["ci"].get(primary, math.nan)
        cell = "—" if math.isnan(mean) else f"{md_num(mean)} ± {md_num(ci)}"
        body.append([f"**{md_text(e['method'])}**" if bold else md_text(e["method"]), str(e["nfe"]), str(e["seeds"]),
                     f"**{cell}**" if bold and cell != "—" else cell]
                    + ([md_num(e["min"].get(primary))] if mins else [])
                    + [verdict_cell(b, e), start_cell(e), _cost(e), flags(b, e), row_protocol(e)])
    if body:
        lines.append(pipe_table(header, body, ["left", "right", "right", "right"] + (["right"] if mins else [])
                                + ["left", "left", "right", "left", "left"]))
    else:
        lines.append("No measured results.")
    lines += cost_cards(measured)
    lines += ["", f"Also as [CSV]({task}.csv), [JSON]({task}.json) and [LaTeX]({task}.tex) (booktabs).", "",
              f"![]({task}.png)", "", "Quality against total cost (fit plus sampling denoiser evaluations):", "",
              f"![]({task}.cost.png)", ""]
    others = [m for m in order if m != primary]
    if measured and others:
        lines += ["## Every metric", "", "Mean ± 95% t-interval half-width over seeds; measured NFE is the denoiser "
                  "evaluations per sample, counted (Heun with N steps spends 2N-1)"
                  + "".join(f"; *{m}*: {text}" for m, text in b["notes"].items()) + ".", ""]
        rows = [[md_text(e["method"]), str(e["nfe"]), md_num(e["nfe_measured"])]
                + ["—" if math.isnan(e["mean"].get(m, math.nan)) else f"{md_num(e['mean'][m])} ± {md_num(e['ci'][m])}"
                   for m in others] + [md_num(e["sample_seconds"])] for e in measured]
        lines += [pipe_table(["method", "NFE", "measured NFE"] + [f"{m} {arrow(higher, m)}" for m in others]
                             + ["sample s"], rows, ["left", "right", "right"] + ["right"] * len(others) + ["right"]), ""]
    reported = [e for e in b["table"] if e["kind"] == "reported"]
    if reported:
        lines += ["## Reported numbers", "", "Published numbers (the source names the paper, "
                  "[references.md](references.md) quotes it), under their own protocol: not measured here, never "
                  "averaged with the measured rows, never bold.", ""]
        lines += [pipe_table(["method", "NFE", "metric", "value", "source", "protocol"],
                             [[md_text(e["method"]), "n/a" if e["nfe"] is None else str(e["nfe"]), e["metric"],
                               e["value_text"], md_text(e["source"]), row_protocol(e)] for e in reported],
                             ["left", "right", "left", "right", "left", "left"]), ""]
    lines += ["## Paired comparisons", "",
              f"Each row against the reference row at its NFE budget (the best classic solver there on the task's "
              f"own denoiser), seed by seed on {primary}: the mean paired difference "
              f"({'positive' if higher.get(primary, False) else 'negative'} is better), its 95% paired t-interval "
              f"and p-value, the 95% percentile bootstrap interval beside it (10,000 resamples; over 3 seeds it is "
              f"[min, max] and covers far less than 95%), the probability of improvement, and the verdict by the "
              f"t-interval (`*`: close).", "", paired.markdown(b["paired"], primary), ""]
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
    over = [e for e in measured if not math.isnan(e["overhead"])]
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


def index(boards: list[dict], formats: tuple[str, ...], published: bool = False, beside: bool = False) -> bytes:
    """The index: per task and NFE budget the best row, its verdict against the best classic solver
    and its fit cost, then every verdict across tasks. The published boards say how to regenerate
    them and how much of the manifest is done; a user's own say only what their results hold, and
    ``beside`` the published rows, which rows are whose."""
    if published:
        intro = ("Generated by `python -m bench leaderboard --published` from the result files in "
                 "[`results/`](results/) and the published numbers in [`reported.csv`](reported.csv) (sources "
                 "quoted in [`references.md`](references.md)); do not edit by hand: rebuilding from the same files "
                 "gives the same bytes. Every run is regenerated by `python -m bench suite leaderboards/suite.toml "
                 "--jobs 2` from one commit; *code* counts the results made by this checkout's code (a stale one "
                 "is rerun by that command), *manifest* the runs of [`suite.toml`](suite.toml) that have a result. "
                 "A method of yours beside these rows, paired on the same seeds: run it with `--seeds 0-4`, then "
                 "`python -m bench leaderboard --results results --published`.")
    elif beside:
        intro = ("Generated by `python -m bench leaderboard --results ... --published`: the rows of your result "
                 "files (flagged *your run*) beside the published rows of the tasks you ran, paired on the same "
                 "seeds; a row you ran is taken from your files whole, never mixed with the published seeds of it. "
                 "Rebuilding from the same files gives the same bytes.")
    else:
        intro = ("Generated by `python -m bench leaderboard` from your result files; rebuilding from the same files "
                 "gives the same bytes. Only the tasks you ran are here.")
    lines = ["# Leaderboards", "", intro, "",
             "Per task and NFE budget: the best measured row (mean ± 95% t-interval over seeds), its paired "
             "verdict against the best classic solver there (better or worse only when the paired 95% t-interval "
             "excludes 0; `*` close: p between 0.01 and 0.10) and what its fit cost. *core-hours*: the compute the "
             "task's result files record (fits, sampling, metrics, checks): their process CPU time where recorded, "
             "else their wall time on one core (results before harness v4). A learned row equal to its "
             "untrained start in some seed is flagged. Reported (published) numbers are on each task's page, never "
             "ranked with measured ones.", ""]
    manifest = published and any("coverage" in b for b in boards)
    head = ["task", "primary metric", "rows", "core-hours", "newest result", "commits", "code"] + (
        ["manifest"] if manifest else [])
    body = []
    for b in boards:
        n = b["newest"]
        body.append([f"[{b['task']}](#{_anchor(b['task'])})", f"{b['primary']} {arrow(b['higher'], b['primary'])}",
                     str(len(b["rows"])), f"{b['core_hours']:.2f}" if b["rows"] else "—",
                     "—" if n is None else str(n.get("created", "unknown"))[:10],
                     ", ".join(f"`{short_sha(sha)}`" for sha in sorted(b["shas"])) or "—", _code_text(b["code"])]
                    + ([_coverage_count(b)] if manifest else []))
    lines += [pipe_table(head, body, ["left"] * len(head)), ""]
    stale = [b for b in boards if b.get("code") and b["code"]["stale"]]
    if stale:
        lines += ["**Stale:** " + "; ".join(f"{b['task']}: {_plural(_stale_count(b['code']), 'result')} made by other "
                                            f"code than this checkout's" for b in stale) + f" ({STALE_NOTE}).", ""]
    lines += verdict_summary(boards)
    lines += start_summary(boards)
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
        lines += [" · ".join(links), ""]
        c = b.get("coverage") if published else None
        if c and c["missing"]:
            lines += [f"Not yet run ({c['listed'] - c['done']} of the manifest's {c['listed']} runs of this task; "
                      f"a budget alone: all its seeds): {md_text(coverage.missing_text(c['missing']))}.", ""]
        if not b["best"]:
            lines += ["No measured results" + (" (reported numbers only: see the task's page)." if b["reported"]
                                               else "."), ""]
            continue
        rows = []
        for nfe in sorted(b["best"]):
            best, note = headline(b, nfe)
            e = best[0]
            ref = reference_of(b, nfe)
            rows.append([str(nfe), ", ".join(md_text(r["method"]) for r in best),
                         f"{md_num(e['mean'][primary])} ± {md_num(e['ci'][primary])}",
                         "—" if ref is None else md_text(ref), verdict_cell(b, e), _cost(e),
                         "; ".join(x for x in (flags(b, e), note) if x)])
        lines += [pipe_table(["NFE", "best", f"{primary} {arrow(higher, primary)}", "best classic", "vs best classic",
                              "fit cost", "flags"], rows, ["right", "left", "right", "left", "left", "right", "left"]),
                  ""]
    lines += verdict_matrix(boards, "verdicts.png" if "png" in formats else None)
    return "\n".join(lines).encode()


def headline(b: dict, nfe: int) -> tuple[list[dict], str]:
    """The index's best rows at a budget: the best means there when they are the reference or better
    than it beyond the metric's floor; else the reference row, with a note naming the best mean and
    why it does not head the board (a tie, undetermined, or within the floor)."""
    best = b["best"][nfe]
    hit = pair_of(b, best[0])
    if hit is None or (hit["verdict"] == "better" and not hit.get("within_floor")):
        return best, ""
    ref = reference_of(b, nfe)
    row = next((r for r in b["rows"] if r["method"] == ref and r["nfe"] == nfe), None)
    if row is None:
        return best, ""
    return [row], f"lowest mean: {md_text(best[0]['method'])} ({verdict_word(hit)} {_signed(hit['diff'])})"


def verdict_summary(boards: list[dict]) -> list[str]:
    """How many verdicts each task has, how many are close to the line, and how many the percentile
    bootstrap (v2's interval) would call otherwise."""
    shown = [b for b in boards if not b["paired"].empty]
    if not shown:
        return []
    rows, total = [], dict(n=0, better=0, worse=0, tie=0, close=0, changed=0, floor=0, undetermined=0)
    for b in shown:
        t = b["paired"][b["paired"]["verdict"] != "n/a"]
        k = dict(n=len(t), better=int((t["verdict"] == "better").sum()), worse=int((t["verdict"] == "worse").sum()),
                 tie=int((t["verdict"] == "tie").sum()), close=int(t["close"].sum()),
                 changed=int((t["verdict"] != t["boot_verdict"]).sum()), floor=int(t["within_floor"].sum()),
                 undetermined=int(t["undetermined"].sum()))
        for key in total:
            total[key] += k[key]
        rows.append([b["task"]] + [str(k[key]) for key in total])
    rows.append(["all"] + [str(total[key]) for key in total])
    return ["## Verdicts", "", "Paired verdicts against the best classic solver at each budget: better / worse / tie "
            "by the 95% paired t-interval; *close*: p between 0.01 and 0.10 (a few more seeds could flip it); "
            "*differ from bootstrap*: verdicts the 95% percentile bootstrap over seeds would give otherwise "
            "(protocol v2's interval; at 3-5 seeds it covers 70-85%, so it calls more differences); *within "
            "floor*: better or worse, but by less than the metric's floor (the standard deviation over seeds of the "
            "metric on true samples, the task's oracle row; none where a task has no true samples): never the "
            "index's headline best; *undetermined*: a tie over 3 seeds whose every seed points one way.", "",
            pipe_table(["task", "verdicts", "better", "worse", "tie", "close", "differ from bootstrap",
                        "within floor", "undetermined"], rows, ["left"] + ["right"] * 8), ""]


def start_summary(boards: list[dict]) -> list[str]:
    """Per learned method label, across tasks and budgets: how many of its rows are better, tie or
    worse than their own untrained start (paired, same seeds), and where it is worse."""
    counts: dict[str, dict] = {}
    for b in boards:
        for row in b["rows"]:
            v = row.get("vs_start")
            if not v or v["verdict"] == "n/a":
                continue
            c = counts.setdefault(row["method"], dict(start=set(), better=0, tie=0, worse=0, where=[]))
            c["start"].add(v["start"])
            c[v["verdict"]] += 1
            if v["verdict"] == "worse":
                c["where"].append(f"{b['task']} {row['nfe']}")
    if not counts:
        return []
    rows = [[md_text(label), ", ".join(sorted(c["start"])), str(c["better"]), str(c["tie"]), str(c["worse"]),
             ", ".join(c["where"]) or "—"] for label, c in sorted(counts.items())]
    total = [sum(c[k] for c in counts.values()) for k in ("better", "tie", "worse")]
    rows.append(["all", "", *map(str, total), ""])
    return ["## Against their own start", "", "Each learned row against its own untrained start's row (the sampler "
            "its fit starts from, on the same seeds and initial noise): better / worse by the 95% paired t-interval, "
            "else tie; each task page has the differences (*vs start*).", "",
            pipe_table(["method", "start", "better", "tie", "worse", "worse at (task NFE)"], rows,
                       ["left", "left", "right", "right", "right", "left"]), ""]


def _coverage_count(b: dict) -> str:
    c = b.get("coverage")
    return "—" if c is None else f"{c['done']} of {c['listed']}"


def verdict_matrix(boards: list[dict], picture: str | None = None) -> list[str]:
    """Every row's paired verdict against its budget's reference, one column per task: where a
    method wins, ties or loses across tasks reads off one table (and, with ``picture``, the same
    cells coloured, in that image file)."""
    shown, keys, cells = verdict_cells(boards)
    if not shown:
        return []
    tasks = [b["task"] for b in shown]

    def text(c) -> str:
        if c is None or c == "reference":
            return c or "—"
        said = "n/a" if c["verdict"] == "n/a" else f"{verdict_word(c)} {_signed(c['diff'])}"
        return said + (f" ({c['seeds']} seeds)" if c["fewer"] and not c["undetermined"] else "") \
            + (f" (= start in {c['same_start']} seeds)" if c["same_start"] else "")
    lines = ["## Verdicts across tasks", "",
             "Each row against the reference row of its task at its NFE budget (the best classic solver there on "
             "the task's own denoiser), "
             "paired over seeds on the task's primary metric: *better* or *worse* only when the paired 95% "
             "t-interval excludes 0 (`*`: close, p between 0.01 and 0.10), with the mean paired difference "
             "(negative is better for a metric to be lowered); the seed count where a row has fewer seeds than "
             "the task's others; — where the row was not run; the flags of the task pages: *within floor*, "
             "*undetermined* (a 3-seed tie whose seeds all point one way) and *= start* (a learned row whose samples "
             "equal its untrained start's in that many seeds). Each task's page has the intervals.", ""]
    if picture:
        lines += [f"![every verdict across tasks]({picture})", ""]
    rows = [[md_text(label), str(nfe)] + [text(cells[label, nfe].get(t)) for t in tasks] for label, nfe in keys]
    lines.append(pipe_table(["method", "NFE"] + [f"{b['task']} ({b['primary']})" for b in shown], rows,
                            ["left", "right"] + ["left"] * len(tasks)))
    return lines + [""]


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")

