"""Inference latency per user, two ways: amortised over a serving batch, and one request alone.

``latency_ms_per_user`` is the wall time to serve a batch of users (encode their histories,
score every item, take the top 10), divided by the users in it: what an online service that
micro-batches requests pays per user, and what compute decides. ``latency_ms_single_user``
(median) and its p90 are one user per call: on a small model on CPU this is dominated by the
per-operator dispatch overhead of eager PyTorch, so it penalises models with many small
operations more than their arithmetic would. Item vectors are precomputed, as a serving cache
holds them. Both run after a warm-up, with the configured number of threads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def _ms(serve: Callable[[Any], Any], batch: Any) -> float:
    t0 = time.perf_counter()
    serve(batch)
    return (time.perf_counter() - t0) * 1000.0


@torch.no_grad()
def measure_latency(serve: Callable[[Any], Any], batches: Sequence[Any], users: int,
                    singles: Sequence[Any], repeats: int = 3) -> dict[str, float]:
    """``serve(batch)`` over ``batches`` (``users`` in all) and over one-user ``singles``."""
    for b in list(batches[:1]) + list(singles[:5]):
        serve(b)  # warm-up
    passes = [sum(_ms(serve, b) for b in batches) for _ in range(repeats)]
    one = sorted(_ms(serve, s) for s in singles)
    return {
        "latency_ms_per_user": round(min(passes) / max(users, 1), 5),
        "latency_batch_users": float(users / max(len(batches), 1)),
        "latency_ms_single_user": round(statistics.median(one), 4) if one else float("nan"),
        "latency_ms_single_user_p90": round(one[min(len(one) - 1, int(0.9 * len(one)))], 4) if one else float("nan"),
        "latency_threads": float(torch.get_num_threads()),
    }
