"""Field embeddings of the CTR / CVR models.

``FieldEmbedding`` (the ranking task's CTR models): user id, user side features, item id, item
genres and the user's history, each one d-dimensional field (FuxiCTR / DeepCTR's layout).
Ids follow the data layer: 0 is padding / unknown everywhere (a user row r is id r + 1, so an
unseen user, row -1, maps to 0). An item is ``[item id ; mean of its genre embeddings]``; a
history behaviour adds an embedding of its action (the rating value or the behaviour type), so
attention and pooling can tell a 5-star watch from a 1-star one. The genre table of the items
is a buffer (saved with the weights), so a model scores item ids.

``HashedFieldEmbedding`` (the delayed-feedback towers): hashed categorical fields with every
field's table in ONE ``nn.Embedding`` (rows of field f start at ``offsets[f]``), so a batch of
(B, F) ids is a single gather and, with ``sparse=True``, a single sparse gradient (only the
touched rows are updated; see ``train/stream.py``'s optimizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from rankstream.data.ranking import FeatureSizes


class FieldEmbedding(nn.Module):
    """All sparse fields of a ranking sample at one width ``dim``."""

    item_genres: torch.Tensor

    def __init__(
        self,
        dim: int,
        num_items: int,
        num_users: int,
        num_actions: int,
        num_genres: int,
        user_fields: tuple[int, ...],
        item_genres: torch.Tensor,
        use_user_id: bool = True,
        init_std: float = 1e-2,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.use_user_id = use_user_id
        self.item = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.genre = nn.Embedding(num_genres + 1, dim, padding_idx=0)
        self.action = nn.Embedding(num_actions + 1, 2 * dim, padding_idx=0)
        self.user = nn.Embedding(num_users + 1, dim) if use_user_id else None
        self.user_side = nn.ModuleList(nn.Embedding(n, dim, padding_idx=0) for n in user_fields)
        self.register_buffer("item_genres", item_genres.clone().long())
        for emb in (self.item, self.genre, self.action, *self.user_side, *([self.user] if self.user else [])):
            nn.init.normal_(emb.weight, 0.0, init_std)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()

    @classmethod
    def of(cls, dim: int, sizes: FeatureSizes, item_genres: torch.Tensor, use_user_id: bool = True,
           init_std: float = 1e-2) -> FieldEmbedding:
        """The fields of a ranking dataset (its :class:`FeatureSizes`) at width ``dim``."""
        return cls(dim, sizes.num_items, sizes.num_users, sizes.num_actions, sizes.num_genres,
                   sizes.user_fields, item_genres, use_user_id, init_std)

    @property
    def num_fields(self) -> int:
        """Fields returned by :meth:`fields`."""
        return int(self.use_user_id) + len(self.user_side) + 4

    def genres(self, items: torch.Tensor) -> torch.Tensor:
        """(..., d) mean of the item's genre embeddings (zero when it has none)."""
        g = self.item_genres[items]  # (..., G)
        n = (g > 0).sum(-1, keepdim=True).clamp(min=1)
        return self.genre(g).sum(-2) / n

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        """(..., 2d) ``[item ; genres]``."""
        return torch.cat([self.item(items), self.genres(items)], dim=-1)

    def behaviours(self, hist_items: torch.Tensor, hist_actions: torch.Tensor, with_actions: bool = True) -> torch.Tensor:
        """(B, L, 2d) history behaviour embeddings (item ; genres) + action."""
        x = self.item_repr(hist_items)
        return x + self.action(hist_actions) if with_actions else x

    def user_fields(self, users: torch.Tensor, user_feats: torch.Tensor) -> list[torch.Tensor]:
        """[(B, d)] user id (if used) and each side feature."""
        out = [self.user(users + 1)] if self.user is not None else []
        return out + [emb(user_feats[:, i]) for i, emb in enumerate(self.user_side)]

    def fields(
        self, users: torch.Tensor, user_feats: torch.Tensor, items: torch.Tensor,
        hist_items: torch.Tensor, hist_actions: torch.Tensor, hist_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, F, d): user fields, item id, item genres, and the mean-pooled history split into
        its item-id half and its genre+action half (two fields)."""
        beh = self.behaviours(hist_items, hist_actions)
        m = hist_mask.unsqueeze(-1).to(beh.dtype)
        pooled = (beh * m).sum(1) / m.sum(1).clamp(min=1.0)
        hist_item, hist_rest = pooled.split(self.dim, dim=-1)
        parts = [*self.user_fields(users, user_feats), self.item(items), self.genres(items), hist_item, hist_rest]
        return torch.stack(parts, dim=1)


class HashedFieldEmbedding(nn.Module):
    """(B, F) int ids (field f in ``[0, sizes[f])``) -> (B, F * dim) concatenated embeddings.

    Args:
        sizes: rows per field (the hashing bucket sizes).
        dim: embedding size per field.
        sparse: sparse gradients (only the rows in the batch get a gradient).
    Example:
        >>> emb = HashedFieldEmbedding([8, 100], dim=4)
        >>> emb(torch.tensor([[1, 99]])).shape
        torch.Size([1, 8])
    """

    def __init__(self, sizes: Sequence[int], dim: int, sparse: bool = True) -> None:
        super().__init__()
        if not sizes or min(sizes) < 1:
            raise ValueError(f"field sizes must be positive, got {list(sizes)}")
        starts = torch.zeros(len(sizes), dtype=torch.long)
        starts[1:] = torch.cumsum(torch.tensor(list(sizes[:-1]), dtype=torch.long), 0)
        self.register_buffer("offsets", starts, persistent=False)
        self.table = nn.Embedding(int(sum(sizes)), dim, sparse=sparse)  # N(0, 1) init, as nn.Embedding
        self.num_fields, self.dim = len(sizes), dim

    @property
    def out_dim(self) -> int:
        return self.num_fields * self.dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        offsets: torch.Tensor = self.offsets  # type: ignore[assignment]
        rows = ids + offsets  # (B, F)
        return self.table(rows).flatten(1)  # (B, F * dim)
