"""Low-rank adapters (LoRA; Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A layer with weight ``W`` (``[out, in]`` for a linear layer, ``[out, in, kh, kw]`` for a
convolution) is adapted as::

    W' = W + (alpha / rank) * reshape(B @ A, W.shape),   A: [rank, in*kh*kw],  B: [out, rank]

with ``B = 0`` at first (so the network computes exactly what it did) and ``A`` drawn from
N(0, 1/fan_in) by a generator of fixed seed; ``W`` is frozen and only ``A`` and ``B`` learn.
The adapted weight is computed where the layer reads ``self.weight``
(``torch.nn.utils.parametrize``), so it works whatever the layer's forward does with its weight:
``torch.nn.Linear``/``Conv2d`` and the EDM networks' own ``Linear``/``Conv2d``
(:mod:`bench.nets.edm.networks`), whose forwards cast ``self.weight`` and call ``torch.nn.functional``.

- :func:`add_lora` attaches adapters to the layers whose qualified name contains a target
  substring and returns the adapter parameters' names (as ``net.named_parameters()`` gives them);
- :func:`lora_state` / :func:`load_lora`: the adapter tensors alone, and the network rebuilt
  from them;
- :func:`merge_lora` folds the deltas into the weights (same function, no adapter overhead).

Written for this project; the adapter's arithmetic is the paper's.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["LoRADelta", "add_lora", "adapted_layers", "is_supported", "lora_state", "load_lora", "merge_lora"]


def _layer_types() -> tuple:
    from bench.nets.edm import networks as edm
    return nn.Linear, nn.Conv2d, edm.Linear, edm.Conv2d


def is_supported(module: nn.Module) -> bool:
    """A linear or 2-D convolution layer with a weight parameter (EDM's kernel-0 resamplers have none)."""
    if parametrize.is_parametrized(module, "weight"):
        return False  # already adapted (or parametrized by someone else)
    w = module._parameters.get("weight")
    return isinstance(module, _layer_types()) and isinstance(w, nn.Parameter) and w.ndim in (2, 4)


class LoRADelta(nn.Module):
    """The parametrization ``W -> W + scale * reshape(B @ A, W.shape)``."""

    def __init__(self, weight_shape, rank: int, alpha: float | None = None, generator=None, device=None,
                 dtype=torch.float32):
        super().__init__()
        out, fan_in = int(weight_shape[0]), math.prod(int(s) for s in weight_shape[1:])
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.scale = self.alpha / self.rank
        a = torch.randn(self.rank, fan_in, generator=generator, dtype=torch.float32) / math.sqrt(fan_in)
        self.A = nn.Parameter(a.to(device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(out, self.rank, device=device, dtype=dtype))

    def delta(self) -> torch.Tensor:
        return self.scale * (self.B @ self.A)

    def forward(self, weight):
        return weight + self.delta().reshape(weight.shape).to(weight.dtype)

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha:g}"


def adapted_layers(net: nn.Module) -> dict[str, LoRADelta]:
    """Qualified layer name -> its adapter, for every layer of ``net`` carrying one."""
    out = {}
    for name, module in net.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations["weight"]:
                if isinstance(p, LoRADelta):
                    out[name] = p
    return out


def _matches(name: str, targets) -> bool:
    return targets == "all" or any(t in name for t in targets)


def add_lora(net: nn.Module, targets, rank: int = 4, alpha: float | None = None, seed: int = 0) -> list[str]:
    """Attach a rank-``rank`` adapter (scale ``alpha / rank``; ``alpha`` defaults to ``rank``)
    to every layer of ``net`` whose qualified name contains one of ``targets`` (substrings;
    ``"all"``: every supported layer). The whole network is frozen; only the adapters'
    ``A``/``B`` require grad. Returns their names in ``net.named_parameters()``.

    Modules that own no parameters (containers, activations, weightless resamplers) are
    passed over; a matched module with parameters that is not a linear/conv layer raises.
    """
    if isinstance(targets, str) and targets != "all":
        targets = [targets]
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
    chosen = []
    for name, module in net.named_modules():
        if not name or "parametrizations" in name.split(".") or not _matches(name, targets):
            continue  # the network itself, or the inside of an existing adapter
        if is_supported(module):
            chosen.append((name, module))
        elif targets != "all" and parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"layer {name!r} already has an adapter; call merge_lora first or choose other targets")
        elif targets != "all" and any(p is not None for p in module._parameters.values()):
            raise ValueError(f"LoRA target matched {name!r} ({type(module).__name__}), which is not a linear or "
                             f"conv layer; use targets that name only Linear/Conv2d layers")
    if not chosen:
        raise ValueError(f"LoRA targets {targets!r} match no linear or conv layer of {type(net).__name__}; "
                         f"pass substrings of layer names as net.named_modules() lists them")
    net.requires_grad_(False)
    g = torch.Generator().manual_seed(int(seed))
    for _, module in chosen:
        w = module.weight
        parametrize.register_parametrization(
            module, "weight", LoRADelta(w.shape, rank, alpha, generator=g, device=w.device, dtype=w.dtype))
    names = list(lora_state(net))
    params = dict(net.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    return names


def lora_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of ``net`` (detached copies), keyed as ``net.named_parameters()`` names them."""
    ours = {id(p) for d in adapted_layers(net).values() for p in (d.A, d.B)}
    return {name: p.detach().clone() for name, p in net.named_parameters() if id(p) in ours}


def load_lora(net: nn.Module, state: dict, *, targets, rank: int, alpha: float | None = None) -> nn.Module:
    """Attach adapters to ``net`` as :func:`add_lora` does and set them from ``state``
    (a :func:`lora_state`); the keys must match exactly. Returns ``net``."""
    names = add_lora(net, targets, rank=rank, alpha=alpha)
    missing, unexpected = set(names) - set(state), set(state) - set(names)
    if missing or unexpected:
        raise ValueError(f"LoRA state does not fit these targets: missing {sorted(missing)[:3]}, unexpected "
                         f"{sorted(unexpected)[:3]}; use the targets and rank it was trained with")
    params = dict(net.named_parameters())
    with torch.no_grad():
        for n in names:
            if params[n].shape != state[n].shape:
                raise ValueError(f"LoRA tensor {n} has shape {tuple(state[n].shape)}, expected "
                                 f"{tuple(params[n].shape)}; use the rank it was trained with")
            params[n].copy_(state[n])
    return net


def merge_lora(net: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight (``W <- W + scale B A``) and remove it. Returns ``net``."""
    for name in adapted_layers(net):
        module = net.get_submodule(name)
        if len(module.parametrizations["weight"]) != 1:
            raise ValueError(f"layer {name!r} has other parametrizations besides its adapter; cannot merge")
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return net
