"""The simdjson fast path of /v1/rank: it either gives exactly what the general path
(orjson + RankRequest validation) gives, or declines (None) and leaves the answer to it."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rankstream.serve.app import RankRequest, fast_rank_request


def general(body: bytes) -> tuple[dict[str, object], list[int]] | None:
    try:
        req = RankRequest.model_validate(orjson.loads(body))
        ids = np.asarray(req.candidates, dtype=np.int64)
    except (orjson.JSONDecodeError, ValidationError, OverflowError):
        return None
    return req.model_dump(exclude={"candidates"}), ids.tolist()


def check_agrees(body: bytes) -> bool:
    fast = fast_rank_request(body)
    if fast is None:
        return False
    opts, ids = fast
    assert ids.dtype == np.int64 and ids.flags.writeable
    assert general(body) == (opts.model_dump(), ids.tolist()), body
    return True


def test_well_formed_requests_take_the_fast_path() -> None:
    body = orjson.dumps({"user_id": 7, "candidates": list(range(1, 1001)), "k": 5, "mode": "naive",
                         "recent_items": [3, 4]})
    assert check_agrees(body)
    assert check_agrees(b'{"candidates": [-9223372036854775808, 9223372036854775807], "user_id": 1}')


@pytest.mark.parametrize("body", [
    b'{"user_id": 1, "candidates": [1, 2.5]}',  # float id
    b'{"user_id": 1, "candidates": [1, 2.0]}',  # integral float: pydantic's business
    b'{"user_id": 1, "candidates": [1, true]}',
    b'{"user_id": 1, "candidates": [1, "2"]}',
    b'{"user_id": 1, "candidates": [1, [2]]}',  # simdjson would flatten this one
    b'{"user_id": 1, "candidates": [[1, 2]]}',
    b'{"user_id": 1, "candidates": [1, 9223372036854775808]}',  # beyond int64
    b'{"user_id": 1, "candidates": []}',
    b'{"user_id": 1, "candidates": [1], "candidates": [2]}',  # repeated key
    b'{"user_id": 1, "candidates": [1], "mode": "["}',  # a bracket inside a string
    b'{"user_id": 1, "candidates": [1], "extra": {"a": 1}}',
    b'{"user_id": 1, "candidates": [1], "k": 0}',
    b'{"user_id": 1.5, "candidates": [1]}',
    b'{"user_id": 1, "candidates": [1, NaN]}',
    b'{"user_id": 1, "candidates": [1, 2',
    b'[1, 2, 3]',
    b'',
])
def test_anything_else_is_left_to_the_general_path(body: bytes) -> None:
    assert fast_rank_request(body) is None


_id = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                st.booleans(), st.none(), st.text(max_size=3))
_value = st.recursive(_id, lambda inner: st.lists(inner, max_size=4), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["user_id", "candidates", "k", "mode", "recent_items", "unknown_user",
                                        "x"]), _value, max_size=6),
       st.lists(st.integers(-(2**63), 2**63 - 1), min_size=0, max_size=5))
def test_fast_path_never_disagrees(fields: dict[str, object], ids: list[int]) -> None:
    for body in (fields, {**fields, "candidates": ids}):
        check_agrees(json.dumps(body).encode())
