"""Image datasets in their published formats, read without running code from them.

CIFAR-10 (Krizhevsky 2009), the "python version": a folder
``cifar-10-batches-py`` (or its parent, or the official ``cifar-10-python.tar.gz``,
read in memory, never extracted) holding ``data_batch_1`` .. ``data_batch_5``
(train, 50,000 images) and ``test_batch`` (10,000). Each batch is a pickle of
``{b'batch_label', b'labels': [int] * N, b'data': uint8 [N, 3072], b'filenames'}``,
rows 1024 red, 1024 green, 1024 blue values, each 32x32 row-major. The
pickles are read by :class:`BatchUnpickler`, which resolves only the globals
such a file contains (numpy's array reconstruction, ``numpy.ndarray``,
``numpy.dtype``, and ``_codecs.encode`` that Python 3 protocol-2 pickles use
for bytes) and refuses everything else before it is looked up; object dtypes
are refused too. ``pickle.load`` is never used.

ImageNet 64x64 as EDM's ``dataset_tool.py`` writes it: a folder or ``.zip`` of
images (``00000/img00000000.png`` ...) with a ``dataset.json``
``{"labels": [["00000/img00000000.png", 6], ...]}`` (or ``"labels": null``).
Images are the files with an extension PIL knows, in sorted order (EDM's
``ImageFolderDataset`` order); :class:`ImageFolder` decodes only the images asked for.

Every loader returns ``uint8 [N, C, H, W]`` torch tensors and ``int64`` labels
(``None`` without labels).
"""
from __future__ import annotations

import functools
import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
DATA_FLAG = "--data"

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class DatasetError(ValueError):
    """A dataset path that is missing, of an unknown layout, or malformed."""


# -- CIFAR-10 batches ---------------------------------------------------------------------------

class _NdarrayType:
    """What ``numpy.ndarray`` resolves to: a marker only ``_reconstruct`` accepts (not callable)."""


def _reconstruct(subtype, shape, typecode):
    """``numpy.core.multiarray._reconstruct`` for plain ndarrays only."""
    if subtype is not _NdarrayType:
        raise pickle.UnpicklingError("array reconstruction: only numpy.ndarray")
    return _np_reconstruct(np.ndarray, shape, typecode)


def _dtype(obj, align=False, copy=False):
    """``numpy.dtype`` for numeric type codes only (no object or structured dtypes)."""
    if isinstance(obj, bytes):
        obj = obj.decode("ascii")
    if not isinstance(obj, str) or len(obj) > 4:
        raise pickle.UnpicklingError(f"numpy dtype: refused type code {obj!r}")
    dt = np.dtype(obj, align=bool(align), copy=bool(copy))
    if dt.hasobject or dt.fields is not None or dt.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy dtype: refused {dt}")
    return dt


def _codecs_encode(text, encoding="latin1"):
    """``_codecs.encode`` (how Python 3 writes bytes at protocol 2): str to latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode: only str to latin-1")
    return text.encode("latin1")


_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2 spelling
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 batch files: the globals above, nothing else."""

    def __init__(self, file):
        super().__init__(file, encoding="bytes")  # the official files are Python 2 pickles

    def find_class(self, module, name):
        try:
            return _BATCH_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}': a CIFAR-10 batch holds only "
                                         f"numpy arrays, lists, bytes and ints") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: CIFAR-10 batches do not use them")


def read_cifar10_batch(data: bytes, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """One batch file's bytes -> (uint8 [N, 3, 32, 32], int64 [N]), checked."""
    try:
        d = BatchUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise DatasetError(f"{name}: not a CIFAR-10 batch ({e})") from None
    except Exception as e:  # truncated or garbled files
        raise DatasetError(f"{name}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{name}: not a CIFAR-10 batch (a {type(d).__name__}, not a dict)")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    x, y = d.get("data"), d.get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DatasetError(f"{name}: 'data' must be a uint8 array [N, 3072]")
    if not isinstance(y, (list, np.ndarray)) or len(y) != len(x):
        raise DatasetError(f"{name}: 'labels' must be a list of {len(x)} class indices")
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise DatasetError(f"{name}: labels must be integers in 0..9")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _cifar10_source(path: Path):
    """(kind, location) of a CIFAR-10 copy: ('dir', batches folder) or ('tar', archive)."""
    if path.is_dir():
        for cand in (path, path / CIFAR10_FOLDER):
            if (cand / CIFAR10_TRAIN[0]).is_file() or (cand / CIFAR10_TEST[0]).is_file():
                return "dir", cand
        raise DatasetError(f"{path} holds no CIFAR-10 python batches (data_batch_1..5, test_batch, directly or "
                           f"in {CIFAR10_FOLDER}/); pass the folder or cifar-10-python.tar.gz with {DATA_FLAG}")
    if path.is_file() and tarfile.is_tarfile(path):
        return "tar", path
    if not path.exists():
        raise DatasetError(f"CIFAR-10 data {path} does not exist; pass the {CIFAR10_FOLDER} folder or "
                           f"cifar-10-python.tar.gz with {DATA_FLAG}")
    raise DatasetError(f"{path} is neither a folder nor a tar archive of the CIFAR-10 python batches")


def _read_batches(path: Path, names) -> dict:
    kind, where = _cifar10_source(path)
    out = {}
    if kind == "dir":
        for n in names:
            f = where / n
            if not f.is_file():
                raise DatasetError(f"{where}: missing CIFAR-10 batch {n}")
            out[n] = f.read_bytes()
        return out
    with tarfile.open(where, "r:*") as tar:
        members = {}
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 2 and parts[-2] == CIFAR10_FOLDER and parts[-1] in names:
                members.setdefault(parts[-1], m)
        for n in names:
            if n not in members:
                raise DatasetError(f"{where}: no {CIFAR10_FOLDER}/{n} in the archive")
            out[n] = tar.extractfile(members[n]).read()
    return out


@functools.lru_cache(maxsize=4)
def _load_cifar10(path: str, split: str):
    names = dict(train=CIFAR10_TRAIN, test=CIFAR10_TEST)[split]
    raw = _read_batches(Path(path), names)
    parts = [read_cifar10_batch(raw[n], f"{path}:{n}") for n in names]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return x, y


def load_cifar10(path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` ('train': data_batch_1..5 in order; 'test': test_batch) from a
    folder or the official tar.gz: (uint8 [N, 3, 32, 32], int64 [N]). Cached per process;
    treat the tensors as read-only."""
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    path = Path(path).expanduser().resolve()
    return _load_cifar10(str(path), split)


# -- image folders / zips (EDM dataset_tool layout) ---------------------------------------------

def _image_extensions() -> set:
    import PIL.Image
    PIL.Image.init()
    return {e.lower() for e in PIL.Image.EXTENSION}


class ImageFolder:
    """A folder or zip of images with an optional ``dataset.json`` of labels (EDM's
    ``dataset_tool`` output). ``len``, ``labels`` (int64 tensor or None), ``fnames``,
    ``read(indices)`` -> uint8 [k, C, H, W] (decoded on demand)."""

    def __init__(self, path):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            self._zip = None
            names = [os.path.relpath(os.path.join(root, f), self.path).replace(os.sep, "/")
                     for root, _, files in os.walk(self.path) for f in files]
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        elif not self.path.exists():
            raise DatasetError(f"image dataset {self.path} does not exist; pass a folder or zip of images "
                               f"(EDM dataset_tool layout) with {DATA_FLAG}")
        else:
            raise DatasetError(f"{self.path} is neither a folder nor a zip of images")
        exts = _image_extensions()
        self.fnames = sorted(n for n in names if os.path.splitext(n)[1].lower() in exts)
        if not self.fnames:
            raise DatasetError(f"{self.path} holds no images")
        self.labels = self._read_labels(set(names))

    def _open(self, name):
        return self._zip.open(name) if self._zip is not None else open(self.path / name, "rb")

    def _read_labels(self, names):
        if "dataset.json" not in names:
            return None
        with self._open("dataset.json") as f:
            try:
                meta = json.load(f)
            except ValueError as e:
                raise DatasetError(f"{self.path}/dataset.json: not JSON ({e})") from None
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if labels is None:
            return None
        try:
            table = {str(k).replace("\\", "/"): int(v) for k, v in labels}
        except (TypeError, ValueError):
            raise DatasetError(f"{self.path}/dataset.json: 'labels' must be a list of [file name, class]") from None
        missing = [n for n in self.fnames if n not in table]
        if missing:
            raise DatasetError(f"{self.path}/dataset.json has no label for {missing[0]} "
                               f"({len(missing)} images unlabelled)")
        return torch.tensor([table[n] for n in self.fnames], dtype=torch.int64)

    def __len__(self):
        return len(self.fnames)

    def read_one(self, i: int) -> np.ndarray:
        import PIL.Image
        with self._open(self.fnames[i]) as f:
            img = np.asarray(PIL.Image.open(io.BytesIO(f.read())))
        if img.ndim == 2:
            img = img[:, :, None]
        if img.dtype != np.uint8 or img.ndim != 3:
            raise DatasetError(f"{self.path}/{self.fnames[i]}: expected an 8-bit image, got {img.dtype} "
                               f"{img.shape}")
        return img.transpose(2, 0, 1)

    def read(self, indices=None) -> torch.Tensor:
        indices = range(len(self)) if indices is None else [int(i) for i in indices]
        imgs = [self.read_one(i) for i in indices]
        if not imgs:
            return torch.empty(0, dtype=torch.uint8)
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise DatasetError(f"{self.path}: images of different shapes {sorted(shapes)[:3]}")
        return torch.from_numpy(np.stack(imgs))

    def close(self):
        if self._zip is not None:
            self._zip.close()


def load_image_folder(path, indices=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (uint8 [N, C, H, W]) and labels (int64, or None) of a folder or zip in EDM's
    dataset_tool layout; only ``indices`` (into the sorted file list) when given."""
    ds = ImageFolder(path)
    try:
        x = ds.read(indices)
    finally:
        ds.close()
    labels = ds.labels
    if labels is not None and indices is not None:
        labels = labels[torch.as_tensor(list(indices), dtype=torch.int64)]
    return x, labels
