"""What every ranking model offers the ranking task and a server (a Protocol, not a base class).

A ranking model is an ``nn.Module`` that reads either per-event samples
(:class:`~rankstream.data.ranking_batches.SampleBatch`, the CTR models) or jagged user
sequences (:class:`~rankstream.data.ranking_batches.SeqBatch`, the generative models), says
which in ``input_kind``, and returns a :class:`RankOutput` for the scored events. For serving,
``score(request) -> (C,)`` gives the probability of a positive action for each of C candidate
items of one user, from the user's history alone (``RankRequest``: history items, actions and
times, user row and features, the request time, the candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from rankstream.data.ranking_batches import RankRequest, SampleBatch, SeqBatch, request_as_samples

InputKind = Literal["samples", "sequences"]


@dataclass
class RankOutput:
    """Model outputs for the scored events of a batch (samples: every row; sequences: targets)."""

    logit: torch.Tensor  # (N,) main task (positive action) logit
    action_logits: torch.Tensor | None = None  # (N, A): multi-class action head (generative models)
    aux_loss: torch.Tensor | None = None  # summed auxiliary loss (DIEN)
    aux_count: int = 0


@runtime_checkable
class RankingModel(Protocol):
    input_kind: InputKind
    max_len: int  # longest history the model reads

    def __call__(self, batch: SampleBatch | SeqBatch) -> RankOutput: ...

    def score(self, request: RankRequest) -> torch.Tensor: ...


def score_as_samples(model: torch.nn.Module, request: RankRequest) -> torch.Tensor:
    """``score`` of a sample model: the request as C rows sharing the history -> (C,) probabilities."""
    hist = slice(max(request.hist_items.numel() - int(getattr(model, "max_len", 0) or 0), 0), None)
    req = RankRequest(request.hist_items[hist], request.hist_actions[hist], request.hist_times[hist],
                      request.user, request.user_feats, request.now, request.candidates)
    out: RankOutput = model(request_as_samples(req))
    return torch.sigmoid(out.logit)
