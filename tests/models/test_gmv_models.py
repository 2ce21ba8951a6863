"""GMV regressors (READER's experts, Online-Single): the head starts at a typical GMV."""

from __future__ import annotations

import torch

from rankstream.models.reader import DualExpertGMV, GMVConfig, SingleGMV

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
