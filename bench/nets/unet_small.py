"""A small UNet for tiny images (the 8x8 digits): the raw network F inside EDM preconditioning.

Two resolutions (the input's and half of it), GroupNorm/SiLU residual blocks
whose bias is shifted by an embedding of the noise level plus an embedding of
the class label. Like ``MLPNet``, the label table has ``num_classes + 1``
rows, the last being the null label used for ``class_labels=None`` (trained by
label dropout, so unconditional sampling and classifier-free guidance work).
The constructor's arguments are the ``config`` stored in the weight file.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.nets.embedding import FourierEmbedding


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch // 4) or 1, ch)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, e):
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.emb(e)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class SmallUNet(nn.Module):
    """F(c_in x, c_noise, label) for images ``[b, channels, res, res]`` (res even)."""

    def __init__(self, channels: int = 1, resolution: int = 8, num_classes: int = 0, ch: int = 32,
                 ch_mult: tuple = (1, 2), emb: int = 64):
        super().__init__()
        self.config = dict(channels=channels, resolution=resolution, num_classes=num_classes, ch=ch,
                           ch_mult=list(ch_mult), emb=emb)
        self.num_classes = num_classes
        self.shape = (channels, resolution, resolution)
        c1, c2 = ch * ch_mult[0], ch * ch_mult[1]
        self.embed_noise = FourierEmbedding(emb)
        self.embed_label = nn.Embedding(num_classes + 1, emb) if num_classes else None
        self.emb_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(channels, c1, 3, padding=1)
        self.down1 = ResBlock(c1, c1, emb)                     # full resolution
        self.pool = nn.Conv2d(c1, c1, 3, stride=2, padding=1)  # -> half resolution
        self.down2 = ResBlock(c1, c2, emb)
        self.mid = ResBlock(c2, c2, emb)
        self.up2 = ResBlock(c2 + c2, c2, emb)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.up1 = ResBlock(c2 + c1, c1, emb)
        self.norm_out = _norm(c1)
        self.conv_out = nn.Conv2d(c1, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, c_noise, class_labels=None):
        e = self.embed_noise(c_noise)
        if self.embed_label is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            e = e + self.embed_label(class_labels.long())
        e = nn.functional.silu(self.emb_mlp(e))
        h1 = self.down1(self.conv_in(x), e)
        h2 = self.down2(self.pool(h1), e)
        h = self.mid(h2, e)
        h = self.up2(torch.cat([h, h2], 1), e)
        h = self.up1(torch.cat([self.upsample(h), h1], 1), e)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
