"""End to end on a real slice of ML-1M: train tiny SASRec / HSTU for real, beat most-popular."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankstream.cli import main
from shared_data import ml1m_slice, needs_ml1m, write_config

pytestmark = [needs_ml1m, pytest.mark.slow]

MODELS = {
    "sasrec": {"name": "sasrec", "dim": 32, "num_blocks": 2, "num_heads": 1, "ffn_dim": 32,
               "dropout": 0.1, "max_len": 50},
    "hstu": {"name": "hstu", "dim": 32, "num_blocks": 2, "num_heads": 1, "dqk": 32, "dv": 32,
             "dropout": 0.1, "max_len": 50, "time_bias": False},
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_trains_and_beats_most_popular(tmp_path: Path, model: str) -> None:
    data = ml1m_slice(tmp_path, users=1000)
    cfg = write_config(tmp_path, MODELS[model], data.name,
                       train={"max_epochs": 10, "lr": 0.003, "loss": "full_softmax", "temperature": 0.1})
    out = tmp_path / "result.json"
    code = main(["bench", "--config", str(cfg), "--data-dir", str(tmp_path), "--out", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    steps = r["epochs"] * (1000 // 32)
    assert steps >= 300, steps
    ours = r["metrics"]["test"]["ndcg@10"]
    pop = r["baselines"]["most_popular"]["test"]["ndcg@10"]
    assert ours > pop * 1.2, (ours, pop)
    for key in ("hr@10", "ndcg@10", "mrr"):
        assert key in r["metrics"]["valid"] and key in r["metrics"]["test"]
    for key in ("epochs", "train_seconds", "train_seconds_per_epoch", "eval_seconds", "peak_rss_mb", "params"):
        assert r[key] > 0
    assert Path(r["checkpoint"], "model.safetensors").is_file()
    # The written checkpoint evaluates to the same test metrics through `rankstream eval`.
    ev = tmp_path / "eval.json"
    assert main(["eval", "--config", str(cfg), "--data-dir", str(tmp_path),
                 "--checkpoint", r["checkpoint"], "--out", str(ev)]) == 0
    assert json.loads(ev.read_text())["metrics"]["test"] == pytest.approx(r["metrics"]["test"])


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ml1m_slice(tmp_path, users=50)
    cfg = write_config(tmp_path, MODELS["sasrec"], data.name, train={"max_epochs": 1})
    cases = [
        (["bench", "--config", str(cfg), "--data-dir", str(tmp_path), "--out", "x.json", "train.nope=1"], "train.nope"),
        (["bench", "--config", str(cfg), "--data-dir", str(tmp_path), "--out", "x.json", "model.name=nosuch"], "unknown model"),
        (["bench", "--config", str(cfg), "--data-dir", str(tmp_path / "missing"), "--out", "x.json"], "data not found"),
        (["bench", "--config", str(cfg), "--data-dir", str(tmp_path), "--out", "x.json", "data.loader=nosuch"], "unknown dataset loader"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    # A checkpoint written for another config is refused in one line.
    assert main(["bench", "--config", str(cfg), "--data-dir", str(tmp_path), "--out", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    ckpt = json.loads((tmp_path / "a.json").read_text())["checkpoint"]
    assert main(["eval", "--config", str(cfg), "--data-dir", str(tmp_path), "--checkpoint", ckpt, "model.dim=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another config" in err[0], err
