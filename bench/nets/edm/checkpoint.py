"""Load the released EDM checkpoints (NVlabs/edm, Karras et al. 2022) without
running code from them, and convert them to safetensors.

An EDM ``.pkl`` is a plain ``pickle.dump`` of ``dict(ema=net, loss_fn=...,
augment_pipe=..., dataset_kwargs=...)``. Its classes are "persistent"
(``torch_utils/persistence.py`` of NVlabs/edm): each object reduces to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta =
dict(type='class', version=6, module_src=<module source>, class_name=...,
state=<the object's __dict__>)``, and the upstream loader ``exec`` s
``module_src``. The state of a torch module holds ``_parameters``,
``_buffers``, ``_modules`` (children: persistent objects again, or plain
``torch.nn`` containers such as ``ModuleDict``) and, recorded by the
persistence decorator, the constructor arguments ``_init_args`` /
``_init_kwargs``. Tensors are pickled by torch itself:
``torch._utils._rebuild_tensor_v2(storage, ...)`` with each storage as
``torch.storage._load_from_bytes(<legacy torch.save bytes>)``, and parameters
through ``torch._utils._rebuild_parameter``.

Here a :class:`RestrictedUnpickler` resolves only a short allow-list of
globals, each mapped to a function of ours that builds inert data:

* persistent objects become :class:`PersistentRecord` (class name + state);
  ``module_src`` is never executed;
* storages are read with ``torch.load(..., weights_only=True)``;
* ``torch.nn`` containers become :class:`TorchModuleRecord` (their state only).

Any other global (``posix.system``, ``builtins.exec``, ...) is refused with an
``pickle.UnpicklingError`` naming it, before it is looked up. A network is then
built from the project's own classes (:mod:`bench.nets.edm.networks`) by name, from
the recorded constructor arguments, and its weights are loaded with
``strict=True``.
"""
from __future__ import annotations

import collections
import io
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save

from bench.denoiser import Denoiser
from bench.nets.edm.networks import NETWORK_CLASSES
from bench.engine.io import atomic_write_bytes

SAFETENSORS_FORMAT = "bench.edm/1"  # the format tag written into converted files (kept from before the move)
EDM_PERSISTENCE_VERSION = 6


class PersistentRecord:
    """What an EDM persistent object unpickles to here: its class name and its
    pickled ``__dict__``, as data. The module source is dropped unread."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __repr__(self):
        return f"PersistentRecord({self.class_name!r})"


class TorchModuleRecord:
    """A plain ``torch.nn`` container (ModuleDict, ModuleList, Sequential)
    inside a network: the unpickler creates it empty (NEWOBJ) and hands it its
    ``__dict__`` (BUILD); only ``_parameters/_buffers/_modules`` are read."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"torch module state must be a dict, got {type(state).__name__}")
        self.state = state


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): a plain dict."""

    def __setstate__(self, state):
        if state:
            raise pickle.UnpicklingError("unexpected instance state for dnnlib.util.EasyDict")


# -- the allowed reconstructors ---------------------------------------------

def _reconstruct_persistent(meta):
    """Our ``torch_utils.persistence._reconstruct_persistent_obj``: checks the
    meta record and keeps it as data, without importing or executing anything."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("persistent object: expected meta with type='class'")
    if meta.get("version") != EDM_PERSISTENCE_VERSION:
        raise pickle.UnpicklingError(f"persistent object: unsupported persistence version {meta.get('version')!r}")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise pickle.UnpicklingError("persistent object: class_name must be a str and state a dict")
    return PersistentRecord(class_name, state)


def _load_storage(data):
    """Our ``torch.storage._load_from_bytes``: the bytes are a (legacy)
    ``torch.save`` of one storage; torch's weights-only unpickler reads them."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("storage payload must be bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notices
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"storage payload holds a {type(storage).__name__}, not a storage")
    return storage


def _is_int_tuple(x):
    return isinstance(x, tuple) and all(type(v) is int for v in x)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """Our ``torch._utils._rebuild_tensor_v2``: arguments checked, hooks refused."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("tensor: not backed by a storage")
    if type(storage_offset) is not int or not _is_int_tuple(size) or not _is_int_tuple(stride):
        raise pickle.UnpicklingError("tensor: malformed offset/size/stride")
    if backward_hooks or (metadata is not None and not isinstance(metadata, dict)):
        raise pickle.UnpicklingError("tensor: backward hooks or unexpected metadata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, bool(requires_grad),
                                               collections.OrderedDict(), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """Our ``torch._utils._rebuild_parameter``: hooks refused."""
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise pickle.UnpicklingError("parameter: malformed data or backward hooks")
    return torch.nn.Parameter(data, bool(requires_grad))


def _numpy_scalar(dtype, data=None):
    """Our ``numpy.core.multiarray.scalar``: numeric dtypes from raw bytes only
    (EDM's nested init kwargs hold numpy floats such as ``np.sqrt(0.5)``)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar: only numeric dtypes from bytes")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar: size mismatch")
    return np.frombuffer(data, dtype=dtype)[0]


def _codecs_encode(text, encoding="latin1"):
    """``_codecs.encode``, which protocol-2 pickles use for bytes: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode: only str to latin-1")
    return text.encode("latin1")


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch.nn.modules.container", "ModuleDict"): TorchModuleRecord,
    ("torch.nn.modules.container", "ModuleList"): TorchModuleRecord,
    ("torch.nn.modules.container", "Sequential"): TorchModuleRecord,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,              # protocol < 4 pickles sets by reduction
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,           # ... spelled the Python 2 way under protocol < 3
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy >= 2 spelling
    ("dnnlib.util", "EasyDict"): _EasyDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals are limited to the allow-list above."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}': not on the allow-list of bench.nets.edm.checkpoint "
                f"(EDM checkpoints are read without running code from the file)") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: EDM pickles do not use them")


# -- building networks ------------------------------------------------------

def _plain(obj):
    """Constructor arguments as plain Python data (numpy scalars -> numbers,
    EasyDict -> dict), so they can be passed on and written as JSON."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"unexpected constructor argument of type {type(obj).__name__}")


def _collect_tensors(state: dict, module: torch.nn.Module, prefix: str, out: dict):
    """The state_dict of a pickled module, read from its (nested) state. Each
    pickled submodule must sit where ``module`` (the network built from the
    recorded arguments) has a submodule of the same class."""
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{prefix}{name}: expected a tensor, got {type(t).__name__}")
            out[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        ours = module._modules.get(name)
        if not isinstance(child, (PersistentRecord, TorchModuleRecord)) or ours is None:
            raise ValueError(f"{prefix}{name}: unexpected submodule {type(child).__name__}")
        if isinstance(child, PersistentRecord) and child.class_name != type(ours).__name__:
            raise ValueError(f"{prefix}{name}: checkpoint has a {child.class_name}, the network a "
                             f"{type(ours).__name__}")
        _collect_tensors(child.state, ours, f"{prefix}{name}.", out)


def _construct(class_name: str, init_args, init_kwargs: dict) -> torch.nn.Module:
    """One of the project's network classes from its constructor arguments, on
    the meta device: shapes only, no random initialisation."""
    cls = NETWORK_CLASSES.get(class_name)
    if cls is None:
        raise ValueError(f"unknown network class {class_name!r}; known: {sorted(NETWORK_CLASSES)}")
    with torch.device("meta"):
        return cls(*_plain(list(init_args or ())), **_plain(dict(init_kwargs)))


def _load_weights(net: torch.nn.Module, state_dict: dict) -> torch.nn.Module:
    """Every tensor from ``state_dict`` (``strict=True``: same names, same
    shapes); float32, eval mode, no grad."""
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net.to(torch.float32).eval().requires_grad_(False)


def build_network(class_name: str, init_args, init_kwargs: dict, state_dict: dict) -> torch.nn.Module:
    """One of the project's network classes, built from its constructor
    arguments and loaded with ``strict=True``; in eval mode, without grad."""
    return _load_weights(_construct(class_name, init_args, init_kwargs), state_dict)


def _materialise(obj):
    """Top-level pickle content: networks built, other persistent objects
    (loss_fn, augment_pipe) kept as plain data."""
    if isinstance(obj, PersistentRecord):
        args, kwargs = obj.state.get("_init_args") or (), obj.state.get("_init_kwargs")
        if obj.class_name in NETWORK_CLASSES:
            if kwargs is None:
                raise ValueError(f"{obj.class_name} was pickled without its constructor arguments")
            net, tensors = _construct(obj.class_name, args, kwargs), {}
            _collect_tensors(obj.state, net, "", tensors)
            return _load_weights(net, tensors)
        try:
            return dict(class_name=obj.class_name, init_args=_plain(list(args)),
                        init_kwargs=None if kwargs is None else _plain(dict(kwargs)))
        except ValueError:  # arguments that are not plain data: keep the name only
            return dict(class_name=obj.class_name, init_args=None, init_kwargs=None)
    if isinstance(obj, TorchModuleRecord):
        return None
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    return obj


def _check_file(path, what="checkpoint") -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; pass the file itself")
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {path} is not a regular file (a device, pipe or socket); pass the checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty")
    return path


def is_safetensors(path) -> bool:
    """Whether ``path`` starts like a safetensors file: an 8-byte little-endian header length, then
    a JSON object of that length."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = int.from_bytes(head[:8], "little")
            return len(head) == 9 and head[8:9] == b"{" and 2 <= size <= Path(path).stat().st_size - 8
    except OSError:
        return False


class CheckpointError(pickle.UnpicklingError, ValueError):
    """A file that is not a checkpoint this loader reads: one line, naming it."""


def untrusted_reason(e: BaseException) -> str:
    """The telling line of a loader's message, without advice that would run code from the file."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [""]
    text = next((x for x in lines if x.startswith(("size mismatch", "Missing key", "Unexpected key"))), lines[0])
    if isinstance(e, (EOFError, pickle.UnpicklingError)) and "truncated" in text or isinstance(e, EOFError):
        return "the file is truncated"
    if "weights_only" in text or "Weights only load failed" in text or "WeightsUnpickler" in text:
        return "a tensor payload is not plain tensor data"
    if text.startswith("refused global"):
        return text.split(" (")[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


NOT_A_CHECKPOINT = "pass a released EDM .pkl or a .safetensors written by `python -m bench convert`"


def load_edm_pickle(path) -> dict:
    """Read an EDM ``.pkl`` safely: ``{'ema': <network>, 'loss_fn': {class_name,
    init_args, init_kwargs}, 'augment_pipe': ..., 'dataset_kwargs': {...}}``. Any file that
    is not one gives a one-line ValueError naming it (never torch's or pickle's advice)."""
    path = _check_file(path)
    try:
        with open(path, "rb") as f:
            data = RestrictedUnpickler(f).load()
        if not isinstance(data, dict):
            raise ValueError(f"expected an EDM checkpoint dict, got {type(data).__name__}")
        return _materialise(data)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # the file is untrusted input: whatever it makes the loader raise is one line
        raise CheckpointError(f"{path} is not an EDM checkpoint ({untrusted_reason(e)}); {NOT_A_CHECKPOINT}") from None


def _init_meta(net) -> dict:
    return dict(format=SAFETENSORS_FORMAT, class_name=type(net).__name__,
                init_args=json.dumps(_plain(list(net.init_args))),
                init_kwargs=json.dumps(_plain(dict(net.init_kwargs))))


def save_network(net: torch.nn.Module, out_path, extra_meta: dict | None = None):
    """Write a network of :mod:`bench.nets.edm.networks` as safetensors: the
    weights, and its class name and constructor arguments as JSON metadata
    (so the file carries no code)."""
    meta = {**_init_meta(net), **{k: str(v) for k, v in (extra_meta or {}).items()}}
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(Path(out_path), safetensors_save(state, metadata=meta))


def convert_checkpoint(pkl_path, out_path, key: str = "ema", force: bool = False):
    """Convert an EDM ``.pkl`` (its ``key`` network) to a ``.safetensors`` file
    that :func:`load_network` reads. Never writes over the input, nor over an existing
    file unless ``force``."""
    src, out = _check_file(pkl_path), Path(out_path).expanduser()
    if out.is_dir():
        raise IsADirectoryError(f"output {out} is a folder; name the .safetensors file to write")
    if out.exists() and not out.is_file():
        raise ValueError(f"output {out} is not a regular file (a device, pipe or socket): it is never replaced, "
                         f"even with --force; name a .safetensors file to write")
    if is_safetensors(src):
        raise ValueError(f"{src} is already a .safetensors file (converted): every task reads it as it is "
                         f"(--checkpoint {src}); nothing to convert")
    if out.exists() and out.resolve() == src.resolve():
        raise ValueError(f"output {out} is the input checkpoint; name another file")
    if out.exists() and not force:
        raise FileExistsError(f"output {out} exists; pass --force to replace it")
    net = load_edm_pickle(src).get(key)
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"{pkl_path}: entry {key!r} is not a network")
    save_network(net, out_path, extra_meta=dict(source=Path(pkl_path).name, source_key=key))


def _load_safetensors(path) -> torch.nn.Module:
    path = _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path} is not a safetensors file ({untrusted_reason(e)}); {NOT_A_CHECKPOINT}") from None
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise ValueError(f"{path}: not a bench.edm network file (format {meta.get('format')!r}); {NOT_A_CHECKPOINT}")
    try:
        return build_network(meta["class_name"], json.loads(meta["init_args"]), json.loads(meta["init_kwargs"]),
                             load_file(str(path)))
    except Exception as e:
        raise CheckpointError(f"{path} is not a usable bench.edm network file ({untrusted_reason(e)}); "
                              f"{NOT_A_CHECKPOINT}") from None


def load_network(path) -> Denoiser:
    """An EDM preconditioned network (VP/VE/iDDPM/EDMPrecond) as a bench
    Denoiser, from an EDM ``.pkl`` (its ``ema`` entry) or from a
    ``.safetensors`` written by :func:`convert_checkpoint`."""
    path = Path(path)
    net = _load_safetensors(path) if path.suffix == ".safetensors" else load_edm_pickle(path).get("ema")
    if not isinstance(net, Denoiser):
        raise ValueError(f"{path}: holds {type(net).__name__}, not a preconditioned EDM network")
    return net
