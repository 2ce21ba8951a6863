"""End to end on a real slice of Amazon Beauty: ``bench`` with LARES (two phases) and PLR, and
``sweep`` in both modes, through the CLI as users run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankstream.cli import main
from shared_data import beauty_slice, needs_beauty, write_config

pytestmark = [needs_beauty, pytest.mark.slow]

ENCODER = {"dim": 16, "num_blocks": 2, "num_heads": 1, "ffn_dim": 16, "dropout": 0.1, "max_len": 50}
TRAIN = {"max_epochs": 2, "lr": 0.003, "loss": "full_softmax", "temperature": 0.1}


def test_bench_lares_runs_both_phases_and_reports_latency(tmp_path: Path) -> None:
    data = beauty_slice(tmp_path, users=300)
    model = {"name": "lares", "backbone": "sasrec", "encoder": ENCODER, "rl_epochs": 3, "rl_group": 2}
    cfg = write_config(tmp_path, model, data.name, train=TRAIN)
    out = tmp_path / "lares.json"
    assert main(["bench", "--config", str(cfg), "--data-dir", str(tmp_path), "--out", str(out),
                 "model.reasoning_steps=1"]) == 0
    r = json.loads(out.read_text())
    assert r["config"]["model"]["reasoning_steps"] == 1
    post = r["post_training"]
    assert post["epochs"] == 2 and len(post["reward_by_epoch"]) == 2  # rl_epochs 3, capped by train.max_epochs
    assert all(0 < x < 1 for x in post["reward_by_epoch"])
    assert r["checkpoint"] == post["checkpoint"] and Path(r["checkpoint"], "model.safetensors").is_file()
    assert r["latency_ms_per_user"] > 0 and r["metrics"]["test"]["ndcg@10"] > 0
    # the kept checkpoint evaluates to the reported metrics
    ev = tmp_path / "eval.json"
    assert main(["eval", "--config", str(cfg), "--data-dir", str(tmp_path), "--checkpoint", r["checkpoint"],
                 "--out", str(ev), "model.reasoning_steps=1"]) == 0
    assert json.loads(ev.read_text())["metrics"]["test"] == pytest.approx(r["metrics"]["test"])


def test_sweeps_write_points_and_plot(tmp_path: Path) -> None:
    data = beauty_slice(tmp_path, users=300)
    lares = write_config(tmp_path, {"name": "lares", "encoder": ENCODER}, data.name, train={**TRAIN, "max_epochs": 1})
    out = tmp_path / "depth"
    assert main(["sweep", "--config", str(lares), "--data-dir", str(tmp_path), "--param", "model.reasoning_steps",
                 "--values", "0,2", "--mode", "infer", "--out", str(out)]) == 0
    s = json.loads((out / "sweep.json").read_text())
    assert [p["value"] for p in s["points"]] == [0, 2] and (out / "sweep.png").stat().st_size > 1000
    assert all(p["latency_ms_per_user"] > 0 and p["test_ndcg@10"] >= 0 for p in s["points"])
    plr = write_config(tmp_path, {"name": "plr", "encoder": ENCODER}, data.name, train={**TRAIN, "max_epochs": 1})
    out = tmp_path / "width"
    assert main(["sweep", "--config", str(plr), "--data-dir", str(tmp_path), "--param", "model.num_streams",
                 "--values", "1,3", "--out", str(out)]) == 0
    s = json.loads((out / "sweep.json").read_text())
    assert [p["value"] for p in s["points"]] == [1, 3]
    assert s["points"][1]["params"] > s["points"][0]["params"]
