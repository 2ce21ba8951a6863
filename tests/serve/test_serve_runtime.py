"""Exported runtimes behind the real server, the API key, and the Redis-shared caches."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serve_support import Checkpoints, Offline, candidates, free_port, start_server


@pytest.mark.parametrize("runtime", ["onnx", "torch_export"])
def test_exported_runtime_serves_the_same_scores_behind_an_api_key(ckpts: Checkpoints, runtime: str) -> None:
    off = Offline(ckpts.hstu, ckpts.data.parent)
    users = off.data.user_ids[[1, 2, 150]].tolist()
    ref = off.scores(users)
    with start_server(ckpts.hstu, "--runtime", runtime, api_key="s3cret") as server:
        assert server.call("GET", "/health", headers={"X-API-Key": ""})[0] == 200  # health needs no key
        for path in ("/v1/model", "/metrics"):
            assert server.call("GET", path, headers={"X-API-Key": "wrong"})[0] == 401
        status, info = server.call("GET", "/v1/model")
        assert status == 200 and info["runtime"] == runtime
        for i, u in enumerate(users):
            cands = candidates(off, 40, i)
            for mode in ("aif", "naive"):
                status, r = server.post("/v1/rank", {"user_id": u, "candidates": cands, "mode": mode})
                assert status == 200, r
                np.testing.assert_allclose(r["scores"], ref[i, off.rows_of(cands)], rtol=1e-5, atol=1e-5)
        server.api_key = None
        status, r = server.post("/v1/rank", {"user_id": users[0], "candidates": [1]})
        assert status == 401 and "API-Key" in r["detail"]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private Debian redis-server on a free port (skipped if the binary is absent)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (Debian: apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_shares_user_states_and_item_tables_across_workers(ckpts: Checkpoints, redis_url: str) -> None:
    off = Offline(ckpts.hstu, ckpts.data.parent)
    user = int(off.data.user_ids[30])
    cands = candidates(off, 25, 9)
    with start_server(ckpts.hstu, "--redis-url", redis_url) as a, start_server(ckpts.hstu, "--redis-url", redis_url) as b:
        sources = {a.call("GET", "/v1/model")[1]["item_table"], b.call("GET", "/v1/model")[1]["item_table"]}
        assert sources == {"computed", "shared"}  # one worker computed the item side, the other read it
        status, r = a.post("/v1/users/prepare", {"user_id": user, "wait": True})
        assert status == 202 and r["status"] == "ready"
        status, r = b.post("/v1/rank", {"user_id": user, "candidates": cands})  # the other worker
        assert status == 200 and r["user_state"] == "hit"
        np.testing.assert_allclose(r["scores"], off.scores([user])[0, off.rows_of(cands)], rtol=1e-5, atol=1e-6)
        # a swap on one worker drops that version's shared user states
        status, swap = b.post("/v1/admin/model", {"checkpoint": str(ckpts.hstu_b)})
        assert status == 200 and swap["dropped_user_states"] >= 1
        status, r = a.post("/v1/rank", {"user_id": user, "candidates": cands})
        assert r["user_state"] == "miss"  # worker a still serves v1, whose state was dropped


def test_bad_redis_url_is_refused_in_one_line(ckpts: Checkpoints, capsys: pytest.CaptureFixture[str]) -> None:
    from rankstream.cli import main

    assert main(["serve", str(ckpts.hstu), "--redis-url", f"redis://127.0.0.1:{free_port()}/0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Redis" in err[0], err
