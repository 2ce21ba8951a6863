"""End to end on a real slice (ML-100K, first 600 users): every ranking model trains a few
hundred steps through ``rankstream bench`` and beats logistic regression on the same test events;
the result JSON carries the acceptance fields, and ``rankstream eval`` reproduces it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankstream.cli import main
from shared_data import DATA

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (DATA / "ml100k").is_dir(), reason="ml100k not found")]

GEN = {"dim": 32, "num_blocks": 2, "num_heads": 2, "dqk": 16, "dv": 16, "dropout": 0.2, "max_len": 50,
       "num_time_buckets": 64, "head_hidden": 32}
MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # model config, train overrides
    "lr": ({"max_len": 20}, {"batch_size": 256, "lr": 0.01}),
    "deepfm": ({"dim": 8, "hidden": [64, 32], "max_len": 20}, {"batch_size": 256, "lr": 0.003}),
    "dcnv2": ({"dim": 8, "cross_layers": 2, "hidden": [64, 32], "max_len": 20}, {"batch_size": 256, "lr": 0.003}),
    "din": ({"dim": 8, "hidden": [64, 32], "attention_hidden": [16, 8], "max_len": 20, "activation": "prelu"},
            {"batch_size": 256, "lr": 0.003}),
    "dien": ({"dim": 8, "hidden": [64, 32], "max_len": 20, "activation": "prelu", "aux_weight": 0.1},
             {"batch_size": 256, "lr": 0.003}),
    "hstu_rank": (GEN, {"batch_size": 12, "lr": 0.002}),
    "dfgr": (GEN, {"batch_size": 12, "lr": 0.002}),
}
EPOCHS = 2


def bench(tmp: Path, name: str) -> dict[str, Any]:
    model, train = MODELS[name]
    cfg = {
        "name": name, "dataset": "ml100k_slice", "model": {"name": name, **model},
        "data": {"loader": "movielens", "path": "ml100k", "max_len": 50, "max_users": 600},
        "train": {"max_epochs": EPOCHS, "num_threads": 1, "progress": False, "patience": 100,
                  "checkpoint_dir": str(tmp / f"ck_{name}"), **train},
        "eval": {"infer_repeats": 3},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp / f"{name}.json"
    assert main(["bench", "--config", str(path), "--data-dir", str(DATA), "--out", str(out)]) == 0
    r: dict[str, Any] = json.loads(out.read_text())
    r["_config"] = path
    return r


@pytest.fixture(scope="module")
def lr_auc(tmp_path_factory: pytest.TempPathFactory) -> float:
    return float(bench(tmp_path_factory.mktemp("lr"), "lr")["metrics"]["test"]["auc"])


@pytest.mark.parametrize("name", [m for m in MODELS if m != "lr"])
def test_trains_and_beats_logistic_regression(tmp_path: Path, name: str, lr_auc: float) -> None:
    r = bench(tmp_path, name)
    assert r["train_steps"] >= 200, r["train_steps"]
    test = r["metrics"]["test"]
    assert test["auc"] > lr_auc + 0.002, (name, test["auc"], lr_auc)
    for key in ("auc", "gauc", "logloss", "calibration"):
        assert key in test and key in r["metrics"]["valid"]
    for key in ("train_seconds_per_epoch", "infer_ms_per_1000_candidates", "params", "epochs"):
        assert r[key] > 0, key
    assert r["inference"]["candidates"] == 1000 and r["task"] == "ranking"
    ev = tmp_path / "eval.json"
    assert main(["eval", "--config", str(r["_config"]), "--data-dir", str(DATA), "--checkpoint", r["checkpoint"],
                 "--out", str(ev)]) == 0
    assert json.loads(ev.read_text())["metrics"]["test"] == pytest.approx(test)
