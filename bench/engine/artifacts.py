"""The cache of fitted artifacts, keyed by everything the fit depends on.

``$BENCH_CACHE`` (default ``~/.cache/bench``) / artifacts / method / task / key,
holding ``meta.json`` and ``tensors.safetensors``; both written atomically, the
meta last, so a half-written artifact is never read as complete. The meta holds
the sha256 of the tensors file and a checksum of its own content: a corrupted,
truncated or missing file is reported (a warning naming it) and the fit is redone,
never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load, save

from bench.engine.io import atomic_write_bytes, atomic_write_json, check_writable, json_ready
from bench.method import Artifact

TENSORS, META = "tensors.safetensors", "meta.json"


def cache_dir() -> Path:
    """``$BENCH_CACHE``, else ``~/.cache/bench``; a variable set but empty is a mistake (it would put
    the cache in the working folder): ValueError saying so."""
    value = os.environ.get("BENCH_CACHE", "~/.cache/bench")
    if not value.strip():
        raise ValueError("BENCH_CACHE is set but empty: set it to a folder for the fit cache, or unset it "
                         "(default ~/.cache/bench)")
    return Path(value).expanduser()


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class CorruptArtifact(ValueError):
    pass


class ArtifactStore:
    def __init__(self, root=None):
        self.root = Path(root) if root is not None else cache_dir() / "artifacts"

    def check_writable(self):
        """Fail before a fit, with what to do, when its result could not be cached."""
        check_writable(self.root, "the fit cache", "set BENCH_CACHE to a writable folder")

    def path(self, key: dict) -> Path:
        return self.root / key["method"] / key["task"] / key_hash(key)

    def load(self, key: dict) -> tuple[Artifact, dict] | None:
        """``(artifact, fit_cost)`` of a verified cached fit; None when there is none, or when
        the cached files fail their checksums (with a warning naming the file: it is refitted)."""
        d = self.path(key)
        if not (d / META).exists() and not (d / TENSORS).exists():
            return None
        try:
            return self._read(d)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            warnings.warn(f"cached fit {d} is unusable ({e}); fitting again", stacklevel=2)
            return None

    def _read(self, d: Path):
        try:
            record = json.loads((d / META).read_text())
        except FileNotFoundError:
            raise CorruptArtifact(f"{d / META} is missing") from None
        except ValueError:
            raise CorruptArtifact(f"{d / META} is not valid JSON (truncated?)") from None
        body = {k: v for k, v in record.items() if k != "checksum"}
        if not isinstance(record, dict) or record.get("checksum") != _checksum(body):
            raise CorruptArtifact(f"{d / META} fails its checksum")
        tensors = {}
        if body["tensors_sha256"] is not None:
            data = (d / TENSORS).read_bytes()
            if hashlib.sha256(data).hexdigest() != body["tensors_sha256"]:
                raise CorruptArtifact(f"{d / TENSORS} fails its checksum")
            tensors = load(data)
        return Artifact(meta=body["meta"], tensors=tensors), body["fit_cost"]

    def save(self, key: dict, artifact: Artifact, fit_cost: dict) -> Path:
        d = self.path(key)
        digest = None
        if artifact.tensors:
            data = save({k: v.detach().cpu().contiguous() for k, v in artifact.tensors.items()})
            digest = hashlib.sha256(data).hexdigest()
            atomic_write_bytes(d / TENSORS, data)
        body = dict(key=key, meta=artifact.meta, fit_cost=fit_cost, tensors_sha256=digest)
        body = json_ready(body)  # the checksum is of what reads back
        atomic_write_json(d / META, dict(body, checksum=_checksum(body)))
        return d
