"""Each method's weights and losses on tiny batches, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rankstream.objectives.delayed import (
    defer_weights,
    defuse_loss,
    delay_bpr,
    delay_weights,
    esdfm_weights,
    fnc_calibrate,
    fnw_weights,
    tesla_weights,
    weighted_bce,
)
from rankstream.objectives.gmv import calibrated_target, reader_loss, route

T = torch.tensor


def close(a: torch.Tensor | float, b: float) -> None:
    assert float(a) == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_weighted_bce() -> None:
    # log(1 + e^0) for the positive, 2 + log(1 + e^-2) for the negative
    loss = weighted_bce(T([0.0, 2.0]), T([1.0, 0.0]), T([2.0, 2.0]), T([0.5, 0.5]))
    close(loss, (2 * math.log(2) + 0.5 * (2 + math.log1p(math.exp(-2)))) / 2)
    close(weighted_bce(T([0.0]), T([1.0]), denom=4), math.log(2) / 4)


def test_importance_weights() -> None:
    w_pos, w_neg = fnw_weights(T([0.2]))
    close(w_pos, 1.2), close(w_neg, 0.8 * 1.2)
    w_pos, w_neg = esdfm_weights(T([0.1]), T([0.7]))
    close(w_pos, 1.1), close(w_neg, 1.1 * 0.7)
    w_pos, w_neg = defer_weights(T([0.3]), T([0.2]))
    close(w_pos, 0.3 / (0.3 - 0.1)), close(w_neg, 0.7 / (0.7 + 0.1))
    w_pos, w_neg = tesla_weights(T([0.3]), T([0.1]), T([0.5]))
    close(w_pos, 1.2), close(w_neg, 0.6)
    close(fnc_calibrate(T([0.2])), 0.25)
    # dp above p (two models' estimates): dp is capped at p, so the weights stay in [1, 2] / (0, 1]
    w_pos, w_neg = defer_weights(T([0.05]), T([0.2]))
    close(w_pos, 2.0), close(w_neg, 0.95 / (0.95 + 0.025))


def test_defuse_loss_by_hand() -> None:
    x, dp, rn = T([0.0, 0.0, 0.0]), T([0.2, 0.2, 0.2]), T([0.75, 0.75, 0.75])
    z, delayed = T([1.0, 1.0, 0.0]), T([False, True, False])
    ln2 = math.log(2)  # both BCE terms at logit 0
    # immediate positive (1 + dp), delayed positive 1, negative: z dp on the positive term and
    # (1 - z)(1 + dp) on the negative one, z = 1 - rn = 0.25
    close(defuse_loss(x, z, dp, rn, delayed), (1.2 * ln2 + ln2 + (0.25 * 0.2 + 0.75 * 1.2) * ln2) / 3)


@pytest.mark.parametrize(("p_ip", "p_dp"), [(0.05, 0.04), (0.3, 0.2), (0.01, 0.2)])
def test_defuse_minimiser_is_the_true_conversion_rate(p_ip: float, p_dp: float) -> None:
    """On ES-DFM's stream (a window sample per click, a duplicate per delayed conversion), with the
    true auxiliary probabilities, the expected DEFUSE loss of a click is smallest at its true
    conversion rate p_ip + p_dp; the biased stream's plain BCE is not."""
    p_rn = 1 - p_ip - p_dp
    dp, rn = T([p_dp]), T([p_rn / (p_rn + p_dp)])
    x = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=0.5, max_iter=200)

    def expected() -> torch.Tensor:  # sample types with their stream probabilities per click
        ip = defuse_loss(x, T([1.0]), dp, rn, T([False]))
        neg = defuse_loss(x, T([0.0]), dp, rn, T([False]))
        late = defuse_loss(x, T([1.0]), dp, rn, T([True]))
        return p_ip * ip + (p_dp + p_rn) * neg + p_dp * late

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = expected()
        loss.backward()
        return loss

    opt.step(closure)
    assert float(torch.sigmoid(x.detach())) == pytest.approx(p_ip + p_dp, rel=1e-3)
    biased = (p_ip + p_dp) / (1 + p_dp)  # plain BCE's minimiser on the same stream
    assert abs(biased - (p_ip + p_dp)) > 1e-3


def test_delay_weights_and_ranking_loss() -> None:
    w = delay_weights(T([1.0, 3.0]))  # median 1 (lower middle), std sqrt(2) > 1 is the scale
    close(w[0], 1.5), close(w[1], 1 + 1 / (1 + math.exp(2 / math.sqrt(2))))
    gen = torch.Generator().manual_seed(0)
    # one negative (score 0): every draw picks it; positives 2 and 1 with delays 1 and 3
    loss = delay_bpr(T([2.0, 0.0, 1.0]), T([1.0, 0.0, 1.0]), T([1.0, 0.0, 3.0]), num_neg=4, gen=gen)
    w0, w1 = 1.5, 1 + 1 / (1 + math.exp(2 / math.sqrt(2)))
    close(loss, (w0 * math.log1p(math.exp(-2)) + w1 * math.log1p(math.exp(-1))) / (w0 + w1))
    close(delay_bpr(T([1.0, 2.0]), T([1.0, 1.0]), T([1.0, 1.0]), 3, gen), 0.0)  # no negatives


def test_reader_routing_targets_and_loss() -> None:
    c = T([0.05, 0.95, 0.5])
    pred = route(c, T([10.0, 10.0, 10.0]), T([20.0, 20.0, 20.0]))
    assert pred.tolist() == [10.0, 20.0, 15.0]
    target = calibrated_target(T([10.0, 10.0, 10.0]), c, T([math.log(2)] * 3))  # multi: 11 * 2 - 1 = 21
    assert torch.allclose(target, T([10.0, 21.0, 15.5]))
    final = T([False, True, False])
    loss = reader_loss(pred, target, final, T([0.0, 10.0, 0.0]), boost=0.1, ga=0.5)
    main = (abs(math.log(21 / 22)) + abs(math.log(16 / 16.5))) / 3
    close(loss, main + 0.1 * (abs(math.log(21 / 22)) - 0.5 * abs(math.log(21 / 11))))
