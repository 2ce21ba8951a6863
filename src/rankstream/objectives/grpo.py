"""Group-relative policy optimisation (GRPO, Shao et al. 2024, arXiv 2402.03300) pieces.

For each input, a group of G trajectories is sampled from the current policy; each gets a
scalar reward; the advantage of a trajectory is its reward standardised within its group
(no value network). The loss is PPO's clipped surrogate on the per-trajectory log-likelihood
ratio plus beta * KL(policy || reference). Used by LARES's reinforcement post-training with a
ranking reward (:func:`ndcg_reward`).
"""

from __future__ import annotations

import torch

from rankstream.eval.ranking import ranks_of_targets


@torch.no_grad()
def ndcg_reward(states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """1 / log2(rank + 2) of each target under full ranking (NDCG with one relevant item).

    states (P, d), targets (P,), items (N + 1, d) -> (P,). Uncut, so every position gets a
    dense signal (a target ranked 11th is still better than one ranked 500th). Scored in
    chunks of rows so that the (P, N) score matrix is never held whole.
    """
    ranks = torch.cat([ranks_of_targets(states[i : i + chunk] @ items.t(), targets[i : i + chunk])
                       for i in range(0, states.shape[0], chunk)]) if states.shape[0] else targets.new_zeros(0)
    return 1.0 / torch.log2(ranks.double() + 2.0).float()


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(G, P) rewards -> (G, P) advantages standardised over the group dimension."""
    mean = rewards.mean(0, keepdim=True)
    std = rewards.std(0, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
    kl: torch.Tensor | None, beta: float, clip: float,
) -> torch.Tensor:
    """Sum over (G, P) of -min(r A, clip(r) A) + beta KL, averaged over the group.

    logp / old_logp: log-likelihood of each sampled trajectory under the current / sampling
    policy (equal values for a single on-policy step: the ratio is 1 and the gradient is
    A * grad log p). kl: per-trajectory KL to the reference policy (or None).
    """
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    loss = -surrogate
    if kl is not None and beta > 0:
        loss = loss + beta * kl
    return loss.sum() / logp.shape[0]
