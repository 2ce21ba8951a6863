"""The scoring interface the server drives, split the AIF way, and its sequence-model scorer.

AIF (Kou et al. 2025, "Asynchronous Inference Framework for Cost-Effective Pre-Ranking",
arXiv 2511.12934, Sec. 3) splits a ranking model into interaction-*independent* parts -- the
user side, computed once per request while retrieval is still running, and the item side,
computed nearline once per item and model version -- and a light interaction-*dependent*
part computed per candidate in real time. :class:`Scorer` is that split as a protocol:

* ``user_state(history)``: the user side, e.g. a sequence model's encoded history (HSTU/SASRec:
  the state after the last item; a candidate-aware ranking model: its K/V cache), cached by
  the server with a TTL;
* ``item_table()``: the item side for every catalogue row (row 0 = padding), precomputed per
  model version and held in the item cache;
* ``score(state, items)``: the interaction-dependent part for C candidates, in one pass;
* ``score_naive(history, rows)``: everything per request from the raw inputs (the baseline
  the benchmark compares against);
* ``retrieval_vectors(items)``: given the item table, the vectors for inner-product top-k over
  the whole catalogue (faiss), or None for models that are not two-tower.

For SASRec/HSTU the interaction is a dot product (the models' own scoring rule), so the split
is exact. A candidate-aware ranking model (DFGR, HSTU ranking with M-FALCON, Zhai et al. 2024
Sec. 3.4) plugs in by returning its history K/V cache as the user state and attending from the
candidate tokens to it in ``score``; the server code does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from rankstream.models.base import SequenceModel, user_states
from rankstream.serve.history import History

# A user encoder maps a history to the user state (float32 array); see serve/export.py for the
# ONNX Runtime and torch.export ones.
UserEncoder = Callable[[History], np.ndarray]


@runtime_checkable
class Scorer(Protocol):
    """What the server needs from a servable model (see the module docstring)."""

    name: str

    def user_state(self, history: History) -> np.ndarray: ...

    def item_table(self) -> np.ndarray: ...

    def score(self, state: np.ndarray, items: np.ndarray) -> np.ndarray: ...

    def score_naive(self, history: History, rows: np.ndarray) -> np.ndarray: ...

    def retrieval_vectors(self, items: np.ndarray) -> np.ndarray | None: ...


def torch_encoder(model: SequenceModel) -> UserEncoder:
    """Eager PyTorch: encode the history (its real length, no padding), keep the last state."""

    def encode(h: History) -> np.ndarray:
        ids = torch.from_numpy(h.items)
        offsets = torch.tensor([0, len(h.items)], dtype=torch.int64)
        times = next_times = None
        if model.needs_timestamps:
            times = torch.from_numpy(h.times)
            next_times = torch.from_numpy(np.append(h.times[1:], h.query_time))
        with torch.inference_mode():  # the last state only (PLR reasons at that position alone)
            state = user_states(model, ids, offsets, len(h.items), times, next_times)
        return state[0].numpy().astype(np.float32, copy=True)

    return encode


class SequenceScorer:
    """SASRec / HSTU behind :class:`Scorer`: user state = last encoded state, score = dot product."""

    def __init__(self, name: str, model: torch.nn.Module, encoder: UserEncoder | None = None) -> None:
        if not isinstance(model, SequenceModel):
            raise TypeError(f"{name}: not a sequence model (needs encode and item_vectors)")
        self.name = name
        self.model = model.eval()
        self.seq: SequenceModel = model
        self.encoder = encoder or torch_encoder(model)

    def user_state(self, history: History) -> np.ndarray:
        return self.encoder(history)

    def item_table(self) -> np.ndarray:
        with torch.inference_mode():
            table = self.seq.item_vectors()
        return np.ascontiguousarray(table.numpy(), dtype=np.float32)

    def score(self, state: np.ndarray, items: np.ndarray) -> np.ndarray:
        out: np.ndarray = items @ state  # (C, d) @ (d,) -> (C,)
        return out

    def score_naive(self, history: History, rows: np.ndarray) -> np.ndarray:
        """Encode the history and compute the candidates' item vectors, both from scratch."""
        state = self.encoder(history)
        with torch.inference_mode():
            items = self.seq.item_vectors()[torch.from_numpy(rows)].numpy()
        return self.score(state, items)

    def retrieval_vectors(self, items: np.ndarray) -> np.ndarray | None:
        return items  # two-tower: the item side is the retrieval space
