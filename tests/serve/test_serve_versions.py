"""Model versions over HTTP: hot swap without dropped requests, cache invalidation, refusals."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from rankstream.cli import main
from serve_support import Checkpoints, Offline, Server, candidates, start_server


def _hammer(server: Server, user: int, cands: list[int], stop: threading.Event, seen: list[tuple[int, dict]]) -> None:
    while not stop.is_set():
        status, r = server.post("/v1/rank", {"user_id": user, "candidates": cands})
        seen.append((status, r if isinstance(r, dict) else {}))


def _broken_copies(ckpts: Checkpoints, tmp: Path) -> dict[str, Path]:
    corrupt = shutil.copytree(ckpts.hstu_b, tmp / "corrupt")
    raw = bytearray((corrupt / "model.safetensors").read_bytes())
    raw[-10:] = b"\x00" * 10
    (corrupt / "model.safetensors").write_bytes(bytes(raw))
    other_cfg = shutil.copytree(ckpts.hstu_b, tmp / "other_config")
    state = json.loads((other_cfg / "state.json").read_text())
    state["config"]["model"]["dim"] = 32
    (other_cfg / "state.json").write_text(json.dumps(state))
    return {"corrupt": corrupt, "other_config": other_cfg, "missing": tmp / "missing"}


def test_swap_invalidates_cache_and_never_drops_requests(ckpts: Checkpoints, tmp_path: Path) -> None:
    off_b = Offline(ckpts.hstu_b, ckpts.data.parent)
    user = int(off_b.data.user_ids[11])
    cands = candidates(off_b, 50, 0)
    with start_server(ckpts.hstu) as server:
        _, r = server.post("/v1/users/prepare", {"user_id": user, "wait": True})
        v1 = r["model_version"]
        _, r = server.post("/v1/rank", {"user_id": user, "candidates": cands})
        assert r["user_state"] == "hit" and r["model_version"] == v1
        before = np.array(r["scores"])

        stop, seen = threading.Event(), []
        t = threading.Thread(target=_hammer, args=(server, user, cands, stop, seen))
        t.start()
        status, swap = server.post("/v1/admin/model", {"checkpoint": str(ckpts.hstu_b)})
        stop.set()
        t.join()
        assert status == 200, swap
        v2 = swap["model_version"]
        assert v2 != v1 and swap["previous_version"] == v1 and swap["dropped_user_states"] >= 1
        assert seen and all(s == 200 for s, _ in seen), seen[:5]
        assert {r["model_version"] for _, r in seen} <= {v1, v2}

        # every answer is entirely one version's; v1's cached state is gone, so the first v2
        # answer for the user computed its state again
        _, r = server.post("/v1/rank", {"user_id": user, "candidates": cands})
        answers = [r for _, r in seen] + [r]
        expect = off_b.scores([user])[0, off_b.rows_of(cands)]
        assert not np.allclose(before, expect, atol=1e-3)
        for a in answers:
            np.testing.assert_allclose(a["scores"], before if a["model_version"] == v1 else expect, rtol=1e-5, atol=1e-6)
        first_v2 = next(a for a in answers if a["model_version"] == v2)
        assert first_v2["user_state"] in ("miss", "pending")

        # refused checkpoints: a clear 422 and the current version keeps serving
        for name, path in _broken_copies(ckpts, tmp_path).items():
            status, r = server.post("/v1/admin/model", {"checkpoint": str(path)})
            assert status == 422 and "refused" in r["detail"] and v2 in r["detail"], (name, r)
        status, r = server.post("/v1/admin/model", {"checkpoint": str(ckpts.other)})
        assert status == 422 and "catalogue" in r["detail"]
        _, r = server.post("/v1/rank", {"user_id": user, "candidates": cands})
        assert r["model_version"] == v2 and r["user_state"] == "hit"

        # another model family on the same catalogue is a valid new version
        status, swap = server.post("/v1/admin/model", {"checkpoint": str(ckpts.sasrec)})
        assert status == 200 and swap["model_version"].startswith("sasrec-")
        off_s = Offline(ckpts.sasrec, ckpts.data.parent)
        _, r = server.post("/v1/rank", {"user_id": user, "candidates": cands, "mode": "naive"})
        np.testing.assert_allclose(r["scores"], off_s.scores([user])[0, off_s.rows_of(cands)], rtol=1e-5, atol=1e-6)
        _, text = server.call("GET", "/metrics")
        assert 'rankstream_model_swaps_total{result="refused"} 4.0' in text
        assert 'rankstream_model_swaps_total{result="ok"} 2.0' in text


def test_refused_checkpoint_at_start_is_one_line(ckpts: Checkpoints, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    broken = _broken_copies(ckpts, tmp_path)
    for path, needle in ((broken["corrupt"], "corrupt"), (broken["other_config"], "does not match")):
        assert main(["serve", str(path), "--port", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_checkpoints_from_before_serving_still_load(ckpts: Checkpoints, tmp_path: Path) -> None:
    """state.json without the serving facts (sizes, data_source, item_ids_sha256) loads with
    the data found through --data-dir, checked by the model hash alone."""
    from rankstream.serve.versions import load_version
    from rankstream.train.checkpoint import CheckpointError

    old = shutil.copytree(ckpts.hstu, tmp_path / "old")
    state = json.loads((old / "state.json").read_text())
    for key in ("sizes", "data_source", "item_ids_sha256"):
        del state[key]
    (old / "state.json").write_text(json.dumps(state))
    v = load_version(old, data_dir=ckpts.data.parent)
    assert v.info["items"] == 150 and v.version.startswith("hstu-")
    with pytest.raises(CheckpointError, match="data not found"):
        load_version(old, data_dir=tmp_path / "nowhere")
