"""Multi-process DDP (torchrun, gloo on CPU) matches one process; resume is exact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rankstream.cli import main
from shared_data import ml1m_slice, needs_ml1m, write_config

pytestmark = [needs_ml1m, pytest.mark.slow]

# Dropout 0 and the full softmax: the only differences left between 1 and 2 ranks are
# floating-point summation orders.
MODEL = {"name": "sasrec", "dim": 16, "num_blocks": 1, "num_heads": 1, "ffn_dim": 16,
         "dropout": 0.0, "max_len": 50}


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "last" / "model.safetensors"))


@pytest.mark.multiprocess
def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    data = ml1m_slice(tmp_path, users=300)
    train = {"max_epochs": 2, "loss": "full_softmax", "lr": 0.003}
    (tmp_path / "s").mkdir()
    single = write_config(tmp_path / "s", MODEL, data.name, train=train)
    assert main(["train", "--config", str(single), "--data-dir", str(tmp_path)]) == 0
    (tmp_path / "d").mkdir()
    multi = write_config(tmp_path / "d", MODEL, data.name, train=train)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "rankstream.cli", "train", "--config", str(multi), "--data-dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(tmp_path / "s" / "ckpt"), _weights(tmp_path / "d" / "ckpt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=1e-3, msg=k)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    data = ml1m_slice(tmp_path, users=200)
    model = {**MODEL, "dropout": 0.2}  # randomness included: seeded per step
    runs = {}
    for name, plan in {"straight": [3], "resumed": [1, 3]}.items():
        folder = tmp_path / name
        folder.mkdir()
        for epochs in plan:
            cfg = write_config(folder, model, data.name, train={"max_epochs": epochs, "resume": True,
                                                                "loss": "sampled_softmax", "num_negatives": 16})
            assert main(["train", "--config", str(cfg), "--data-dir", str(tmp_path)]) == 0
        runs[name] = _weights(folder / "ckpt")
    for k in runs["straight"]:
        assert torch.equal(runs["straight"][k], runs["resumed"][k]), k
