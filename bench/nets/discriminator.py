"""Time-conditioned real-versus-generated discriminators, shared by the methods
that need a density ratio (discriminator guidance, the IRL sampler, DDPO's
default reward).

``d(x, sigma)`` returns a logit; trained by BCE with real (forward-noised
tuning data) labelled 1 and generated (forward-noised samples) labelled 0, so
at the optimum ``logit = log p_real(x, sigma) - log p_gen(x, sigma)``: the
log density ratio at that noise level.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


def _embed(sigma, dim):
    freqs = torch.exp(torch.linspace(0, math.log(100.0), dim // 2, device=sigma.device))
    a = (sigma.log() / 4)[:, None].float() * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class MLPDiscriminator(nn.Module):
    """For vector data: an MLP on [x / sqrt(sigma^2 + sigma_data^2), noise embedding]."""

    def __init__(self, dim: int, sigma_data: float, width: int = 128, depth: int = 3, emb: int = 32):
        super().__init__()
        self.config = dict(kind="mlp", dim=dim, sigma_data=sigma_data, width=width, depth=depth, emb=emb)
        self.sigma_data, self.emb = sigma_data, emb
        layers, d_in = [], dim + emb
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.SiLU()]
            d_in = width
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x, sigma):
        c_in = 1 / (sigma.float() ** 2 + self.sigma_data**2).sqrt()
        h = torch.cat([x.float().flatten(1) * c_in[:, None], _embed(sigma, self.emb)], dim=1)
        return self.net(h).squeeze(1)


class CNNDiscriminator(nn.Module):
    """For small images: three conv layers with the noise embedding added as a channel bias."""

    def __init__(self, channels: int, sigma_data: float, width: int = 32, emb: int = 32):
        super().__init__()
        self.config = dict(kind="cnn", channels=channels, sigma_data=sigma_data, width=width, emb=emb)
        self.sigma_data, self.emb = sigma_data, emb
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.film = nn.Linear(emb, width)
        self.head = nn.Linear(2 * width, 1)

    def forward(self, x, sigma):
        c_in = 1 / (sigma.float() ** 2 + self.sigma_data**2).sqrt()
        h = F.silu(self.conv1(x.float() * c_in[:, None, None, None]) + self.film(_embed(sigma, self.emb))[:, :, None, None])
        h = F.silu(self.conv3(F.silu(self.conv2(h))))
        return self.head(h.mean((2, 3))).squeeze(1)


def build(config: dict) -> nn.Module:
    """Rebuild a discriminator from its config (stored beside its weights)."""
    cfg = dict(config)
    kind = cfg.pop("kind")
    return {"mlp": MLPDiscriminator, "cnn": CNNDiscriminator}[kind](**cfg)


def for_shape(shape, sigma_data: float, **kw) -> nn.Module:
    """The default discriminator for samples of this shape."""
    if len(shape) == 1:
        return MLPDiscriminator(shape[0], sigma_data, **kw)
    return CNNDiscriminator(shape[0], sigma_data, **kw)


def sample_sigma(n, generator, sigma_min=0.002, sigma_max=80.0):
    """Noise levels for training: log-uniform over the whole sampling range, so the
    discriminator (and its gradient) is trained wherever a sampler may query it,
    the largest sigmas included."""
    u = torch.rand(n, generator=generator)
    return torch.exp(math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min)))


def train(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, steps: int = 2000, batch: int = 512,
          lr: float = 1e-3, seed: int = 0, sigmas=None, sigma_sampler=sample_sigma, progress: bool = False,
          desc: str = "discriminator"):
    """BCE training, real = 1, fake = 0, each example forward-noised at its own sigma.

    ``sigmas``: a fixed set of noise levels to draw from (uniformly) instead of a
    continuous distribution, for a sampler's discrete time steps. Deterministic
    for a seed. Returns the list of (step, loss, accuracy) every 100 steps."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(disc.parameters(), lr=lr)
    real, fake = real.float(), fake.float()
    log = []
    for step in tqdm(range(steps), desc=desc, leave=False, disable=not progress):
        half = batch // 2
        x = torch.cat([real[torch.randint(len(real), (half,), generator=g)],
                       fake[torch.randint(len(fake), (half,), generator=g)]])
        y = torch.cat([torch.ones(half), torch.zeros(half)])
        if sigmas is None:
            s = sigma_sampler(2 * half, g)
        else:
            s = torch.as_tensor(sigmas, dtype=torch.float32)[torch.randint(len(sigmas), (2 * half,), generator=g)]
        noisy = x + s.reshape(-1, *([1] * (x.ndim - 1))) * torch.randn(x.shape, generator=g)
        logit = disc(noisy, s)
        loss = F.binary_cross_entropy_with_logits(logit, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.append((step, loss.item(), ((logit.detach() > 0).float() == y).float().mean().item()))
    return log


def logit_grad(disc: nn.Module, x: torch.Tensor, sigma: torch.Tensor):
    """(logit, d logit / dx): the log density-ratio estimate and its gradient."""
    with torch.enable_grad():
        x = x.detach().float().requires_grad_(True)
        logit = disc(x, sigma.float())
        (grad,) = torch.autograd.grad(logit.sum(), x)
    return logit.detach(), grad
