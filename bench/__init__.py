"""A benchmark suite for diffusion-sampler learning.

    import bench
    results = bench.run("edm", "gmm8", nfe=[10, 35], seeds=[0, 1, 2])
"""
import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path


def _mount(name: str):
    """Import the suite's own ``tasks/`` and ``methods/`` folders as ``bench.tasks`` and
    ``bench.methods``: under the generic top-level names a user's ``tasks.py`` or
    ``methods/`` in the working directory (first on ``sys.path``) would shadow them.
    An installed wheel holds them inside this package; a checkout beside it."""
    full = f"{__name__}.{name}"
    if full in _sys.modules or (_Path(__file__).parent / name / "__init__.py").is_file():
        return
    folder = _Path(__file__).resolve().parent.parent / name
    spec = _util.spec_from_file_location(full, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = _util.module_from_spec(spec)
    _sys.modules[full] = module
    spec.loader.exec_module(module)
    globals()[name] = module


_mount("tasks")
_mount("methods")

from bench.registry import register_method, register_task  # noqa: E402
from bench.runner import generate, get_method, get_task, run  # noqa: E402

__all__ = ["register_method", "register_task", "get_task", "get_method", "run", "generate"]
