"""Per-sample random streams.

Sample ``i`` of a run with seed ``s`` draws its randomness from a counter-based
generator keyed by ``(i, s)`` alone (Philox4x32-10, Salmon et al. 2011, the
generator of cuRAND and JAX). The k-th draw of a sample is a pure function of
(seed, index, stream, k), so batch size, the split of the work across
processes, and the device never change a sample. Vectorised over the batch:
one draw for a whole batch is a few dozen tensor operations, not a loop over
per-sample generators.
"""
from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo(a: torch.Tensor, b: int):
    # 32x32 -> 64-bit product in int64 without overflow: split b in 16-bit halves.
    p_lo = a * (b & 0xFFFF)
    p_hi = a * (b >> 16)
    low = p_lo + ((p_hi & 0xFFFF) << 16)
    return ((p_hi >> 16) + (low >> 32)) & _M32, low & _M32


def philox4x32(counter: tuple, key: tuple, rounds: int = 10):
    """Philox4x32 on int64 tensors holding uint32 values; returns four uint32 tensors."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0 = (k0 + _PHILOX_W0) & _M32
            k1 = (k1 + _PHILOX_W1) & _M32
        hi0, lo0 = _mulhilo(c0, _PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, _PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


class Noise:
    """Random draws for a batch of samples identified by their global indices.

    ``randn(shape)`` returns standard normals of shape ``[batch, *shape]``;
    ``rand(shape)`` uniforms in (0, 1). Each call advances the draw counter by
    one for every sample of the batch, so samplers must draw the same sequence
    whatever the batch holds (they do: draws never depend on batch content).
    ``stream`` separates independent uses (initial noise and churn vs a
    policy's action sampling) so that one never shifts the other.
    """

    def __init__(self, seed: int, indices, stream: int = 0, device="cpu"):
        if not 0 <= int(seed) <= _M32:
            raise ValueError(f"seed {seed} out of range: seeds are integers in 0..{_M32}")
        self.seed = int(seed)
        self.indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() > _M32):
            raise ValueError("sample indices must lie in 0..2**32-1")
        self.stream = int(stream)
        self.device = torch.device(device)
        self.draws = 0

    def __len__(self):
        return len(self.indices)

    def subset(self, rows) -> "Noise":
        """The streams of some rows, at the same draw count."""
        out = Noise(self.seed, self.indices[rows], self.stream, self.device)
        out.draws = self.draws
        return out

    def child(self, stream: int) -> "Noise":
        """Independent streams for the same samples."""
        return Noise(self.seed, self.indices, stream, self.device)

    def _bits(self, n_words: int) -> torch.Tensor:
        """[batch, n_words] uint32 words (in int64) for the next draw."""
        n_blocks = (n_words + 3) // 4
        b = len(self.indices)
        block = torch.arange(n_blocks, dtype=torch.int64).expand(b, n_blocks)
        draw = torch.full((b, n_blocks), self.draws, dtype=torch.int64)
        stream = torch.full((b, n_blocks), self.stream, dtype=torch.int64)
        k0 = self.indices[:, None].expand(b, n_blocks)
        k1 = torch.full((b, n_blocks), self.seed, dtype=torch.int64)
        self.draws += 1
        words = philox4x32((block, draw & _M32, stream, draw >> 32), (k0, k1))
        return torch.stack(words, dim=-1).reshape(b, 4 * n_blocks)[:, :n_words]

    def rand(self, shape=(), dtype=torch.float32) -> torch.Tensor:
        shape = tuple(shape)
        n = math.prod(shape)
        u = (self._bits(n).to(torch.float64) + 0.5) / 2.0**32
        u = u.reshape(len(self.indices), *shape).to(device=self.device, dtype=dtype)
        # float32 rounds the top 2**-25 of (0, 1) up to 1.0: keep the interval open in ``dtype``
        fi = torch.finfo(dtype)
        return u.clamp(min=fi.tiny, max=1 - fi.eps / 2)

    def randn(self, shape=(), dtype=torch.float32) -> torch.Tensor:
        """Box-Muller on pairs of uniforms, in float64."""
        shape = tuple(shape)
        n = math.prod(shape)
        half = (n + 1) // 2
        u = (self._bits(2 * half).to(torch.float64) + 0.5) / 2.0**32
        u1, u2 = u[:, :half], u[:, half:]
        r = torch.sqrt(-2.0 * torch.log(u1))
        z = torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)], dim=1)[:, :n]
        return z.reshape(len(self.indices), *shape).to(device=self.device, dtype=dtype)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)
