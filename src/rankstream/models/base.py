"""The interface shared by next-item sequence models (a Protocol, not a base class)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SequenceModel(Protocol):
    """Encodes jagged item histories into one state per token and scores items against it.

    ``encode`` returns (T, d): the state after each token, i.e. the representation used to
    predict the *next* item. ``item_vectors`` returns (num_items + 1, d) vectors of all items
    (row 0 = padding), in the same space: score = state . item_vector.
    """

    num_items: int
    needs_timestamps: bool

    def encode(
        self,
        ids: torch.Tensor,
        offsets: torch.Tensor,
        max_len: int,
        times: torch.Tensor | None = None,
        next_times: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def item_vectors(self) -> torch.Tensor: ...


def user_states(
    model: SequenceModel, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
    times: torch.Tensor | None = None, next_times: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, d): the state after each sequence's last item, i.e. what ranking and serving need.

    A model may define ``encode_last`` (same arguments) to compute only these rows (e.g. PLR
    reasons only at the last position); otherwise the last rows of ``encode`` are taken.
    """
    fn = getattr(model, "encode_last", None)
    if fn is not None:
        out: torch.Tensor = fn(ids, offsets, max_len, times, next_times)
        return out
    return model.encode(ids, offsets, max_len, times, next_times)[offsets[1:] - 1]
