"""Atomic file writes (a file is either its old complete self or its new complete self) and capped
reads of regular files only (a FIFO, a device or a link to one never blocks or floods a reader)."""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path


class WriteError(OSError):
    """A file could not be written (disk full, quota, read-only): one line naming it."""

    def __str__(self):
        return str(self.strerror or "write failed")


def inside(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies in it once every link on either is followed (a link
    into a folder is inside it)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


class NotARegularFile(ValueError):
    """A path that is not a regular file of a readable size."""


READ_CAP = 64 * 2**20  # bytes: a result file, a manifest or a cached record is far smaller


def read_regular(path, cap: int = READ_CAP) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``cap`` bytes; else NotARegularFile
    saying what it is. Opened without blocking, checked on the open descriptor (no race between the
    check and the read), read to at most cap + 1 bytes."""
    import stat
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
                else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise NotARegularFile(f"{path} is {kind}, not a file")
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:
            raise NotARegularFile(f"{path} is larger than {cap // 2**20} MiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file renamed into place; on any failure the
    temporary file is removed and ``path`` keeps its old content (a full disk: ``WriteError``)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in FULL:
            raise WriteError(e.errno, f"no space left to write {path} ({len(data):,} bytes): free some space "
                                      f"there, or write elsewhere (--out, BENCH_CACHE)") from None
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise WriteError(e.errno, f"cannot write {path} ({e.strerror}): write elsewhere (--out, "
                                      f"BENCH_CACHE)") from None
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


def check_writable(directory, what="output directory", hint="choose another with --out"):
    """Fail early, with what to do, when files could not be written into ``directory``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".probe.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PermissionError(f"{what} {directory} is not writable ({e.strerror}); {hint}") from None
