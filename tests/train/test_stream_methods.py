"""TESLA's per-stage loss: weighted BCE plus the delay-time-aware ranking loss, the latter at
weight 1 in the CVR stage and ``bpr_weight_refund`` (0.1, the NetCVR repo's) in the refund stage."""

from __future__ import annotations

import torch

from rankstream.data.stream.samples import CVR_STAGE, REFUND_STAGE
from rankstream.models.cascade import AuxNet, CascadeConfig, CascadeNet
from rankstream.objectives.delayed import delay_bpr, tesla_weights, weighted_bce
from rankstream.train.stream_methods import METHODS, Batch, Context, cascade_loss

FIELDS = (7, 5, 3)


def _batch(n: int = 24) -> Batch:
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randint(0, s, (n,), generator=g) for s in FIELDS], 1)
    stage = torch.tensor([CVR_STAGE] * (n // 2) + [REFUND_STAGE] * (n - n // 2))
    label = (torch.arange(n) % 3 == 0).float()
    zeros = torch.zeros(n)
    return Batch(ids, stage, label, torch.rand(n, generator=g) * 48, zeros.long(), zeros, zeros, zeros,
                 torch.ones(n, dtype=torch.bool))


def _setup(refund_weight: float) -> tuple[Context, CascadeNet, Batch]:
    torch.manual_seed(0)
    cfg = CascadeConfig(embed_dim=4, hidden=(8,), shared_embeddings=True, sparse=False)
    helpers = {"pretrained": CascadeNet(cfg, FIELDS).eval(), "aux_cvr": AuxNet(cfg, FIELDS, 3).eval(),
               "aux_refund": AuxNet(cfg, FIELDS, 3).eval()}
    ctx = Context(METHODS["tesla"], helpers, torch.Generator().manual_seed(5), conv_obs_h=0.24,
                  bpr_cvr=4, bpr_refund=2, bpr_weight_refund=refund_weight)
    return ctx, CascadeNet(cfg, FIELDS).eval(), _batch()


def _by_hand(ctx: Context, model: CascadeNet, b: Batch) -> torch.Tensor:
    """The two stages written out: BCE with TESLA's weights + weight x ranking loss, each over the
    whole batch; the ranking losses draw their negatives CVR stage first, as the method does."""
    gen = torch.Generator().manual_seed(5)
    total = torch.zeros(())
    for stage, k, weight in ((CVR_STAGE, ctx.bpr_cvr, 1.0), (REFUND_STAGE, ctx.bpr_refund, ctx.bpr_weight_refund)):
        rows = b.stage == stage
        ids, z = b.ids[rows], b.label[rows]
        pre = ctx.helpers["pretrained"]
        x = model.cvr_logits(ids) if stage == CVR_STAGE else model.refund_logits(ids)
        p_pre = torch.sigmoid(pre.cvr_logits(ids) if stage == CVR_STAGE else pre.refund_logits(ids))
        aux = torch.sigmoid(ctx.helpers["aux_cvr" if stage == CVR_STAGE else "aux_refund"](ids))
        w = tesla_weights(p_pre, aux[:, 0], aux[:, -1])
        total = total + weighted_bce(x, z, *w, denom=len(b.label)) + weight * delay_bpr(x, z, b.delay_h[rows], k, gen)
    return total


def test_tesla_loss_weighs_the_refund_ranking_loss_apart() -> None:
    for weight in (0.1, 1.0, 0.0):
        ctx, model, b = _setup(weight)
        torch.testing.assert_close(cascade_loss(ctx, model, b), _by_hand(ctx, model, b))
    losses = {w: cascade_loss(*_setup(w)).item() for w in (0.0, 0.1, 1.0)}
    assert losses[0.0] < losses[0.1] < losses[1.0]  # the ranking loss is positive, so its weight shows
    assert abs((losses[0.1] - losses[0.0]) * 10 - (losses[1.0] - losses[0.0])) < 1e-5
