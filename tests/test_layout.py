"""The package's architecture, checked: no import cycle, and the contracts a contributor reads
(registry, task, method, denoiser, sampling, noise) import nothing from the subpackages."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = {"bench.registry", "bench.task", "bench.method", "bench.denoiser", "bench.sampling", "bench.noise"}
SUBPACKAGES = ("bench.engine", "bench.nets", "bench.data", "bench.metrics", "bench.report")


def modules() -> dict[str, Path]:
    """Module name -> file, for bench and the suite's tasks/ and methods/ (bench.tasks, bench.methods)."""
    out = {}
    for base, pkg in ((ROOT / "bench", "bench"), (ROOT / "tasks", "bench.tasks"), (ROOT / "methods", "bench.methods")):
        for f in base.rglob("*.py"):
            parts = list(f.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = f
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The suite's modules ``name`` imports, at the top or inside functions."""
    is_pkg = path.name == "__init__.py"
    here = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import bench.x.y as z` depends on bench.x.y
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_the_walker_sees_imports():
    g = graph()
    assert "bench.sampling" in g["bench.method"]
    assert "bench.methods._common" in g["bench.methods.irl"]  # a relative import
    assert "bench.engine.runner" in g["bench"]


def test_no_import_cycle():
    g = graph()
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"
    for m in sorted(g):
        if m not in state:
            visit(m)


def test_contracts_import_no_subpackage():
    g = graph()
    assert CONTRACTS <= set(g)
    for c in sorted(CONTRACTS):
        bad = sorted(d for d in g[c] if d.startswith(SUBPACKAGES) or d in ("bench", "bench.tasks", "bench.methods")
                     or d.startswith(("bench.tasks.", "bench.methods.")))
        assert not bad, f"{c} imports {bad}: a contract depends on the contracts only"


def test_only_the_entry_points_run_the_engine():
    g = graph()
    users = sorted(m for m in g if "bench.engine.runner" in g[m] or "bench" in g[m])
    assert users == ["bench", "bench.cli", "bench.engine.suite"], users  # reports, tasks, methods, nets never run it


def test_the_readme_sampler_example_runs_on_public_names(tmp_path):
    """The README's Euler-ancestral plugin: public names only, its NFE exact, eta 0 is Euler."""
    import re

    import torch

    import bench
    from bench import registry, sampling
    text = (ROOT / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("# my_euler_a.py"))
    assert "._" not in code  # no private name
    registry._load_builtin()
    try:
        exec(compile(code, "README.md", "exec"), {})
        r = bench.run("my-euler-a", "gmm8", nfe=6, seeds=[0], samples=200, denoiser="exact", out=tmp_path,
                      progress=False)[0]
        assert r["status"] == "ok" and r["nfe"] == 6
        task = bench.get_task("gmm8")
        den = task.denoiser("exact")
        method = bench.get_method("my-euler-a", task, eta=0.0)
        x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * den.sigma_max
        sig = sampling.karras_sigmas(6, den.sigma_min, den.sigma_max)
        # the same steps in another float64 order; the float32 denoiser input may round differently
        # where the two states differ in their last bits, as in the solver tests against EDM's algorithm
        torch.testing.assert_close(method.sample(den, x0, nfe_budget=6), sampling.euler(den, x0, sig),
                                   rtol=0, atol=1e-5)
    finally:
        registry._METHODS.pop("my-euler-a", None)


def test_the_dependency_floors_are_true():
    """What the code needs, the package asks for: tomllib (suite manifests) is Python 3.11's;
    scipy.stats.bootstrap takes rng= from SciPy 1.15; the LaTeX boards render through jinja2."""
    import inspect
    import re
    import tomllib

    import scipy.stats

    from bench.engine import suite
    from bench.report import latex, paired
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", meta["requires-python"]).groups())
    assert "tomllib" in inspect.getsource(suite) and floor >= (3, 11)
    deps = {re.split(r"[<>=\[ ]", d, maxsplit=1)[0].lower(): d for d in meta["dependencies"]}
    assert "rng=" in inspect.getsource(paired.bootstrap_interval)
    assert "rng" in inspect.signature(scipy.stats.bootstrap).parameters
    scipy_floor = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", deps["scipy"]).groups())
    assert scipy_floor >= (1, 15)
    assert "jinja2" in inspect.getsource(latex) and "jinja2" in deps
