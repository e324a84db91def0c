"""How fast the command line answers what needs no computation (issue 38): ``--help``, ``list`` and
a mistyped name. Target: under 1 s each (before harness v4: 2-10 s, torch imported first).

Run with ``python -m pytest -m perf tests/benchmarks/test_cli_startup.py``.
"""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.perf


@pytest.mark.parametrize("args", [["--help"], ["list"], ["run", "--method", "irll"]])
def test_cli_answers_without_computing(benchmark, args):
    run = benchmark.pedantic(subprocess.run, args=([sys.executable, "-m", "bench", *args],),
                             kwargs=dict(capture_output=True), rounds=5, iterations=1)
    assert run.returncode in (0, 2)
    assert benchmark.stats.stats.median < 1.0
