"""Jagged <-> padded conversion and per-token positions for (values, offsets) sequences."""

from __future__ import annotations

import torch


def lengths_of(offsets: torch.Tensor) -> torch.Tensor:
    return offsets[1:] - offsets[:-1]


def positions(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Position of each token inside its sequence (0 = oldest), shape (T,)."""
    seq = torch.repeat_interleave(offsets[:-1], lengths_of(offsets), output_size=total)
    return torch.arange(total, device=offsets.device) - seq


def padded_index(offsets: torch.Tensor, max_len: int, total: int) -> torch.Tensor:
    """Flat index into a (B * max_len) right-padded buffer for each jagged token."""
    lens = lengths_of(offsets)
    b = torch.repeat_interleave(
        torch.arange(lens.numel(), device=offsets.device), lens, output_size=total
    )
    return b * max_len + positions(offsets, total)


def to_padded(
    values: torch.Tensor, offsets: torch.Tensor, max_len: int, index: torch.Tensor | None = None
) -> torch.Tensor:
    """(T, *D) jagged -> (B, max_len, *D) right-padded with zeros."""
    b = offsets.numel() - 1
    if index is None:
        index = padded_index(offsets, max_len, values.shape[0])
    out = values.new_zeros((b * max_len, *values.shape[1:]))
    out.index_copy_(0, index, values)  # in place: out of place would copy the zeros once more
    return out.view(b, max_len, *values.shape[1:])


def to_jagged(
    padded: torch.Tensor, offsets: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, N, *D) right-padded -> (T, *D) jagged."""
    b, n = padded.shape[:2]
    if index is None:
        index = padded_index(offsets, n, int(offsets[-1]))
    return padded.reshape(b * n, *padded.shape[2:]).index_select(0, index)


def last_positions(offsets: torch.Tensor) -> torch.Tensor:
    """Flat index of each sequence's last (most recent) token."""
    return offsets[1:] - 1


def time_positions(times: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Position of each token counted in *strictly earlier* tokens of its sequence, (T,).

    Tokens with equal times (events of the same second) share a position: the number of
    tokens before the first of them. Without ties this equals :func:`positions`.
    """
    total = times.numel()
    idx = torch.arange(total, device=times.device)
    start = torch.repeat_interleave(offsets[:-1], lengths_of(offsets), output_size=total)
    new = idx == start
    if total > 1:
        new[1:] |= times[1:] != times[:-1]
    first = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), dim=0).values
    return first - start


def pad_with(values: torch.Tensor, offsets: torch.Tensor, max_len: int, fill: int | float, index: torch.Tensor | None = None) -> torch.Tensor:
    """(T,) jagged -> (B, max_len) right-padded with ``fill`` instead of zeros."""
    b = offsets.numel() - 1
    if index is None:
        index = padded_index(offsets, max_len, values.shape[0])
    out = values.new_full((b * max_len,), fill)
    return out.index_copy(0, index, values).view(b, max_len)
