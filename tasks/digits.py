"""The 8x8 handwritten digits bundled with scikit-learn, class-conditional.

| task | data | classes |
|---|---|---|
| digits-v2 | ``sklearn.datasets.load_digits``: 1797 greyscale 8x8 images, pixel values 0..16 scaled to [-1, 1] (``v / 8 - 1``), shape (1, 8, 8) | 10 |
| digits-uncond-v2 | the same images, unconditional: the same denoiser with the null label | - |

Splits (fixed, stratified by class, deterministic: a function of the data
alone): every image is in exactly one of evaluation (400 images, 38-41 per
class), tuning (300, 29-31 per class) and train (1097). The order comes from
a random rank of each image within its class (``np_rng("digits", "split")``),
jittered, turned into a within-class quantile; images sorted by quantile are
cut into evaluation, tuning and train, so each split holds each class in
proportion.

* ``sample_reference(n, seed)``: the train and evaluation splits together
  (1,497 images), the fixed reference of every result, disjoint from the tuning
  split (the runner asks for ``reference_size`` = 1,497, i.e. all of it;
  smaller ``n``, a seeded subset). Like EDM's FID reference (the training set's
  statistics) it holds the denoiser's training images; v1 used the 400
  evaluation images alone, whose noise hid the differences between samplers.
* ``sample_tuning(n, seed)``: likewise from the 300 tuning images (methods
  that tune or learn).
* ``sample_train(n, seed)``: likewise from the 1097 train images: the
  denoiser's and the classifier's training data (no augmentation).

Protocol (v2): ``default_samples`` = 10,000 generated samples per run, labels
drawn uniformly per sample (conditional sampling), scored against the 1,497
reference images. Metrics, in the 64-d penultimate feature space of a small
CNN classifier trained on the train split only (``digits-cnn``, registered
with torch-fidelity as a feature extractor; images reach it as torch-fidelity
uint8 input, see ``bench.metrics.fidelity``):

| metric | what | better |
|---|---|---|
| ``kid`` (primary) | unbiased squared MMD with KID's cubic polynomial kernel (x.y/d + 1)^3 over all pairs (no subsets) | lower |
| ``fd`` | Fréchet distance of the feature Gaussians (float64) | lower |
| ``precision``, ``recall`` | k-NN (k = 3), generated set in chunks of 1,497 against the references, averaged | higher |
| ``is`` | classifier score exp E KL(p(y|x) || p(y)) (at most 10) | higher |
| ``accuracy`` | the classifier's accuracy on conditional samples w.r.t. the labels they were sampled with (omitted for unconditional samples) | higher |

The features are centred and scaled to unit mean square per dimension by
constants of the train split (so KID's polynomial kernel sees Inception-like
magnitudes). Why KID (measured, ``reference_floor()``): its floor, two disjoint
halves of the reference against each other, is -0.0014 +- 0.0033 (5 random
halvings), against a gap of 0.041 between edm at NFE 10 and NFE 20 (0.0386 vs
-0.0026 at 10,000 samples; seed-to-seed sd 0.0002-0.0003): below a tenth of it.
FD's floor the same way is 0.46 +- 0.06 (a biased estimator: the bias of a
1,497-image reference), more than half of its NFE 10 vs 20 gap (0.94 vs 0.08),
and v1's 400-image reference gave KID floors as large as the gap. There are no
true images outside the reference and the tuning split, so the ``oracle``
(fresh true samples) is not offered on digits v2.

Denoiser ``learned``: ``bench.nets.unet_small.SmallUNet`` (32/64 channels at 8x8/4x4,
346k parameters) in EDM preconditioning (sigma_data 0.5; the data's std is
0.75), trained with label dropout 0.1 by ``python -m bench train-denoiser
--task digits`` (hyperparameters: ``Digits.train_config``; about 5.5 minutes
on one CPU thread); weights ``tasks/weights/digits.safetensors``. The
classifier (``DigitsCNN``, 122k parameters, 99.75% on the evaluation split)
is trained by ``python -m bench train-classifier --task digits`` (under a
minute on one thread; ``tasks/weights/digits-classifier.safetensors``). Both
are sha256-checked against ``tasks/weights/manifest.json`` on load. On a
shared, loaded CPU set ``OMP_NUM_THREADS=1``: two threads contending with
other processes run several times slower.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.metrics import fidelity
from bench.denoiser import Denoiser, EDMPrecond, copy_meta
from bench.registry import register_task
from bench.task import Task, Unsupported, np_rng
from bench.nets.toynet import load_denoiser, load_weights, save_weights, sha256

WEIGHTS = Path(__file__).parent / "weights"
SPLIT_SIZES = dict(evaluation=400, tuning=300)  # train: the remaining 1097
EXTRACTOR = "digits-cnn"
FEATURE_LAYER, LOGITS_LAYER = "features", "logits"


# data ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as float32 [N, 1, 8, 8] in [-1, 1], and their labels (int64)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 8 - 1
    return x, torch.as_tensor(d.target, dtype=torch.int64)


@functools.lru_cache(maxsize=1)
def split_indices() -> dict:
    """split name -> sorted indices into ``load_data()``: evaluation, tuning, train."""
    _, y = load_data()
    y = y.numpy()
    rng = np_rng("digits", "split")
    q = np.empty(len(y))
    for c in range(10):
        idx = np.flatnonzero(y == c)
        q[idx] = (rng.permutation(len(idx)) + rng.random(len(idx))) / len(idx)
    order = np.argsort(q, kind="stable")
    n_eval, n_tune = SPLIT_SIZES["evaluation"], SPLIT_SIZES["tuning"]
    return dict(evaluation=np.sort(order[:n_eval]), tuning=np.sort(order[n_eval:n_eval + n_tune]),
                train=np.sort(order[n_eval + n_tune:]))


def split(name: str, n: int | None = None, seed: int = 0):
    """(x, labels) of a split: all of it when ``n`` is None or at least its size, else a seeded subset."""
    idx = split_indices()[name]
    if n is not None and n < len(idx):
        idx = np.sort(np_rng("digits", name, seed).choice(idx, size=n, replace=False))
    x, y = load_data()
    idx = torch.as_tensor(idx)
    return x[idx].clone(), y[idx].clone()


# the classifier -----------------------------------------------------------------------------------
class DigitsCNN(nn.Module):
    """A small CNN on [-1, 1] images [b, 1, 8, 8]: conv 32 - conv 64 - pool - conv 64 - linear 64
    (the features: this layer's output, before its activation) - linear 10 (logits).

    ``features`` are centred and scaled by constants of the train split (``feature_shift``, the
    mean, and ``feature_scale``, the RMS of the centred features; buffers in the weight file), so
    each dimension has unit mean square on average, as KID's polynomial kernel expects (Inception's
    pool3 features are of that order). FD scales by 1/feature_scale^2 and precision/recall do not
    change; per-dimension scaling would blow up the few dead (constant) dimensions."""

    def __init__(self, ch: int = 32, features: int = 64, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.config = dict(ch=ch, features=features, num_classes=num_classes, dropout=dropout)
        self.body = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1), nn.ReLU(),
            nn.Conv2d(ch, 2 * ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(2 * ch * 16, features))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(features, num_classes))
        self.register_buffer("feature_shift", torch.zeros(features))
        self.register_buffer("feature_scale", torch.ones(()))

    def normalise(self, f):
        return (f - self.feature_shift) / self.feature_scale

    def features(self, x):
        return self.normalise(self.body(x))

    def forward(self, x):
        return self.head(self.body(x))


def _shift(x, g):
    """Random translations by -1..1 pixel (background filled with -1), per image."""
    b = len(x)
    pad = nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (b,), generator=g), torch.randint(0, 3, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(8))[:, :, None].expand(b, 8, 8)
    cols = (dx[:, None] + torch.arange(8))[:, None, :].expand(b, 8, 8)
    return pad[torch.arange(b)[:, None, None], 0, rows, cols][:, None]


def train_classifier(steps: int = 1500, batch: int = 128, lr: float = 2e-3, seed: int = 0, progress: bool = True):
    """Train ``DigitsCNN`` on the train split (random 1-pixel shifts), Adam + cosine decay."""
    from tqdm import tqdm
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = split("train")
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.02)
    net.train()
    for step in tqdm(range(steps), desc="train digits classifier", disable=not progress):
        idx = torch.randint(len(x), (batch,), generator=g)
        loss = nn.functional.cross_entropy(net(_shift(x[idx], g)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        f = net.body(x)
        net.feature_shift.copy_(f.mean(0))
        net.feature_scale.copy_((f - net.feature_shift).pow(2).mean().sqrt())
    return net


@torch.no_grad()
def accuracy(net, x, y) -> float:
    return float((net(x).argmax(1) == y).double().mean())


def classifier_path() -> Path:
    return WEIGHTS / "digits-classifier.safetensors"


def save_classifier(net: DigitsCNN, path=None, extra_meta: dict | None = None) -> Path:
    path = Path(path or classifier_path())
    save_weights(net.state_dict(), path, dict(arch="DigitsCNN", net=json.dumps(net.config), **(extra_meta or {})))
    return path


def load_classifier(path=None) -> DigitsCNN:
    state, meta = load_weights(path or classifier_path(), "classifier weights",
                               "(re)train them with `python -m bench train-classifier --task digits`")
    if meta.get("arch") != "DigitsCNN":
        raise ValueError(f"{path} holds a {meta.get('arch')}, not a DigitsCNN")
    net = DigitsCNN(**json.loads(meta["net"]))
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


@functools.lru_cache(maxsize=1)
def feature_extractor_class():
    """The torch-fidelity feature extractor class of the digits classifier (torch-fidelity is
    imported here, on first use, not when the task registry loads)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class DigitsFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity input (uint8 [B, 3, 8, 8], or [B, 1, 8, 8]) -> the classifier's 64-d
        penultimate features (``features``) and logits (``logits``). The channels are averaged
        (they are equal for greyscale images) and mapped back to [-1, 1]."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.net = load_classifier(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return (FEATURE_LAYER, LOGITS_LAYER)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return dict(fid=FEATURE_LAYER, kid=FEATURE_LAYER, prc=FEATURE_LAYER, isc=LOGITS_LAYER)[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

        def forward(self, x):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2:] != (8, 8):
                raise ValueError(f"digits-cnn takes uint8 images [B, 3 or 1, 8, 8], got {x.dtype} {tuple(x.shape)}")
            img = x.to(torch.float32).mean(1, keepdim=True) / 127.5 - 1  # fidelity.from_uint8, greyscale
            f = self.net.body(img)
            out = {FEATURE_LAYER: self.net.normalise(f), LOGITS_LAYER: self.net.head(f)}
            return tuple(out[k] for k in self.features_list)

    return DigitsFeatureExtractor


def register_feature_extractor() -> str:
    """Register ``digits-cnn`` with torch-fidelity (once); returns the name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor as register
    if EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register(EXTRACTOR, feature_extractor_class())
    return EXTRACTOR


# the denoiser -------------------------------------------------------------------------------------
class Unconditional(Denoiser):
    """A label-dropout-trained conditional denoiser used with the null label only."""

    def __init__(self, inner: Denoiser):
        super().__init__()
        self.inner = inner
        copy_meta(self, inner)
        self.num_classes, self.has_uncond = 0, False

    def forward(self, x, sigma, class_labels=None):
        return self.inner(x, sigma, None)


# the tasks ----------------------------------------------------------------------------------------
def kid_all_pairs(f_gen, f_ref) -> float:
    """Unbiased squared MMD with KID's kernel k(x, y) = (x.y / d + 1)^3 over all pairs (Binkowski et
    al. 2018, without the subsets), float64, the generated set's own pairs in blocks."""
    a, b = torch.as_tensor(f_gen, dtype=torch.float64), torch.as_tensor(f_ref, dtype=torch.float64)
    d, n, m = a.shape[1], len(a), len(b)

    def ksum(x, y):
        return float(sum(((x[i:i + 2048] @ y.T) / d + 1).pow_(3).sum() for i in range(0, len(x), 2048)))

    def own(x):
        diag = float(((x * x).sum(1) / d + 1).pow(3).sum())
        return (ksum(x, x) - diag) / (len(x) * (len(x) - 1))
    return own(a) + own(b) - 2 * ksum(a, b) / (n * m)


def reference_floor(halvings: int = 5, seed: int = 0) -> dict:
    """The primary metric's floor: two random disjoint halves of the reference images against each
    other (mean and sd over ``halvings``), for kid and fd."""
    from bench.metrics.toy import feature_stats, frechet_distance
    name = register_feature_extractor()
    x = torch.cat([split("train")[0], split("evaluation")[0]])
    f = fidelity.features(x, name, [FEATURE_LAYER])[FEATURE_LAYER].double().numpy()
    rng = np.random.default_rng(seed)
    kids, fds = [], []
    for _ in range(halvings):
        p = rng.permutation(len(f))
        a, b = f[p[:len(f) // 2]], f[p[len(f) // 2:2 * (len(f) // 2)]]
        kids.append(kid_all_pairs(a, b))
        fds.append(frechet_distance(*feature_stats(a), *feature_stats(b)))
    return dict(kid=(float(np.mean(kids)), float(np.std(kids))), fd=(float(np.mean(fds)), float(np.std(fds))))


@register_task("digits")
class Digits(Task):
    version = 2
    description = "sklearn 8x8 digits (1797 images; 1097/300/400 train/tuning/evaluation), class-conditional"
    shape = (1, 8, 8)
    num_classes = 10
    default_samples = 10_000
    reference_splits = ("train", "evaluation")
    reference_size = 1797 - SPLIT_SIZES["tuning"]
    tuning_size = SPLIT_SIZES["tuning"]
    min_samples = 4  # k-NN precision/recall (k = 3) needs k + 1 points
    batch_size = 256  # the UNet runs 2.7x faster per image in batches of 256 than of 10,000 on one core
    primary_metric = "kid"
    higher_is_better = {"precision": True, "recall": True, "accuracy": True, "is": True}
    metric_names = ("kid", "fd", "precision", "recall", "is", "accuracy")
    metric_notes = dict(
        kid="unbiased squared MMD with KID's cubic kernel, all pairs, of 10,000 samples against the 1,497 train and "
            "evaluation images (floor: -0.0014 +- 0.0033 between two halves of them)",
        fd="Frechet distance of the classifier features (biased: 0.46 between two halves of the reference)")
    sigma_data = 0.5
    net_config = dict(channels=1, resolution=8, ch=32, ch_mult=(1, 2), emb=64)
    # bench/train.py's hyperparameters for this task (python -m bench train-denoiser --task digits)
    train_config = dict(steps=4000, batch=128, lr=1e-3, ema=0.999, label_dropout=0.1)

    def _labels(self, y):
        return y if self.num_classes else None

    def sample_reference(self, n, seed=0):
        parts = [split(name) for name in self.reference_splits]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if n is not None and n < len(x):
            idx = torch.as_tensor(np.sort(np_rng("digits", "reference", seed).choice(len(x), size=n, replace=False)))
            x, y = x[idx], y[idx]
        return x, self._labels(y)

    def sample_tuning(self, n, seed=0):
        x, y = split("tuning", n, seed)
        return x, self._labels(y)

    def sample_train(self, n, seed=0):
        x, y = split("train", n, seed)
        return x, self._labels(y)

    def build_denoiser(self):
        from bench.nets.unet_small import SmallUNet
        net = SmallUNet(num_classes=10, **self.net_config)
        return EDMPrecond(net, shape=self.shape, num_classes=10, sigma_data=self.sigma_data, has_uncond=True)

    def weights_path(self):
        return WEIGHTS / "digits.safetensors"

    def denoisers(self):
        return {"learned": lambda: load_denoiser(self.weights_path())}

    def train_classifier(self, out=None, seed=0, progress=True) -> dict:
        """Train, save and score the feature classifier (``python -m bench train-classifier``)."""
        net = train_classifier(seed=seed, progress=progress)
        acc = dict(train=accuracy(net, *split("train")), tuning=accuracy(net, *split("tuning")),
                   evaluation=accuracy(net, *split("evaluation")))
        path = save_classifier(net, out, dict(task=self.id, seed=str(seed), accuracy=json.dumps(acc)))
        return dict(path=str(path), accuracy=acc)

    def perceptual_features(self, x: torch.Tensor) -> torch.Tensor:
        """The shipped classifier's normalised features of images ``x`` (float64 out), differentiable:
        a learned distance between samples, in the role LPIPS plays on natural images (``ld3``'s d).
        A task that offers no such distance leaves this out, and methods fall back to L2."""
        net = getattr(self, "_perceptual", None)
        if net is None:
            net = self._perceptual = load_classifier().eval().requires_grad_(False)
        return net.features(x.to(torch.float32)).to(torch.float64)

    def metrics(self, x, labels, ref_x, ref_labels, seed=0, names=None):
        """The table in the module docstring; ``accuracy`` is left out when ``labels`` is None."""
        names = list(self.metric_names if names is None else names)
        name = register_feature_extractor()
        layers = dict(fid=FEATURE_LAYER, kid=FEATURE_LAYER, prc=FEATURE_LAYER, isc=LOGITS_LAYER)
        feature_metrics = [n for n in names if n in fidelity.FEATURE_METRICS]
        need = {FEATURE_LAYER} if feature_metrics else set()
        if "is" in names or "accuracy" in names:
            need.add(LOGITS_LAYER)
        gen = fidelity.features(x, name, sorted(need or {FEATURE_LAYER}))
        ref = fidelity.features(ref_x, name, [FEATURE_LAYER]) if feature_metrics else None
        out = fidelity.metrics_from_features(gen, ref, layers, [n for n in names if n not in ("accuracy", "kid")],
                                             seed=seed, prc_neighborhood=3)
        if "kid" in names:
            out["kid"] = kid_all_pairs(gen[FEATURE_LAYER], ref[FEATURE_LAYER])
        if "accuracy" in names and labels is not None:
            out["accuracy"] = float((gen[LOGITS_LAYER].argmax(1) == torch.as_tensor(labels)).double().mean())
        return {k: out[k] for k in names if k in out}

    def protocol(self, n_samples, n_reference):
        path = classifier_path()
        return {**dict(
            reference=f"{self.id} train and evaluation splits: the fixed {self.reference_size} images outside "
                      f"the tuning split (seed-independent)",
            splits="stratified: evaluation 400 / tuning 300 / train 1097 of sklearn load_digits (1797)",
            n_samples=n_samples, n_reference=n_reference,
            labels="conditional: one uniform label per sample" if self.num_classes else "unconditional",
            feature_extractor=f"{EXTRACTOR}: 64-d penultimate features (pre-activation, centred and scaled to "
                              f"unit mean square by train-split constants) of the digits CNN classifier trained on "
                              f"the train split ({path.name}, sha256 "
                              f"{sha256(path)[:16] if path.exists() else 'missing'}), via torch-fidelity",
            images="[-1,1] floats -> uint8 round(127.5 (x+1)), 1 channel repeated to 3 (torch-fidelity input)",
            fd="Frechet distance of float64 feature mean/covariance (scipy sqrtm)",
            kid="unbiased MMD^2, kernel (x.y/d + 1)^3, all pairs (no subsets), float64",
            precision_recall="torch-fidelity k-NN k=3; the larger set in disjoint chunks of the smaller's size "
                             "(seeded), averaged",
            accuracy="classifier accuracy on conditional samples w.r.t. their sampling labels"),
            "is": "classifier score exp E KL(p(y|x)||p(y)) from the logits, 10 splits"}


@register_task("digits-uncond")
class DigitsUncond(Digits):
    description = "sklearn 8x8 digits, unconditional (the digits denoiser with the null label)"
    num_classes = 0

    def build_denoiser(self):
        raise Unsupported("digits-uncond uses the digits denoiser: train it with "
                          "`python -m bench train-denoiser --task digits`")

    def denoisers(self):
        return {"learned": lambda: Unconditional(load_denoiser(self.weights_path()))}
