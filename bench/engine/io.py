"""Atomic file writes: a file is either its old complete self or its new complete self."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_ready(obj):
    """``obj`` as its JSON file reads back: inf and nan (which JSON lacks) as the strings
    Python's float() reads back, tuples as lists, keys as strings."""
    return json.loads(json.dumps(_finite(obj), allow_nan=False, default=str))


def _finite(obj):
    """JSON has no inf or nan: write them as the strings Python's float() reads back."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path, obj):
    text = json.dumps(_finite(obj), indent=1, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def check_writable(directory):
    """Fail early, with what to do, when results could not be written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".probe.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PermissionError(f"output directory {directory} is not writable ({e.strerror}); "
                              f"choose another with --out") from None
