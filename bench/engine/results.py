"""Result files: one JSON per (task, method label, NFE budget, seed).

Written atomically. A failed run never replaces a successful result of the same
key: it goes to ``<name>.failed.json`` beside it, so no earlier number is lost.
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

from bench.engine.io import atomic_write_json
from bench.registry import SUITE_PACKAGES, suite_folder

SCHEMA = 1
REQUIRED = ("method", "task", "nfe_budget", "seed", "status", "metrics", "nfe")


def config_hash(config) -> str:
    """Six hex digits naming a method configuration (or the settings that differ from it)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:6]


def result_path(out, task: str, label: str, nfe_budget: int, seed: int) -> Path:
    return Path(out) / task / label / f"nfe{nfe_budget}_seed{seed}.json"


def write_result(path: Path, result: dict) -> Path:
    path = Path(path)
    if result["status"] != "ok" and path.exists():
        try:
            ok_before = json.loads(path.read_text()).get("status") == "ok"
        except (OSError, ValueError):
            ok_before = False
        if ok_before:
            path = path.with_name(path.stem + ".failed.json")
    atomic_write_json(path, result)
    if result["status"] == "ok":
        failed = path.with_name(path.stem + ".failed.json")
        if failed.exists():
            failed.unlink()
    return path


def _suite_imports(path: Path, package: str) -> set[str]:
    """The modules of the suite's own packages (``bench.tasks``, ``bench.methods``) that the file
    at ``path`` (a module of ``package``) imports, at the top or inside functions."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith(("bench.tasks.", "bench.methods."))}
    return found


@functools.lru_cache(maxsize=None)
def code_version(*modules: str) -> str:
    """sha256 (16 hex digits) of the code that makes a result: the harness (every source file of
    bench but the reports and the command line, which only read results), the shipped weights'
    manifest, and the files of ``modules`` (the run's task and method modules) with every module
    of the suite's tasks and methods they import, transitively. A result is redone only when
    this changed: editing one method does not redo the others' results."""
    import importlib
    package = Path(__file__).resolve().parents[1]
    readers = {package / "report", package / "cli.py", package / "__main__.py"}
    suite = {suite_folder(name) for name in SUITE_PACKAGES}
    files = [p for p in package.rglob("*.py") if p not in readers and not any(r in p.parents for r in readers)
             and not any(f in p.parents for f in suite)]  # a wheel's tasks and methods: by import below
    for folder in suite:
        files += list(folder.rglob("manifest.json"))
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        try:
            path = getattr(importlib.import_module(module), "__file__", None)
        except ImportError:  # "from bench.methods._common import X" names X too: not a module
            continue
        if path:
            files.append(Path(path).resolve())
            if module.startswith(("bench.tasks", "bench.methods")):
                todo += sorted(_suite_imports(Path(path), module.rpartition(".")[0]))
    h = hashlib.sha256()
    for p in sorted(set(files)):
        if "__pycache__" in p.parts:
            continue
        h.update(f"{p.parent.name}/{p.name}\0".encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def git_sha() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        sha = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def versions() -> dict:
    import numpy
    import torch
    from importlib.metadata import PackageNotFoundError, version
    try:
        own = version("sampler-bench")
    except PackageNotFoundError:
        own = "unknown"
    return dict(bench=own, python=platform.python_version(), torch=torch.__version__, numpy=numpy.__version__,
                platform=sys.platform)


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def load_results(dirs) -> list[dict]:
    """Every result under ``dirs``; unreadable, truncated or old-schema files are
    skipped with a warning naming them, never silently."""
    out = []
    for d in [dirs] if isinstance(dirs, (str, Path)) else dirs:
        for p in sorted(Path(d).rglob("*.json")):
            try:
                r = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                warnings.warn(f"skipping unreadable result file {p}: {e}", stacklevel=2)
                continue
            if not isinstance(r, dict) or any(k not in r for k in REQUIRED):
                warnings.warn(f"skipping {p}: not a result file of this schema (needs {', '.join(REQUIRED)})",
                              stacklevel=2)
                continue
            if r.get("schema", 0) > SCHEMA:
                warnings.warn(f"skipping {p}: written by a newer version (schema {r.get('schema')})", stacklevel=2)
                continue
            r["_path"] = str(p)
            out.append(r)
    return out
