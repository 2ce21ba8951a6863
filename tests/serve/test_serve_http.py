"""The real server over HTTP: results equal offline scoring; AIF cache; metrics; bad input -> 4xx."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from serve_support import Checkpoints, Offline, Server, candidates


@pytest.fixture(scope="module")
def offline(ckpts: Checkpoints) -> Offline:
    return Offline(ckpts.hstu, ckpts.data.parent)


def test_rank_equals_offline_scoring(server: Server, offline: Offline) -> None:
    users = offline.data.user_ids[[0, 5, 17, 42, 199]].tolist()
    ref = offline.scores(users)
    for i, (u, mode) in enumerate(zip(users, ["aif", "naive", "aif", "naive", "aif"], strict=True)):
        cands = candidates(offline, 60, seed=i)
        status, r = server.post("/v1/rank", {"user_id": u, "candidates": cands, "k": 7, "mode": mode})
        assert status == 200, r
        expect = ref[i, offline.rows_of(cands)]
        np.testing.assert_allclose(r["scores"], expect, rtol=1e-5, atol=1e-6)
        order = np.argsort(-expect, kind="stable")[:7]
        assert r["top_k"]["items"] == [cands[j] for j in order]
        np.testing.assert_allclose(r["top_k"]["scores"], expect[order], rtol=1e-5, atol=1e-6)
        assert r["user_state"] == ("computed" if mode == "naive" else "miss")


def test_retrieve_equals_offline_top_k(server: Server, offline: Offline) -> None:
    u = int(offline.data.user_ids[3])
    ref = offline.scores([u])[0]
    row = offline.user_rows([u])[0]
    seen = offline.data.items[offline.data.offsets[row]:offline.data.offsets[row + 1]][-30:]
    ref[0] = -np.inf
    for exclude in (True, False):
        masked = ref.copy()
        if exclude:
            masked[seen] = -np.inf
        status, r = server.post("/v1/retrieve", {"user_id": u, "k": 15, "exclude_history": exclude})
        assert status == 200, r
        best = np.argsort(-masked, kind="stable")[:15]
        assert r["top_k"]["items"] == offline.data.item_ids[best].tolist()
        np.testing.assert_allclose(r["top_k"]["scores"], masked[best], rtol=1e-5, atol=1e-6)


def metric(server: Server, name: str) -> float:
    status, text = server.call("GET", "/metrics")
    assert status == 200
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m, name
    return float(m.group(1))


def test_prepare_then_rank_uses_the_cached_user_state(server: Server, offline: Offline) -> None:
    u = int(offline.data.user_ids[77])
    hits = metric(server, 'rankstream_cache_lookups_total{cache="user_state",result="hit"}')
    status, r = server.post("/v1/users/prepare", {"user_id": u})
    assert status == 202 and r["status"] in ("started", "cached")
    status, r = server.post("/v1/rank", {"user_id": u, "candidates": candidates(offline, 20, 1)})
    assert status == 200 and r["user_state"] in ("hit", "pending")
    status, r = server.post("/v1/users/prepare", {"user_id": u, "wait": True})
    assert r["status"] == "cached"
    status, r = server.post("/v1/rank", {"user_id": u, "candidates": candidates(offline, 20, 2)})
    assert r["user_state"] == "hit"
    assert metric(server, 'rankstream_cache_lookups_total{cache="user_state",result="hit"}') >= hits + 1
    assert 0.0 < metric(server, 'rankstream_cache_hit_ratio{cache="user_state"}') <= 1.0
    assert metric(server, 'rankstream_requests_total{endpoint="/v1/rank",status="200"}') >= 2
    assert metric(server, 'rankstream_request_latency_seconds_count{endpoint="/v1/rank"}') >= 2


def test_recent_items_extend_the_history(server: Server, offline: Offline) -> None:
    u = int(offline.data.user_ids[9])
    cands = candidates(offline, 30, 4)
    _, plain = server.post("/v1/rank", {"user_id": u, "candidates": cands})
    _, recent = server.post("/v1/rank", {"user_id": u, "candidates": cands, "recent_items": cands[:3]})
    assert recent["user_state"] == "miss" and not np.allclose(plain["scores"], recent["scores"])


def test_unknown_user_takes_the_cold_start_path(server: Server, offline: Offline) -> None:
    cands = candidates(offline, 40, 5)
    status, r = server.post("/v1/rank", {"user_id": 10**12, "candidates": cands, "k": 5})
    assert status == 200 and r["user_state"] == "cold_start"
    counts = np.bincount(offline.data.items, minlength=offline.data.num_items + 1)
    np.testing.assert_allclose(r["scores"], np.log1p(counts[offline.rows_of(cands)]), rtol=1e-6)
    status, r = server.post("/v1/rank", {"user_id": 10**12, "candidates": cands, "recent_items": cands[:2]})
    assert status == 200 and r["user_state"] == "miss"
    status, r = server.post("/v1/retrieve", {"user_id": 10**12, "k": 3})
    assert status == 200 and r["user_state"] == "cold_start"
    assert r["top_k"]["items"] == offline.data.item_ids[np.argsort(-counts[1:], kind="stable")[:3] + 1].tolist()
    status, r = server.post("/v1/rank", {"user_id": 10**12, "candidates": cands, "unknown_user": "error"})
    assert status == 404 and "unknown user" in r["detail"]


BAD: list[tuple[str, dict[str, Any] | None, bytes | None, int, str]] = [
    ("malformed json", None, b'{"user_id": 1, "candidates": [1, 2', 422, "JSON decode"),
    ("NaN literal", None, b'{"user_id": NaN, "candidates": [1]}', 422, "JSON decode"),
    ("Infinity in a list", None, b'{"user_id": 1, "candidates": [1, Infinity]}', 422, "JSON decode"),
    ("float id", {"user_id": 1.5, "candidates": [1]}, None, 422, "integer"),
    ("empty candidates", {"user_id": 1, "candidates": []}, None, 422, "at least 1"),
    ("too many candidates", {"user_id": 1, "candidates": list(range(10_001))}, None, 422, "at most 10000"),
    ("unknown item", {"user_id": 1, "candidates": [1, 987654321]}, None, 422, "987654321"),
    ("unknown recent item", {"user_id": 1, "candidates": [1], "recent_items": [-7]}, None, 422, "-7"),
    ("id over int64", None, b'{"user_id": 1, "candidates": [99999999999999999999999]}', 422, ""),
    ("k = 0", {"user_id": 1, "candidates": [1], "k": 0}, None, 422, "greater than or equal"),
    ("unknown field", {"user_id": 1, "candidates": [1], "kk": 3}, None, 422, "Extra inputs"),
    ("not an object", None, b"[1, 2, 3]", 422, "dictionary"),
    ("bad mode", {"user_id": 1, "candidates": [1], "mode": "fast"}, None, 422, "aif"),
]


@pytest.mark.parametrize(("what", "body", "raw", "status", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_with_a_message(server: Server, offline: Offline, what: str, body: Any,
                                           raw: bytes | None, status: int, needle: str) -> None:
    if body is not None and body.get("candidates") == [1]:
        body["candidates"] = [int(offline.data.item_ids[1])]
    got, r = server.call("POST", "/v1/rank", body, raw)
    assert got == status, (what, r)
    assert needle in str(r["detail"]), (what, r)


def test_transport_errors(server: Server) -> None:
    assert server.call("POST", "/v1/rank", raw=b'{"user_id": 1}', headers={"Content-Type": "text/plain"})[0] == 415
    big = b'{"user_id": 1, "candidates": [' + b"1," * 600_000 + b"1]}"
    status, r = server.call("POST", "/v1/rank", raw=big)
    assert status == 413 and "body" in r["detail"]
    assert server.call("GET", "/v1/nothing")[0] == 404
    assert server.call("GET", "/v1/rank")[0] == 405
    status, r = server.call("GET", "/v1/model")
    assert status == 200 and r["model"] == "hstu" and r["runtime"] == "torch"
    # the server is still healthy and has answered no 5xx
    assert server.call("GET", "/health")[0] == 200
    _, text = server.call("GET", "/metrics")
    assert not re.search(r'status="5\d\d"', text)
