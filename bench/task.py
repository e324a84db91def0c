"""The task interface.

A task owns its data (reference set for evaluation, a disjoint tuning set for
methods that tune or learn, a training set for its own denoiser), its
denoisers (``denoisers()``: name -> loader, the first the default), and its
metrics. The harness reads what differs between tasks from these attributes,
never from the task's name.
"""
from __future__ import annotations

import numpy as np
import torch

from bench.errors import Unsupported  # noqa: F401  (raised here, imported from here)
from bench.noise import Noise

LABEL_STREAM = 7  # Noise stream of the class labels drawn for conditional sampling




class MissingFiles(FileNotFoundError):
    """Files a run needs and cannot get: all of them, each with the flag that supplies it."""

    def __init__(self, lines):
        self.lines = list(lines)
        super().__init__("this run needs files it cannot get:\n" + "\n".join(f"  - {x}" for x in self.lines))

    def __str__(self):
        return self.args[0]


class Task:
    name: str = ""
    version: int = 1
    description: str = ""
    shape: tuple = ()
    num_classes: int = 0
    default_samples: int = 5000
    primary_metric: str = "w2"
    # metric name -> True when higher is better (the rest: lower is better)
    higher_is_better: dict = {}
    # metric -> what it means, in a phrase (shown under the leaderboard tables)
    metric_notes: dict = {}
    tuning_size: int | None = None  # None: unlimited (a sampler of the true distribution)
    min_samples: int = 2  # the fewest samples per run for which every metric is defined
    batch_size: int = 10_000  # samples per denoiser call by default (the fastest on a CPU core; never the results)
    tuning_reference: int = 10_000  # tuning samples a fit's selection score compares against (at most tuning_size)
    options: tuple = ()  # names of the options the task accepts (--checkpoint, --ref-stats, --data)

    def __init__(self, **options):
        unknown = sorted(k for k, v in options.items() if v is not None and k not in self.options)
        if unknown:
            raise ValueError(f"task {self.name} takes no option {', '.join(unknown)}"
                             + (f"; it takes {', '.join(self.options)}" if self.options else ""))
        for k in self.options:
            setattr(self, k, options.get(k))

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    def option_record(self) -> dict:
        """The options this task was given (as strings): part of a result's identity."""
        return {k: str(getattr(self, k)) for k in self.options if getattr(self, k, None) is not None}

    def missing_files(self, needs=()) -> list[str]:
        """Every file a run of a method with ``needs`` would need and cannot get (downloading
        what can be downloaded): one line each, with the flag that supplies it."""
        return []

    def check_files(self, needs=()):
        missing = self.missing_files(needs)
        if missing:
            raise MissingFiles(missing)

    # data -----------------------------------------------------------------
    def sample_reference(self, n: int, seed: int = 0):
        """``(x, labels)`` from the evaluation split; labels None when unconditional."""
        raise Unsupported(f"task {self.name} defines no reference data")

    def sample_tuning(self, n: int, seed: int = 0):
        """``(x, labels)`` from the tuning split, disjoint from the reference split."""
        raise Unsupported(f"task {self.name} has no tuning data: methods that tune or learn cannot run on it")

    def class_labels(self, seed: int, indices, device="cpu"):
        """Per-sample class labels for conditional sampling (uniform over classes),
        drawn from the sample's own stream, so they too are split-invariant."""
        if not self.num_classes:
            return None
        u = Noise(seed, indices, stream=LABEL_STREAM).rand(())
        return (u * self.num_classes).long().clamp_max(self.num_classes - 1).to(device)

    # denoisers ------------------------------------------------------------
    def denoisers(self) -> dict:
        """name -> zero-argument loader; the first entry is the default."""
        raise Unsupported(f"task {self.name} defines no denoiser")

    def denoiser(self, which: str | None = None):
        options = self.denoisers()
        which = which or next(iter(options))
        if which not in options:
            raise ValueError(f"task {self.name} has no denoiser {which!r}; choose from {', '.join(options)}")
        return options[which]()

    # metrics --------------------------------------------------------------
    def metrics(self, x: torch.Tensor, labels, ref_x: torch.Tensor, ref_labels, seed: int = 0,
                names=None) -> dict:
        """name -> value of each metric (only ``names`` when given)."""
        raise Unsupported(f"task {self.name} defines no metrics")

    def scorer(self, ref_x, ref_labels):
        """``score(x, labels) -> float``: the primary metric of samples against the fixed set ``ref_x``
        (a method's selection score on the tuning split), with whatever depends on the set alone
        computed once. By default ``metrics`` with ``ref_x`` as the reference. A task whose primary
        metric uses knowledge no sampler may (a true density) scores two-sample here."""
        return lambda x, labels: self.metrics(x, labels, ref_x, ref_labels,
                                              names=[self.primary_metric])[self.primary_metric]

    def score_against(self, x, labels, ref_x, ref_labels) -> float:
        """One score of ``scorer``: the primary metric of ``x`` against ``ref_x``."""
        return float(self.scorer(ref_x, ref_labels)(x, labels))

    def protocol(self, n_samples: int, n_reference: int) -> dict:
        return dict(reference="sample_reference", n_samples=n_samples, n_reference=n_reference)

    def memory_bytes(self, n: int, batch: int) -> float:
        """A generous estimate of the memory a run of ``n`` samples takes, ``batch`` at a time: per
        sample its index, noise key, label and float32 copy plus the metrics' float64 copies; per
        batch sample the float64 solver state with its temporaries and the network's activations."""
        numel = int(np.prod(self.shape)) if self.shape else 1
        return n * (32 + 40 * numel) + batch * numel * 8 * 64

    def better(self, metric: str, a: float, b: float) -> bool:
        return a > b if self.higher_is_better.get(metric, False) else a < b


def np_rng(*key) -> np.random.Generator:
    """A numpy generator keyed by a tuple of integers or strings."""
    ints = [int.from_bytes(k.encode(), "little") % 2**63 if isinstance(k, str) else int(k) for k in key]
    return np.random.default_rng(np.random.SeedSequence(ints))
