"""The denoiser protocol, in the EDM convention.

A denoiser is a ``torch.nn.Module`` called as ``D(x, sigma, class_labels=None)``
with ``sigma`` of shape ``[batch]``, returning the estimate of the clean sample.
It carries the metadata the samplers need: ``sigma_min``, ``sigma_max``,
``sigma_data``, ``shape`` (one sample's shape) and ``num_classes`` (0 when
unconditional). A conditional denoiser trained with label dropout accepts
``class_labels=None`` for its unconditional mode.
"""
from __future__ import annotations

import torch
from torch import nn


class Denoiser(nn.Module):
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    shape: tuple = ()
    num_classes: int = 0
    has_uncond: bool = False  # True when class_labels=None gives the unconditional model

    def meta(self) -> dict:
        return dict(sigma_min=self.sigma_min, sigma_max=self.sigma_max, sigma_data=self.sigma_data,
                    shape=list(self.shape), num_classes=self.num_classes)


def copy_meta(dst: Denoiser, src: Denoiser) -> Denoiser:
    for k in ("sigma_min", "sigma_max", "sigma_data", "shape", "num_classes", "has_uncond"):
        setattr(dst, k, getattr(src, k))
    return dst


class CountingDenoiser(Denoiser):
    """Wraps a denoiser and counts real evaluations, one per row of each call.

    The NFE a result reports is ``rows / n_samples``: measured from the calls
    that actually reached the network, never declared by the sampler.
    """

    def __init__(self, inner: Denoiser):
        super().__init__()
        self.inner = inner
        copy_meta(self, inner)
        self.rows = 0

    def forward(self, x, sigma, class_labels=None):
        self.rows += x.shape[0]
        return self.inner(x, sigma, class_labels)

    def reset(self):
        self.rows = 0


class Guided(Denoiser):
    """Classifier-free guidance (Ho & Salimans 2022) in the D-convention:
    ``D = D_u + w (D_c - D_u)``. Scale 1 is the plain conditional model and
    costs one evaluation; any other scale costs two (they are counted)."""

    def __init__(self, inner: Denoiser, scale: float):
        super().__init__()
        if not inner.has_uncond and scale != 1.0:
            raise ValueError("classifier-free guidance needs a denoiser with an unconditional mode "
                             "(trained with label dropout); use guidance scale 1")
        self.inner, self.scale = inner, float(scale)
        copy_meta(self, inner)

    def forward(self, x, sigma, class_labels=None):
        if class_labels is None or self.scale == 1.0:
            return self.inner(x, sigma, class_labels)
        cond = self.inner(x, sigma, class_labels)
        uncond = self.inner(x, sigma, None)
        return uncond + self.scale * (cond - uncond)


def as_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """A scalar or tensor noise level as a ``[batch]`` tensor on x's device."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


class EDMPrecond(Denoiser):
    """EDM preconditioning (Karras et al. 2022, Table 1) around a raw network F:
    ``D = c_skip x + c_out F(c_in x, c_noise, labels)``."""

    def __init__(self, model: nn.Module, *, shape, num_classes=0, sigma_min=0.002, sigma_max=80.0,
                 sigma_data=0.5, has_uncond=False):
        super().__init__()
        self.model = model
        self.shape, self.num_classes = tuple(shape), int(num_classes)
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.has_uncond = bool(has_uncond)

    def forward(self, x, sigma, class_labels=None):
        sigma = as_sigma(sigma, x).to(torch.float32)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        sd = self.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        f = self.model((c_in * x).to(torch.float32), c_noise, class_labels)
        return (c_skip * x + c_out * f.to(torch.float32)).to(x.dtype)


def edm_loss_sigma(n: int, generator=None, p_mean=-1.2, p_std=1.2) -> torch.Tensor:
    """Training noise levels of EDM: ln(sigma) ~ N(P_mean, P_std^2)."""
    return (torch.randn(n, generator=generator) * p_std + p_mean).exp()


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2

