"""``ddpo``: denoising diffusion policy optimisation (Black et al. 2023; references.md section 4).

Sampling is an MDP whose steps are the stochastic sampler's Gaussian transitions; the
reward arrives at the end. We fine-tune a *copy* of the task's denoiser (the base one
is never modified) and sample with the copy.

The stochastic sampler (NFE = steps = the budget; at least 2 steps). On the EDM
schedule ``s_0 = sigma_max > ... > s_{N-1} = sigma_min > s_N = 0`` (``karras_sigmas``,
rho 7), with ``x0_hat = D_theta(x_i, s_i)``, each step is the DDIM(eta) posterior in
sigma form::

    c_i^2   = eta^2 * s_{i+1}^2 (s_i^2 - s_{i+1}^2) / s_i^2
    mean_i  = x0_hat + sqrt(s_{i+1}^2 - c_i^2) * (x_i - x0_hat) / s_i
    x_{i+1} ~ N(mean_i, c_i^2 I)                     (i = 0 .. N-2)
    x_N     = D_theta(x_{N-1}, s_{N-1})               (the last step, to sigma 0, deterministic)

(eta = 1, the default, is DDPM's ancestral step: mean = x0_hat + (s_{i+1}/s_i)^2 (x_i - x0_hat).)
The policy's log-probability of a step is ``log N(x_{i+1}; mean_i, c_i^2 I)`` of the
*stored* next state, averaged over dimensions as DDPO does.

Reward (``reward="disc"``, the default): the log density ratio of a real-versus-generated
discriminator at sigma_min (``bench.nets.discriminator``, trained first on the tuning split
against base-sampler samples; those samples count in the fit's NFE), as on a real task.
``reward="logprob"`` is the exact log-density ``task.log_prob`` of the toy mixtures: knowledge
no real task offers, so its results are marked privileged (and it optimises E_q[log p], which
is highest when the samples pile on the mode centres).

Learning: per iteration, ``batch`` trajectories from the current copy; advantages are
the rewards normalised, then clipped to +-``adv_clip``. Unconditional tasks: over the
batch. Conditional tasks: per class, by DDPO's per-prompt statistics tracker with the
class as the prompt (:class:`ClassStats`): each class keeps its ``buffer`` most recent
rewards, the batch's rewards of that class are appended first, then normalised by the
mean/std of that buffer, or by the whole batch's mean/std while the buffer holds fewer
than ``buffer_min`` rewards. ``buffer=0`` uses the per-class statistics of the batch
alone (a class with a single sample falls back to the batch statistics).
``variant="sf"`` (DDPO-SF): one gradient step on ``-mean(A * log p)`` over all steps.
``variant="is"`` (DDPO-IS): PPO's clipped surrogate on the ratio to the sampling-time
log-probabilities, ``inner_epochs`` passes over minibatches of ``minibatch`` trajectories.
Adam, gradient-norm clip ``grad_clip``. ``layers="all"`` trains every weight (toy and
digits networks); a list of parameter-name substrings trains only those.
``lora_rank > 0`` trains low-rank adapters instead (``bench.nets.lora``; the paper fine-tunes
Stable Diffusion through LoRA): ``layers`` then names the linear/conv layers to adapt
("all": every one), their weights stay frozen, and only the adapters (rank
``lora_rank``, scale ``lora_alpha / lora_rank``; ``lora_alpha=0``: scale 1) learn; the
copy samples with the adapters merged into its weights. Presets for the EDM image tasks
(cifar10, cifar10-cond, imagenet64) adapt, at rank 4, the attention layers (``qkv``,
``proj``) and the output convolution (SongUNet's ``aux_conv``, DhariwalUNet's
``out_conv``), so few tensors train: a small optimiser state and artifact. Only the
trained tensors (``net.*``, or ``lora.*`` for adapters) are stored in the artifact.

Costs: every evaluation of the copy (rollouts and the log-probability recomputation of
each update) is charged to the harness's counter and so appears in the fit's NFE; at
sampling time the copy's evaluations are counted exactly as the base denoiser's.
The artifact's ``reward_data`` is the mean reward of the tuning data itself, the dashed line
of the reward curve written beside each result: a reward climbing far past it means the
policy exploits the reward (a fixed discriminator's logit is unbounded) rather than
matching the data.
Divergence: a non-finite loss or reward, or a reward beyond ``reward_limit``, raises
``bench.methods._common.TrainingDiverged``; no artifact is written.

Ours (not in the paper): the class standing in for the prompt in the reward statistics,
and the ``buffer=0`` per-batch statistics option; LoRA on EDM networks, the choice of
adapted layers and the rank of the EDM presets; the toy defaults (lr 1e-4, clip range
0.05, minibatch 64) instead of the paper's Stable Diffusion ones (LoRA lr 3e-4, clip
range 1e-4).
"""
from __future__ import annotations

import copy
import math

import torch

from bench.nets import discriminator as disc_lib
from bench import sampling
from bench.nets.lora import add_lora, adapted_layers, load_lora, lora_state, merge_lora
from bench.method import Artifact, BudgetError, Method, objective
from bench.registry import register_method
from ._common import (Charged, TrainingDiverged, check_finite, curve_png, gaussian_logprob, ppo_loss,
                             select_params, unwrap)

__all__ = ["DDPO", "ClassStats", "step_coeffs", "rollout", "step_logprobs", "normalise_advantages",
           "ppo_loss", "TrainingDiverged"]

#: the layers the EDM image presets adapt: attention (qkv, output projection) and the output conv
EDM_LORA_LAYERS = ["qkv", "proj", "aux_conv", "out_conv"]


def step_coeffs(s, s_next, eta: float = 1.0):
    """(a, c): mean = x0_hat + a (x - x0_hat), std c, of the step s -> s_next > 0."""
    s, s_next = float(s), float(s_next)
    c2 = eta**2 * s_next**2 * (s**2 - s_next**2) / s**2
    return math.sqrt(max(s_next**2 - c2, 0.0)) / s, math.sqrt(c2)


def rollout(model, x, sigmas, *, eta=1.0, class_labels=None, noise=None, generator=None, record=False):
    """Run the stochastic sampler. With ``record``, also returns the states ``[x_0 .. x_{N-1}]``
    and the per-step log-probabilities ``[N-1, batch]`` of the sampled next states."""
    x = x.to(torch.float64)
    states, lps = [x], []
    n = len(sigmas) - 1
    for i in range(n):
        x0 = sampling.denoise(model, x, sigmas[i], class_labels)
        if i == n - 1 or float(sigmas[i + 1]) == 0:
            x = x0
            break
        a, c = step_coeffs(sigmas[i], sigmas[i + 1], eta)
        mean = x0 + a * (x - x0)
        eps = noise.randn_like(x) if noise is not None else \
            torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
        x = mean + c * eps
        if record:
            states.append(x)
            lps.append(gaussian_logprob(x, mean, c))
    if record:
        return x, states, (torch.stack(lps) if lps else torch.zeros(0, x.shape[0], dtype=torch.float64))
    return x


def step_logprobs(model, states, sigmas, *, eta=1.0, class_labels=None, rows=None):
    """Log-probabilities ``[N-1, len(rows)]`` of the stored transitions under ``model`` (with grads)."""
    out = []
    for i in range(len(states) - 1):
        x = states[i] if rows is None else states[i][rows]
        nxt = states[i + 1] if rows is None else states[i + 1][rows]
        lab = None if class_labels is None else (class_labels if rows is None else class_labels[rows])
        x0 = sampling.denoise(model, x, sigmas[i], lab)
        a, c = step_coeffs(sigmas[i], sigmas[i + 1], eta)
        out.append(gaussian_logprob(nxt, x0 + a * (x - x0), c))
    return torch.stack(out)


def normalise_advantages(reward, labels=None, clip: float = 5.0):
    """(r - mean) / std over the batch, or per class when ``labels`` is given; clipped."""
    r = reward.to(torch.float64)
    adv = (r - r.mean()) / (r.std() + 1e-8)
    if labels is not None:
        for k in labels.unique():
            m = labels == k
            if int(m.sum()) >= 2:
                adv[m] = (r[m] - r[m].mean()) / (r[m].std() + 1e-8)
    return adv.clamp(-clip, clip)


class ClassStats:
    """DDPO's per-prompt reward statistics, with the class label as the prompt.

    State: ``recent[k]``, the at most ``buffer`` most recent rewards of class ``k`` (oldest
    first). :meth:`advantages` appends each class's rewards of the batch (in batch order)
    to its buffer, then normalises them with the mean and std (ddof 0) of the buffer, or of
    the whole batch while the buffer holds fewer than ``min_count`` rewards."""

    def __init__(self, buffer: int = 16, min_count: int = 16, eps: float = 1e-6):
        if buffer < 1:
            raise ValueError(f"ClassStats needs a buffer of at least 1 reward, got {buffer}")
        self.buffer, self.min_count, self.eps = int(buffer), int(min_count), float(eps)
        self.recent: dict[int, list[float]] = {}

    def advantages(self, reward, labels):
        r = torch.as_tensor(reward).detach().to(torch.float64).cpu().reshape(-1)
        labels = torch.as_tensor(labels).cpu().reshape(-1)
        batch_mean, batch_std = r.mean(), r.std(unbiased=False)
        adv = torch.empty_like(r)
        for k in labels.unique().tolist():
            m = labels == k
            kept = (self.recent.get(k, []) + r[m].tolist())[-self.buffer:]
            self.recent[k] = kept
            if len(kept) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                t = torch.tensor(kept, dtype=torch.float64)
                mean, std = t.mean(), t.std(unbiased=False)
            adv[m] = (r[m] - mean) / (std + self.eps)
        return adv


@register_method("ddpo")
class DDPO(Method):
    description = "DDPO (Black et al. 2023): fine-tunes a copy of the denoiser by policy gradient on a reward"
    family = "fine-tuned weights"
    needs = ("tuning",)
    has_fit = True
    fit_version = 3  # 2: running per-class reward buffer, LoRA; 3: reward_data
    defaults = dict(variant="is", eta=1.0, rho=7.0, reward="disc", iters=60, batch=256, minibatch=64,
                    inner_epochs=1, lr=1e-4, ppo_clip=0.05, adv_clip=5.0, grad_clip=1.0, layers="all",
                    lora_rank=0, lora_alpha=0.0, buffer=16, buffer_min=16,
                    reward_limit=1e6, tune_samples=2000, disc_steps=1000, disc_batch=512, disc_lr=1e-3,
                    disc_width=128, seed=0)
    presets = {task: dict(lora_rank=4, layers=list(EDM_LORA_LAYERS))
               for task in ("cifar10", "cifar10-cond", "imagenet64")}
    choices = dict(variant=("is", "sf"), reward=("disc", "logprob"))
    types = dict(layers=(str, list))  # "all", or the names of the layers to train

    def __init__(self, task=None, **config):
        super().__init__(task=task, **config)
        c = self.config
        if not 0 < c["eta"] <= 1:
            raise ValueError(f"ddpo needs a stochastic sampler: eta in (0, 1], got {c['eta']}")
        if int(c["lora_rank"]) != c["lora_rank"] or c["lora_rank"] < 0:
            raise ValueError(f"ddpo lora_rank must be 0 (off) or a positive integer, got {c['lora_rank']}")
        if c["buffer"] < 0 or (c["buffer"] and not 1 <= c["buffer_min"] <= c["buffer"]):
            raise ValueError(f"ddpo buffer must be >= 0 and buffer_min in [1, buffer], got buffer={c['buffer']}, "
                             f"buffer_min={c['buffer_min']}")
        self.lora = None
        self.tensors, self.meta, self._net, self.disc = None, None, None, None

    # -- budget ---------------------------------------------------------------------------
    def describe_budget(self, nfe_budget):
        if nfe_budget < 2:
            raise BudgetError(f"NFE budget {nfe_budget} is too small for ddpo: its stochastic sampler needs "
                              f"at least 2 steps (NFE = steps)")
        return dict(sampler="ddim-eta (stochastic, EDM schedule)", eta=self.config["eta"], steps=int(nfe_budget),
                    nfe_formula=int(nfe_budget))

    def sigmas(self, denoiser, nfe_budget):
        self.describe_budget(nfe_budget)
        return sampling.karras_sigmas(int(nfe_budget), denoiser.sigma_min, denoiser.sigma_max, self.config["rho"])

    # -- reward ---------------------------------------------------------------------------
    def reward_mode(self, task):
        mode = self.config["reward"]
        if mode == "logprob" and not hasattr(task, "log_prob"):
            raise ValueError(f"task {task.name} has no exact log-density; use reward=disc")
        return mode

    def privileged(self):
        if self.config["reward"] == "logprob":
            return "reward = the task's exact log-density"
        return None

    def reward(self, task, x, labels=None):
        """Per-sample reward of final samples ``x`` (float64, [batch])."""
        if self.reward_mode(task) == "logprob":
            return torch.as_tensor(task.log_prob(x.detach().double().cpu().numpy()), dtype=torch.float64)
        s = torch.full((x.shape[0],), float(self._sigma_min), device=x.device)
        with torch.no_grad():
            return self.disc.to(x.device)(x.float(), s).double().cpu()

    # -- the trainable copy ---------------------------------------------------------------
    def _lora_spec(self):
        c = self.config
        layers = c["layers"]
        return dict(rank=int(c["lora_rank"]), alpha=float(c["lora_alpha"] or c["lora_rank"]),
                    targets=layers if layers == "all" else ([layers] if isinstance(layers, str) else list(layers)))

    def _copy(self, denoiser, device=None):
        net = copy.deepcopy(unwrap(denoiser))
        if device is not None:
            net = net.to(device)
        net.requires_grad_(False)
        return net

    # -- fit ------------------------------------------------------------------------------
    def untrained(self):
        """The same settings without a training iteration."""
        return self.name, dict(self.config, iters=0)

    def fit(self, ctx):
        c = self.config
        torch.manual_seed(ctx.torch_seed(c["seed"]))
        g = torch.Generator().manual_seed(ctx.torch_seed(c["seed"]))
        task, den = ctx.task, ctx.denoiser
        sig = self.sigmas(den, ctx.nfe_budget).to(ctx.device)
        self._sigma_min = den.sigma_min
        mode = self.reward_mode(task)
        meta = dict(reward=mode, steps=int(ctx.nfe_budget))
        tensors = {}
        real, real_labels = ctx.tuning(c["tune_samples"])
        if mode == "disc":

            def base(d, x, *, nfe_budget, class_labels=None, noise=None):
                return rollout(d, x, sig.to(x.device), eta=c["eta"], class_labels=class_labels, noise=noise)
            with torch.no_grad():
                fake, _ = ctx.generate(base, c["tune_samples"])
            self.disc = disc_lib.for_shape(den.shape, den.sigma_data, width=c["disc_width"])
            meta["disc_log"] = disc_lib.train(self.disc, real, fake, steps=c["disc_steps"], batch=c["disc_batch"],
                                              lr=c["disc_lr"], seed=ctx.torch_seed(c["seed"]),
                                              sigmas=[den.sigma_min],
                                              progress=ctx.progress, desc="ddpo reward discriminator")
            self.disc.eval().requires_grad_(False)
            meta["disc"] = self.disc.config
            tensors.update({f"disc.{k}": v for k, v in self.disc.state_dict().items()})
        # the reward of the tuning data itself: a policy whose reward climbs far past it is
        # exploiting the reward (a fixed discriminator's logit is unbounded), not matching the data
        meta["reward_data"] = self.reward(task, real.to(ctx.device), real_labels).mean().item()
        net = self._copy(den, ctx.device)
        if c["lora_rank"]:
            spec = self._lora_spec()
            names = add_lora(net, spec["targets"], rank=spec["rank"], alpha=spec["alpha"],
                             seed=ctx.torch_seed(c["seed"]))
            meta.update(lora=spec, adapted=list(adapted_layers(net)))
        else:
            names = select_params(net, c["layers"], "ddpo")
        params = dict(net.named_parameters())
        trainable = [params[n] for n in names]
        for p in trainable:
            p.requires_grad_(True)
        stats = ClassStats(c["buffer"], c["buffer_min"]) if task.num_classes and c["buffer"] else None
        model = Charged(den, net)
        opt = torch.optim.Adam(trainable, lr=c["lr"])
        history = []
        for it in ctx.progress_iter(range(c["iters"]), f"ddpo nfe={ctx.nfe_budget}"):
            b = c["batch"]
            x = (torch.randn((b, *den.shape), generator=g, dtype=torch.float64) * den.sigma_max).to(ctx.device)
            labels = torch.randint(task.num_classes, (b,), generator=g).to(ctx.device) if task.num_classes else None
            with torch.no_grad():
                final, states, old_lp = rollout(model, x, sig, eta=c["eta"], class_labels=labels, generator=g,
                                                record=True)
            r = self.reward(task, final, labels)
            check_finite("ddpo", "reward", r, it, c["reward_limit"])
            if stats is not None:
                adv = stats.advantages(r, labels.cpu()).clamp(-c["adv_clip"], c["adv_clip"]).to(ctx.device)
            else:
                adv = normalise_advantages(r, None if labels is None else labels.cpu(), c["adv_clip"]).to(ctx.device)
            losses, ratios, clipped = [], [], []
            if c["variant"] == "sf":
                batches = [[None]]
            else:
                batches = [torch.randperm(b, generator=g).split(c["minibatch"]) for _ in range(c["inner_epochs"])]
            for epoch in batches:
                for rows in epoch:
                    lp = step_logprobs(model, states, sig, eta=c["eta"], class_labels=labels, rows=rows)
                    a = adv if rows is None else adv[rows.to(adv.device)]
                    if c["variant"] == "sf":
                        loss = -(a[None] * lp).mean()
                    else:
                        old = old_lp if rows is None else old_lp[:, rows.to(old_lp.device)]
                        loss, ratio = ppo_loss(lp, old, a[None], c["ppo_clip"])  # DDPO-IS
                        ratios.append(ratio.detach().mean().item())
                        clipped.append(((ratio.detach() - 1).abs() > c["ppo_clip"]).double().mean().item())
                    check_finite("ddpo", "loss", loss, it)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(trainable, c["grad_clip"])
                    opt.step()
                    losses.append(loss.item())
            for p in trainable:
                check_finite("ddpo", "weights", p.detach(), it)
            history.append(dict(iter=it, reward=r.mean().item(), reward_std=r.std().item(),
                                loss=sum(losses) / len(losses), fit_nfe=den.rows,
                                **(dict(ratio=sum(ratios) / len(ratios), clip_frac=sum(clipped) / len(clipped))
                                   if ratios else {})))
        meta.update(history=history, layers=names)
        if history:  # each iteration's reward is of its own batch, drawn before that iteration's update
            meta["objective"] = objective("reward (batch mean, first vs last iteration)", history[0]["reward"],
                                          history[-1]["reward"], higher_is_better=True)
        if c["lora_rank"]:
            tensors.update({f"lora.{n}": v for n, v in lora_state(net).items()})
        else:
            tensors.update({f"net.{n}": params[n].detach().clone() for n in names})
        return Artifact(meta=meta, tensors=tensors)

    def load(self, artifact):
        self.meta = artifact.meta
        self.tensors = {k[4:]: v for k, v in artifact.tensors.items() if k.startswith("net.")}
        self.lora = ({k[5:]: v for k, v in artifact.tensors.items() if k.startswith("lora.")}
                     if "lora" in artifact.meta else None)
        self._net = None
        if "disc" in artifact.meta:
            self.disc = disc_lib.build(artifact.meta["disc"])
            self.disc.load_state_dict({k[5:]: v for k, v in artifact.tensors.items() if k.startswith("disc.")})
            self.disc.eval().requires_grad_(False)

    def finetuned(self, denoiser, device=None):
        """The fine-tuned copy of ``denoiser`` (built once from the artifact's tensors)."""
        if self._net is None:
            net = self._copy(denoiser)
            if self.lora is not None:  # adapters rebuilt from the artifact, then merged for speed
                spec = self.meta["lora"]
                try:
                    load_lora(net, self.lora, targets=spec["targets"], rank=spec["rank"], alpha=spec["alpha"])
                except ValueError as e:
                    raise ValueError(f"ddpo artifact does not fit this denoiser: {e}") from None
                merge_lora(net)
            missing = set(self.tensors) - set(dict(net.named_parameters()))
            if missing:
                raise ValueError(f"ddpo artifact does not fit this denoiser (unknown tensors {sorted(missing)[:3]})")
            net.load_state_dict(self.tensors, strict=False)
            self._net = net.eval().requires_grad_(False)
        return self._net.to(device) if device is not None else self._net

    # -- sampling -------------------------------------------------------------------------
    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        model = Charged(denoiser, self.finetuned(denoiser, x.device))
        return rollout(model, x, self.sigmas(denoiser, nfe_budget).to(x.device), eta=self.config["eta"],
                       class_labels=class_labels, noise=noise)

    def write_extras(self, result_path):
        """The mean reward per iteration, as a PNG beside the result."""
        if not self.meta or not self.meta.get("history"):
            return []
        path = result_path.with_suffix(".reward.png")
        refs = {"reward": (self.meta["reward_data"], "tuning data")} if "reward_data" in self.meta else {}
        curve_png(path, self.meta["history"], keys=("reward", "loss"), title=f"ddpo ({self.meta['reward']})",
                  refs=refs)
        return [path.name]
