"""LARES: Latent Reasoning for Sequential Recommendation (Liu et al., arXiv 2505.16865).

Wraps a registered sequence encoder (SASRec or HSTU, built from the registry and left
unchanged) as the paper's depth-recurrent reasoner (Sec. 3): the backbone's first
``pre_blocks`` layers form the pre-block A, the remaining layers the core-block C, and
``H = A(E + P)``; ``T_i = C(LN(f(T_{i-1}, H)))`` with f = addition refines *all* input
tokens at every step, and the last thought goes through the backbone's head and shared item
table. The number of steps is a free choice at inference (``reasoning_steps``) and sampled per
batch in training (random-depth training, uniform in [train_steps_min, train_steps_max]).

Training follows the paper's two phases:
1. Self-supervised pre-training (SPT): the next-item loss on the final thought, plus
   *step-level alignment* (the same next-item objective on every intermediate thought, so
   that each step is a usable recommendation state) and *trajectory-level alignment* (an
   in-batch InfoNCE between the final user states of two trajectories of different sampled
   depth and initial noise for the same users: the result must not depend on the path).
2. Reinforcement post-training (RPT, :meth:`LARES.post_training_loss`): GRPO over a group of
   sampled reasoning trajectories per user. Trajectories are sampled by Gaussian exploration
   on each thought (a Gaussian policy over latent states, scale ``rl_sigma`` x the thought's
   RMS); the reward of a trajectory at a position is the NDCG of the true next item under
   full ranking; advantages are standardised within the group; optional KL to the frozen
   pre-trained policy. It runs as a second phase of ``rankstream bench`` (``rl_epochs``,
   ``rl_budget_fraction``; see ``train/post_training.py``).

Differences from the paper (stated, not hidden): the first thought is the backbone's own
core pass from ``T_0`` (``T_1 = C(H + T_0)``, no LN) so that ``reasoning_steps = 0`` is
exactly the backbone, and every further step is ``T_{i+1} = C(LN(H + T_i))``; ``T_0`` is
Gaussian noise (``init_noise``) in training and zero at inference (deterministic scores);
the reward uses uncut NDCG (a dense signal) and credit for a position's reward goes to that
position's own sampled thoughts; the paper's exact step-sampling distribution and loss
weights were not available to us and are config keys here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rankstream.models.staged import (
    Stages,
    WrapperConfig,
    backbone_config,
    build_backbone,
    stages_of,
)
from rankstream.objectives.contrastive import info_nce
from rankstream.objectives.grpo import group_advantages, grpo_loss, ndcg_reward
from rankstream.registry import register_model

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LARESConfig(WrapperConfig):
    backbone: str = "sasrec"  # (str) registered sequential model to wrap (sasrec | hstu)
    encoder: Any = None  # (mapping) the backbone's own config, keys as in its YAML
    pre_blocks: int = 1  # (int) backbone layers in the pre-block A; the rest are the core C
    reasoning_steps: int = 2  # (int) extra core passes at inference (0 = the backbone)
    train_steps_min: int = 1  # (int) random-depth training: fewest steps sampled per batch
    train_steps_max: int = 3  # (int) most steps sampled per batch
    init_noise: float = 0.1  # (float) std of the initial thought T_0 in training
    step_weight: float = 0.3  # (float) step-level alignment weight
    traj_weight: float = 0.1  # (float) trajectory-level alignment weight
    traj_temperature: float = 0.2  # (float) InfoNCE temperature of trajectory alignment
    rl_epochs: int = 0  # (int) reinforcement post-training epochs (0 = no RL phase; at most train.max_epochs)
    rl_budget_fraction: float = 0.2  # (float) share of train.time_budget_s given to RL
    rl_lr: float = 1e-4  # (float) learning rate of the RL phase
    rl_group: int = 4  # (int) G: trajectories sampled per user
    rl_sigma: float = 0.05  # (float) exploration std, relative to each thought's RMS
    rl_beta: float = 0.0  # (float) KL weight to the frozen pre-trained policy
    rl_clip: float = 0.2  # (float) PPO ratio clip

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", backbone_config(self.backbone, self.encoder, "model.encoder"))
        if not 0 <= self.train_steps_min <= self.train_steps_max:
            raise ValueError("model.train_steps_min must be in [0, train_steps_max]")
        if self.reasoning_steps < 0 or self.rl_group < 2 and self.rl_epochs > 0:
            raise ValueError("model.reasoning_steps must be >= 0 and model.rl_group >= 2")


@dataclass
class _Trace:
    """What the last training forward leaves for the auxiliary (SPT) losses."""

    stages: Stages
    h: torch.Tensor  # (T, d) pre-block output H
    thoughts: list[torch.Tensor]  # T_1 .. T_{k+1}, residual stream (T, d)


class LARES(nn.Module):
    """Depth-recurrent latent reasoning around an unchanged backbone."""

    def __init__(self, cfg: LARESConfig, num_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.backbone = build_backbone(cfg.backbone, cfg.encoder, num_items)
        self.needs_timestamps = bool(self.backbone.needs_timestamps)
        n_layers = int(cfg.encoder.num_blocks)
        if not 0 <= cfg.pre_blocks < n_layers:
            raise ValueError(f"model.pre_blocks must be in [0, {n_layers - 1}] (the core needs a layer)")
        self.think_norm = nn.LayerNorm(cfg.dim)  # the LN of T_i = C(LN(f(T_{i-1}, H)))
        self._trace: _Trace | None = None

    # -- the recurrence -----------------------------------------------------------------
    def _pre(self, s: Stages) -> torch.Tensor:
        x = s.embed()
        for layer in s.layers[: self.cfg.pre_blocks]:
            x = layer(x)
        return x

    def _core(self, s: Stages, x: torch.Tensor) -> torch.Tensor:
        for layer in s.layers[self.cfg.pre_blocks :]:
            x = layer(x)
        return x

    def _step_input(self, h: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        return h if prev is None else self.think_norm(h + prev)

    def think(self, s: Stages, h: torch.Tensor, steps: int, noise: float) -> list[torch.Tensor]:
        """Thoughts T_1 .. T_{steps+1}; T_1 = C(H + T_0), T_{i+1} = C(LN(H + T_i))."""
        t = self._core(s, h + noise * torch.randn_like(h) if noise > 0 else h)
        out = [t]
        for _ in range(steps):
            t = self._core(s, self._step_input(h, t))
            out.append(t)
        return out

    def _train_depth(self) -> int:
        lo, hi = self.cfg.train_steps_min, self.cfg.train_steps_max
        return lo if lo == hi else int(torch.randint(lo, hi + 1, ()).item())

    def encode(
        self, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
        times: torch.Tensor | None = None, next_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s = stages_of(self.backbone, ids, offsets, max_len, times, next_times)
        h = self._pre(s)
        if self.training:
            steps = self._train_depth()
            thoughts = self.think(s, h, steps, self.cfg.init_noise if steps > 0 else 0.0)
            self._trace = _Trace(s, h, thoughts)
        else:
            thoughts = self.think(s, h, self.cfg.reasoning_steps, 0.0)
        return s.head(thoughts[-1])

    def item_vectors(self) -> torch.Tensor:
        out: torch.Tensor = self.backbone.item_vectors()  # type: ignore[operator]
        return out

    # -- phase 1: self-supervised pre-training ------------------------------------------
    def auxiliary_loss(self, targets: torch.Tensor, items: torch.Tensor, next_item_loss: LossFn) -> torch.Tensor:
        """Step- and trajectory-level alignment for the preceding training ``encode``."""
        tr, self._trace = self._trace, None
        zero = items.new_zeros(())
        if tr is None:
            return zero
        loss, k = zero, len(tr.thoughts)
        if self.cfg.step_weight > 0 and k > 1:
            inter = torch.cat([tr.stages.head(t) for t in tr.thoughts[:-1]])
            loss = loss + self.cfg.step_weight / (k - 1) * next_item_loss(inter, targets.repeat(k - 1))
        if self.cfg.traj_weight > 0 and tr.h.shape[0] > 0:
            other = self.think(tr.stages, tr.h, self._train_depth(), self.cfg.init_noise)[-1]
            last = tr.stages.layout.offsets[1:] - 1
            a, b = tr.stages.head(tr.thoughts[-1])[last], tr.stages.head(other)[last]
            align = info_nce(a, b, self.cfg.traj_temperature)
            loss = loss + self.cfg.traj_weight * align * targets.numel()
        return loss

    # -- phase 2: reinforcement post-training (GRPO) -------------------------------------
    def _sample(self, s: Stages, h: torch.Tensor, reference: LARES | None, rs: Stages | None,
                rh: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One trajectory per row of the (group-repeated) batch: final thought, log p, KL."""
        logp = h.new_zeros(h.shape[0])
        kl = h.new_zeros(h.shape[0]) if reference is not None else None
        prev: torch.Tensor | None = None
        for _ in range(self.cfg.reasoning_steps + 1):
            mu = self._core(s, self._step_input(h, prev))
            scale = self.cfg.rl_sigma * mu.detach().pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)
            sample = mu.detach() + scale * torch.randn_like(mu)
            logp = logp - ((sample - mu) ** 2 / (2 * scale**2)).sum(-1)
            if reference is not None and rs is not None and rh is not None and kl is not None:
                with torch.no_grad():
                    mu_ref = reference._core(rs, reference._step_input(rh, prev))
                kl = kl + ((mu - mu_ref) ** 2 / (2 * scale**2)).sum(-1)
            prev = sample
        assert prev is not None
        return prev, logp, kl

    def post_training_loss(
        self, ids: torch.Tensor, offsets: torch.Tensor, max_len: int, times: torch.Tensor | None,
        next_times: torch.Tensor | None, targets: torch.Tensor, reference: nn.Module | None,
    ) -> tuple[torch.Tensor, int, float]:
        """GRPO loss (sum over positions), number of positions, mean sampled reward."""
        g, n = self.cfg.rl_group, ids.numel()
        group = repeat_batch(g, ids, offsets, times, next_times)  # G copies of every sequence
        s = stages_of(self.backbone, group[0], group[1], max_len, group[2], group[3])
        h = self._pre(stages_of(self.backbone, ids, offsets, max_len, times, next_times)).repeat(g, 1)
        ref = reference if isinstance(reference, LARES) and self.cfg.rl_beta > 0 else None
        rs = rh = None
        if ref is not None:
            rs = stages_of(ref.backbone, group[0], group[1], max_len, group[2], group[3])
            with torch.no_grad():
                rh = ref._pre(stages_of(ref.backbone, ids, offsets, max_len, times, next_times)).repeat(g, 1)
        final, logp, kl = self._sample(s, h, ref, rs, rh)
        with torch.no_grad():
            rewards = ndcg_reward(s.head(final), targets.repeat(g), self.item_vectors().detach()).view(g, n)
        adv = group_advantages(rewards)
        loss = grpo_loss(logp.view(g, n), logp.detach().view(g, n), adv,
                         None if kl is None else kl.view(g, n), self.cfg.rl_beta, self.cfg.rl_clip)
        return loss, n, float(rewards.mean())

    def post_training_spec(self) -> dict[str, float] | None:
        c = self.cfg
        if c.rl_epochs <= 0:
            return None
        return {"epochs": c.rl_epochs, "budget_fraction": c.rl_budget_fraction, "lr": c.rl_lr,
                "needs_reference": float(c.rl_beta > 0)}


def repeat_batch(
    g: int, ids: torch.Tensor, offsets: torch.Tensor, times: torch.Tensor | None, next_times: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A jagged batch repeated g times end to end (copy i holds rows i*T .. (i+1)*T - 1)."""
    n = ids.numel()
    offs = torch.cat([offsets[:-1] + i * n for i in range(g)] + [offsets[-1:] + (g - 1) * n])
    return (ids.repeat(g), offs, None if times is None else times.repeat(g),
            None if next_times is None else next_times.repeat(g))


@register_model("lares", LARESConfig, task="sequential")
def build_lares(cfg: LARESConfig, num_items: int) -> LARES:
    """LARES (Liu et al. 2025): depth-recurrent latent reasoning over a SASRec/HSTU backbone."""
    return LARES(cfg, num_items)
