"""The network architectures and preconditioners of EDM.

Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models", NeurIPS 2022; architecture as released in NVlabs/edm,
``training/networks.py``. Written for this project from that description: the
parameter and buffer names, shapes and the arithmetic of the forward passes
match the released checkpoints, so their weights load with ``strict=True``:

* :class:`SongUNet` -- DDPM++ / NCSN++ (Song et al. 2021, "Score-Based
  Generative Modeling through SDEs"), EDM's re-implementation;
* :class:`DhariwalUNet` -- ADM (Dhariwal & Nichol 2021);
* :class:`VPPrecond`, :class:`VEPrecond`, :class:`iDDPMPrecond`,
  :class:`EDMPrecond` -- the preconditioners of EDM Table 1. They wrap the
  U-Net as ``self.model`` (so every weight name starts with ``model.``) and are
  :class:`bench.denoiser.Denoiser` s.

Every class records the arguments it was built with (``init_args`` /
``init_kwargs``), as EDM's persistent classes do; the checkpoint loader rebuilds
a network from those and the weights alone.
"""
from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import silu

from bench.denoiser import Denoiser, as_sigma

#: name -> class of every network class here; the checkpoint loader builds only these.
NETWORK_CLASSES: dict[str, type] = {}


def persistent(cls):
    """Register ``cls`` under its EDM class name and record its constructor
    arguments in ``_init_args`` / ``_init_kwargs`` (the fields EDM's
    ``torch_utils.persistence`` pickles alongside the module state)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        # Set after the body: for a subclass the outermost constructor wins.
        self._init_args = copy.deepcopy(args)
        self._init_kwargs = copy.deepcopy(kwargs)

    cls.__init__ = __init__
    cls.init_args = property(lambda self: copy.deepcopy(self._init_args))
    cls.init_kwargs = property(lambda self: copy.deepcopy(self._init_kwargs))
    NETWORK_CLASSES[cls.__name__] = cls
    return cls


def weight_init(shape, mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """EDM's initialisers: Xavier/Kaiming, uniform or normal."""
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"invalid init mode {mode!r}")


# ---------------------------------------------------------------------------
# Layers. Parameters stay float32; each forward casts them to the input dtype,
# which is how EDM runs the U-Net in float16 (use_fp16) without converting it.
# ---------------------------------------------------------------------------

@persistent
class Linear(nn.Module):
    """Fully connected layer: ``weight [out, in]``, optional ``bias [out]``."""

    def __init__(self, in_features, out_features, bias=True, init_mode="kaiming_normal", init_weight=1,
                 init_bias=0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(weight_init([out_features], **fans) * init_bias) if bias else None

    def forward(self, x):
        x = x @ self.weight.to(x.dtype).t()
        return x if self.bias is None else x + self.bias.to(x.dtype)


@persistent
class Conv2d(nn.Module):
    """Convolution with optional 2x up- or downsampling by a fixed separable
    FIR filter (``resample_filter``, normalised to unit gain), applied before
    the convolution or, with ``fused_resample``, merged with it (a padded
    convolution followed by a strided filter, or a strided transposed filter
    followed by an unpadded convolution). ``kernel=0`` gives a pure resampler
    without weights."""

    def __init__(self, in_channels, out_channels, kernel, bias=True, up=False, down=False,
                 resample_filter=(1, 1), fused_resample=False, init_mode="kaiming_normal", init_weight=1,
                 init_bias=0):
        if up and down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = (nn.Parameter(weight_init([out_channels, in_channels, kernel, kernel], **fans) * init_weight)
                       if kernel else None)
        self.bias = nn.Parameter(weight_init([out_channels], **fans) * init_bias) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum() ** 2  # [1, 1, k, k], sums to 1
        # Registered even when unused (as None) so the buffer layout matches EDM's.
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x):
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2

        if self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, (4 * f).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                   stride=2, padding=w_pad + f_pad)
            x = F.conv2d(x, w)
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile([self.out_channels, 1, 1, 1]), groups=self.out_channels, stride=2)
        else:
            if self.up:  # x4 keeps the gain: the transposed filter spreads each pixel over 4
                x = F.conv_transpose2d(x, (4 * f).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                       stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2,
                             padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


@persistent
class GroupNorm(nn.Module):
    """Group normalisation with at most 32 groups and at least
    ``min_channels_per_group`` channels per group."""

    def __init__(self, num_channels, num_groups=32, min_channels_per_group=4, eps=1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax over keys of ``q^T k / sqrt(c)`` for ``q, k: [n, c, len]``,
    computed in float32 whatever the input dtype (EDM's AttentionOp), then
    returned in q's dtype. Autograd differentiates through the casts, so the
    backward pass also runs in float32."""
    scores = torch.bmm(q.to(torch.float32).transpose(1, 2), k.to(torch.float32) / math.sqrt(k.shape[1]))
    return scores.softmax(dim=2).to(q.dtype)


@persistent
class UNetBlock(nn.Module):
    """The residual block shared by DDPM++, NCSN++ and ADM: GroupNorm-SiLU-conv,
    an embedding injected by ``affine`` (as a bias, or as scale and shift when
    ``adaptive_scale``), GroupNorm-SiLU-dropout-conv, a skip connection
    (``skip``, a 1x1 or resampling conv when the shape changes), and optional
    multi-head self-attention (``norm2``, ``qkv``, ``proj``)."""

    def __init__(self, in_channels, out_channels, emb_channels, up=False, down=False, attention=False,
                 num_heads=None, channels_per_head=64, dropout=0, skip_scale=1, eps=1e-5,
                 resample_filter=(1, 1), resample_proj=False, adaptive_scale=True,
                 init=None, init_zero=None, init_attn=None):
        super().__init__()
        init = {} if init is None else init
        init_zero = dict(init_weight=0) if init_zero is None else init_zero
        self.in_channels, self.out_channels, self.emb_channels = in_channels, out_channels, emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale

        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=3, up=up, down=down,
                            resample_filter=resample_filter, **init)
        self.affine = Linear(in_features=emb_channels, out_features=out_channels * (2 if adaptive_scale else 1),
                             **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=3, **init_zero)

        self.skip = None
        if out_channels != in_channels or up or down:
            # A pure resampler (kernel 0) when only the resolution changes, unless projected.
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=kernel, up=up,
                               down=down, resample_filter=resample_filter, **init)

        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            self.qkv = Conv2d(in_channels=out_channels, out_channels=out_channels * 3, kernel=1,
                              **(init_attn if init_attn is not None else init))
            self.proj = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=1, **init_zero)

    def forward(self, x, emb):
        orig = x
        x = self.conv0(silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (orig if self.skip is None else self.skip(orig))) * self.skip_scale

        if self.num_heads:
            n, c = x.shape[:2]
            # qkv channels are laid out as [head, channel, (q, k, v)]: the reshape must stay EDM's.
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, -1).unbind(2)
            w = attention_weights(q, k)                  # [n*heads, len_q, len_k]
            a = torch.bmm(v, w.transpose(1, 2))          # [n*heads, c/heads, len_q]
            x = (self.proj(a.reshape(*x.shape)) + x) * self.skip_scale
        return x


@persistent
class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the noise label (DDPM++, ADM): ``[cos, sin]`` of
    ``x * max_positions^(-i / (C/2 - endpoint))``, i < C/2."""

    def __init__(self, num_channels, max_positions=10000, endpoint=False):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x):
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


@persistent
class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise label (NCSN++); the frequencies are
    a buffer ``freqs [C/2]`` drawn from N(0, scale^2)."""

    def __init__(self, num_channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


# ---------------------------------------------------------------------------
# U-Nets
# ---------------------------------------------------------------------------

@persistent
class SongUNet(nn.Module):
    """DDPM++ and NCSN++ (Song et al. 2021) as re-implemented by EDM.

    Presets of EDM's ``train.py`` (CIFAR-10: ``model_channels=128,
    channel_mult=[2,2,2]``):

    * DDPM++: ``embedding_type='positional', encoder_type='standard',
      decoder_type='standard', channel_mult_noise=1, resample_filter=[1,1]``;
    * NCSN++: ``embedding_type='fourier', encoder_type='residual',
      decoder_type='standard', channel_mult_noise=2, resample_filter=[1,3,3,1]``.

    Encoder and decoder are ``ModuleDict`` s keyed ``{res}x{res}_{conv, down,
    blockK, aux_*}`` and ``{res}x{res}_{in0, in1, up, blockK, aux_*}``.
    """

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4,
                 attn_resolutions=(16,), dropout=0.10, label_dropout=0, embedding_type="positional",
                 channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=(1, 1)):
        if embedding_type not in ("fourier", "positional"):
            raise ValueError(f"embedding_type must be 'fourier' or 'positional', got {embedding_type!r}")
        if encoder_type not in ("standard", "skip", "residual"):
            raise ValueError(f"encoder_type must be 'standard', 'skip' or 'residual', got {encoder_type!r}")
        if decoder_type not in ("standard", "skip"):
            raise ValueError(f"decoder_type must be 'standard' or 'skip', got {decoder_type!r}")
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                     resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                     init=init, init_zero=init_zero, init_attn=init_attn)

        # Mapping network: noise (+ label, + augmentation) embedding -> emb_channels.
        self.map_noise = (PositionalEmbedding(num_channels=noise_channels, endpoint=True)
                          if embedding_type == "positional" else FourierEmbedding(num_channels=noise_channels))
        self.map_label = Linear(in_features=label_dim, out_features=noise_channels, **init) if label_dim else None
        self.map_augment = (Linear(in_features=augment_dim, out_features=noise_channels, bias=False, **init)
                            if augment_dim else None)
        self.map_layer0 = Linear(in_features=noise_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)

        # Encoder. `caux` tracks the channels of the auxiliary image path (skip/residual encoders).
        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(in_channels=cin, out_channels=cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(in_channels=cout, out_channels=cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(in_channels=caux, out_channels=caux, kernel=0,
                                                               down=True, resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(in_channels=caux, out_channels=cout, kernel=1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        in_channels=caux, out_channels=cout, kernel=3, down=True, resample_filter=resample_filter,
                        fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout,
                                                                attention=res in attn_resolutions, **block)
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]

        # Decoder.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(in_channels=cout, out_channels=cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(in_channels=cout, out_channels=cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(in_channels=cout, out_channels=cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout, attention=attn,
                                                                **block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(in_channels=out_channels, out_channels=out_channels,
                                                             kernel=0, up=True, resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(num_channels=cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(in_channels=cout, out_channels=out_channels, kernel=3,
                                                           **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)  # [cos, sin] -> [sin, cos]
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer1(silu(self.map_layer0(emb))))

        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        aux = tmp = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                aux = block(aux)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != block.in_channels:  # a block that takes a skip connection
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux


@persistent
class DhariwalUNet(nn.Module):
    """ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs") as
    re-implemented by EDM; the ImageNet-64 preset is ``model_channels=192,
    channel_mult=[1,2,3,4]``. Attention heads have 64 channels each."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
                 attn_resolutions=(32, 16, 8), dropout=0.10, label_dropout=0):
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero)

        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = (Linear(in_features=augment_dim, out_features=model_channels, bias=False, **init_zero)
                            if augment_dim else None)
        self.map_layer0 = Linear(in_features=model_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)
        self.map_label = (Linear(in_features=label_dim, out_features=emb_channels, bias=False,
                                 init_mode="kaiming_normal", init_weight=math.sqrt(label_dim)) if label_dim else None)

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(in_channels=cin, out_channels=cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(in_channels=cout, out_channels=cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout,
                                                                attention=res in attn_resolutions, **block)
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(in_channels=cout, out_channels=cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(in_channels=cout, out_channels=cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(in_channels=cout, out_channels=cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout,
                                                                attention=res in attn_resolutions, **block)
        self.out_norm = GroupNorm(num_channels=cout)
        self.out_conv = Conv2d(in_channels=cout, out_channels=out_channels, kernel=3, **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(silu(self.map_layer0(emb)))
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels)
        emb = silu(emb)

        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(silu(self.out_norm(x)))


MODEL_TYPES = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}

# The noise range EDM's samplers use by default (generate.py); each preconditioner
# exposes it clamped to its own supported range, as EDM's sampler does.
EDM_SAMPLING_SIGMA_MIN, EDM_SAMPLING_SIGMA_MAX = 0.002, 80.0


# ---------------------------------------------------------------------------
# Preconditioners (EDM Table 1): D(x, s) = c_skip x + c_out F(c_in x, c_noise).
# ---------------------------------------------------------------------------

class _Precond(Denoiser):
    """Shared parts of the preconditioners: the wrapped U-Net ``self.model``,
    label handling and the bench Denoiser metadata.

    ``sigma_range`` is the range of noise levels the network supports (EDM's
    ``net.sigma_min`` / ``net.sigma_max``); ``sigma_min`` / ``sigma_max``, the
    values the bench samplers schedule between, are EDM's default sampling
    range [0.002, 80] clamped to it, as EDM's ``generate.py`` does.
    """

    has_uncond = False  # the released conditional networks were trained without label dropout

    def __init__(self, img_resolution, img_channels, label_dim, use_fp16, model_type, out_channels,
                 sigma_range, sigma_data=0.5, **model_kwargs):
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(MODEL_TYPES)}")
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.label_dim, self.use_fp16 = label_dim, use_fp16
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.sigma_min = max(EDM_SAMPLING_SIGMA_MIN, self.sigma_range[0])
        self.sigma_max = min(EDM_SAMPLING_SIGMA_MAX, self.sigma_range[1])
        self.sigma_data = float(sigma_data)
        self.shape = (img_channels, img_resolution, img_resolution)
        self.num_classes = label_dim
        self.model = MODEL_TYPES[model_type](img_resolution=img_resolution, in_channels=img_channels,
                                             out_channels=out_channels, label_dim=label_dim, **model_kwargs)

    def _labels(self, class_labels, x):
        """EDM's float one-hot labels ``[batch, label_dim]`` (zeros when None);
        integer labels ``[batch]`` are converted to one-hot."""
        if self.label_dim == 0:
            return None
        if class_labels is None:
            return torch.zeros([1, self.label_dim], device=x.device)
        labels = torch.as_tensor(class_labels, device=x.device)
        if not labels.is_floating_point() and labels.ndim <= 1:
            labels = F.one_hot(labels.reshape(-1).long(), self.label_dim)
        return labels.to(torch.float32).reshape(-1, self.label_dim)

    def _run(self, x, sigma, class_labels, force_fp32, model_kwargs, coefs, out_slice=None):
        """Shared forward: ``coefs(sigma[b,1,1,1]) -> (c_skip, c_out, c_in, c_noise)``."""
        x = x.to(torch.float32)
        sigma = as_sigma(sigma, x).to(torch.float32).reshape(-1, 1, 1, 1)
        labels = self._labels(class_labels, x)
        dtype = torch.float16 if self.use_fp16 and not force_fp32 and x.device.type == "cuda" else torch.float32
        c_skip, c_out, c_in, c_noise = coefs(sigma)
        f = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=labels, **model_kwargs)
        if f.dtype != dtype:
            raise RuntimeError(f"network returned {f.dtype}, expected {dtype}")
        if out_slice is not None:
            f = f[:, :out_slice]
        return c_skip * x + c_out * f.to(torch.float32)

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


@persistent
class VPPrecond(_Precond):
    """Variance-preserving preconditioning (Song et al. 2021, VP SDE):
    ``c_skip = 1, c_out = -s, c_in = 1/sqrt(s^2+1), c_noise = (M-1) t(s)`` with
    ``s(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1)``; supported range
    ``[s(epsilon_t), s(1)]``."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, beta_d=19.9, beta_min=0.1,
                 M=1000, epsilon_t=1e-5, model_type="SongUNet", **model_kwargs):
        lo, hi = (math.sqrt(math.expm1(0.5 * beta_d * t**2 + beta_min * t)) for t in (epsilon_t, 1.0))
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, img_channels, (lo, hi),
                         **model_kwargs)
        self.beta_d, self.beta_min, self.M, self.epsilon_t = beta_d, beta_min, M, epsilon_t

    def sigma(self, t):
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * t**2 + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma):
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min**2 + 2 * self.beta_d * (1 + sigma**2).log()).sqrt() - self.beta_min) / self.beta_d

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        def coefs(s):
            return 1, -s, 1 / (s**2 + 1).sqrt(), (self.M - 1) * self.sigma_inv(s)
        return self._run(x, sigma, class_labels, force_fp32, model_kwargs, coefs)


@persistent
class VEPrecond(_Precond):
    """Variance-exploding preconditioning (Song et al. 2021, VE SDE):
    ``c_skip = 1, c_out = s, c_in = 1, c_noise = ln(s/2)``; range [0.02, 100]."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0.02, sigma_max=100,
                 model_type="SongUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, img_channels,
                         (sigma_min, sigma_max), **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        def coefs(s):
            return 1, s, 1, (0.5 * s).log()
        return self._run(x, sigma, class_labels, force_fp32, model_kwargs, coefs)


@persistent
class iDDPMPrecond(_Precond):  # noqa: N801 -- EDM's class name, needed to read its checkpoints
    """Improved-DDPM preconditioning (Nichol & Dhariwal 2021): the network
    outputs 2*C channels (eps and variance), of which D uses the first C;
    ``c_out = -s, c_in = 1/sqrt(s^2+1)``, and ``c_noise = M-1-j`` where ``u_j``
    (buffer ``u``, the cosine-schedule noise levels) is nearest to s."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, C_1=0.001, C_2=0.008, M=1000,
                 model_type="DhariwalUNet", **model_kwargs):
        u = self._levels(C_1, C_2, M)
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, img_channels * 2,
                         (float(u[M - 1]), float(u[0])), **model_kwargs)
        self.C_1, self.C_2, self.M = C_1, C_2, M
        self.register_buffer("u", u)

    @staticmethod
    def _levels(C_1, C_2, M):
        """u_M = 0, u_{j-1} = sqrt((u_j^2 + 1) / max(abar(j-1)/abar(j), C_1) - 1), in
        float32 on the CPU as EDM computes them."""
        def alpha_bar(j):
            return (0.5 * math.pi * torch.tensor(j, device="cpu") / M / (C_2 + 1)).sin() ** 2
        u = torch.zeros(M + 1, device="cpu")
        for j in range(M, 0, -1):
            u[j - 1] = ((u[j] ** 2 + 1) / (alpha_bar(j - 1) / alpha_bar(j)).clip(min=C_1) - 1).sqrt()
        return u

    def alpha_bar(self, j):
        j = torch.as_tensor(j)
        return (0.5 * math.pi * j / self.M / (self.C_2 + 1)).sin() ** 2

    def round_sigma(self, sigma, return_index=False):
        """The nearest level u_j to each sigma (or its index j)."""
        sigma = torch.as_tensor(sigma)
        dist = (sigma.to(self.u.device).to(torch.float32).reshape(-1, 1) - self.u.reshape(1, -1)).abs()
        index = dist.argmin(dim=1)
        result = index if return_index else self.u[index].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        def coefs(s):
            return 1, -s, 1 / (s**2 + 1).sqrt(), self.M - 1 - self.round_sigma(s, return_index=True).to(torch.float32)
        return self._run(x, sigma, class_labels, force_fp32, model_kwargs, coefs, out_slice=self.img_channels)


@persistent
class EDMPrecond(_Precond):
    """EDM's own preconditioning (Karras et al. 2022, Table 1):
    ``c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2),
    c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4``; supported range
    [sigma_min, sigma_max] (EDM's default: all of [0, inf))."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0,
                 sigma_max=float("inf"), sigma_data=0.5, model_type="DhariwalUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, img_channels,
                         (sigma_min, sigma_max), sigma_data=sigma_data, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        sd = self.sigma_data

        def coefs(s):
            return (sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (sd**2 + s**2).sqrt(),
                    s.log() / 4)
        return self._run(x, sigma, class_labels, force_fp32, model_kwargs, coefs)
