"""Shared pieces of the methods that train networks (``ddpo``, ``dxmi``, ``qlearning``).

Not a method (the leading underscore keeps the registry from importing it as one).

- :class:`TrainingDiverged`: raised by a fit whose loss or reward became NaN/inf or
  exploded; the fit returns no artifact, so nothing is cached and earlier artifacts
  (other keys) are untouched.
- :class:`Charged`: evaluates a network of the method's own (a fine-tuned copy of the
  denoiser, a learned policy mean) while charging every row to the harness's
  :class:`~bench.denoiser.CountingDenoiser` chain, so the measured NFE (fit and
  sampling) counts those evaluations exactly as it counts the base denoiser's.
- :func:`gaussian_logprob`: per-sample log-density of an isotropic Gaussian step,
  averaged over dimensions (DDPO's convention).
- :func:`ppo_loss`: PPO's clipped surrogate (``ddpo``'s DDPO-IS, ``irl``'s ``ppo_clip``).
- :func:`select_params`: the parameter names a ``layers`` setting picks for training.
- :func:`curve_png`: a training curve (e.g. mean reward per iteration) beside a result.
"""
from __future__ import annotations

import math

import torch

from bench.denoiser import CountingDenoiser, Denoiser, copy_meta


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite or exploding loss/reward; the fit stops without an artifact."""


def check_finite(method: str, what: str, value, it: int, limit: float | None = None):
    """Raise :class:`TrainingDiverged` (one line) when ``value`` is NaN/inf or, with ``limit``,
    larger than ``limit`` in absolute value."""
    v = torch.as_tensor(value).detach().double()
    bad = ~torch.isfinite(v)
    if bad.any():
        raise TrainingDiverged(f"{method}: {what} became {'NaN' if torch.isnan(v).any() else 'inf'} at "
                               f"iteration {it}; training stopped, no artifact written")
    if limit is not None and v.abs().max() > limit:
        raise TrainingDiverged(f"{method}: {what} exploded (|{what}| = {float(v.abs().max()):.3g} > {limit:g}) "
                               f"at iteration {it}; training stopped, no artifact written")


def unwrap(denoiser):
    """The raw denoiser under any CountingDenoiser wrappers."""
    while isinstance(denoiser, CountingDenoiser):
        denoiser = denoiser.inner
    return denoiser


def counters(denoiser) -> list:
    out = []
    while isinstance(denoiser, CountingDenoiser):
        out.append(denoiser)
        denoiser = denoiser.inner
    return out


class Charged(Denoiser):
    """``net`` (a Denoiser-like module) evaluated in place of ``denoiser``, each row charged
    to every CountingDenoiser wrapping ``denoiser``: the harness measures the NFE of the
    method's own network the way it measures the base denoiser's."""

    def __init__(self, denoiser, net):
        super().__init__()
        self._counters = counters(denoiser)
        self.net = net
        copy_meta(self, unwrap(denoiser))

    def forward(self, x, sigma, class_labels=None):
        for c in self._counters:
            c.rows += x.shape[0]
        return self.net(x, sigma, class_labels)


def ppo_loss(lp, old_lp, adv, clip: float):
    """PPO's clipped surrogate ``mean(max(-A ratio, -A clip(ratio, 1-eps, 1+eps)))`` with
    ``ratio = exp(lp - old_lp)``; ``adv`` broadcasts against ``lp``. Returns (loss, ratio)."""
    ratio = (lp - old_lp).exp()
    a = adv.to(lp.dtype)
    return torch.max(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean(), ratio


def select_params(net, layers, method: str) -> list[str]:
    """Names of ``net``'s parameters that ``layers`` picks: "all", or parameter-name substrings."""
    subs = None if layers == "all" else ([layers] if isinstance(layers, str) else list(layers))
    names = [n for n, _ in net.named_parameters() if subs is None or any(s in n for s in subs)]
    if not names:
        raise ValueError(f"{method} layers={layers!r} matches no parameter of the denoiser")
    return names


def gaussian_logprob(x, mean, std):
    """log N(x; mean, std^2 I) per sample, averaged over the non-batch dimensions.
    ``std`` a scalar or broadcastable tensor."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    lp = -((x - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
    return lp.reshape(x.shape[0], -1).mean(1)


def curve_png(path, history: list, keys=("reward",), title: str = "", xlabel: str = "iteration",
              refs: dict | None = None):
    """One panel per key of ``history`` (a list of dicts) against the iteration; ``refs`` maps
    a key to ``(value, label)``, drawn as a dashed reference line in its panel."""
    from matplotlib.figure import Figure

    from bench.report.plots import save
    keys = [k for k in keys if any(k in h for h in history)]
    fig = Figure(figsize=(4.2 * max(1, len(keys)), 3.2))
    for j, k in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), j + 1)
        ax.plot([h.get("iter", i) for i, h in enumerate(history)], [float(h.get(k, "nan")) for h in history])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(k)
        ax.set_title(f"{title} {k}".strip())
        if refs and k in refs:
            ax.axhline(refs[k][0], color="k", ls="--", lw=1, label=refs[k][1])
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    save(fig, path)
