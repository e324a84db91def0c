"""Command line: ``python -m bench {run,list,leaderboard,train-denoiser,train-classifier,convert}``."""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import warnings

from bench.fetch import FetchError
from bench.method import BudgetError
from bench.registry import UnknownNameError
from bench.task import Unsupported


def parse_ints(text: str, what: str) -> list[int]:
    """``"0-2"`` -> [0, 1, 2]; ``"5,10,20"`` -> [5, 10, 20]; mixtures of both."""
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"malformed {what} {text!r}: use integers, commas and ascending ranges, e.g. 0-2 or 5,10,20") from None
    if any(v < 0 for v in out) or not out:
        raise argparse.ArgumentTypeError(f"malformed {what} {text!r}: values must be non-negative integers")
    return out


def parse_setting(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"malformed setting {text!r}: use key=value, e.g. s_churn=10")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except ValueError:
        return k, {"inf": float("inf")}.get(v, v)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="cmd")

    r = sub.add_parser("run", help="run a method on a task")
    r.add_argument("--method", default="edm")
    r.add_argument("--task", default="gmm8")
    r.add_argument("--nfe", type=lambda s: parse_ints(s, "NFE list"), default=[5, 10, 20, 35])
    r.add_argument("--seeds", type=lambda s: parse_ints(s, "seed range"), default=[0, 1, 2])
    r.add_argument("--samples", type=int, default=None, help="samples per run (default: the task's)")
    r.add_argument("--out", default="results")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    r.add_argument("--save-samples", action="store_true")
    r.add_argument("--denoiser", default=None, help="which of the task's denoisers (default: its first)")
    r.add_argument("--set", dest="settings", action="append", type=parse_setting, default=[],
                   metavar="KEY=VALUE", help="a method setting (repeatable)")
    r.add_argument("--label", default=None, help="the name the results go under (default: the method)")
    r.add_argument("--batch-size", type=int, default=10_000)
    r.add_argument("--checkpoint", default=None, help="the task's network: an EDM .pkl or a converted .safetensors")
    r.add_argument("--ref-stats", default=None, help="reference statistics npz (mu, sigma) for FID")
    r.add_argument("--data", default=None, help="the task's dataset (folder, archive or zip)")
    r.add_argument("--no-progress", action="store_true")

    sub.add_parser("list", help="every task and method")

    lb = sub.add_parser("leaderboard", help="rebuild leaderboards from result files")
    lb.add_argument("--task", default=None)
    lb.add_argument("--results", default="results")
    lb.add_argument("--out", default="leaderboards")
    lb.add_argument("--format", default=None,
                    help="comma-separated subset of md,csv,json,latex,png (default: all of them)")

    td = sub.add_parser("train-denoiser", help="train a task's own denoiser")
    td.add_argument("--task", required=True)
    td.add_argument("--steps", type=int, default=None, help="training steps (default: the task's, else 20000)")
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("--out", default=None, help="weights file (default: where the task loads it)")

    tc = sub.add_parser("train-classifier", help="train a task's feature classifier (tasks that have one)")
    tc.add_argument("--task", required=True)
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--out", default=None, help="weights file (default: where the task loads it)")

    cv = sub.add_parser("convert", help="convert an EDM checkpoint (.pkl) to .safetensors, without running its code")
    cv.add_argument("checkpoint", help="an EDM .pkl (e.g. edm-cifar10-32x32-cond-vp.pkl)")
    cv.add_argument("out", help="the .safetensors file to write")
    cv.add_argument("--key", default="ema", help="the checkpoint entry holding the network (default: ema)")

    a = p.parse_args(argv)
    try:
        return _dispatch(a, p)
    except (UnknownNameError, BudgetError, Unsupported, ValueError, PermissionError, FileNotFoundError, FetchError,
            pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(a, p):
    from bench import registry
    if a.cmd is None:
        a = p.parse_args(["run"])
    if a.cmd == "list":
        for kind, table in (("tasks", registry.tasks()), ("methods", registry.methods())):
            print(f"{kind}:")
            for name, cls in table.items():
                print(f"  {name:<16} {cls.description}")
        return 0
    if a.cmd == "run":
        from bench.runner import run
        if a.samples is not None and a.samples < 2:
            raise ValueError(f"--samples must be at least 2, got {a.samples}")
        results = run(a.method, a.task, nfe=a.nfe, seeds=a.seeds, samples=a.samples, out=a.out, device=a.device,
                      save_samples=a.save_samples, denoiser=a.denoiser, config=dict(a.settings), label=a.label,
                      batch_size=a.batch_size, progress=not a.no_progress,
                      task_options=dict(checkpoint=a.checkpoint, ref_stats=a.ref_stats, data=a.data))
        failed = [r for r in results if r["status"] != "ok"]
        for r in failed:
            print(f"FAILED nfe={r['nfe_budget']} seed={r['seed']}: {r['error']}", file=sys.stderr)
        if results and "path" in results[0]:
            print(f"{len(results) - len(failed)} results written under {a.out}/"
                  + (f", {len(failed)} failed" if failed else ""))
        return 1 if failed else 0
    if a.cmd == "leaderboard":
        from bench.leaderboard import build
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda msg, *args, **kw: print(f"warning: {msg}", file=sys.stderr)
            written = build(a.results, a.out, task=a.task, formats=a.format)
        for path in written:
            print(path)
        return 0
    if a.cmd == "train-denoiser":
        from bench.runner import get_task
        from bench.toynet import save_denoiser
        from bench.train import train_denoiser
        task = get_task(a.task)
        log = {}
        net = train_denoiser(task, steps=a.steps, seed=a.seed, log=log)
        out = a.out or task.weights_path()
        save_denoiser(net, out, dict(task=task.id, steps=str(log["steps"]), seed=str(a.seed),
                                     train_config=json.dumps({k: v for k, v in log.items() if k != "final_loss"}),
                                     final_loss=f"{log['final_loss']:.6g}"))
        print(f"wrote {out} (final loss {log['final_loss']:.4f})")
        return 0
    if a.cmd == "train-classifier":
        from bench.runner import get_task
        task = get_task(a.task)
        if not hasattr(task, "train_classifier"):
            raise Unsupported(f"task {task.name} has no classifier to train")
        info = task.train_classifier(out=a.out, seed=a.seed)
        print(f"wrote {info['path']} (accuracy {json.dumps(info['accuracy'])})")
        return 0
    if a.cmd == "convert":
        from bench.edm.checkpoint import convert_checkpoint
        convert_checkpoint(a.checkpoint, a.out, key=a.key)
        print(f"wrote {a.out}")
        return 0
    return 2
