"""Image tasks on the released EDM networks (Karras et al. 2022), scored by FID as EDM scores them.

| task | network (``--checkpoint``, default: downloaded) | classes | FID reference (``--ref-stats``) | dataset (``--data``) |
|---|---|---|---|---|
| cifar10-v1 | ``edm-cifar10-32x32-uncond-vp.pkl`` | - | ``cifar10-32x32.npz`` | CIFAR-10 python batches |
| cifar10-cond-v1 | ``edm-cifar10-32x32-cond-vp.pkl`` | 10 | ``cifar10-32x32.npz`` | CIFAR-10 python batches |
| imagenet64-v1 | ``edm-imagenet-64x64-cond-adm.pkl`` | 1000 | ``imagenet-64x64.npz`` | ImageNet 64x64, EDM dataset_tool zip |

Files. Networks come from ``https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-{NAME}.pkl``
and reference statistics from ``https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/{NAME}.npz``,
downloaded on first use into ``$BENCH_CACHE/downloads`` (``bench.data.fetch``); without network,
pass local copies with ``--checkpoint PATH`` (an EDM ``.pkl``, read without running code from
it, or a ``.safetensors`` from ``python -m bench convert``) and ``--ref-stats PATH`` (an npz
with ``mu`` and ``sigma``). The network must match the task (shape, classes). Models and
statistics are NVIDIA's, CC BY-NC-SA 4.0.

Protocol (EDM's): ``default_samples`` = 50,000 generated images per run, class labels uniform
per sample on the conditional tasks; images quantised to uint8 as EDM's ``generate.py`` writes
them (``bench.metrics.fidelity.to_uint8``). Metrics, through ``bench.metrics.fidelity`` (torch-fidelity):

| metric | what | better | needs |
|---|---|---|---|
| ``fid`` (primary) | Fréchet distance of the 2048-d Inception pool features to the reference statistics, read from the npz, never recomputed | lower | ``--ref-stats`` or download |
| ``kid`` | KID, cubic kernel, 100 subsets of min(1000, n, n_ref) | lower | ``--data`` |
| ``precision``, ``recall`` | improved precision/recall, k = 3 | higher | ``--data`` |
| ``is`` | Inception Score (``logits_unbiased``, 10 splits) | higher | - |

The feature extractor is torch-fidelity's ``inception-v3-compat`` (the TF 2015 Inception-v3
graph EDM also uses, ported to PyTorch). Its weights (~95 MB) are taken, in order, from
``--feature-weights PATH`` (the task option ``feature_extractor_weights``, passed to
torch-fidelity as ``feature_extractor_weights_path``), from torch-fidelity's own cache
(``torch.hub.get_dir()/checkpoints``), or downloaded from torch-fidelity's release into
``$BENCH_CACHE/downloads`` (copy the ``.pth`` there by hand on an offline machine). The file
must load with ``torch.load(weights_only=True)`` (checked first: torch-fidelity itself loads it
unrestricted). ``feature_extractor`` names another extractor registered with torch-fidelity
(the tests use a small stand-in); the reference statistics must come from the same one
(``bench.metrics.fidelity.save_reference_stats``). Everything the evaluation needs (statistics,
extractor weights) is resolved and checked before sampling starts, so a missing file fails at
once. Features are computed on the GPU when there is one.

Splits (``--data``). CIFAR-10: EDM's FID reference is the statistics of the 50,000 training
images, so the reference images of KID/precision/recall (``sample_reference``) are those same
training images (all 50,000: ``reference_size``; a seeded subset for smaller ``n``), and the
tuning split (``sample_tuning``) is the disjoint 10,000-image test batch: methods that tune or
learn never see the images the metrics compare against. ImageNet-64: the dataset is EDM's
training zip (the source of ``imagenet-64x64.npz``); a fixed seeded 10,000 images of it (at
most half of a smaller set) are the tuning split and the rest the reference pool (those tuning
images are 0.8% of what the official statistics summarise). Without ``--data``, CIFAR-10 is
downloaded on first use (the official python version, ``cifar-10-python.tar.gz``, into the
cache); where it cannot be had, and always for ImageNet-64, ``sample_reference`` returns no
images (FID needs only the statistics) and ``sample_tuning`` raises naming ``--data``. Every file
a run needs is resolved before any work (``missing_files``): all missing ones in one message. Images are float32 in [-1, 1], (3, 32, 32) or
(3, 64, 64).

EDM's headline protocol is the minimum FID over three seed sets of 50,000 images: run
``python -m bench run --task cifar10 --seeds 0-2`` (50,000 samples per seed by default) and
read the leaderboard's "min over seeds" column (these tasks declare ``seed_aggregate = "min"``),
shown beside the mean and interval over seeds. The seeds key
this project's per-sample noise streams, not EDM's seed ranges (0-49999, 50000-99999,
100000-149999), so individual samples differ from EDM's while the distribution is the same.
NFE is measured (denoiser rows per sample): EDM's 18-step Heun is NFE 35.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from bench.metrics import fidelity
from bench.data.datasets import DATA_FLAG, DatasetError, ImageFolder, load_cifar10
from bench.nets.edm.checkpoint import load_network, untrusted_reason
from bench.data.fetch import FetchError, fetch
from bench.registry import register_task
from bench.task import Task, Unsupported, np_rng
from bench.nets.toynet import sha256

EDM_URL = "https://nvlabs-fi-cdn.nvidia.com/edm"
INCEPTION = "inception-v3-compat"
CHECKPOINT_HINT = ("pass a local copy of the network with --checkpoint PATH (an EDM .pkl or a converted "
                   ".safetensors; FID statistics: --ref-stats PATH)")
REF_STATS_HINT = "pass a local copy of the FID reference statistics with --ref-stats PATH (npz with mu, sigma)"
WEIGHTS_HINT = ("pass the Inception weights with --feature-weights PATH "
                "(torch-fidelity's weights-inception-2015-12-05-6726825d.pth)")
DATA_HINT = "pass a local copy of CIFAR-10 (cifar-10-python.tar.gz or the cifar-10-batches-py folder) with --data PATH"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # the official python version
CIFAR10_SIZE = 170_498_071


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256(path)


def file_sha256(path) -> str:
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def check_weights_file(path) -> Path:
    """A private, verified copy of a feature extractor weights file. torch-fidelity loads its path
    with ``weights_only=False``, so the file is read once, checked to load with
    ``torch.load(weights_only=True)`` as a mapping of names to tensors, and its checked bytes are
    what torch-fidelity gets (a read-only copy under the same name in a private folder, removed at
    exit): a file swapped after the check is never read again."""
    import atexit
    import io
    import shutil
    import tempfile

    from bench.engine.io import NotARegularFile, read_regular
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"feature extractor weights {path} do not exist")
    try:
        data = read_regular(path, cap=2**30)
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except NotARegularFile as e:
        raise ValueError(f"feature extractor weights {e}") from None
    except Exception as e:
        raise ValueError(f"feature extractor weights {path} refused: not a plain tensor file ({untrusted_reason(e)}); "
                         f"{WEIGHTS_HINT}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and torch.is_tensor(v)
                                                          for k, v in state.items()):
        raise ValueError(f"feature extractor weights {path} refused: not a state dict (names to tensors); "
                         f"{WEIGHTS_HINT}")
    folder = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    atexit.register(shutil.rmtree, folder, True)
    private = folder / path.name
    private.write_bytes(data)
    private.chmod(0o400)
    return private


class EDMImageTask(Task):
    """An image task on a released EDM network; subclasses set the names below."""

    version = 1
    options = ("checkpoint", "ref_stats", "data", "feature_extractor", "feature_extractor_weights")
    default_samples = 50_000
    reference_size = 50_000
    seed_aggregate = "min"  # EDM's protocol: the minimum FID over seed sets
    tuning_size = 10_000
    min_samples = 4  # k-NN precision/recall (k = 3) needs k + 1 points
    primary_metric = "fid"
    higher_is_better = {"is": True, "precision": True, "recall": True}
    metric_names = ("fid", "kid", "precision", "recall", "is")
    checkpoint_name: str = ""  # edm-{NAME}.pkl
    ref_stats_name: str = ""   # fid-refs/{NAME}.npz
    dataset_name: str = ""
    dataset_url: str | None = None  # downloaded on first use when --data is not given; None: --data only
    dataset_size: int | None = None
    feature_batch_size = 250
    batch_size = 500  # a DDPM++ batch of 500 images fits a CPU's memory; on a GPU --batch-size sets more
    kid_subsets, kid_subset_size, prc_neighborhood, isc_splits = 100, 1000, 3, 10

    def __init__(self, **options):
        super().__init__(**options)
        self.feature_extractor = self.feature_extractor or INCEPTION
        self._stats = self._extractor_kwargs = self._checkpoint_info = None
        self._ref_cache = None  # (ref_x, layer, features): reference features, computed once per reference set
        self._data_path = None

    # files ---------------------------------------------------------------------------------------
    @property
    def checkpoint_url(self) -> str:
        return f"{EDM_URL}/pretrained/edm-{self.checkpoint_name}.pkl"

    @property
    def ref_stats_url(self) -> str:
        return f"{EDM_URL}/fid-refs/{self.ref_stats_name}.npz"

    def denoisers(self):
        return {"edm": self._load_denoiser}

    def _checkpoint_path(self) -> Path:
        if self.checkpoint:
            p = Path(self.checkpoint).expanduser()
            if not p.exists():
                raise FileNotFoundError(f"checkpoint {p} (--checkpoint) does not exist")
            return p
        return fetch(self.checkpoint_url, desc=f"edm-{self.checkpoint_name}.pkl", hint=CHECKPOINT_HINT)

    def data_path(self, required: bool) -> str | None:
        """The dataset: ``--data``, else downloaded into the cache where the task can (CIFAR-10);
        None when it is not ``required`` and cannot be had (FID needs only the statistics)."""
        if self.data:
            return self.data
        if self._data_path is None and self.dataset_url is not None:
            try:
                self._data_path = str(fetch(self.dataset_url, expected_size=self.dataset_size,
                                            desc=Path(self.dataset_url).name, hint=DATA_HINT))
            except FetchError:
                if required:
                    raise
        if self._data_path is None and required:
            raise self._no_data("tuning data")
        return self._data_path

    def missing_files(self, needs=()) -> list[str]:
        """Everything the run needs, resolved (downloaded) before any work: the network, the FID
        statistics, the feature extractor's weights and, for methods that tune, the dataset."""
        checks = [self._checkpoint_path, self._ref_stats_path, self.extractor_kwargs]
        if "tuning" in needs:
            checks.append(lambda: self.data_path(required=True))
        missing = []
        for check in checks:
            try:
                check()
            except (FetchError, FileNotFoundError, ValueError, Unsupported) as e:
                missing.append(str(e) + (" (the method tunes on the tuning split)"
                                         if check is checks[-1] and "tuning" in needs else ""))
        return missing

    def _load_denoiser(self):
        path = self._checkpoint_path()
        net = load_network(path)
        if tuple(net.shape) != tuple(self.shape) or net.num_classes != self.num_classes:
            have = f"{'x'.join(map(str, net.shape))}, {net.num_classes or 'no'} classes"
            want = f"{'x'.join(map(str, self.shape))}, {self.num_classes or 'no'} classes"
            raise ValueError(f"checkpoint {path} is a network for {have}; task {self.name} needs {want} "
                             f"(edm-{self.checkpoint_name}.pkl)")
        self._checkpoint_info = dict(file=path.name, sha256=file_sha256(path),
                                     source="--checkpoint" if self.checkpoint else self.checkpoint_url)
        return net

    def _ref_stats_path(self) -> Path:
        if self.ref_stats:
            p = Path(self.ref_stats).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"reference statistics {p} (--ref-stats) do not exist")
            return p
        return fetch(self.ref_stats_url, desc=f"{self.ref_stats_name}.npz", hint=REF_STATS_HINT)

    def reference_stats(self) -> dict:
        """{'mu', 'sigma'} (float64) of the FID reference, with 'path' and 'sha256'; checked."""
        if self._stats is None:
            path = self._ref_stats_path()
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys = set(z.files)
                    extractor = str(z["extractor"]) if "extractor" in keys else None
            except (OSError, ValueError) as e:
                raise ValueError(f"reference statistics {path}: not an npz file ({e})") from None
            if not {"mu", "sigma"} <= keys:
                raise ValueError(f"reference statistics {path} need arrays 'mu' and 'sigma'; it has {sorted(keys)}")
            s = fidelity.load_stats(path)
            d = s["mu"].shape[0] if s["mu"].ndim == 1 else -1
            if d < 1 or s["sigma"].shape != (d, d):
                raise ValueError(f"reference statistics {path}: mu must be [d] and sigma [d, d], got "
                                 f"{s['mu'].shape} and {s['sigma'].shape}")
            if extractor is not None and extractor != self.feature_extractor:
                raise ValueError(f"reference statistics {path} were made with feature extractor {extractor!r}, "
                                 f"the task scores with {self.feature_extractor!r}")
            self._stats = dict(s, path=path, sha256=file_sha256(path), dim=d)
        return self._stats

    def extractor_kwargs(self) -> dict:
        """torch-fidelity keyword arguments of the feature extractor (its weights path)."""
        if self._extractor_kwargs is None:
            path = None
            if self.feature_extractor_weights:
                path = self.feature_extractor_weights
            elif self.feature_extractor == INCEPTION:
                from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
                hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name
                path = hub if hub.is_file() else fetch(URL_INCEPTION_V3, desc="Inception-v3 weights",
                                                       hint=WEIGHTS_HINT)
            self._extractor_kwargs = {} if path is None else dict(
                feature_extractor_weights_path=str(check_weights_file(path)))
        return self._extractor_kwargs

    @property
    def metric_device(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    def layers(self) -> dict:
        return fidelity.default_layers(self.feature_extractor)

    def _features(self, x, layers=None):
        """layer -> features of images ``x``; every default layer of the extractor is taken in the
        one pass (so one extractor instance serves the probe, the samples and the references)."""
        every = sorted(set(self.layers().values()) | set(layers or ()))
        return fidelity.features(x, self.feature_extractor, every, batch_size=self.feature_batch_size,
                                 device=self.metric_device, **self.extractor_kwargs())

    def prepare_evaluation(self):
        """Resolve and check what scoring needs before any sampling: the reference statistics,
        the extractor and its weights, and that their feature dimensions agree."""
        stats = self.reference_stats()
        fid_layer = self.layers()["fid"]
        probe = self._features(torch.zeros(2, *self.shape), [fid_layer])[fid_layer]
        if probe.shape[1] != stats["dim"]:
            raise ValueError(f"reference statistics {stats['path']} are {stats['dim']}-d, but feature extractor "
                             f"{self.feature_extractor!r} gives {probe.shape[1]}-d features (layer {fid_layer})")

    # data ----------------------------------------------------------------------------------------
    def _no_data(self, what):
        return Unsupported(f"task {self.name} has no {what} without its dataset: pass {self.dataset_name} with "
                           f"{DATA_FLAG} PATH")

    def _check_images(self, x):
        if tuple(x.shape[1:]) != tuple(self.shape):
            raise DatasetError(f"{self.data_path(required=True)} ({DATA_FLAG}) holds images of shape {tuple(x.shape[1:])}; task "
                               f"{self.name} needs {tuple(self.shape)}")
        return fidelity.from_uint8(x)

    def _labels(self, y):
        return y if self.num_classes and y is not None else None

    def sample_reference(self, n, seed=0):
        """The reference images of KID and precision/recall (none without the dataset: FID needs
        only the statistics). Resolves the whole evaluation first (``prepare_evaluation``)."""
        self.prepare_evaluation()
        if not self.data_path(required=False):
            return torch.empty(0, *self.shape), None
        x, y = self._split("reference", n, seed)
        return self._check_images(x), self._labels(y)

    def sample_tuning(self, n, seed=0):
        self.data_path(required=True)
        x, y = self._split("tuning", n, seed)
        return self._check_images(x), self._labels(y)

    def _split(self, which, n, seed):
        """(images, labels) of split ``which``; each dataset family (CIFAR-10, ImageNet-64) defines it."""
        raise TypeError(f"{type(self).__name__} must define _split()")

    # metrics -------------------------------------------------------------------------------------
    def metrics(self, x, labels, ref_x, ref_labels, seed=0, names=None):
        """The table in the module docstring. By default every metric that can be computed: kid,
        precision and recall only with reference images, is only when the extractor has logits."""
        layers = self.layers()
        has_ref = ref_x is not None and len(ref_x) > 0
        if names is None:
            names = [n for n in self.metric_names
                     if (n not in ("kid", "precision", "recall") or has_ref) and (n != "is" or "isc" in layers)]
        names = list(names)
        if not has_ref and {"kid", "precision", "recall"} & set(names):
            raise Unsupported(f"kid, precision and recall need reference images: pass {self.dataset_name} with "
                              f"{DATA_FLAG} PATH")
        tf_names = ["fd" if n == "fid" else n for n in names]
        unknown = set(tf_names) - set(fidelity.ALL_METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(sorted(unknown))} of task {self.name}")
        key = dict(fd="fid", kid="kid", precision="prc", recall="prc", **{"is": "isc"})
        gen = self._features(x, [layers[key[n]] for n in tf_names])
        ref_layers = sorted({layers[key[n]] for n in tf_names if n in ("kid", "precision", "recall")})
        ref = self._reference_features(ref_x, ref_layers) if ref_layers else None
        stats = self.reference_stats() if "fd" in tf_names else None
        if stats is not None and gen[layers["fid"]].shape[1] != stats["dim"]:
            raise ValueError(f"reference statistics {stats['path']} are {stats['dim']}-d, the features "
                             f"{gen[layers['fid']].shape[1]}-d")
        out = fidelity.metrics_from_features(
            gen, ref, layers, tf_names, ref_stats=None if stats is None else dict(mu=stats["mu"], sigma=stats["sigma"]),
            seed=seed, kid_subsets=self.kid_subsets, kid_subset_size=self.kid_subset_size,
            prc_neighborhood=self.prc_neighborhood, isc_splits=self.isc_splits)
        return {n: float(out[t]) for n, t in zip(names, tf_names)}

    def _reference_features(self, ref_x, layers):
        c = self._ref_cache
        if c is not None and c[0] is ref_x and set(layers) <= set(c[1]):
            return c[1]
        feats = self._features(ref_x, layers)
        self._ref_cache = (ref_x, feats)  # holds ref_x, so its identity stays unique
        return feats

    def protocol(self, n_samples, n_reference):
        stats = self.reference_stats()
        kw = self.extractor_kwargs()
        weights = kw.get("feature_extractor_weights_path")
        import torch_fidelity
        layers = self.layers()
        return dict(
            n_samples=n_samples, n_reference=n_reference,
            reference_stats=dict(file=Path(stats["path"]).name, sha256=stats["sha256"], dim=stats["dim"],
                                 source="--ref-stats" if self.ref_stats else self.ref_stats_url),
            reference_images=(f"{self.reference_split} ({n_reference} images, for kid/precision/recall)"
                              if n_reference else "none (no --data): fid only"),
            checkpoint=self._checkpoint_info,
            feature_extractor=dict(name=self.feature_extractor, torch_fidelity=torch_fidelity.__version__,
                                   layers=layers, weights=None if weights is None else Path(weights).name,
                                   weights_sha256=None if weights is None else file_sha256(weights)),
            labels="conditional: one uniform label per sample" if self.num_classes else "unconditional",
            images="[-1,1] floats -> uint8 clip(127.5 x + 128) truncated, as EDM's generate.py writes PNGs",
            fid="Frechet distance of float64 feature mean/covariance to the npz mu/sigma (scipy sqrtm)",
            kid=f"torch-fidelity KID: {self.kid_subsets} subsets of min({self.kid_subset_size}, n, n_ref)",
            precision_recall=f"torch-fidelity k-NN k={self.prc_neighborhood}, larger set in chunks of the smaller's "
                             f"size, averaged",
            edm_protocol="EDM reports the minimum FID over 3 seed sets of 50,000 samples: run --seeds 0-2 at "
                         "50,000 samples and take the minimum over the seeds",
            nfe_convention="measured denoiser evaluations per sample (EDM's 18-step Heun = 35)",
            **{"is": f"Inception Score from {layers.get('isc')}, {self.isc_splits} splits"})


class CIFAR10Task(EDMImageTask):
    shape = (3, 32, 32)
    ref_stats_name = "cifar10-32x32"
    dataset_name = "the CIFAR-10 python batches (cifar-10-batches-py folder or cifar-10-python.tar.gz)"
    dataset_url, dataset_size = CIFAR10_URL, CIFAR10_SIZE
    reference_split = "CIFAR-10 training images (data_batch_1..5), the set the FID statistics describe"

    def _split(self, which, n, seed):
        x, y = load_cifar10(self.data_path(required=True), "train" if which == "reference" else "test")
        if n is not None and n < len(x):
            idx = torch.as_tensor(np.sort(np_rng("cifar10", which, seed).choice(len(x), size=n, replace=False)))
            x, y = x[idx], y[idx]
        return x, y


@register_task("cifar10")
class CIFAR10(CIFAR10Task):
    description = "CIFAR-10 32x32, unconditional: EDM's released DDPM++ (VP) network; FID to EDM's train-set stats"
    num_classes = 0
    checkpoint_name = "cifar10-32x32-uncond-vp"


@register_task("cifar10-cond")
class CIFAR10Cond(CIFAR10Task):
    description = "CIFAR-10 32x32, class-conditional: EDM's released DDPM++ (VP) network; FID to EDM's stats"
    num_classes = 10
    checkpoint_name = "cifar10-32x32-cond-vp"


@register_task("imagenet64")
class ImageNet64(EDMImageTask):
    description = "ImageNet 64x64, class-conditional: EDM's ADM network; FID to EDM's train-set stats"
    shape = (3, 64, 64)
    num_classes = 1000
    checkpoint_name = "imagenet-64x64-cond-adm"
    ref_stats_name = "imagenet-64x64"
    dataset_name = "the ImageNet 64x64 training set as EDM's dataset_tool writes it (zip or folder)"
    reference_split = "ImageNet-64 training images outside the tuning split (seeded subset)"

    @functools.cached_property
    def _dataset(self):
        ds = ImageFolder(self.data_path(required=True))
        perm = np_rng("imagenet64", "split").permutation(len(ds))
        k = min(self.tuning_size, len(ds) // 2)
        return ds, dict(tuning=np.sort(perm[:k]), reference=np.sort(perm[k:]))

    def _split(self, which, n, seed):
        ds, splits = self._dataset
        idx = splits[which]
        if n is not None and n < len(idx):
            idx = np.sort(np_rng("imagenet64", which, seed).choice(idx, size=n, replace=False))
        x = ds.read(idx)
        return x, None if ds.labels is None else ds.labels[torch.as_tensor(idx, dtype=torch.int64)]
