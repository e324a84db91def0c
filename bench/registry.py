"""Registries of tasks and methods.

A task or a method is one module with one decorator. The modules of the
suite's own ``bench.tasks`` and ``bench.methods`` packages (the folders
``tasks/`` and ``methods/``) are imported on the first lookup; third-party packages register through the entry-point groups
``bench.tasks`` and ``bench.methods`` (each entry point names a module to
import, whose decorators do the registering).
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from importlib.metadata import entry_points
from pathlib import Path

from bench.errors import UnknownNameError  # noqa: F401  (raised here, imported from here)

SUITE_PACKAGES = ("tasks", "methods")


def suite_folder(name: str) -> Path:
    """The folder of the suite's own ``tasks`` or ``methods`` (the packages ``bench.tasks`` and
    ``bench.methods``): inside ``bench`` in an installed wheel, beside it in a checkout."""
    here = Path(__file__).resolve().parent
    return here / name if (here / name / "__init__.py").is_file() else here.parent / name


_TASKS: dict[str, type] = {}
_METHODS: dict[str, type] = {}
_loaded = False




def _register(table, kind, name, cls):
    if name in table and table[name] is not cls:
        raise ValueError(f"{kind} {name!r} is registered twice ({table[name].__module__} and {cls.__module__})")
    cls.name = name
    table[name] = cls
    return cls


def register_task(name: str):
    """Class decorator: ``@register_task("gmm8")``. The id may carry a version, ``name-vN``."""
    return lambda cls: _register(_TASKS, "task", name, cls)


def register_method(name: str):
    """Class decorator: ``@register_method("edm")``."""
    return lambda cls: _register(_METHODS, "method", name, cls)


def _load_builtin():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg_name in ("bench.tasks", "bench.methods"):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
    for group in ("bench.tasks", "bench.methods"):
        for ep in entry_points(group=group):
            ep.load()


def suggest(name: str, choices) -> str:
    """``"; did you mean a, b?"`` for the close matches of ``name`` among ``choices``, else ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _lookup(table, kind, name):
    _load_builtin()
    if name in table:
        return table[name]
    hint = suggest(name, table)
    raise UnknownNameError(f"unknown {kind} {name!r}{hint} (`python -m bench list` shows all {kind}s)")


def task_class(name: str) -> type:
    return _lookup(_TASKS, "task", name)


def method_class(name: str) -> type:
    return _lookup(_METHODS, "method", name)


def index(kind: str) -> dict[str, str | None] | None:
    """name -> description of the suite's own ``"tasks"`` or ``"methods"``, read from their source
    files without importing them (so ``list`` and a mistyped name answer in a fraction of a second,
    torch unimported); a description that is not a literal string is None. None when third-party
    entry points may register more names: then only an import can tell."""
    import ast
    if list(entry_points(group=f"bench.{kind}")):
        return None
    decorator = "register_task" if kind == "tasks" else "register_method"
    out = {}
    for path in sorted(suite_folder(kind).glob("[!_]*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            names = [d.args[0].value for d in node.decorator_list if isinstance(d, ast.Call) and d.args
                     and getattr(d.func, "id", None) == decorator and isinstance(d.args[0], ast.Constant)]
            described = [a.value for a in node.body if isinstance(a, ast.Assign)
                         and any(getattr(t, "id", None) == "description" for t in a.targets)]
            try:
                text = ast.literal_eval(described[0]) if described else None
            except ValueError:
                text = None
            out.update({name: text if isinstance(text, str) else None for name in names})
    return out


def check_name(kind: str, name: str):
    """UnknownNameError, with its close matches, for a name no task or method has, decided from
    ``index`` when it can (no import); a known name, or one only an import can judge, passes."""
    import re
    known = index(kind + "s")
    base = re.sub(r"-v\d+$", "", str(name)) if kind == "task" else str(name)
    if known is not None and base not in known:
        raise UnknownNameError(f"unknown {kind} {name!r}{suggest(name, known)} (`python -m bench list` shows all "
                               f"{kind}s)")


def tasks() -> dict[str, type]:
    _load_builtin()
    return dict(sorted(_TASKS.items()))


def methods() -> dict[str, type]:
    _load_builtin()
    return dict(sorted(_METHODS.items()))
