"""A benchmark suite for diffusion-sampler learning.

    import bench
    results = bench.run("edm", "gmm8", nfe=[10, 35], seeds=[0, 1, 2])
"""
import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

from bench.registry import SUITE_PACKAGES as _SUITE, suite_folder as _suite_folder


def _mount(name: str):
    """Import the suite's own ``tasks/`` and ``methods/`` folders as ``bench.tasks`` and
    ``bench.methods``: under the generic top-level names a user's ``tasks.py`` or
    ``methods/`` in the working directory (first on ``sys.path``) would shadow them."""
    full = f"{__name__}.{name}"
    folder = _suite_folder(name)
    if full in _sys.modules or folder.parent == _Path(__file__).resolve().parent:  # a wheel's own subpackage
        return
    spec = _util.spec_from_file_location(full, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = _util.module_from_spec(spec)
    _sys.modules[full] = module
    spec.loader.exec_module(module)
    globals()[name] = module


for _name in _SUITE:
    _mount(_name)

from bench.registry import register_method, register_task  # noqa: E402

__all__ = ["register_method", "register_task", "get_task", "get_method", "run", "generate"]


def __getattr__(name: str):
    """``bench.run`` and the engine's other entry points, and the subpackages (``bench.sampling``,
    ``bench.denoiser``, ...), imported on first use: ``import bench`` (and so ``python -m bench
    --help``) does not import torch."""
    if name in ("generate", "get_method", "get_task", "run"):
        from bench.engine import runner
        return getattr(runner, name)
    if _util.find_spec(f"{__name__}.{name}") is not None:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
