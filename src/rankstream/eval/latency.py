"""Inference latency per user: one request at a time, as an online service sees it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


@torch.no_grad()
def per_user_latency(serve_one: Callable[[int], Any], users: int, warmup: int = 5) -> dict[str, float]:
    """Median / p90 wall time (ms) of ``serve_one(i)`` for i in 0..users-1, after a warm-up.

    ``serve_one`` should do what a request does: encode one user's history, score every item
    and take the top-k (item vectors precomputed, as a serving cache holds them).
    """
    for i in range(min(warmup, users)):
        serve_one(i)
    ms = []
    for i in range(users):
        t0 = time.perf_counter()
        serve_one(i)
        ms.append((time.perf_counter() - t0) * 1000.0)
    ms.sort()
    return {
        "latency_ms_per_user": round(statistics.median(ms), 4),
        "latency_ms_p90": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 4),
        "latency_users": float(users),
        "latency_threads": float(torch.get_num_threads()),
    }
