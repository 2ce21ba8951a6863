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

``field_linear`` is the first layer of a tower over such tables, ``Linear(cat(emb(ids)))``,
computed per *distinct* row instead of per sample: a batch of 5,000 CASCADE clicks holds
110,000 ids but only ~12,000 distinct rows, so projecting each distinct row through its field's
(dim x hidden) block of the weight, then summing a sample's 22 projected rows, costs ~9x fewer
multiply-adds than the (B, 704) x (704, 256) product, forward and backward. The same function
(equal to the dense path in float64; float32 rounds differently), the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from rankstream.data.ranking import FeatureSizes
    from rankstream.layers.mlp import MLP


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


FUSED_MIN_ROWS = 600  # batches from this size take the per-distinct-row path (see field_linear)


class _FieldLinear(torch.autograd.Function):
    """``cat([t[rows] for t in tables], 1).flatten(1) @ weight.T + bias`` per distinct row (see ``field_linear``)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx: Any, rows: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                *tables: torch.Tensor) -> torch.Tensor:
        nb, nf = rows.shape
        dim, hidden, nt = tables[0].shape[1], weight.shape[0], len(tables)
        # one stable sort of the B * F ids gives the sorted distinct rows, each id's row among them
        # (the inverse) and, for the backward, each distinct row's run of (sample, field) slots
        ordered, order = torch.sort(rows.flatten(), stable=True)
        uniq, run_of, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
        inv = torch.empty_like(order).scatter_(0, order, run_of).view(nb, nf)
        # the fields' rows are contiguous ranges of the table, so each field is one slice
        # [bounds[f], bounds[f + 1]) of the distinct rows, never empty (field_linear passes B >= 1)
        bounds = [*torch.searchsorted(uniq, offsets).tolist(), uniq.numel()]
        emb = torch.cat([t.index_select(0, uniq) for t in tables], 1)  # (U, T * dim)
        # field f's block of the weight: its dim columns in every table's slice -> (F, H, T * dim)
        blocks = weight.reshape(hidden, nt, nf, dim).permute(2, 0, 1, 3).reshape(nf, hidden, nt * dim)
        proj = emb.new_empty((uniq.numel(), hidden))
        for f in range(nf):  # 22 small products (a loop over fields, not over rows)
            torch.mm(emb[bounds[f]:bounds[f + 1]], blocks[f].t(), out=proj[bounds[f]:bounds[f + 1]])
        # backward: distinct row u's gradient is the sum of the output gradients of the samples in
        # its run order[runs[u]:runs[u + 1]]: one embedding_bag over the sorted slots
        ctx.save_for_backward(emb, blocks, uniq, order, counts)
        ctx.bounds, ctx.shapes = bounds, [t.shape for t in tables]
        proj[:bounds[1]] += bias  # every sample has one field-0 row: the bias is counted once, with no (B, H) pass
        return F.embedding_bag(inv, proj, mode="sum")  # each sample: the sum of its F projected rows

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        emb, blocks, uniq, order, counts = ctx.saved_tensors
        bounds, shapes = ctx.bounds, ctx.shapes
        nf, hidden, width = blocks.shape
        nt = len(shapes)
        dim = width // nt
        need_w, need_t = ctx.needs_input_grad[2], any(ctx.needs_input_grad[4:])
        # (U, H): each distinct row's summed output gradient, a segment sum over its slots (~4x
        # faster than one index_add per field: it reads the gradient once, in parallel)
        samples = torch.div(order, nf, rounding_mode="floor")  # the sample of each sorted slot
        runs = torch.cumsum(counts, 0) - counts  # where each distinct row's run starts
        d_proj = F.embedding_bag(samples, grad.contiguous(), runs, mode="sum")
        d_emb = torch.empty_like(emb) if need_t else None
        d_blocks = torch.empty_like(blocks) if need_w else None
        for f in range(nf):
            a, b = bounds[f], bounds[f + 1]
            if d_emb is not None:
                torch.mm(d_proj[a:b], blocks[f], out=d_emb[a:b])
            if d_blocks is not None:
                torch.mm(d_proj[a:b].t(), emb[a:b], out=d_blocks[f])
        d_weight = None
        if d_blocks is not None:
            d_weight = d_blocks.reshape(nf, hidden, nt, dim).permute(1, 2, 0, 3).reshape(hidden, nt * nf * dim)
        d_tables: list[torch.Tensor | None] = []
        for i, shape in enumerate(shapes):
            if d_emb is None or not ctx.needs_input_grad[4 + i]:
                d_tables.append(None)
                continue
            # one row per distinct id, sorted: a coalesced sparse gradient (lazy Adam skips its merge)
            d_tables.append(torch.sparse_coo_tensor(uniq.unsqueeze(0), d_emb[:, i * dim:(i + 1) * dim], shape,
                                                    is_coalesced=True, check_invariants=False))
        d_bias = d_proj[:bounds[1]].sum(0) if ctx.needs_input_grad[3] else None  # = grad.sum(0): one field-0 row a sample
        return (None, None, d_weight, d_bias, *d_tables)


def field_linear(ids: torch.Tensor, embs: Sequence[HashedFieldEmbedding], linear: nn.Linear,
                 min_rows: int | None = None) -> torch.Tensor:
    """``linear(cat([e(ids) for e in embs], 1))`` computed per distinct embedding row.

    Every table of ``embs`` must have the same fields (the TESLA towers read a private and a
    shared table). The dense product runs instead for batches under ``min_rows`` rows (the
    per-field products' fixed cost, ~2.5 ms on 2 cores, outweighs the saving there: measured
    crossover ~600 rows with CASCADE's 22 fields) and for dense-gradient tables
    (``sparse=False``), so the gradients keep the layout their optimizer expects.
    ``min_rows`` defaults to :data:`FUSED_MIN_ROWS`.
    Example:
        >>> emb = HashedFieldEmbedding([8, 100], dim=4)
        >>> lin = nn.Linear(8, 3)
        >>> ids = torch.tensor([[1, 99], [1, 5]])
        >>> torch.allclose(field_linear(ids, [emb], lin, min_rows=1), lin(emb(ids)), atol=1e-6)
        True
    """
    first = embs[0]
    if any(e.num_fields != first.num_fields or e.dim != first.dim for e in embs):
        raise ValueError("field_linear needs tables with the same fields and dim")
    min_rows = FUSED_MIN_ROWS if min_rows is None else min_rows
    if not all(e.table.sparse for e in embs) or ids.shape[0] < max(min_rows, 1):
        return linear(torch.cat([e(ids) for e in embs], 1))
    offsets: torch.Tensor = first.offsets  # type: ignore[assignment]
    sizes = torch.diff(offsets, append=offsets.new_tensor([first.table.num_embeddings]))  # rows per field
    if ids.dim() != 2 or ids.shape[1] != first.num_fields:
        raise ValueError(f"field_linear needs (B, {first.num_fields}) ids, got {tuple(ids.shape)}")
    lo, hi = torch.aminmax(ids, dim=0)
    outside = (lo < 0) | (hi >= sizes)  # the per-field blocks need each id in its own field's rows
    if bool(outside.any()):
        raise ValueError(f"field_linear needs field f's ids in [0, sizes[f]); fields out of range: "
                         f"{outside.nonzero().flatten().tolist()}")
    bias = linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
    out: torch.Tensor = _FieldLinear.apply(ids + offsets, offsets, linear.weight, bias, *(e.table.weight for e in embs))
    return out


def field_mlp(ids: torch.Tensor, embs: Sequence[HashedFieldEmbedding], mlp: MLP) -> torch.Tensor:
    """``mlp(cat([e(ids) for e in embs], 1))`` with its first layer through :func:`field_linear`
    (the CASCADE towers, the auxiliary models and the TRACE models)."""
    return mlp.after_first(field_linear(ids, embs, mlp.first))
