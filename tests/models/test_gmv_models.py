"""GMV regressors (READER's experts, Online-Single): the head starts at a typical GMV."""

from __future__ import annotations

import pytest
import torch

from rankstream.layers import fields
from rankstream.models.reader import Calibrator, DualExpertGMV, GMVConfig, Router, SingleGMV

SIZES = (50, 30, 20)


def test_init_output_scale_puts_fresh_predictions_at_the_median_gmv() -> None:
    torch.manual_seed(0)
    ids = torch.stack([torch.randint(0, s, (256,)) for s in SIZES], 1)
    cfg = GMVConfig(embed_dim=4, bottom=(32, 16), tower=(16, 8))
    single, dual = SingleGMV(cfg, SIZES).eval(), DualExpertGMV(cfg, SIZES).eval()
    with torch.no_grad():
        assert float(single(ids).median()) < 5  # a fresh head outputs ~1: far from GMVs of ~100
        single.init_output_scale(120.0)
        dual.init_output_scale(120.0)
        for out in (single(ids), *dual(ids)):
            assert 100 < float(out.median()) < 140 and bool((out >= 0).all())


def test_first_layers_per_distinct_row_equal_the_dense_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every TRACE model computes the same function, and gradients, on either first-layer path."""
    torch.manual_seed(0)
    ids = torch.stack([torch.randint(0, min(s, 6), (64,)) for s in SIZES], 1)  # repeated ids
    t, k = torch.rand(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64)
    cfg = GMVConfig(embed_dim=4, bottom=(32, 16), tower=(16, 8), router_hidden=(8,), calibrator_hidden=(16, 8))
    models = [m(cfg, SIZES).double() for m in (SingleGMV, DualExpertGMV, Router)] + [Calibrator(cfg, SIZES).double()]
    for m in models:
        m.eval()  # BatchNorm on running statistics: both paths see the same normalisation
        runs = []
        for min_rows in (10**9, 1):  # dense, then per distinct row
            monkeypatch.setattr(fields, "FUSED_MIN_ROWS", min_rows)
            m.zero_grad(set_to_none=True)
            out = m(ids, t, k) if isinstance(m, Calibrator) else m(ids)
            outs = out if isinstance(out, tuple) else (out,)
            sum(o.sum() for o in outs).backward()
            grads = [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in m.parameters() if p.grad is not None]
            runs.append(([o.detach() for o in outs], grads))
        (o_dense, g_dense), (o_fused, g_fused) = runs
        assert len(g_dense) == len(g_fused) > 0
        for a, b in zip(o_fused + g_fused, o_dense + g_dense, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
