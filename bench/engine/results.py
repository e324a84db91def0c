"""Result files: one JSON per (task, method label, NFE budget, seed).

Written atomically. A failed run never replaces a successful result of the same
key: it goes to ``<name>.failed.json`` beside it, so no earlier number is lost.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
import re
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

from bench.engine.io import NotARegularFile, atomic_write_json, read_regular
from bench.registry import SUITE_PACKAGES, suite_folder

SCHEMA = 1
REQUIRED = ("method", "task", "nfe_budget", "seed", "status", "metrics", "nfe")
# the published boards and their results: written by `python -m bench suite leaderboards/suite.toml` only
PUBLISHED = Path(__file__).resolve().parents[2] / "leaderboards"
PUBLISHED_RESULTS = PUBLISHED / "results"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,99}")
_NUMBER_STRINGS = {"inf", "-inf", "nan"}  # how a result file writes the floats JSON lacks


def check_label(label) -> str:
    """A label names a row and its folder: letters, digits and ``. _ @ + = -``, starting with a letter
    or digit, at most 100 characters; never a path (no separator, no ``..``, not absolute)."""
    if not isinstance(label, str) or not _NAME.fullmatch(label) or ".." in label:
        raise ValueError(f"label {label!r} is not a name: use letters, digits and . _ @ + = - (no '/', no '..', "
                         f"at most 100 characters), e.g. --label irl-fkl")
    if label.lower().endswith((".json", ".npz")):
        raise ValueError(f"label {label!r} ends like a result file; name the row, e.g. --label "
                         f"{label.rsplit('.', 1)[0]}")
    return label


def is_number(v) -> bool:
    """A metric value as a result file holds it: an int or float, or "inf"/"-inf"/"nan"."""
    if isinstance(v, bool):
        return False
    return isinstance(v, (int, float)) or (isinstance(v, str) and v in _NUMBER_STRINGS)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def problem(r) -> str | None:
    """Why ``r`` (a parsed result file) cannot be used as a result, or None: every reader checks
    this, so a tampered or truncated file is named, never half-read."""
    if not isinstance(r, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in r]
    if missing:
        return f"not a result file of this schema (needs {', '.join(REQUIRED)}; missing {', '.join(missing)})"
    for k in ("method", "task"):
        if not isinstance(r[k], str) or not r[k]:
            return f"{k} {r[k]!r} is not a name"
    if "label" in r and r["label"] is not None:
        try:
            check_label(r["label"])
        except ValueError:
            return f"label {r['label']!r} is not a name"
    for k in ("nfe_budget", "seed"):
        if not _integer(r[k]) or r[k] < 0:
            return f"{k} {r[k]!r} is not a non-negative integer"
    if r["status"] not in ("ok", "failed"):
        return f"status {r['status']!r} is neither ok nor failed"
    if not isinstance(r["metrics"], dict):
        return "metrics is not a mapping"
    bad = [str(k) for k, v in r["metrics"].items() if not is_number(v)]
    if bad:
        return f"metric(s) {', '.join(bad)} not numbers"
    if r["status"] == "ok":
        if not is_number(r["nfe"]) or not math.isfinite(float(r["nfe"])) or float(r["nfe"]) < 0:
            return f"nfe {r['nfe']!r} is not a finite non-negative number"
        if "n_samples" in r and (not _integer(r["n_samples"]) or r["n_samples"] < 1):
            return f"n_samples {r['n_samples']!r} is not a positive integer"
    return None


def nan_metrics(r: dict) -> list[str]:
    """The metrics of a successful result that are NaN (the runner never writes one: a file that
    holds one was edited, or written by an older version)."""
    if r.get("status") != "ok":
        return []
    return [str(k) for k, v in r["metrics"].items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
            and math.isnan(float(v))]


def read_result(path) -> tuple[dict | None, str | None]:
    """``(result, None)`` for a usable result file, ``(None, why)`` otherwise (unreadable, not
    JSON, or failing ``problem``)."""
    try:
        r = json.loads(read_regular(path))
    except NotARegularFile as e:
        return None, str(e).replace(f"{path} is ", "")
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    except RecursionError:
        return None, "not a result (nested too deeply)"
    except ValueError as e:
        return None, f"not valid JSON ({e})"
    why = problem(r)
    return (None, why) if why else (r, None)


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
    """sha256 (16 hex digits) of the code that makes a result (``code_text``: comments and docstrings
    left out): the harness (every source file of
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
        h.update(code_text(p.read_text()).encode() if p.suffix == ".py" else p.read_bytes())
    return h.hexdigest()[:16]


def code_text(source: str) -> str:
    """A module's code without what cannot change a result: its comments, docstrings, blank lines
    and trailing spaces (so documentation edits leave every result current). Cut from the source
    text at the positions ``ast`` and ``tokenize`` give, never re-rendered: the same on any Python."""
    import ast
    import io
    import tokenize
    lines = source.splitlines()
    gone: set[int] = set()  # 0-based lines of docstrings that stand on lines of their own
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if not (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            continue
        doc = body[0]
        first, last = doc.lineno - 1, doc.end_lineno - 1
        alone = not lines[first][:doc.col_offset].strip() and (len(body) == 1 or body[1].lineno - 1 > last) \
            and not lines[last][doc.end_col_offset:].split("#")[0].strip()
        if alone:
            gone.update(range(first, last + 1))
    cut = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            cut[tok.start[0] - 1] = tok.start[1]
    kept = []
    for i, line in enumerate(lines):
        if i in gone:
            continue
        line = line[:cut[i]] if i in cut else line
        if line.strip():
            kept.append(line.rstrip())
    return "\n".join(kept)


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


# packages whose arithmetic reaches a result's numbers (sampling, metrics)
NUMERIC_PACKAGES = dict(numpy="numpy", scipy="scipy", sklearn="scikit-learn", pot="POT")


def versions() -> dict:
    """Everything that decides a result's last bits besides the code: the packages that compute it
    and the CPU's vector instruction set (a float32 network rounds differently on AVX2 and AVX512)."""
    import torch
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return "unknown"
    return dict(bench=ver("sampler-bench"), python=platform.python_version(), torch=torch.__version__,
                platform=sys.platform, cpu=torch.backends.cpu.get_cpu_capability(),
                **{k: ver(d) for k, d in NUMERIC_PACKAGES.items()})


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def load_results(dirs) -> list[dict]:
    """Every result under ``dirs``; unreadable, truncated, tampered (``problem``) or newer-schema
    files are skipped with a warning naming them, never silently; a NaN metric of a successful
    result is warned about (naming the file) and read as missing."""
    out = []
    for d in [dirs] if isinstance(dirs, (str, Path)) else dirs:
        for p in sorted(Path(d).rglob("*.json")):
            r, why = read_result(p)
            if r is None:
                warnings.warn(f"skipping {p}: {why}", stacklevel=2)
                continue
            if isinstance(r.get("schema", 0), int) and r.get("schema", 0) > SCHEMA:
                warnings.warn(f"skipping {p}: written by a newer version (schema {r.get('schema')})", stacklevel=2)
                continue
            nan = nan_metrics(r)
            if nan:
                warnings.warn(f"{p}: metric(s) {', '.join(nan)} are NaN in a successful result (edited, or written "
                              f"by an older version): read as missing", stacklevel=2)
                r["metrics"] = {k: v for k, v in r["metrics"].items() if k not in nan}
            r["_path"] = str(p)
            out.append(r)
    return out
