"""Command line: ``python -m bench {run,list,suite,leaderboard,compare,train-denoiser,train-classifier,convert}``.

Every mistake in the input is one line on stderr and exit code 2, before any work starts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import sys
import warnings
from pathlib import Path

# only light modules at the top: --help, list and a mistyped name answer without importing torch
from bench.data.fetch import FetchError
from bench.engine.ints import parse_ints
from bench.engine.io import WriteError, check_writable
from bench.errors import BudgetError, UnknownNameError, Unsupported

USER_ERRORS = (UnknownNameError, BudgetError, Unsupported, ValueError, PermissionError, FileNotFoundError,
               FileExistsError, IsADirectoryError, NotADirectoryError, FetchError, pickle.UnpicklingError, WriteError)


class Parser(argparse.ArgumentParser):
    """A usage mistake is one line (argparse's default prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless it has none worth showing or the help says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default
        if shown in (None, False, argparse.SUPPRESS, "") or shown == [] or "default" in text \
                or not action.option_strings:
            return text
        if isinstance(shown, list) and all(isinstance(v, int) for v in shown):
            shown = ",".join(map(str, shown))
        return text + f" (default: {shown})"


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return v


def a_path(text: str) -> str:
    """A file or folder argument: an empty one (an unset shell variable) is refused, never taken
    for the current folder or the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path: name a file or folder")
    return text


def once_each(what: str):
    """An integer list (``parse_ints``) that names each value once: a repeated seed or budget would
    run the same job twice and count it twice in the summary."""
    def parse(text: str) -> list[int]:
        values = parse_ints(text, what)
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise argparse.ArgumentTypeError(f"{what} {text!r} names {', '.join(map(str, twice))} more than once: "
                                             f"list each once")
        return values
    return parse


def parse_setting(text: str):
    """``key=value``: the value as JSON (numbers, true/false, lists, quoted strings), else as a
    plain string (``solver=euler``); ``inf`` is infinity."""
    k, eq, v = text.partition("=")
    k = k.strip()
    if not eq or not k:
        raise argparse.ArgumentTypeError(f"malformed setting {text!r}: use key=value, e.g. s_churn=10")
    try:
        return k, json.loads(v)
    except ValueError:
        return k, {"inf": float("inf"), "-inf": float("-inf")}.get(v.strip(), v)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m bench", description=__doc__, formatter_class=Formatter)
    sub = p.add_subparsers(dest="cmd")

    r = sub.add_parser("run", help="run a method on a task", formatter_class=Formatter,
                       description="Run a method on a task for every NFE budget and seed; one result file each. "
                                   "A rerun skips the results already written with the same configuration.")
    r.add_argument("--method", default="edm", help="the method (`python -m bench list` shows them)")
    r.add_argument("--task", default="gmm8", help="the task, optionally versioned as NAME-vN (`python -m bench list`)")
    r.add_argument("--nfe", type=once_each("NFE list"), default=[5, 10, 20, 35],
                   help="NFE budgets (denoiser evaluations per sample): a list, ranges like 5-8 too")
    r.add_argument("--seeds", type=once_each("seed range"), default=[0, 1, 2],
                   help="evaluation seeds: each a fresh set of initial noise")
    r.add_argument("--samples", type=positive_int, default=None, help="samples per run (default: the task's)")
    r.add_argument("--out", type=a_path, default="results", help="the folder result files go to (OUT/TASK/LABEL/...)")
    r.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    r.add_argument("--save-samples", action="store_true", help="keep the samples, an .npz beside each result")
    r.add_argument("--denoiser", default=None, help="which of the task's denoisers (default: its first)")
    r.add_argument("--set", dest="settings", action="append", type=parse_setting, default=[],
                   metavar="KEY=VALUE", help="a method setting, repeatable (the method's docstring lists them)")
    r.add_argument("--label", default=None, help="the name the results go under (default: the method's)")
    r.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples per denoiser batch (default: the task's; the samples do not depend on it)")
    r.add_argument("--checkpoint", type=a_path, default=None,
                   help="image tasks: the network, an EDM .pkl or a converted .safetensors (default: downloaded)")
    r.add_argument("--ref-stats", type=a_path, default=None,
                   help="image tasks: FID reference statistics, an npz with mu, sigma (default: downloaded)")
    r.add_argument("--data", type=a_path, default=None,
                   help="image tasks: the dataset, folder or archive (CIFAR-10 default: downloaded; ImageNet-64: "
                        "needed by methods that tune)")
    r.add_argument("--feature-weights", type=a_path, default=None,
                   help="image tasks: the Inception weights .pth of torch-fidelity (default: downloaded)")
    r.add_argument("--rerun", action="store_true", help="redo results already written with the same configuration")
    r.add_argument("--no-progress", action="store_true", help="no progress bars or per-result lines")
    r.add_argument("--no-ode-error", action="store_true",
                   help="skip ode_error, the deterministic samplers' distance to a 256-step Heun solve from the same "
                        "noise (that reference costs 766 NFE per sample on 1,000 samples, once per seed, cached)")

    ls = sub.add_parser("list", help="every task and method; a method's settings", formatter_class=Formatter)
    ls.add_argument("--method", default=None, help="one method: each setting with its type, default and choices")

    su = sub.add_parser("suite", help="run a suite manifest's missing runs, then rebuild its leaderboards",
                        formatter_class=Formatter,
                        description="Run every run of a TOML manifest not yet done (same configuration, task "
                                    "version, samples and code: kept), then rebuild the leaderboards.")
    su.add_argument("manifest", type=a_path, help="the TOML manifest (the published one: leaderboards/suite.toml)")
    su.add_argument("--shard", default="1/1", help="K/N: run only shard K of N (N machines, one results folder)")
    su.add_argument("--out", type=a_path, default=None,
                    help="results folder (default: leaderboards/results for the published manifest, else results)")
    su.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    su.add_argument("--only", default=None, help="comma-separated tasks: run only their jobs (default: all)")
    su.add_argument("--jobs", type=positive_int, default=1,
                    help="jobs run side by side, each in its own single-threaded process, longest first")
    su.add_argument("--dry-run", action="store_true",
                    help="check the manifest, list this shard's jobs with what a run would do (run, rerun or kept) "
                         "and exit")
    su.add_argument("--no-leaderboard", action="store_true", help="do not rebuild the leaderboards afterwards")

    lb = sub.add_parser("leaderboard", help="build leaderboards from result files", formatter_class=Formatter)
    lb.add_argument("--task", default=None, help="one task only (default: every task with results)")
    lb.add_argument("--results", type=a_path, default=None,
                    help="the folder of result files (default: results; with --published: leaderboards/results)")
    lb.add_argument("--out", type=a_path, default=None,
                    help="where the boards go (default: RESULTS/leaderboards; never the published leaderboards/ "
                         "unless --published)")
    lb.add_argument("--published", action="store_true",
                    help="rebuild the published boards in leaderboards/ from leaderboards/results; with --results, "
                         "boards of your rows beside the published ones (in RESULTS/leaderboards or --out)")
    lb.add_argument("--format", default=None,
                    help="comma-separated subset of md,csv,json,latex,png (default: all of them)")

    cp = sub.add_parser("compare", help="one row against the others of a task, paired over seeds",
                        formatter_class=Formatter,
                        description="LABEL minus each other row at every NFE budget both have: the mean paired "
                                    "difference over common seeds, its 95% paired t-interval and p-value, the 95% "
                                    "percentile bootstrap interval beside it, P(improvement) and the verdict "
                                    "(better or worse only when the t-interval excludes 0; * close: p between 0.01 "
                                    "and 0.10).")
    cp.add_argument("label", help="the row: a method name, or a suite label such as irl-fkl")
    cp.add_argument("--task", required=True, help="the task whose results to compare")
    cp.add_argument("--against", default=None, help="comma-separated labels (default: every other row)")
    cp.add_argument("--nfe", default=None, help="comma-separated NFE budgets (default: all of LABEL's)")
    cp.add_argument("--metric", default=None, help="a metric of the results (default: the task's primary)")
    cp.add_argument("--results", type=a_path, default=None, help="the folder of result files (default: results; with "
                                                     "--published: leaderboards/results)")
    cp.add_argument("--published", action="store_true",
                    help="compare the published results; with --results, LABEL of yours against the published rows "
                         "(same seeds, same initial noise: paired)")
    cp.add_argument("--plot", type=a_path, default=None, metavar="FILE.png",
                    help="also draw the comparisons: per NFE budget each row's paired difference and 95%% t-interval")
    cp.add_argument("--csv", type=a_path, default=None, metavar="FILE.csv",
                    help="also write the comparisons as CSV, every column at full precision")

    td = sub.add_parser("train-denoiser", help="train a task's own denoiser", formatter_class=Formatter)
    td.add_argument("--task", required=True, help="a task with its own denoiser (gmm8, digits, ...)")
    td.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the task's)")
    td.add_argument("--seed", type=int, default=0, help="training seed")
    td.add_argument("--out", type=a_path, default=None, help="weights file (default: the task's shipped weights, with --force)")
    td.add_argument("--force", action="store_true", help="replace an existing weights file")

    tc = sub.add_parser("train-classifier", help="train a task's feature classifier (tasks that have one)",
                        formatter_class=Formatter)
    tc.add_argument("--task", required=True, help="a task with a classifier (digits)")
    tc.add_argument("--seed", type=int, default=0, help="training seed")
    tc.add_argument("--out", type=a_path, default=None, help="weights file (default: the task's shipped classifier, with --force)")
    tc.add_argument("--force", action="store_true", help="replace an existing weights file")

    cv = sub.add_parser("convert", help="convert an EDM checkpoint (.pkl) to .safetensors, without running its code",
                        formatter_class=Formatter)
    cv.add_argument("checkpoint", type=a_path, help="an EDM .pkl (e.g. edm-cifar10-32x32-cond-vp.pkl)")
    cv.add_argument("out", type=a_path, help="the .safetensors file to write")
    cv.add_argument("--key", default="ema", help="the checkpoint entry holding the network")
    cv.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return p


def _show_warning(message, *args, **kwargs):
    print(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def _every_warning():
    """Every warning shown, each time, as one ``warning:`` line (a report's repeated warnings name
    different files)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        yield


def main(argv=None):
    p = parser()
    a = p.parse_args(argv)
    warnings.showwarning = _show_warning
    from bench.errors import Interrupted
    try:
        return _dispatch(a, p)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0


def _dispatch(a, p):
    from bench import registry
    if a.cmd is None:
        a = p.parse_args(["run"])
    if a.cmd == "list" and a.method:
        print(method_settings(a.method))
        return 0
    if a.cmd == "list":
        for kind, lookup in (("tasks", registry.tasks), ("methods", registry.methods)):
            known = registry.index(kind)
            if known is None or None in known.values():  # third-party entries or computed descriptions
                known = {name: cls.description for name, cls in lookup().items()}
            print(f"{kind}:")
            for name, text in sorted(known.items()):
                print(f"  {name:<16} {text}")
        return 0
    if a.cmd == "run":
        registry.check_name("method", a.method)
        registry.check_name("task", a.task)
        return _run(a)
    if a.cmd == "suite":
        return _suite(a)
    if a.cmd == "leaderboard":
        from bench.report.leaderboard import build
        with _every_warning():
            written = build(a.results, a.out, task=a.task, formats=a.format, published=a.published)
        for path in written:
            print(path)
        return 0
    if a.cmd == "compare":
        return _compare(a)
    if a.cmd == "train-denoiser":
        from bench.engine.runner import get_task, live_bars
        from bench.nets.toynet import save_denoiser
        from bench.nets.train import train_denoiser
        task = get_task(a.task)

        def trains(t) -> bool:  # a task (or task class) that declares its own network and where it lives
            return hasattr(t, "build_denoiser") and hasattr(t, "weights_path")
        if not trains(task):
            raise Unsupported(f"task {task.name} has no denoiser of its own to train (it samples a pretrained "
                              f"network); tasks with one: "
                              + ", ".join(n for n, c in registry.tasks().items() if trains(c)))
        out = a.out or task.weights_path()
        _check_weights_out(out, a.force, shipped=a.out is None)
        log = {}
        net = train_denoiser(task, steps=a.steps, seed=a.seed, log=log, progress=live_bars(True))
        save_denoiser(net, out, dict(task=task.id, steps=str(log["steps"]), seed=str(a.seed),
                                     train_config=json.dumps({k: v for k, v in log.items() if k != "final_loss"}),
                                     final_loss=f"{log['final_loss']:.6g}"))
        print(f"wrote {out} (final loss {log['final_loss']:.4f})")
        return 0
    if a.cmd == "train-classifier":
        from bench.engine.runner import get_task, live_bars
        task = get_task(a.task)
        if not hasattr(task, "train_classifier"):
            raise Unsupported(f"task {task.name} has no classifier to train")
        if a.out is None and not a.force:
            raise FileExistsError(f"train-classifier writes over task {task.name}'s shipped classifier, which every "
                                  f"published result of it was scored with: pass --out PATH for one of your own, or "
                                  f"--force to replace it")
        if a.out is not None:
            _check_weights_out(a.out, a.force)
        info = task.train_classifier(out=a.out, seed=a.seed, progress=live_bars(True))
        print(f"wrote {info['path']} (accuracy {json.dumps(info['accuracy'])})")
        return 0
    if a.cmd == "convert":
        from bench.engine.io import inside
        from bench.engine.results import PUBLISHED
        if inside(a.out, PUBLISHED):
            raise ValueError(f"{a.out} is inside the published leaderboards ({PUBLISHED}), which only the suite "
                             f"writes; convert to another file")
        from bench.nets.edm.checkpoint import convert_checkpoint
        convert_checkpoint(a.checkpoint, a.out, key=a.key, force=a.force)
        print(f"wrote {a.out}")
        return 0
    return 2


def _check_weights_out(out, force: bool, shipped: bool = False):
    """Before a training starts, the file it will write: a file (not a folder or a device) in a
    writable folder, replaced only with ``force`` (the shipped weights made every published result)."""
    from bench.engine.io import inside
    from bench.engine.results import PUBLISHED
    p = Path(out).expanduser()
    if inside(p, PUBLISHED):
        raise ValueError(f"--out {out} is inside the published leaderboards ({PUBLISHED}), which only the suite "
                         f"writes; choose another --out")
    if p.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; name the .safetensors file to write")
    if p.exists() and not p.is_file():
        raise ValueError(f"--out {out} is not a regular file (a device, pipe or socket); name a .safetensors file")
    if p.exists() and not force:
        if shipped:
            raise FileExistsError(f"{p} holds the task's shipped weights, which made every published result of it: "
                                  f"pass --out PATH for weights of your own, or --force to replace them")
        raise FileExistsError(f"--out {p} exists; pass --force to replace it, or name another file")
    check_writable(p.parent, "the folder of --out", "choose another --out")


def method_settings(name: str) -> str:
    """A method's settings as a table: name, type, default, allowed values, and the tasks whose
    presets set it otherwise (``--set key=value`` changes one)."""
    from tabulate import tabulate

    from bench.method import _kind
    from bench.registry import method_class
    cls = method_class(name)
    rows = []
    for key, default in cls.defaults.items():
        kind = " or ".join(_kind(t()) for t in cls.types[key]) if key in cls.types else _kind(default)
        allowed = ", ".join(json.dumps(c) for c in cls.choices[key]) if key in cls.choices else ""
        presets = ", ".join(f"{task}: {json.dumps(p[key])}" for task, p in sorted(cls.presets.items()) if key in p)
        rows.append([key, kind, json.dumps(default), allowed, presets])
    fits = "fits on the tuning split" if cls().has_fit else "no fit"
    head = f"{cls.name}: {cls.description}\n(family: {cls.family}; {fits}; change a setting with `--set key=value`)\n"
    if not rows:
        return head + "no settings"
    return head + tabulate(rows, headers=["setting", "type", "default", "allowed", "task presets"], tablefmt="simple",
                           disable_numparse=True)


def _suite(a) -> int:
    from pathlib import Path

    from bench.engine import suite
    from bench.engine.results import PUBLISHED, PUBLISHED_RESULTS
    from bench.engine.runner import check_device
    from bench.registry import suggest
    from bench.report.leaderboard import build
    k, _, n = a.shard.partition("/")
    if not (k.isascii() and n.isascii() and k.isdigit() and n.isdigit()) or int(n) < 1:  # '²' is a digit
        raise ValueError(f"--shard {a.shard}: use K/N, e.g. 2/8")
    check_device(a.device)
    cores = _cores()
    if a.jobs > cores:
        raise ValueError(f"--jobs {a.jobs}: this process may run on {cores} CPU core{'s' * (cores != 1)} and each "
                         f"job takes one; use --jobs {cores} or fewer (more processes only compete for the cores, "
                         f"each holding its own copy of the network)")
    everything = suite.load(a.manifest)  # the whole manifest checked before any job
    jobs = suite.shard(everything, int(k), int(n))
    if a.only is not None:
        tasks = {x.strip() for x in a.only.split(",") if x.strip()}
        if not tasks:  # an empty shell variable must not mean "every task"
            raise ValueError(f"--only {a.only!r} names no task: list some, e.g. --only gmm8,digits, or drop --only "
                             f"for all of them")
        unknown = sorted(tasks - {j.task for j in everything})
        if unknown:
            raise ValueError(f"--only {','.join(unknown)}: not a task of {a.manifest}"
                             + suggest(unknown[0], sorted({j.task for j in everything})))
        jobs = [j for j in jobs if j.task in tasks]
    published = Path(a.manifest).resolve() == (PUBLISHED / "suite.toml").resolve()
    out = Path(a.out) if a.out else (PUBLISHED_RESULTS if published else Path("results"))
    if not jobs:
        print(f"suite {a.manifest} shard {a.shard}{' --only ' + a.only if a.only else ''}: no jobs (nothing to do)")
        return 0
    if a.dry_run:
        from bench.engine.runner import duration
        planned = suite.plan(jobs, out)
        seconds = 0.0
        for j, state in planned:
            est = suite.estimate_seconds(j, out) if state != "kept" else 0.0
            seconds += est
            print(f"{state:<5} {_job_name(j)}" + (f"  ~{duration(est)}" if est else ""))
        tally = {s: sum(st == s for _, st in planned) for s in ("run", "rerun", "kept")}
        print(f"{len(jobs)} jobs: {tally['run']} to run, {tally['rerun']} to rerun (older code or failed), "
              f"{tally['kept']} kept" + (f"; about {duration(seconds)} of one core, {duration(seconds / a.jobs)} with "
                                         f"--jobs {a.jobs} (from the last recorded timings)" if seconds else ""))
        return 0
    counts = suite.run_suite(jobs, out, device=a.device, workers=a.jobs,
                             published=published and out.resolve() == PUBLISHED_RESULTS.resolve())
    print(f"suite {a.manifest} shard {a.shard}: {counts['jobs']} jobs, {counts['run']} run, {counts['kept']} kept, "
          f"{counts['failed']} failed (git {counts['git_sha']})")
    if not a.no_leaderboard:
        with _every_warning():
            if published and out.resolve() == PUBLISHED_RESULTS.resolve():
                written = build(published=True)
            else:
                written = build(out)
        print(f"leaderboards rebuilt: {len(written)} files under {written[0].parent if written else out}")
    return 1 if counts["failed"] else 0


def _cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a Slurm or cgroup allocation, not
    the whole node), where the platform says; else the machine's count."""
    import os
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _job_name(j) -> str:
    """``irl-js on gmm8 nfe=10 seed=2 (solver=euler)``: a suite job as a researcher names it."""
    extra = [f"denoiser={j.denoiser}"] if j.denoiser else []
    extra += [f"samples={j.samples}"] if j.samples else []
    extra += [f"{k}={v}" for k, v in j.settings]
    return (f"{j.label or j.method} on {j.task} nfe={j.nfe} seed={j.seed}"
            + (f" ({', '.join(extra)})" if extra else ""))


def _run(a) -> int:
    from bench.engine.runner import run
    options = dict(checkpoint=a.checkpoint, ref_stats=a.ref_stats, data=a.data, feature_extractor_weights=a.feature_weights)
    results = run(a.method, a.task, nfe=a.nfe, seeds=a.seeds, samples=a.samples, out=a.out, device=a.device,
                  save_samples=a.save_samples, denoiser=a.denoiser, config=dict(a.settings), label=a.label,
                  batch_size=a.batch_size, progress=not a.no_progress, resume=not a.rerun,
                  task_options={k: v for k, v in options.items() if v is not None}, ode_error=not a.no_ode_error)
    if not results:  # a torchrun rank other than 0
        return 0
    failed = [r for r in results if r["status"] != "ok"]
    for r in failed:
        print(f"FAILED nfe={r['nfe_budget']} seed={r['seed']}: {r['error']}", file=sys.stderr)
    print(summary(results))
    return 1 if failed else 0


def summary(results: list[dict]) -> str:
    """The primary metric per NFE budget (mean over the seeds that succeeded), and where the files are."""
    from pathlib import Path

    from bench.engine.results import PUBLISHED_RESULTS
    from bench.registry import task_class
    first = results[0]
    task = task_class(first["task"])
    metric = task.primary_metric
    better = "higher" if task.higher_is_better.get(metric, False) else "lower"
    from bench.report.board import mean_ci
    lines = [f"{first['label']} on {first['task']}: {metric} ({better} is better), mean ± the half-width of the "
             f"95% t-interval over seeds; NFE measured = denoiser evaluations per sample; fit = one fit's "
             f"evaluations (mean)"]
    rows = [("NFE budget", metric, "seeds", "NFE measured", "fit", "flags")]
    for b in sorted({r["nfe_budget"] for r in results}):
        ok = [r for r in results if r["nfe_budget"] == b and r["status"] == "ok"]
        n = len([r for r in results if r["nfe_budget"] == b])
        if ok:
            mean, ci = mean_ci([r["metrics"][metric] for r in ok])
            nfe = sum(r["nfe"] for r in ok) / len(ok)
            fits = [(r.get("fit_cost") or {}).get("artifact", r.get("fit_cost") or {}).get("nfe") or 0 for r in ok]
            same = sum(bool((r.get("untrained") or {}).get("identical")) for r in ok)
            rows.append((str(b), f"{mean:.4g}" + ("" if ci != ci else f" ± {ci:.2g}"), f"{len(ok)}/{n}", f"{nfe:g}",
                         f"{sum(fits) / len(fits):.3g} NFE" if any(fits) else "-",
                         f"= untrained start in {same} of {len(ok)} seeds" if same else ""))
        else:
            rows.append((str(b), "failed", f"0/{n}", "-", "-", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    folder = Path(first["path"]).parent
    kept = sum(bool(r.get("kept")) for r in results)
    failed = sum(r["status"] != "ok" for r in results)
    lines.append(f"{len(results) - kept} results written under {folder}/" + (f", {kept} kept from an earlier run"
                                                                             if kept else "")
                 + (f", {failed} failed" if failed else ""))
    lines.append(f"compare methods: python -m bench leaderboard --results {folder.parent.parent}")
    if ((PUBLISHED_RESULTS / first["task"]).is_dir() and first.get("n_samples") == task.default_samples
            and folder.parent.parent.resolve() != PUBLISHED_RESULTS.resolve()):  # pairs with the published rows
        lines.append(f"against the published rows: python -m bench compare {first['label']} --task {first['task']} "
                     f"--results {folder.parent.parent} --published")
    return "\n".join(lines)


def _output_file(path: str, flag: str, suffix: str) -> Path:
    """Where ``compare --plot`` or ``--csv`` writes, checked before any work: a ``suffix`` file in a
    writable folder (made if missing), never a folder or inside the published boards."""
    from bench.engine.results import PUBLISHED
    from bench.engine.io import inside
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{flag} {path} is a folder; name a {suffix} file in it")
    if out.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path}: name a {suffix} file, e.g. {flag} compare{suffix}")
    if inside(out, PUBLISHED):
        raise ValueError(f"{flag} {path} is inside the published leaderboards; write it elsewhere")
    check_writable(out.parent, f"the folder of {flag}", f"choose another {flag}")
    return out


def _compare(a):
    from bench.engine.io import atomic_write_bytes
    from bench.report import paired
    from bench.report.leaderboard import comparisons
    plot = _output_file(a.plot, "--plot", ".png") if a.plot else None
    csv = _output_file(a.csv, "--csv", ".csv") if a.csv else None
    nfe = parse_ints(a.nfe, "--nfe") if a.nfe else None
    against = [x.strip() for x in a.against.split(",") if x.strip()] if a.against else None
    with _every_warning():
        table, metric, higher = comparisons(a.label, a.task, a.results, against=against, nfe=nfe, metric=a.metric,
                                            published=a.published)
    print(f"{a.task}: {a.label} - other, paired over seeds, {metric} ({'higher' if higher else 'lower'} is better); "
          f"verdict by the paired t-interval, * = close (p between 0.01 and 0.10)")
    if a.published and a.results is not None:
        print(f"{a.label} and every other row with results under {a.results} from there; the rest published "
              f"(leaderboards/results)")
    budgets = f" at NFE {a.nfe}" if a.nfe else ""
    print(paired.markdown(table, metric, reference="other",
                          empty=f"No other row of {a.task} has results{budgets} at a budget {a.label} has: nothing to "
                                f"pair with."))
    if csv is not None:
        atomic_write_bytes(csv, table.to_csv(index=False, lineterminator="\n").encode())
        print(f"csv: {csv}")
    if plot is not None and table.empty:
        print(f"no plot written to {plot}: nothing to pair")
    elif plot is not None:
        from bench.report.figures import compare_png
        atomic_write_bytes(plot, compare_png(table, metric, a.label, higher))
        print(f"plot: {plot}")
    return 0

