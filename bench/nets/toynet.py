"""A small MLP denoiser for low-dimensional tasks, and the weight files it ships in.

Weights are safetensors (no code can ride along) with the architecture in the
file's metadata; every file is listed with its sha256 in a manifest beside
it, checked on load. The architecture is named in the metadata (``arch``) and
rebuilt only from a fixed allow-list (``ARCHS``: ``MLPNet``, ``SmallUNet``);
files without the key (the first toy weights) are ``MLPNet``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from bench.denoiser import EDMPrecond
from bench.nets.embedding import FourierEmbedding
from bench.nets.unet_small import SmallUNet
from bench.engine.io import atomic_write_bytes, atomic_write_json


class MLPNet(nn.Module):
    """F(c_in x, c_noise, label): an MLP on [x, noise embedding, label embedding].

    The label table has ``num_classes + 1`` rows; the last is the null label used
    for ``class_labels=None`` (trained by label dropout, so classifier-free
    guidance works)."""

    def __init__(self, dim: int, num_classes: int = 0, width: int = 128, depth: int = 3, emb: int = 32):
        super().__init__()
        self.config = dict(dim=dim, num_classes=num_classes, width=width, depth=depth, emb=emb)
        self.num_classes = num_classes
        self.embed_noise = FourierEmbedding(emb)
        self.embed_label = nn.Embedding(num_classes + 1, emb) if num_classes else None
        layers, d_in = [], dim + emb * (2 if num_classes else 1)
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.SiLU()]
            d_in = width
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x, c_noise, class_labels=None):
        parts = [x, self.embed_noise(c_noise)]
        if self.embed_label is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            parts.append(self.embed_label(class_labels.long()))
        return self.net(torch.cat(parts, dim=1))


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(directory: Path) -> dict:
    p = directory / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _arch(name: str):
    """The network class of an allow-listed architecture name (never arbitrary code)."""
    if name == "MLPNet":
        return MLPNet
    if name == "SmallUNet":
        return SmallUNet
    raise ValueError(f"unknown network architecture {name!r} in a weight file; known: {', '.join(ARCHS)}")


ARCHS = ("MLPNet", "SmallUNet")


def save_weights(state: dict, path, meta: dict):
    """Write tensors + string metadata as safetensors, atomically, and record the sha256
    in the directory's ``manifest.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(state, metadata={k: str(v) for k, v in meta.items()}))
    manifest = _manifest(path.parent)
    manifest[path.name] = sha256(path)
    atomic_write_json(path.parent / "manifest.json", manifest)


def load_weights(path, what: str = "weights", hint: str = "") -> tuple[dict, dict]:
    """(tensors, metadata) of a weight file that passes its sha256 check against the manifest."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found" + (f"; {hint}" if hint else ""))
    expected = _manifest(path.parent).get(path.name)
    actual = sha256(path)
    if expected is None or expected != actual:
        raise ValueError(f"{what} {path} fail their sha256 check (expected {expected}, got {actual})"
                         + (f"; {hint}" if hint else ""))
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return load_file(str(path)), meta


def save_denoiser(precond: EDMPrecond, path, extra_meta: dict | None = None):
    """Write the weights and the architecture, atomically, and record the sha256."""
    arch = type(precond.model).__name__
    _arch(arch)  # only allow-listed architectures can be read back
    meta = dict(net=json.dumps(precond.model.config), arch=arch, shape=json.dumps(list(precond.shape)),
                sigma_data=str(precond.sigma_data), sigma_min=str(precond.sigma_min),
                sigma_max=str(precond.sigma_max), has_uncond=str(int(precond.has_uncond)), **(extra_meta or {}))
    save_weights(precond.model.state_dict(), path, meta)


def load_denoiser(path, num_classes: int = 0) -> EDMPrecond:
    state, meta = load_weights(path, "denoiser weights",
                               "(re)train them with `python -m bench train-denoiser --task <task>`")
    cfg = json.loads(meta["net"])
    net = _arch(meta.get("arch", "MLPNet"))(**cfg)
    net.load_state_dict(state, strict=True)
    net.eval().requires_grad_(False)
    shape = tuple(json.loads(meta["shape"])) if "shape" in meta else (cfg["dim"],)
    return EDMPrecond(net, shape=shape, num_classes=cfg["num_classes"],
                      sigma_min=float(meta["sigma_min"]), sigma_max=float(meta["sigma_max"]),
                      sigma_data=float(meta["sigma_data"]), has_uncond=bool(int(meta["has_uncond"])))
