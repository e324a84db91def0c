"""Image metrics in a feature extractor's space, through torch-fidelity.

Generic over tasks: any feature extractor registered with torch-fidelity
(``inception-v3-compat`` for CIFAR-10 / ImageNet, a task's own classifier for
the digits) and any of its feature layers. Images come in as float tensors
``[N, C, H, W]`` in [-1, 1] and are quantised to uint8 the way EDM writes its
PNGs, ``round(127.5 (x + 1))`` clipped to 0..255 (one channel is repeated to
three, torch-fidelity's RGB convention), which is what torch-fidelity's
extractors take.

Features are extracted by torch-fidelity's own code path
(``create_feature_extractor`` + ``get_featuresdict_from_dataset``); the
metrics then come from torch-fidelity's metric functions, except the Fréchet
distance, which is ``bench.metrics.toy.frechet_distance`` on float64 mean and
covariance (scipy ``sqrtm``), so that it can also be taken against precomputed
statistics (an ``.npz`` with keys ``mu`` and ``sigma``, EDM's and
torch-fidelity's convention; ``save_reference_stats`` writes one).

| name | what |
|---|---|
| ``fd`` | Fréchet distance of the feature Gaussians (FID with Inception's pool3) |
| ``kid`` | KID, unbiased MMD^2 with the cubic polynomial kernel, mean over ``kid_subsets`` subsets of ``min(kid_subset_size, n_gen, n_ref)`` |
| ``precision``, ``recall`` | improved precision/recall (Kynkaanniemi et al. 2019), k-NN with k = ``prc_neighborhood`` (3); with unequal set sizes the larger set is split into disjoint chunks of the smaller one's size (seeded), scored against the whole smaller set and averaged, so the k-NN radii of both sides are taken at the same density |
| ``is`` | Inception Score, exp E KL(p(y|x) || p(y)) of the logits layer, mean over ``isc_splits`` splits |

torch-fidelity is imported on first use (it pulls in torchvision).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.metrics.toy import feature_stats, frechet_distance

FEATURE_METRICS = ("fd", "kid", "precision", "recall")
ALL_METRICS = FEATURE_METRICS + ("is",)
_TF_METRIC = dict(fd="fid", kid="kid", precision="prc", recall="prc", **{"is": "isc"})
_extractors: dict = {}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] floats in [-1, 1] -> uint8 [N, 3, H, W] (C = 1 repeated; C = 3 kept)."""
    x = torch.as_tensor(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W], got {tuple(x.shape)}")
    u = (x.detach().to(torch.float32).cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return u.expand(-1, 3, -1, -1).contiguous() if u.shape[1] == 1 else u


def from_uint8(u: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [-1, 1] (the inverse of ``to_uint8`` up to quantisation)."""
    return u.to(torch.float32) / 127.5 - 1


class ImageDataset(torch.utils.data.Dataset):
    """A uint8 image tensor as the Dataset torch-fidelity's inputs are."""

    def __init__(self, images_uint8: torch.Tensor):
        self.images = images_uint8

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def default_layers(extractor: str) -> dict:
    """torch-fidelity metric key (fid, kid, prc, isc) -> the extractor's default feature layer."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    out = {}
    for m in ("fid", "kid", "prc", "isc"):
        try:
            out[m] = cls.get_default_feature_layer_for_metric(m)
        except (KeyError, NotImplementedError):
            pass
    return out


def get_extractor(name: str, layers, device="cpu", **kwargs):
    """A torch-fidelity feature extractor (cached per name, layers, device and kwargs)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(f"feature extractor {name!r} is not registered with torch-fidelity")
    layers = tuple(sorted(set(layers)))
    key = (name, layers, str(device), tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if key not in _extractors:
        _extractors[key] = create_feature_extractor(name, list(layers), cuda=str(device).startswith("cuda"),
                                                    verbose=False, **kwargs)
    return _extractors[key]


def features(x: torch.Tensor, extractor: str, layers, *, batch_size: int = 500, device="cpu",
             **extractor_kwargs) -> dict:
    """layer -> float32 features [N, d] of images ``x`` ([-1, 1] floats, or uint8 already),
    extracted by torch-fidelity's dataset path."""
    from torch_fidelity.utils import get_featuresdict_from_dataset
    fe = get_extractor(extractor, layers, device, **extractor_kwargs)
    u = x if x.dtype == torch.uint8 else to_uint8(x)
    out = get_featuresdict_from_dataset(ImageDataset(u), fe, batch_size, str(device).startswith("cuda"),
                                        save_cpu_ram=True, verbose=False)  # save_cpu_ram: no worker processes
    return {k: v.to(torch.float32) for k, v in out.items()}


def stats(f) -> dict:
    """{'mu', 'sigma'} in float64 of features [N, d]."""
    mu, sigma = feature_stats(torch.as_tensor(f).double().numpy())
    return dict(mu=mu, sigma=sigma)


def load_stats(src) -> dict:
    """Statistics from an ``.npz`` path (keys mu, sigma) or a dict, as float64."""
    if isinstance(src, (str, Path)):
        with np.load(src) as z:
            src = dict(mu=z["mu"], sigma=z["sigma"])
    return dict(mu=np.asarray(src["mu"], np.float64), sigma=np.asarray(src["sigma"], np.float64))


def save_reference_stats(path, x: torch.Tensor, extractor: str, layer: str | None = None, *,
                         batch_size: int = 500, device="cpu", **extractor_kwargs) -> dict:
    """Compute the feature mean and covariance of a reference image set and save them as an
    ``.npz`` (mu, sigma float64, plus the extractor, layer and count) for ``fd`` against it."""
    layer = layer or default_layers(extractor)["fid"]
    f = features(x, extractor, [layer], batch_size=batch_size, device=device, **extractor_kwargs)[layer]
    s = stats(f)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=s["mu"], sigma=s["sigma"], extractor=extractor, layer=layer, n=len(f))
    return s


def fd(a, b) -> float:
    """Fréchet distance between two feature sets [N, d] or statistics (dict / npz path)."""
    def as_stats(v):
        return load_stats(v) if isinstance(v, (str, Path, dict)) else stats(v)
    sa, sb = as_stats(a), as_stats(b)
    return frechet_distance(sa["mu"], sa["sigma"], sb["mu"], sb["sigma"])


def kid(f_gen, f_ref, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """KID (torch-fidelity), subset size capped at both set sizes."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
    size = min(subset_size, len(f_gen), len(f_ref))
    out = kid_features_to_metric(torch.as_tensor(f_gen), torch.as_tensor(f_ref), kid_subsets=subsets,
                                 kid_subset_size=size, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN]


def precision_recall(f_gen, f_ref, *, k: int = 3, equal_sizes: bool = True, seed: int = 0) -> tuple[float, float]:
    """Improved precision and recall (torch-fidelity); see the module table for ``equal_sizes``."""
    from torch_fidelity.metric_prc import prc_features_to_metric
    f_gen, f_ref = torch.as_tensor(f_gen), torch.as_tensor(f_ref)

    def one(a, b):
        out = prc_features_to_metric(a, b, prc_neighborhood=k, save_cpu_ram=True, verbose=False)
        return out["precision"], out["recall"]

    n, m = len(f_gen), len(f_ref)
    if not equal_sizes or n == m:
        return one(f_gen, f_ref)
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(max(n, m)))
    small = min(n, m)
    chunks = [perm[i * small:(i + 1) * small] for i in range(max(n, m) // small)]
    pr = [one(f_gen[c], f_ref) if n > m else one(f_gen, f_ref[c]) for c in chunks]
    return float(np.mean([p for p, _ in pr])), float(np.mean([r for _, r in pr]))


def inception_score(logits, *, splits: int = 10, seed: int = 0) -> float:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric
    return isc_features_to_metric(torch.as_tensor(logits), splits=min(splits, len(logits)), shuffle=True,
                                  rng_seed=seed)[KEY_METRIC_ISC_MEAN]


def metrics_from_features(gen: dict, ref: dict | None, layers: dict, names=FEATURE_METRICS, *, ref_stats=None,
                          seed: int = 0, kid_subsets: int = 100, kid_subset_size: int = 1000,
                          prc_neighborhood: int = 3, prc_equal_sizes: bool = True, isc_splits: int = 10) -> dict:
    """Metrics ``names`` from features already extracted. ``gen`` and ``ref`` map layer ->
    features; ``layers`` maps torch-fidelity metric keys (fid, kid, prc, isc) to layers;
    ``ref_stats`` (dict or npz path) replaces ``ref`` for ``fd``."""
    names = list(names)
    unknown = set(names) - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"unknown image metric(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_METRICS)}")
    out = {}
    if "fd" in names:
        out["fd"] = fd(gen[layers["fid"]], ref_stats if ref_stats is not None else ref[layers["fid"]])
    if "kid" in names:
        out["kid"] = kid(gen[layers["kid"]], ref[layers["kid"]], subsets=kid_subsets, subset_size=kid_subset_size,
                         seed=seed)
    if {"precision", "recall"} & set(names):
        out["precision"], out["recall"] = precision_recall(gen[layers["prc"]], ref[layers["prc"]],
                                                           k=prc_neighborhood, equal_sizes=prc_equal_sizes, seed=seed)
    if "is" in names:
        out["is"] = inception_score(gen[layers["isc"]], splits=isc_splits, seed=seed)
    return {k: out[k] for k in names}


def compute_metrics(x: torch.Tensor, ref_x: torch.Tensor | None = None, *, extractor: str, layers: dict | None = None,
                    names=FEATURE_METRICS, ref_stats=None, seed: int = 0, batch_size: int = 500, device="cpu",
                    extractor_kwargs: dict | None = None, **options) -> dict:
    """Images ``x`` (generated) against ``ref_x`` (reference images) or ``ref_stats`` (fd only):
    extract features with ``extractor`` (its default layers unless ``layers`` maps fid, kid, prc,
    isc to others) and score ``names``. ``options`` go to ``metrics_from_features``."""
    layers = {**default_layers(extractor), **(layers or {})}
    names = list(names)
    if ref_x is None and set(names) - {"fd", "is"}:
        raise ValueError("kid, precision and recall need reference images, not just statistics")
    kw = dict(batch_size=batch_size, device=device, **(extractor_kwargs or {}))
    gen = features(x, extractor, sorted({layers[_TF_METRIC[n]] for n in names}), **kw)
    ref_layers = sorted({layers[_TF_METRIC[n]] for n in names
                         if n != "is" and not (n == "fd" and ref_stats is not None)})
    ref = features(ref_x, extractor, ref_layers, **kw) if ref_x is not None and ref_layers else None
    return metrics_from_features(gen, ref, layers, names, ref_stats=ref_stats, seed=seed, **options)
