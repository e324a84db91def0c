"""``irl``: the inverse-RL policy-gradient sampler (after Bourdrez, Verine & Cappe 2026).

Sampling as a finite-horizon MDP whose horizon is the steps of the base solver
(EDM Heun, or Euler) at the NFE budget. State: (x_i, sigma_i, i); initial
x ~ N(0, sigma_max^2 I). At each step a lightweight policy picks, per sample:

- ``churn``: a stochasticity level gamma from a small set (EDM churn:
  sigma_hat = sigma_i (1 + gamma), fresh noise to reach it);
- ``renoise`` (optional): jump back from sigma_i to sigma_{i-1} with fresh noise
  and redo that Heun step (Restart with one step back; 2 NFE), allowed only
  while the sample's remaining budget covers it and every later base step;
- ``guidance`` (optional, conditional tasks whose denoiser has an unconditional
  mode): a classifier-free guidance scale for the step's evaluations; a scale
  other than 1 costs a second evaluation, budgeted the same way.

No hand-written reward: state-marginal matching in the f-IRL form (Ni et al.
2020). A discriminator d(x, sigma) is trained by BCE between the expert
marginal at each sigma_i (tuning data forward-noised to sigma_i, label 1) and
the policy's states at sigma_i (label 0), in alternation with the policy. With
u = exp(logit) the estimated ratio rho_E / rho_pi, the per-state reward is
``u`` (forward KL: mode covering, recall), ``log u`` (reverse KL: mode seeking,
precision) or ``log(1 + u)`` (Jensen-Shannon), i.e. minus the per-state
signals of references.md section 7. The final sample is scored at sigma_min.
Policy gradient: REINFORCE on returns-to-go with a per-step baseline (the
batch mean at that step, advantages normalised per step), optional PPO
clipping over a few epochs, an entropy bonus. Training stops after ``iters``
rounds or when the fit's denoiser evaluations reach ``fit_nfe``.

Choices where the paper is silent (ours): the action sets above; a
factorised categorical policy (one head per action family) on cheap features
the sampler already has (a noise-level embedding, i/N, log |x| and
log |x - D(x)| normalised by the noise level, the fraction of budget spent);
the discriminator logit is *not* a default feature (it costs a network call
per step at inference); the discriminator is the shared MLP/CNN of
``bench.nets.discriminator``; logits clipped to [-5, 5] before the f-transform.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.nets import discriminator as disc_lib
from bench import sampling
from bench.denoiser import Guided
from bench.method import Artifact, BudgetError, Method, steps_for
from bench.registry import register_method
from ._common import ppo_loss

REWARDS = {
    "fkl": lambda logit: logit.exp(),
    "rkl": lambda logit: logit,
    "js": lambda logit: F.softplus(logit),
}
POLICY_STREAM = 3
N_FEATURES = 10  # see features()


class Policy(nn.Module):
    """Factorised categorical policy; ``time_only`` keeps one distribution per step."""

    def __init__(self, n_feat: int, sizes: list[int], steps: int, width: int = 64, time_only: bool = False):
        super().__init__()
        self.config = dict(n_feat=n_feat, sizes=list(sizes), steps=steps, width=width, time_only=time_only)
        self.sizes, self.time_only = list(sizes), time_only
        if time_only:
            self.table = nn.Parameter(torch.zeros(steps, sum(sizes)))
        else:
            self.net = nn.Sequential(nn.Linear(n_feat, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                     nn.Linear(width, sum(sizes)))
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, feat, step: int):
        if self.time_only:
            return self.table[step].expand(feat.shape[0], -1)
        return self.net(feat)


def advantages(rew: torch.Tensor) -> torch.Tensor:
    """Returns-to-go of per-step rewards [steps, batch] (the action at step i shapes the
    states after steps i..N-1), minus the per-step batch mean, divided by its std."""
    ret = rew.flip(0).cumsum(0).flip(0)
    return (ret - ret.mean(1, keepdim=True)) / (ret.std(1, keepdim=True) + 1e-8)


def policy_loss(lp, old_lp, adv, clip: float = 0.0):
    """REINFORCE (-A log pi), or PPO's clipped surrogate when ``clip`` > 0 (ratio to the
    policy that sampled the actions)."""
    if clip > 0:
        return ppo_loss(lp, old_lp, adv, clip)[0]
    return -(adv * lp).mean()


def features(x, sigma, denoised_prev, i, n_steps, spent, budget, sigma_data):
    b = x.shape[0]
    flat = x.reshape(b, -1).float()
    d = flat.shape[1]
    scale = math.sqrt(float(sigma) ** 2 + sigma_data**2)
    ls = torch.full((b, 1), math.log(float(sigma)) / 4)
    emb = torch.cat([torch.sin(ls * k) for k in (1, 2, 4)] + [torch.cos(ls * k) for k in (1, 2, 4)], 1)
    xnorm = (flat.norm(dim=1, keepdim=True) / math.sqrt(d) / scale).clamp_min(1e-6).log()
    if denoised_prev is None:
        dn = torch.zeros(b, 1)
    else:
        dn = ((flat - denoised_prev.reshape(b, -1).float()).norm(dim=1, keepdim=True) / math.sqrt(d) /
              max(float(sigma), 1e-6)).clamp_min(1e-6).log()
    return torch.cat([emb, torch.full((b, 1), i / n_steps), xnorm.cpu(), dn.cpu(),
                      (spent / budget).float()[:, None].cpu()], 1)


@register_method("irl")
class IRLSampler(Method):
    description = "inverse-RL policy-gradient sampler: learns churn/renoise/guidance per step by f-IRL"
    family = "learned dynamics"
    needs = ("tuning",)
    has_fit = True
    fit_version = 1
    defaults = dict(
        solver="heun", rho=7.0,
        churn=[0.0, 0.05, 0.1, 0.2, 0.4], renoise=False, guidance=[1.0, 1.5, 2.0, 3.0], use_guidance="auto",
        reserve=-1, divergence="rkl", time_only=False, temperature=1.0, width=64,
        iters=30, batch=256, lr=3e-3, entropy=0.01, ppo_clip=0.0, ppo_epochs=1,
        disc_steps=50, disc_batch=512, disc_lr=1e-3, disc_width=64, tune_samples=5000,
        fit_nfe=0, seed=0, s_noise=1.0)
    choices = dict(solver=("heun", "euler"), divergence=tuple(REWARDS), use_guidance=("auto", True, False))

    def __init__(self, task=None, **config):
        super().__init__(task=task, **config)
        c = self.config
        if any(not 0 <= g <= math.sqrt(2) - 1 + 1e-9 for g in c["churn"]) or not c["churn"]:
            raise ValueError(f"churn levels must lie in [0, sqrt(2)-1], got {c['churn']}")
        self.guided = bool(task is not None and task.num_classes) if c["use_guidance"] == "auto" \
            else bool(c["use_guidance"])
        self.policy = None

    # -- the action space and its budget -------------------------------------------------
    def families(self):
        c = self.config
        fam = {"churn": list(c["churn"])}
        if c["renoise"]:
            fam["renoise"] = [0, 1]
        if self.guided:
            fam["guidance"] = list(c["guidance"])
        return fam

    def base_steps(self, nfe_budget):
        c = self.config
        extra = len(self.families()) > 1
        reserve = c["reserve"] if c["reserve"] >= 0 else (nfe_budget // 3 if extra else 0)
        try:
            n = steps_for(c["solver"], nfe_budget - reserve)
        except BudgetError:
            raise BudgetError(f"NFE budget {nfe_budget} cannot hold irl's base {c['solver']} plus its action "
                              f"reserve of {reserve} NFE; raise the budget or set reserve=0 / renoise=false") from None
        return n

    def describe_budget(self, nfe_budget):
        n = self.base_steps(nfe_budget)
        base = 2 * n - 1 if self.config["solver"] == "heun" else n
        if len(self.families()) > 1 and base >= nfe_budget:
            raise BudgetError(f"irl's renoise/guidance actions cannot fit NFE budget {nfe_budget}: the base "
                              f"solver already spends {base}; set reserve > 0")
        return dict(solver=self.config["solver"], steps=n, base_nfe=base, actions=self.families())

    def validate(self, denoiser, nfe_budget):
        if self.guided and not denoiser.has_uncond:
            raise BudgetError("irl's guidance actions need a denoiser with an unconditional mode; "
                              "set use_guidance=false")

    # -- one rollout ------------------------------------------------------------------
    def rollout(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None, record=False, explore_gen=None):
        """Run the policy-controlled sampler. With ``record`` returns the trajectory
        (features, actions, states) for learning as well."""
        c = self.config
        heun = c["solver"] == "heun"
        n = self.base_steps(nfe_budget)
        sig = sampling.karras_sigmas(n, denoiser.sigma_min, denoiser.sigma_max, c["rho"])
        fams = self.families()
        b = x.shape[0]
        x = x.to(torch.float64)
        spent = torch.zeros(b, dtype=torch.float64)
        step_cost = [2 if (heun and i < n - 1) else 1 for i in range(n)]
        rest = [sum(step_cost[i:]) for i in range(n + 1)]
        pnoise = noise.child(POLICY_STREAM) if noise is not None else None
        cond = Guided(denoiser, 1.0) if self.guided else denoiser
        den_prev, traj = None, dict(feat=[], act=[], mask=[], states=[], sigmas=[])
        for i in range(n):
            feat = features(x, sig[i], den_prev, i, n, spent, nfe_budget, denoiser.sigma_data)
            logits = self.policy(feat, i) / c["temperature"]
            u = pnoise.rand((len(fams),)) if pnoise is not None else torch.rand(b, len(fams), generator=explore_gen)
            acts, masks, off = {}, {}, 0
            for j, (name, values) in enumerate(fams.items()):
                lg = logits[:, off:off + len(values)]
                allowed = torch.ones(b, len(values), dtype=torch.bool)
                if name == "renoise":
                    allowed[:, 1] = (i > 0) & (spent + 2 + rest[i] <= nfe_budget)
                if name == "guidance":  # a scale != 1 doubles this step's evaluations
                    renoise_cost = 2 * acts.get("renoise", torch.zeros(b, dtype=torch.long))
                    ok = spent + renoise_cost + step_cost[i] + rest[i] <= nfe_budget
                    for k, v in enumerate(values):
                        if v != 1.0:
                            allowed[:, k] = ok
                probs = torch.softmax(lg.detach().masked_fill(~allowed, -math.inf), 1)
                a = torch.searchsorted(probs.cumsum(1), u[:, j:j + 1].contiguous().to(probs.dtype)).squeeze(1).clamp_max(len(values) - 1)
                acts[name], masks[name] = a, allowed
                off += len(values)
            if record:
                traj["feat"].append(feat)
                traj["act"].append(dict(acts))
                traj["mask"].append(masks)
            x, den_prev, cost = self._step(cond, denoiser, x, sig, i, acts, fams, class_labels, noise, heun)
            spent += cost
            if record:
                traj["states"].append(x.detach().float())
                traj["sigmas"].append(float(sig[i + 1]) if i < n - 1 else float(denoiser.sigma_min))
        traj["spent"] = spent
        return (x, traj) if record else x

    def _step(self, cond, denoiser, x, sig, i, acts, fams, class_labels, noise, heun):
        b = x.shape[0]
        cost = torch.zeros(b, dtype=torch.float64)
        w = torch.tensor(fams["guidance"], dtype=torch.float64)[acts["guidance"]] if "guidance" in acts else None

        def D(xx, s, rows=None, guide=True):
            rows = torch.arange(b) if rows is None else rows
            lab = None if class_labels is None else class_labels[rows]
            out = sampling.denoise(cond, xx, s, lab)
            cost[rows] += 1
            if w is not None and guide:
                g = (w[rows] != 1.0).nonzero().squeeze(1)
                if len(g):
                    un = sampling.denoise(denoiser, xx[g], s[g], None)
                    cost[rows[g]] += 1
                    wg = w[rows[g]].reshape(-1, *([1] * (xx.ndim - 1)))
                    out[g] = un + wg * (out[g] - un)
            return out

        def expand(s):
            return s.reshape(-1, *([1] * (x.ndim - 1)))

        if "renoise" in acts:
            eps = noise.randn_like(x) if noise is not None else torch.randn_like(x)
            r = acts["renoise"].nonzero().squeeze(1)
            if len(r):
                s_hi, s_lo = sig[i - 1], sig[i]
                xr = x[r] + math.sqrt(float(s_hi**2 - s_lo**2)) * eps[r]
                s_hi_v = s_hi.expand(len(r))
                d = (xr - D(xr, s_hi_v, r, guide=False)) / s_hi
                xe = xr + (s_lo - s_hi) * d
                d2 = (xe - D(xe, s_lo.expand(len(r)), r, guide=False)) / s_lo
                x = x.clone()
                x[r] = xr + (s_lo - s_hi) * (0.5 * d + 0.5 * d2)
        gamma = torch.tensor(fams["churn"], dtype=torch.float64)[acts["churn"]]
        s_hat = sig[i] * (1 + gamma)
        eps = noise.randn_like(x) if noise is not None else torch.randn_like(x)
        x_hat = x + expand((s_hat**2 - sig[i] ** 2).sqrt() * self.config["s_noise"]) * eps
        den = D(x_hat, s_hat)
        d = (x_hat - den) / expand(s_hat)
        x_next = x_hat + expand(sig[i + 1] - s_hat) * d
        if heun and sig[i + 1] > 0:
            d2 = (x_next - D(x_next, sig[i + 1].expand(b))) / sig[i + 1]
            x_next = x_hat + expand(sig[i + 1] - s_hat) * (0.5 * d + 0.5 * d2)
        return x_next, den, cost

    def sample(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        return self.rollout(denoiser, x, nfe_budget=nfe_budget, class_labels=class_labels, noise=noise)

    def overhead_baseline(self, denoiser, x, *, nfe_budget, class_labels=None, noise=None):
        """The base solver alone at the same NFE, timed in the same run for the overhead figure."""
        c = self.config
        sig = sampling.karras_sigmas(self.base_steps(nfe_budget), denoiser.sigma_min, denoiser.sigma_max, c["rho"])
        return sampling.SOLVERS[c["solver"]](denoiser, x, sig.to(x.device), class_labels=class_labels, noise=noise)

    # -- learning ---------------------------------------------------------------------
    def _new_policy(self, nfe_budget):
        n = self.base_steps(nfe_budget)
        return Policy(N_FEATURES, [len(v) for v in self.families().values()], n, self.config["width"],
                      self.config["time_only"])

    def logprob_entropy(self, traj):
        """Sum over families of log pi(a|s) and entropy, per step: two [steps, batch] tensors."""
        lps, ents = [], []
        for i, (feat, acts, masks) in enumerate(zip(traj["feat"], traj["act"], traj["mask"])):
            logits = self.policy(feat, i) / self.config["temperature"]
            lp, ent, off = 0.0, 0.0, 0
            for name, values in self.families().items():
                lg = logits[:, off:off + len(values)].masked_fill(~masks[name], -1e9)
                logp = torch.log_softmax(lg, 1)
                lp = lp + logp.gather(1, acts[name][:, None]).squeeze(1)
                ent = ent - (logp.exp() * logp).sum(1)
                off += len(values)
            lps.append(lp)
            ents.append(ent)
        return torch.stack(lps), torch.stack(ents)

    def fit(self, ctx):
        c = self.config
        torch.manual_seed(ctx.torch_seed(c["seed"]))
        g = torch.Generator().manual_seed(ctx.torch_seed(c["seed"]))
        den = ctx.denoiser
        self.validate(den, ctx.nfe_budget)
        real, real_labels = ctx.tuning(c["tune_samples"])
        real = real.float()
        self.policy = self._new_policy(ctx.nfe_budget)
        disc = disc_lib.for_shape(den.shape, den.sigma_data, width=c["disc_width"])
        opt_p = torch.optim.Adam(self.policy.parameters(), lr=c["lr"])
        opt_d = torch.optim.Adam(disc.parameters(), lr=c["disc_lr"])
        reward_fn = REWARDS[c["divergence"]]
        history = []
        for it in ctx.progress_iter(range(c["iters"]), f"irl nfe={ctx.nfe_budget}"):
            if c["fit_nfe"] and den.rows >= c["fit_nfe"]:
                break
            b = c["batch"]
            x0 = torch.randn((b, *den.shape), generator=g, dtype=torch.float64) * den.sigma_max
            labels = None
            if ctx.task.num_classes:
                labels = torch.randint(ctx.task.num_classes, (b,), generator=g)
            with torch.no_grad():
                _, traj = self.rollout(den, x0, nfe_budget=ctx.nfe_budget, class_labels=labels, record=True,
                                       explore_gen=g)
            states = torch.stack(traj["states"])  # [steps, b, ...]
            sigmas = torch.tensor(traj["sigmas"], dtype=torch.float32)
            # discriminator: expert marginal at each sigma_i vs the policy's states there
            for _ in range(c["disc_steps"]):
                k = torch.randint(len(sigmas), (c["disc_batch"],), generator=g)
                j = torch.randint(b, (c["disc_batch"],), generator=g)
                fake = states[k, j]
                e = real[torch.randint(len(real), (c["disc_batch"],), generator=g)]
                s = sigmas[k]
                expert = e + s.reshape(-1, *([1] * (e.ndim - 1))) * torch.randn(e.shape, generator=g)
                logit = disc(torch.cat([expert, fake]), torch.cat([s, s]))
                y = torch.cat([torch.ones(len(s)), torch.zeros(len(s))])
                loss_d = F.binary_cross_entropy_with_logits(logit, y)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            with torch.no_grad():
                flat = states.reshape(-1, *den.shape)
                lg = disc(flat, sigmas.repeat_interleave(b)).reshape(len(sigmas), b).clamp(-5, 5)
                rew = reward_fn(lg)
            # the action at step i shapes the states i..N-1 (index i of `states` is the state after step i)
            adv = advantages(rew)
            with torch.no_grad():
                old_lp, _ = self.logprob_entropy(traj)
            for _ in range(max(1, c["ppo_epochs"])):
                lp, ent = self.logprob_entropy(traj)
                loss = policy_loss(lp, old_lp, adv, c["ppo_clip"]) - c["entropy"] * ent.mean()
                opt_p.zero_grad(set_to_none=True)
                loss.backward()
                opt_p.step()
            history.append(dict(iter=it, disc_loss=loss_d.item(), reward=rew.mean().item(),
                                final_logit=lg[-1].mean().item(), entropy=ent.mean().item(), fit_nfe=den.rows))
        probs = self.action_probs(traj)
        return Artifact(meta=dict(policy=self.policy.config, disc=disc.config, history=history, action_probs=probs,
                                  sigmas=[float(s) for s in sampling.karras_sigmas(
                                      self.base_steps(ctx.nfe_budget), den.sigma_min, den.sigma_max,
                                      c["rho"])[:-1]]),
                        tensors={**{f"policy.{k}": v for k, v in self.policy.state_dict().items()},
                                 **{f"disc.{k}": v for k, v in disc.state_dict().items()}})

    def action_probs(self, traj):
        """Mean action probabilities per step and family over a batch of states."""
        out = []
        with torch.no_grad():
            for i, (feat, masks) in enumerate(zip(traj["feat"], traj["mask"])):
                logits = self.policy(feat, i) / self.config["temperature"]
                row, off = {}, 0
                for name, values in self.families().items():
                    lg = logits[:, off:off + len(values)].masked_fill(~masks[name], -1e9)
                    row[name] = torch.softmax(lg, 1).mean(0).tolist()
                    off += len(values)
                out.append(row)
        return out

    def load(self, artifact):
        self.policy = Policy(**artifact.meta["policy"])
        self.policy.load_state_dict({k[7:]: v for k, v in artifact.tensors.items() if k.startswith("policy.")})
        self.policy.eval().requires_grad_(False)
        self.artifact_meta = artifact.meta

    def write_extras(self, result_path):
        """The learned action distribution per noise level, as a PNG beside the result."""
        meta = getattr(self, "artifact_meta", None)
        if not meta:
            return []
        from bench.report.plots import action_distribution
        path = result_path.with_suffix(".actions.png")
        action_distribution(path, meta["sigmas"], meta["action_probs"], self.families())
        return [path.name]
