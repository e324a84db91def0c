"""The noise-level embedding both small networks use (the toy MLP and the small UNet)."""
from __future__ import annotations

import math

import torch
from torch import nn


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar c_noise = ln(sigma)/4 at fixed frequencies."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(100.0), dim // 2)))

    def forward(self, t):
        a = t[:, None].float() * self.freqs[None, :]
        return torch.cat([a.sin(), a.cos()], dim=1)
