"""LazyAdam: SparseAdam's update, state and state_dict, with a faster step."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankstream.train.optim import LazyAdam, dedupe


def _step(emb: torch.nn.Embedding, opt: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    (emb(ids) * torch.linspace(-1, 1, emb.embedding_dim)).sum().backward()
    opt.step()


@pytest.mark.parametrize("maximize", [False, True])
def test_lazy_adam_matches_sparse_adam(maximize: bool) -> None:
    torch.manual_seed(0)
    ref = torch.nn.Embedding(50, 4, sparse=True)
    new = copy.deepcopy(ref)
    kw = {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "maximize": maximize}
    o_ref, o_new = torch.optim.SparseAdam(ref.parameters(), **kw), LazyAdam(new.parameters(), **kw)
    for step in range(6):
        ids = torch.randint(0, 12 + 6 * step, (9, 3))  # repeated rows in a batch; new rows appear
        ids[0, 0] = ids[1, 1] = 3
        _step(ref, o_ref, ids)
        _step(new, o_new, ids)
        torch.testing.assert_close(new.weight, ref.weight, rtol=1e-6, atol=1e-7)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[:42] = False
    assert torch.equal(new.weight[untouched], copy.deepcopy(ref).weight[untouched])
    s_ref, s_new = o_ref.state_dict(), o_new.state_dict()
    assert s_new["param_groups"] == s_ref["param_groups"] and s_new["state"][0]["step"] == 6
    torch.testing.assert_close(s_new["state"][0]["exp_avg_sq"], s_ref["state"][0]["exp_avg_sq"])


def test_state_dicts_move_between_sparse_adam_and_lazy_adam() -> None:
    torch.manual_seed(1)
    a = torch.nn.Embedding(20, 3, sparse=True)
    b = copy.deepcopy(a)
    o_a = torch.optim.SparseAdam(a.parameters(), lr=0.1)
    ids = torch.tensor([[1, 2, 2, 7]])
    _step(a, o_a, ids)
    o_b = LazyAdam(b.parameters(), lr=0.1)
    b.load_state_dict(a.state_dict())
    o_b.load_state_dict(copy.deepcopy(o_a.state_dict()))  # a SparseAdam checkpoint resumes under LazyAdam
    _step(a, o_a, ids)
    _step(b, o_b, ids)
    torch.testing.assert_close(b.weight, a.weight)


def test_dense_gradients_are_refused() -> None:
    w = torch.nn.Parameter(torch.zeros(3, 2))
    w.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        LazyAdam([w]).step()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=200))
def test_dedupe_without_sort_matches_unique(ids: list[int]) -> None:
    idx = torch.tensor(ids)
    scratch = torch.full((41,), -1, dtype=torch.int64)
    rows, inverse = dedupe(idx, scratch)
    assert torch.equal(rows[inverse], idx)  # every id maps back to its own row
    assert sorted(rows.tolist()) == torch.unique(idx).tolist()  # each distinct row once
    assert bool((scratch == -1).all())  # the scratch is clean for the next step


def test_state_is_allocated_when_built_and_a_fresh_checkpoint_moves_to_sparse_adam() -> None:
    """The moments exist (step 0, zeros) before the first step, so a stream's first segment
    does not allocate them; the state_dict of an unstepped LazyAdam still loads into SparseAdam
    and both then take the same step."""
    torch.manual_seed(2)
    a = torch.nn.Embedding(30, 4, sparse=True)
    b = copy.deepcopy(a)
    o_a = LazyAdam(a.parameters(), lr=0.1)
    st0 = o_a.state[a.weight]
    assert st0["step"] == 0 and st0["exp_avg"].shape == (30, 4) and not st0["exp_avg_sq"].any()
    o_b = torch.optim.SparseAdam(b.parameters(), lr=0.1)
    o_b.load_state_dict(copy.deepcopy(o_a.state_dict()))
    ids = torch.tensor([[3, 3, 9, 28]])
    _step(a, o_a, ids)
    _step(b, o_b, ids)
    torch.testing.assert_close(a.weight, b.weight)
    assert o_a.state[a.weight]["step"] == o_b.state[b.weight]["step"] == 1
