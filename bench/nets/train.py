"""Training a task's own denoiser with the EDM loss (Karras et al. 2022, eq. 8).

``python -m bench train-denoiser --task gmm8`` draws the task's training split,
trains the network the task declares (``task.build_denoiser()``), keeps an EMA
of the weights, and writes them where the task loads them from. A task may
override the generic hyperparameters through a ``train_config`` dict
attribute (keys of ``TRAIN_DEFAULTS``); explicit arguments override both.
"""
from __future__ import annotations

import copy

import torch
from tqdm import tqdm

from bench.denoiser import edm_loss_sigma, edm_loss_weight


TRAIN_DEFAULTS = dict(steps=20000, batch=1024, lr=2e-3, ema=0.999, label_dropout=0.1, pool=200_000)


def train_config(task, **overrides) -> dict:
    """The hyperparameters a training run uses: generic defaults < ``task.train_config`` < overrides
    (None values are ignored)."""
    cfg = dict(TRAIN_DEFAULTS)
    task_cfg = dict(getattr(task, "train_config", {}) or {})
    unknown = set(task_cfg) - set(cfg)
    if unknown:
        raise ValueError(f"task {task.name} train_config has unknown keys {', '.join(sorted(unknown))}")
    cfg.update(task_cfg)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def train_denoiser(task, *, steps: int | None = None, batch: int | None = None, lr: float | None = None,
                   ema: float | None = None, label_dropout: float | None = None, pool: int | None = None,
                   seed: int = 0, progress: bool = True, log: dict | None = None):
    """Train the task's denoiser; returns the EMA model. ``log`` (a dict), when given, receives the
    hyperparameters used and ``final_loss`` (mean training loss over the last 200 steps)."""
    cfg = train_config(task, steps=steps, batch=batch, lr=lr, ema=ema, label_dropout=label_dropout, pool=pool)
    steps, batch, lr, ema, label_dropout, pool = (cfg[k] for k in ("steps", "batch", "lr", "ema",
                                                                   "label_dropout", "pool"))
    precond = task.build_denoiser()
    x_pool, y_pool = task.sample_train(pool, seed=seed)
    x_pool = torch.as_tensor(x_pool, dtype=torch.float32)
    y_pool = None if y_pool is None else torch.as_tensor(y_pool, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ema_model = copy.deepcopy(precond).requires_grad_(False)
    opt = torch.optim.Adam(precond.model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.02)
    bar = tqdm(range(steps), desc=f"train {task.name}", disable=not progress)
    recent = []
    for step in bar:
        idx = torch.randint(len(x_pool), (batch,), generator=g)
        x0 = x_pool[idx]
        labels = None
        if y_pool is not None:
            labels = y_pool[idx].clone()
            drop = torch.rand(batch, generator=g) < label_dropout
            labels[drop] = precond.num_classes  # the null label
        sigma = edm_loss_sigma(batch, generator=g)
        s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
        noisy = x0 + s * torch.randn(x0.shape, generator=g)
        pred = precond(noisy, sigma, labels)
        loss = (edm_loss_weight(s, precond.sigma_data) * (pred - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(precond.model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema_model.parameters(), precond.parameters()):
                pe.lerp_(p, 1 - ema)
        recent = (recent + [loss.item()])[-200:]
        if step % 200 == 0:
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
    if log is not None:
        log.update(cfg, seed=seed, final_loss=sum(recent) / max(len(recent), 1))
    return ema_model.eval()

