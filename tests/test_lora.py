"""bench.nets.lora: zero change at init, frozen base weights, the adapted weight against an
independent F.linear / F.conv2d computation, merging, save/load, the EDM networks."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.nets.edm import networks as edm
from bench.nets.lora import LoRADelta, adapted_layers, add_lora, load_lora, lora_state, merge_lora
from tolerance import EPS32, reorder_atol

TINY_SONG = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                 decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=16,
                 channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
TINY_ADM = dict(model_type="DhariwalUNet", model_channels=64, channel_mult=[1, 2], num_blocks=1,
                attn_resolutions=[4], dropout=0.0)
EDM_TARGETS = ["qkv", "proj", "aux_conv", "out_conv"]  # the ddpo presets' layers


pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """A plain-torch net: a conv, an EDM conv, a linear, an EDM linear, a norm; float64, so
    that comparisons with F.conv2d / F.linear test the equations, not float32 summation order."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.edm_conv = edm.Conv2d(5, 4, kernel=3, init_bias=0.1)
        self.norm = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4 * 6 * 6, 7)
        self.edm_fc = edm.Linear(7, 3, init_bias=0.1)
        self.double()

    def forward(self, x):
        x = self.norm(self.edm_conv(torch.relu(self.conv(x))))
        return self.edm_fc(torch.tanh(self.fc(x.flatten(1))))


def tiny_edm(kw, label_dim=0):
    torch.manual_seed(0)
    return edm.EDMPrecond(img_resolution=8, img_channels=3, label_dim=label_dim, **kw).eval()


def edm_inputs(label_dim=0):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 8, 8, generator=g)
    s = torch.tensor([0.05, 1.0, 20.0])
    return x, s, (torch.tensor([0, 3, 7]) if label_dim else None)


def randomise_b(net, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d in adapted_layers(net).values():
            d.B.copy_(torch.randn(d.B.shape, generator=g) * 0.1)


X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
# Tiny's largest sum has 4*6*6 = 144 products, each activation and weight below 10 in magnitude:
# two float64 summation orders differ by less than this
TINY_ATOL = reorder_atol(144, 144 * 10 * 10, torch.float64)


def test_output_unchanged_at_init_and_only_adapters_train():
    net = Tiny()
    before = net(X)
    names = add_lora(net, ["conv", "fc"], rank=2)
    assert torch.equal(net(X), before)
    assert set(adapted_layers(net)) == {"conv", "edm_conv", "fc", "edm_fc"}
    assert sorted(n for n, p in net.named_parameters() if p.requires_grad) == sorted(names)
    assert len(names) == 8 and all(n.endswith((".A", ".B")) for n in names)
    d = adapted_layers(net)["conv"]
    assert d.A.shape == (2, 3 * 3 * 3) and d.B.shape == (5, 2) and not d.B.any()
    # A is drawn by a fixed-seed generator: the same on every call
    other = Tiny()
    add_lora(other, ["conv", "fc"], rank=2)
    assert all(torch.equal(a, b) for a, b in zip(lora_state(net).values(), lora_state(other).values()))


def test_gradient_reaches_a_and_b():
    net = Tiny()
    add_lora(net, "all", rank=3)
    net(X).square().sum().backward()
    for d in adapted_layers(net).values():
        assert d.B.grad is not None and d.B.grad.abs().sum() > 0  # B = 0: dL/dB = s dL/dW A^T != 0
        assert d.A.grad is not None  # dL/dA = s B^T dL/dW, zero while B is
    randomise_b(net)
    for p in net.parameters():
        p.grad = None
    net(X).square().sum().backward()
    assert all(d.A.grad.abs().sum() > 0 for d in adapted_layers(net).values())
    assert all(p.grad is None for n, p in net.named_parameters() if not n.endswith((".A", ".B")))


def test_adapted_layers_compute_w_plus_scaled_ba():
    net = Tiny()
    base = copy.deepcopy(net)
    add_lora(net, "all", rank=2, alpha=6.0)
    randomise_b(net)
    ad = adapted_layers(net)
    s = 6.0 / 2
    assert all(d.scale == s for d in ad.values())

    def w(name):
        d, w0 = ad[name], getattr(base, name).weight
        return w0 + s * (d.B @ d.A).reshape(w0.shape)
    x = X
    ref = F.conv2d(x, w("conv"), base.conv.bias, padding=1)
    ref = F.conv2d(torch.relu(ref), w("edm_conv"), padding=1) + base.edm_conv.bias.reshape(1, -1, 1, 1)
    ref = F.linear(torch.tanh(F.linear(base.norm(ref).flatten(1), w("fc"), base.fc.bias)), w("edm_fc"),
                   base.edm_fc.bias)
    torch.testing.assert_close(net(x), ref, rtol=0, atol=TINY_ATOL)
    # the layer-level check, exactly
    xl = torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(net.edm_fc(xl), F.linear(xl, w("edm_fc"), base.edm_fc.bias), rtol=0, atol=0)
    # the base weights never moved
    assert all(torch.equal(getattr(net, n).parametrizations.weight.original, getattr(base, n).weight) for n in ad)


def test_merge_gives_the_adapted_function_and_removes_adapters():
    net = Tiny()
    add_lora(net, ["conv", "fc"], rank=2)
    randomise_b(net)
    adapted = net(X)
    merge_lora(net)
    assert not adapted_layers(net) and not lora_state(net)
    assert set(net.state_dict()) == set(Tiny().state_dict())
    assert type(net.edm_conv) is edm.Conv2d
    torch.testing.assert_close(net(X), adapted, rtol=0, atol=TINY_ATOL)


def test_save_load_round_trip_is_exact():
    net = Tiny()
    add_lora(net, ["edm_", "fc"], rank=3, alpha=1.5)
    randomise_b(net)
    state = lora_state(net)
    assert all(not t.requires_grad for t in state.values())
    rebuilt = load_lora(Tiny(), state, targets=["edm_", "fc"], rank=3, alpha=1.5)
    assert torch.equal(rebuilt(X), net(X))
    with pytest.raises(ValueError, match="does not fit"):
        load_lora(Tiny(), state, targets=["fc"], rank=3)
    with pytest.raises(ValueError, match="rank"):
        load_lora(Tiny(), state, targets=["edm_", "fc"], rank=2)


def test_bad_targets_raise_one_line_errors():
    with pytest.raises(ValueError, match="match no linear or conv layer"):
        add_lora(Tiny(), ["attention"])
    with pytest.raises(ValueError, match="not a linear or conv layer"):
        add_lora(Tiny(), ["norm"])  # a GroupNorm
    with pytest.raises(ValueError, match="rank"):
        add_lora(Tiny(), ["fc"], rank=0)
    net = Tiny()
    add_lora(net, ["fc"])
    with pytest.raises(ValueError, match="already has an adapter"):
        add_lora(net, ["fc"])


@pytest.mark.parametrize("kw, final", [(TINY_SONG, "model.dec.8x8_aux_conv"), (TINY_ADM, "model.out_conv")],
                         ids=["SongUNet", "DhariwalUNet"])
def test_edm_networks_take_the_preset_adapters(kw, final):
    net = tiny_edm(kw, label_dim=10)
    x, s, lab = edm_inputs(10)
    before = net(x, s, lab)
    add_lora(net, EDM_TARGETS, rank=4)
    layers = adapted_layers(net)
    assert final in layers and any(n.endswith(".qkv") for n in layers) and any(n.endswith(".proj") for n in layers)
    assert all(n.endswith((".qkv", ".proj", "aux_conv", "out_conv")) for n in layers)
    assert torch.equal(net(x, s, lab), before)
    net(x, s, lab).square().mean().backward()
    assert layers[final].B.grad.abs().sum() > 0  # (ADM's zero-initialised proj/out_conv block the rest)
    randomise_b(net)
    adapted = net(x, s, lab)
    assert not torch.equal(adapted, before)
    state = lora_state(net)
    rebuilt = load_lora(tiny_edm(kw, label_dim=10), state, targets=EDM_TARGETS, rank=4)
    assert torch.equal(rebuilt(x, s, lab), adapted)
    merge_lora(rebuilt)
    # merging keeps each weight's value bit for bit (leave_parametrized); the float32 network (EDM's
    # preconditioning casts to float32) may only sum in another order: a few ulps per layer, a
    # dozen layers deep, on outputs of order 1
    scale = float(adapted.detach().abs().max())
    torch.testing.assert_close(rebuilt(x, s, lab), adapted, rtol=0, atol=64 * 16 * EPS32 * scale)
    assert set(rebuilt.state_dict()) == set(tiny_edm(kw, label_dim=10).state_dict())


def test_edm_conv_adapter_against_f_conv2d():
    torch.manual_seed(0)
    conv = edm.Conv2d(6, 8, kernel=3, init_bias=0.5).double()
    w0, b0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    add_lora(nn.ModuleDict(dict(c=conv)), ["c"], rank=2, alpha=4.0)
    d = adapted_layers(conv)[""]
    assert isinstance(d, LoRADelta)
    with torch.no_grad():
        d.B.copy_(torch.randn(8, 2))
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    ref = F.conv2d(x, w0 + 2.0 * (d.B @ d.A).reshape(8, 6, 3, 3), b0, padding=1)
    # the bound of both roundings: the adapted weight (rank + 1 terms) and the convolution (6*3*3 + 1)
    w_abs = (w0.abs() + 2.0 * (d.B.abs() @ d.A.abs()).reshape(8, 6, 3, 3)).detach()
    abs_sum = F.conv2d(x.abs(), w_abs, b0.abs(), padding=1)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=reorder_atol(6 * 9 + 1 + 3, abs_sum, torch.float64))
