"""The stream task end to end on tiny simulated streams, and kill -9 + resume = uninterrupted."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankstream.config import ConfigError, load_config
from rankstream.train import stream_loop
from rankstream.train.checkpoint import CheckpointError
from rankstream.train.distributed import Dist
from rankstream.train.experiment import run_experiment
from stream_helpers import REDIS, redis_server, tiny_config

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RANKSTREAM_CACHE", str(tmp_path / "cache"))
    return tmp_path


def run(path: Path, data: Path, *overrides: str) -> dict:
    result = run_experiment(load_config(path, list(overrides)), data, Dist())
    assert result is not None
    return result


@pytest.mark.parametrize("method", ["pretrained", "oracle", "vanilla", "fnw", "fnc", "esdfm", "defer", "defuse", "tesla"])
def test_cascade_methods(cache: Path, method: str) -> None:
    r = run(tiny_config(cache, method, train={"max_segments": 12}), cache / "data")
    assert r["simulated"] is True and r["protocol"]["segments"] == 12
    for name in ("cvr", "netcvr"):
        m = r["metrics"][name]
        assert {"auc", "prauc", "nll", "pcoc", "ri_auc", "ri_prauc"} <= set(m)
        assert 0 <= m["auc"] <= 1 and math.isfinite(m["nll"]) and m["nll"] > 0  # tiny: ~25 clicks a segment
    assert r["clicks_per_second"] > 0 and len(r["segment_auc"]) == 12
    if method == "pretrained":  # the frozen model is its own RI reference
        assert r["metrics"]["cvr"]["auc"] == pytest.approx(r["pretrained"]["cvr"]["auc"])


@pytest.mark.parametrize("method", ["online_single", "reader"])
def test_gmv_methods(cache: Path, method: str) -> None:
    r = run(tiny_config(cache, method, gmv=True, train={"max_segments": 8}), cache / "data")
    m = r["metrics"]["gmv"]
    assert {"auc", "acc", "alpr", "gauc"} <= set(m) and 0 <= m["acc"] <= 1 and m["alpr"] > 0 and math.isfinite(m["auc"])


def test_method_and_model_must_match(cache: Path) -> None:
    from rankstream.config import ConfigError

    with pytest.raises(ConfigError, match="do not go together"):
        run(tiny_config(cache, "esdfm", model={"name": "tesla"}), cache / "data")


@pytest.mark.parametrize("key, value", [("bpr_weight_refund", -0.1), ("bpr_negatives_cvr", 0), ("bpr_negatives_refund", 0),
                                        ("batch_size", 1), ("pretrain_batch_size", 0)])
def test_train_settings_are_checked(cache: Path, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"train.{key}={value} \\(must be"):
        run(tiny_config(cache, "tesla", train={key: value}), cache / "data")


@pytest.mark.skipif(REDIS is None, reason="redis-server not installed (Debian package redis-server)")
def test_redis_source_gives_the_parquet_result(cache: Path) -> None:
    cfg = tiny_config(cache, "esdfm", train={"max_segments": 6, "oracle_reference": "none"})
    a = run(cfg, cache / "data", f"train.checkpoint_dir={cache / 'a'}")
    with redis_server(cache) as url:
        b = run(cfg, cache / "data", "data.source=redis", f"data.redis_url={url}", f"train.checkpoint_dir={cache / 'b'}")
    assert a["metrics"] == b["metrics"]


def bench(cfg: Path, data: Path, out: Path, env: dict[str, str], ckpt: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rankstream.cli", "bench", "--config", str(cfg), "--data-dir", str(data),
           "--out", str(out), f"train.checkpoint_dir={ckpt}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_then_resume_equals_uninterrupted(cache: Path) -> None:
    cfg = tiny_config(cache, "tesla", train={"checkpoint_every_s": 0, "max_segments": 24})
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "RANKSTREAM_CACHE": str(cache / "cache")}
    data = cache / "data"
    ref = bench(cfg, data, cache / "full.json", env, cache / "ckpt-full")
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode() if ref.stderr else ""
    victim = bench(cfg, data, cache / "resumed.json", env, cache / "ckpt-killed")
    latest = cache / "ckpt-killed" / "LATEST"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None:
        if latest.is_file() and latest.read_text() >= "seg-000005":
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (cache / "resumed.json").exists()
    again = bench(cfg, data, cache / "resumed.json", env, cache / "ckpt-killed")
    assert again.wait(timeout=300) == 0, again.stderr.read().decode() if again.stderr else ""
    full, resumed = (json.loads((cache / f).read_text()) for f in ("full.json", "resumed.json"))
    assert resumed["metrics"] == full["metrics"] and resumed["stream_samples"] == full["stream_samples"]
    assert resumed["segment_auc"] == full["segment_auc"]


def _bn_stats(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    folder = ckpt / (ckpt / "LATEST").read_text().strip()
    return {k: v for k, v in load_file(str(folder / "tensors.safetensors")).items() if "running_" in k}


@pytest.mark.parametrize("mode", ["frozen", "batch"])
def test_streaming_batchnorm_statistics(cache: Path, mode: str) -> None:
    """frozen: the streamed model normalises with the pre-trained statistics (unchanged after
    any number of segments); batch: each segment's batch moves them."""
    stats = []
    for segments in (1, 8):
        path = tiny_config(cache, "fnc", train={"max_segments": segments, "batchnorm": mode,
                                                "checkpoint_dir": str(cache / f"ck-{mode}-{segments}")})
        run(path, cache / "data")
        stats.append(_bn_stats(cache / f"ck-{mode}-{segments}"))
    assert stats[0] and stats[0].keys() == stats[1].keys()
    same = all(bool((stats[0][k] == stats[1][k]).all()) for k in stats[0])
    assert same == (mode == "frozen")


def test_resume_refuses_a_checkpoint_of_other_settings(cache: Path) -> None:
    ck = str(cache / "ck-settings")
    run(tiny_config(cache, "fnw", train={"max_segments": 3, "checkpoint_dir": ck}), cache / "data")
    # same settings, more segments: continues
    r = run(tiny_config(cache, "fnw", train={"max_segments": 5, "checkpoint_dir": ck}), cache / "data")
    assert r["protocol"]["segments"] == 5
    with pytest.raises(Exception, match="other data, model or training settings"):
        run(tiny_config(cache, "fnw", train={"max_segments": 5, "checkpoint_dir": ck, "lr": 0.01}), cache / "data")


def test_resume_refuses_a_corrupt_stream_checkpoint(cache: Path) -> None:
    ck = cache / "ck-corrupt"
    run(tiny_config(cache, "vanilla", train={"max_segments": 3, "checkpoint_dir": str(ck)}), cache / "data")
    tensors = ck / (ck / "LATEST").read_text().strip() / "tensors.safetensors"
    raw = bytearray(tensors.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the middle of the tensor data
    tensors.write_bytes(bytes(raw))
    with pytest.raises(Exception, match="corrupt"):
        run(tiny_config(cache, "vanilla", train={"max_segments": 5, "checkpoint_dir": str(ck)}), cache / "data")


def test_a_failed_stream_checkpoint_write_keeps_the_previous_one(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write cut short (a full disk) raises CheckpointError and leaves no temporary folder;
    LATEST still names the previous checkpoint, from which the stream resumes."""
    ck = cache / "ck-full"
    run(tiny_config(cache, "vanilla", train={"max_segments": 3, "checkpoint_dir": str(ck)}), cache / "data")
    before = (ck / "LATEST").read_text()

    def full_disk(tensors: dict, path: Path) -> str:
        path.write_bytes(b"partial")
        raise CheckpointError(f"could not write checkpoint file {path}: No space left on device")

    monkeypatch.setattr(stream_loop, "write_tensors", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        run(tiny_config(cache, "vanilla", train={"max_segments": 5, "checkpoint_dir": str(ck)}), cache / "data")
    assert not [p.name for p in ck.iterdir() if ".tmp-" in p.name]
    assert (ck / "LATEST").read_text() == before
    monkeypatch.undo()
    r = run(tiny_config(cache, "vanilla", train={"max_segments": 5, "checkpoint_dir": str(ck)}), cache / "data")
    assert r["protocol"]["segments"] == 5


def test_pretraining_has_its_own_batch_size(cache: Path) -> None:
    """train.batch_size is the streaming step; the pre-trained model depends on
    train.pretrain_batch_size only (a new one is trained when it changes, reused otherwise)."""
    def models() -> list[str]:
        return sorted(p.name for p in (cache / "refs" / "pretrained").iterdir())

    for i, train in enumerate(({"batch_size": 64}, {"batch_size": 512}, {"pretrain_batch_size": 64})):
        run(tiny_config(cache, "pretrained", train={"max_segments": 2, "checkpoint_dir": str(cache / f"ck-b{i}"), **train}),
            cache / "data")
        if i == 0:
            first = models()
            assert len(first) == 1
    assert len(models()) == 2 and first[0] in models()
