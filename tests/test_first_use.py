"""First use and bad input: nothing in the working directory shadows the suite, nothing
published is overwritten, nothing corrupt is trusted, every mistake gets one line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_cli(*args, cwd=None, env=None, timeout=600):
    """``python -m bench ARGS`` in a fresh process; (returncode, stdout, stderr)."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd or ROOT, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("files", [{"tasks.py": "raise SystemExit('the user tasks.py was imported')",
                                    "methods/__init__.py": "raise SystemExit('the user methods/ was imported')"},
                                   {"methods.py": "raise SystemExit('the user methods.py was imported')",
                                    "tasks/__init__.py": ""}],
                         ids=["tasks.py+methods/", "methods.py+tasks/"])
def test_a_users_tasks_or_methods_module_changes_nothing(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    rc, out, err = bench_cli("list", cwd=tmp_path, env=dict(PYTHONPATH=str(tmp_path)))
    assert rc == 0, err
    assert out == bench_cli("list")[1]
    assert "edm" in out and "gmm8" in out


def test_the_wheel_lists_every_package():
    """A wheel installs the folders tasks/ and methods/ inside bench; every package must be listed."""
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bench").rglob("__init__.py")}
    found |= {f"bench.{p.parent.name}" for p in ROOT.glob("*/__init__.py") if p.parent.name in ("tasks", "methods")}
    assert set(cfg["packages"]) == found
    assert cfg["package-dir"] == {"bench.tasks": "tasks", "bench.methods": "methods"}
