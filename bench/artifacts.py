"""The cache of fitted artifacts, keyed by everything the fit depends on.

``$BENCH_CACHE`` (default ``~/.cache/bench``) / artifacts / method / task / key,
holding ``meta.json`` and ``tensors.safetensors``; both written atomically, the
meta last, so a half-written artifact is never read as complete.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load, save

from bench.io import atomic_write_bytes, atomic_write_json
from bench.method import Artifact


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", "~/.cache/bench")).expanduser()


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ArtifactStore:
    def __init__(self, root=None):
        self.root = Path(root) if root is not None else cache_dir() / "artifacts"

    def path(self, key: dict) -> Path:
        return self.root / key["method"] / key["task"] / key_hash(key)

    def load(self, key: dict) -> Artifact | None:
        d = self.path(key)
        if not (d / "meta.json").exists():
            return None
        meta = json.loads((d / "meta.json").read_text())
        tensors = load((d / "tensors.safetensors").read_bytes()) if (d / "tensors.safetensors").exists() else {}
        return Artifact(meta=meta["meta"], tensors=tensors), meta["fit_cost"]

    def save(self, key: dict, artifact: Artifact, fit_cost: dict) -> Path:
        d = self.path(key)
        if artifact.tensors:
            tensors = {k: v.detach().cpu().contiguous() for k, v in artifact.tensors.items()}
            atomic_write_bytes(d / "tensors.safetensors", save(tensors))
        atomic_write_json(d / "meta.json", dict(key=key, meta=artifact.meta, fit_cost=fit_cost))
        return d
