"""Tests of bench.nets.edm.networks: parameter names and shapes of the released EDM
configurations (NVlabs/edm training/networks.py and train.py presets), the
resampling and attention arithmetic against plain references, the
preconditioner formulas of EDM Table 1, label handling, and the bench
Denoiser protocol."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench import sampling
from bench.denoiser import CountingDenoiser, Denoiser
from bench.nets.edm.networks import (Conv2d, DhariwalUNet, EDMPrecond, SongUNet, UNetBlock, VEPrecond, VPPrecond,
                                attention_weights, iDDPMPrecond)
from tolerance import EPS32, reorder_atol

# EDM train.py presets (--arch), CIFAR-10 sizes.
DDPMPP = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard", decoder_type="standard",
              channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2])
NCSNPP = dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual", decoder_type="standard",
              channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128, channel_mult=[2, 2, 2])
ADM = dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4])

# Tiny versions for fast forward passes.
TINY_SONG = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.1)
TINY_DDPMPP = dict(DDPMPP, **TINY_SONG)
TINY_NCSNPP = dict(NCSNPP, **TINY_SONG)
TINY_ADM = dict(ADM, model_channels=64, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4])


pytestmark = pytest.mark.usefixtures("one_thread")


def on_meta(cls, **kw):
    """Build without allocating or initialising weights (shapes only)."""
    with torch.device("meta"):
        return cls(**kw)


def shapes(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def n_params(net):
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------------
# Released configurations: names, shapes, parameter counts.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar_ddpmpp():
    """edm-cifar10-32x32-uncond-vp: EDMPrecond over DDPM++ with augment_dim 9, dropout 0.13."""
    return on_meta(EDMPrecond, img_resolution=32, img_channels=3, label_dim=0, use_fp16=False, dropout=0.13,
                   augment_dim=9, **DDPMPP)


def test_cifar10_ddpmpp_names_and_shapes(cifar_ddpmpp):
    s = shapes(cifar_ddpmpp)
    assert not any(k.startswith("model.map_noise") for k in s)  # positional embedding: no parameters
    assert not any(k.startswith("model.map_label") for k in s)  # unconditional
    expected = {
        "model.map_augment.weight": (128, 9),  # no bias
        "model.map_layer0.weight": (512, 128),
        "model.map_layer0.bias": (512,),
        "model.map_layer1.weight": (512, 512),
        "model.enc.32x32_conv.weight": (128, 3, 3, 3),  # level 0 conv outputs model_channels
        "model.enc.32x32_block0.conv0.weight": (256, 128, 3, 3),
        "model.enc.32x32_block0.skip.weight": (256, 128, 1, 1),
        "model.enc.32x32_block0.affine.weight": (256, 512),  # adaptive_scale=False
        "model.enc.16x16_down.conv0.resample_filter": (1, 1, 2, 2),
        "model.enc.16x16_down.skip.weight": (256, 256, 1, 1),  # resample_proj=True
        "model.enc.16x16_block0.norm2.weight": (256,),
        "model.enc.16x16_block0.qkv.weight": (768, 256, 1, 1),
        "model.enc.16x16_block0.proj.weight": (256, 256, 1, 1),
        "model.dec.8x8_in0.norm0.weight": (256,),
        "model.dec.8x8_in0.qkv.weight": (768, 256, 1, 1),
        "model.dec.8x8_block0.conv0.weight": (256, 512, 3, 3),
        "model.dec.16x16_up.conv0.resample_filter": (1, 1, 2, 2),
        "model.dec.16x16_block4.qkv.weight": (768, 256, 1, 1),
        "model.dec.32x32_block4.conv0.weight": (256, 384, 3, 3),  # 256 + the 128 of enc.32x32_conv
        "model.dec.32x32_aux_norm.weight": (256,),
        "model.dec.32x32_aux_conv.weight": (3, 256, 3, 3),
    }
    for k, shape in expected.items():
        assert s[k] == shape, k
    # Attention at 16x16 only: four encoder blocks, the last decoder block, and the bottleneck in0.
    attn = sorted(k for k in s if k.endswith("qkv.weight"))
    assert attn == sorted(["model.enc.16x16_block0.qkv.weight", "model.enc.16x16_block1.qkv.weight",
                           "model.enc.16x16_block2.qkv.weight", "model.enc.16x16_block3.qkv.weight",
                           "model.dec.16x16_block4.qkv.weight", "model.dec.8x8_in0.qkv.weight"])
    assert "model.dec.16x16_block3.qkv.weight" not in s and "model.dec.8x8_in1.qkv.weight" not in s


def test_parameter_counts_of_released_configurations(cifar_ddpmpp):
    # About 55.7M for CIFAR-10 DDPM++ (the number usually quoted for EDM's CIFAR-10 networks).
    assert n_params(cifar_ddpmpp) == 55_733_891
    cond = on_meta(EDMPrecond, img_resolution=32, img_channels=3, label_dim=10, augment_dim=9, **DDPMPP)
    assert n_params(cond) - n_params(cifar_ddpmpp) == 10 * 128 + 128  # map_label
    assert shapes(cond)["model.map_label.weight"] == (128, 10)
    ncsnpp = on_meta(VEPrecond, img_resolution=32, img_channels=3, augment_dim=9, **NCSNPP)
    assert abs(n_params(ncsnpp) - 56.40e6) < 0.01e6
    assert shapes(ncsnpp)["model.map_noise.freqs"] == (128,)  # Fourier features: a buffer, 256 channels / 2
    assert shapes(ncsnpp)["model.enc.16x16_aux_residual.weight"] == (256, 3, 3, 3)
    ffhq = on_meta(EDMPrecond, img_resolution=64, img_channels=3, augment_dim=9,
                   **dict(DDPMPP, channel_mult=[1, 2, 2, 2]))
    assert abs(n_params(ffhq) - 61.80e6) < 0.01e6
    adm = on_meta(EDMPrecond, img_resolution=64, img_channels=3, label_dim=1000, **ADM)
    assert abs(n_params(adm) - 295.90e6) < 0.01e6
    s = shapes(adm)
    assert s["model.map_label.weight"] == (768, 1000) and "model.map_label.bias" not in s
    assert s["model.enc.64x64_conv.weight"] == (192, 3, 3, 3)
    assert s["model.enc.32x32_block0.qkv.weight"] == (1152, 384, 1, 1)
    assert s["model.out_conv.weight"] == (3, 192, 3, 3)


def test_iddpm_precond_has_the_u_buffer_and_doubled_output():
    net = on_meta(iDDPMPrecond, img_resolution=64, img_channels=3, label_dim=1000, **ADM)
    s = shapes(net)
    assert s["u"] == (1001,)
    assert s["model.out_conv.weight"] == (6, 192, 3, 3)


def test_init_arguments_are_recorded_and_rebuild_the_same_layout():
    net = on_meta(VPPrecond, img_resolution=16, img_channels=3, label_dim=5, **TINY_DDPMPP)
    assert net.init_args == () and net.init_kwargs["model_channels"] == 16
    again = on_meta(type(net), **net.init_kwargs)
    assert shapes(again) == shapes(net)
    assert net.model.enc["16x16_block0"].init_kwargs["in_channels"] == 16  # nested modules record theirs too


# ---------------------------------------------------------------------------
# Arithmetic of the building blocks against plain references.
# ---------------------------------------------------------------------------

def test_resampling_with_box_filter_is_avgpool_and_nearest():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    down = Conv2d(3, 3, kernel=0, down=True, resample_filter=[1, 1]).double()
    up = Conv2d(3, 3, kernel=0, up=True, resample_filter=[1, 1]).double()
    assert torch.allclose(down(x), F.avg_pool2d(x, 2))
    assert torch.allclose(up(x), F.interpolate(x, scale_factor=2, mode="nearest"))


def test_fir_downsampling_preserves_constants():
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    down = Conv2d(2, 2, kernel=0, down=True, resample_filter=[1, 3, 3, 1]).double()
    y = down(x)
    assert y.shape == (1, 2, 4, 4)
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.full_like(y[..., 1:-1, 1:-1], 3.0))  # interior: unit gain


def test_attention_weights_are_scaled_softmax():
    q, k = torch.randn(3, 8, 5), torch.randn(3, 8, 7)
    ref = torch.softmax(torch.einsum("ncq,nck->nqk", q.double(), k.double()) / math.sqrt(8), dim=2)
    # computed in float32 (EDM's AttentionOp): the scores are sums of 8 products; softmax is
    # 1-Lipschitz per score in the max norm, and its own exp/normalise add a few ulps
    score_atol = reorder_atol(8, torch.einsum("ncq,nck->nqk", q.abs(), k.abs()) / math.sqrt(8))
    torch.testing.assert_close(attention_weights(q, k).double(), ref, rtol=0, atol=2 * score_atol + 8 * EPS32)
    assert attention_weights(q.half(), k.half()).dtype == torch.float16


def test_unet_block_heads_and_skip():
    b = UNetBlock(16, 32, emb_channels=8, attention=True, channels_per_head=8)
    assert b.num_heads == 4 and b.skip.weight.shape == (32, 16, 1, 1)
    out = b(torch.randn(2, 16, 4, 4), torch.randn(2, 8))
    assert out.shape == (2, 32, 4, 4)
    assert UNetBlock(16, 16, emb_channels=8, up=True).skip.weight is None  # resampling only, no projection


# ---------------------------------------------------------------------------
# Preconditioners: EDM Table 1 and the bench Denoiser protocol.
# ---------------------------------------------------------------------------

def tiny(cls, label_dim=0, **extra):
    torch.manual_seed(0)
    cfg = TINY_ADM if cls is iDDPMPrecond else TINY_DDPMPP
    return cls(img_resolution=8, img_channels=3, label_dim=label_dim, **dict(cfg, **extra)).eval()


@pytest.mark.parametrize("cls", [VPPrecond, VEPrecond, iDDPMPrecond, EDMPrecond])
def test_preconditioner_formulas(cls):
    net = tiny(cls)
    x, sigma = torch.randn(3, 3, 8, 8), torch.tensor([0.05, 1.0, 30.0])
    s = sigma.reshape(-1, 1, 1, 1)
    if cls is VPPrecond:
        t = ((0.1**2 + 2 * 19.9 * torch.log1p(s**2)).sqrt() - 0.1) / 19.9
        c_skip, c_out, c_in, c_noise = 1, -s, 1 / (s**2 + 1).sqrt(), 999 * t
    elif cls is VEPrecond:
        c_skip, c_out, c_in, c_noise = 1, s, 1, torch.log(s / 2)
    elif cls is iDDPMPrecond:
        j = (net.u.reshape(1, -1) - sigma.reshape(-1, 1)).abs().argmin(1).float()
        c_skip, c_out, c_in, c_noise = 1, -s, 1 / (s**2 + 1).sqrt(), 999 - j
    else:
        sd = 0.5
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        c_in, c_noise = 1 / (s**2 + sd**2).sqrt(), torch.log(s) / 4
    with torch.no_grad():
        f = net.model(c_in * x, c_noise.flatten(), None)[:, :3]
        # the same float32 operations, the coefficients possibly rounded in another order: a few
        # ulps of c_in and c_noise, carried through a network of gain O(1) on each of ~10 layers
        ref = c_skip * x + c_out * f
        torch.testing.assert_close(net(x, sigma), ref, rtol=64 * EPS32, atol=64 * EPS32 * float(ref.abs().max()))


def test_protocol_metadata():
    for cls, lo in [(VPPrecond, 0.002), (VEPrecond, 0.02), (iDDPMPrecond, None), (EDMPrecond, 0.002)]:
        net = tiny(cls, label_dim=4)
        assert isinstance(net, Denoiser)
        assert net.shape == (3, 8, 8) and net.num_classes == 4 and net.has_uncond is False
        assert net.sigma_data == 0.5 and net.sigma_max == 80.0
        assert net.sigma_min == (lo if lo is not None else net.sigma_range[0])
        assert net.sigma_range[0] <= net.sigma_min < net.sigma_max <= net.sigma_range[1]
    vp_sigma = [math.sqrt(math.exp(0.5 * 19.9 * t**2 + 0.1 * t) - 1) for t in (1e-5, 1.0)]  # s(eps_t), s(1)
    assert tiny(VPPrecond).sigma_range == pytest.approx(vp_sigma, rel=1e-6)
    assert all(not p.dtype.is_floating_point or p.dtype == torch.float32 for p in tiny(EDMPrecond).state_dict().values())


def test_labels_int_equal_one_hot_and_scalar_sigma():
    net = tiny(EDMPrecond, label_dim=4)
    x = torch.randn(3, 3, 8, 8)
    labels = torch.tensor([0, 3, 1])
    with torch.no_grad():
        a = net(x, torch.full((3,), 2.0), labels)
        b = net(x, 2.0, F.one_hot(labels, 4).float())
        c = net(x, torch.full((3,), 2.0), None)  # EDM's zero label vector
        d = net(x, 2.0, torch.zeros(3, 4))
    assert torch.equal(a, b) and torch.equal(c, d)
    assert not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == x.shape


@pytest.mark.parametrize("extra", [TINY_NCSNPP, dict(TINY_DDPMPP, encoder_type="skip", decoder_type="skip")])
def test_song_unet_variants_run(extra):
    net = VEPrecond(img_resolution=8, img_channels=3, **extra).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 8, 8), torch.tensor([0.5, 5.0]))
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


def test_plugs_into_bench_samplers_with_counting():
    net = CountingDenoiser(tiny(EDMPrecond, label_dim=2))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * net.sigma_max
    sigmas = sampling.karras_sigmas(3, net.sigma_min, net.sigma_max)
    with torch.no_grad():
        out = sampling.heun(net, x, sigmas, class_labels=torch.tensor([0, 1]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert net.rows == 2 * (2 * 3 - 1)


def test_unet_direct_call_and_bad_arguments():
    unet = DhariwalUNet(img_resolution=8, in_channels=3, out_channels=3, **{k: v for k, v in TINY_ADM.items()
                                                                            if k != "model_type"})
    assert unet(torch.randn(2, 3, 8, 8), torch.randn(2), None).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError):
        SongUNet(img_resolution=8, in_channels=3, out_channels=3, embedding_type="sinusoid")
    with pytest.raises(ValueError):
        EDMPrecond(img_resolution=8, img_channels=3, model_type="__class__")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 execution is honoured on CUDA only")
def test_fp16_on_cuda_matches_fp32():
    net = tiny(EDMPrecond, label_dim=4, use_fp16=True).cuda()
    x, sigma = torch.randn(2, 3, 8, 8, device="cuda"), torch.tensor([0.3, 3.0], device="cuda")
    with torch.no_grad():
        half, full = net(x, sigma, torch.tensor([1, 2])), net(x, sigma, torch.tensor([1, 2]), force_fp32=True)
    assert half.dtype == torch.float32
    assert torch.allclose(half, full, atol=2e-2)
