"""Full-ranking next-item evaluation: HR@K, NDCG@K and MRR over the whole catalogue.

Every user's target is ranked against all items (no sampled negatives). The rank is the
number of items scoring strictly higher than the target (ties favour the target, as in
RecBole and HSTU's brute-force top-k). ``mask_history`` (RecBole's convention) removes the
items of the user's history from the ranking, except the target itself; the default (HSTU's
convention) does not. The protocol is recorded with every result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def ranks_of_targets(
    scores: torch.Tensor,
    target: torch.Tensor,
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """0-based rank of each row's target. scores (B, N+1) with column 0 = padding.

    ``history`` = (ids (T,), offsets (B+1,)) masks those items (not the target) when given.
    """
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    if history is not None:
        ids, offsets = history
        rows = torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=offsets.device), offsets[1:] - offsets[:-1])
        keep = ids != target[rows]
        scores[rows[keep], ids[keep]] = float("-inf")
    t = scores.gather(1, target[:, None])
    ranks = (scores > t).sum(1)
    # A NaN target score is a miss (worst rank), never a hit: a diverged model must not win.
    return torch.where(t.squeeze(1).isnan(), scores.shape[1] - 1, ranks)


def metrics_from_ranks(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """HR@K, NDCG@K for each K and MRR (uncut), averaged over users."""
    r = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 2.0), 0.0).mean().item()
    out["mrr"] = (1.0 / (r + 1.0)).mean().item()
    out["users"] = float(ranks.numel())
    return out


def ndcg_single(rank: int, k: int) -> float:
    """NDCG@k of one target at 0-based ``rank`` (for tests and docs)."""
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0
