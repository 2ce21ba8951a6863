"""`rankstream bench serve` end to end (small): real server, separate load generator, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankstream.cli import main
from serve_support import Checkpoints


@pytest.mark.slow
def test_bench_serve_writes_both_paths(ckpts: Checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    argv = ["bench", "serve", "--checkpoint", str(ckpts.hstu), "--candidates", "100", "--requests", "150",
            "--users", "30", "--warmup", "10", "--rounds", "3", "--out", str(out)]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    for path in ("aif", "naive"):
        for key in ("p50_ms", "p95_ms", "p99_ms", "rps"):
            assert r[path][key] > 0, (path, key)
        assert r[path]["p50_ms"] <= r[path]["p95_ms"] <= r[path]["p99_ms"]
        assert r[path]["requests"] == 150 and r[path]["status_counts"] == {"200": 150}
        assert r[path]["connections"] == 3  # one keep-alive connection per round, never a reconnect
    assert r["aif_prepare"]["requests"] == 30 and r["aif_prepare"]["status_counts"] == {"202": 30}
    assert r["errors_5xx"] == 0 and r["errors_4xx"] == 0 and r["errors_connection"] == 0
    assert r["server"]["user_cache_hit_ratio"] == 1.0  # every AIF request found its prepared state
    assert r["model_version"].startswith("hstu-") and r["candidates"] == 100


def test_bench_config_still_parses_as_before() -> None:
    from rankstream.cli import bench_serve_parser, parser

    args = parser().parse_args(["bench", "--config", "c.yaml", "--out", "r.json", "train.max_epochs=1"])
    assert args.config == "c.yaml" and args.overrides == ["train.max_epochs=1"]
    args = bench_serve_parser().parse_args(["--checkpoint", "x", "--out", "o.json"])
    assert args.candidates == 1000 and args.requests == 10000


@pytest.mark.parametrize("flag", ["--rounds", "--requests", "--candidates", "--concurrency"])
def test_bench_serve_refuses_non_positive_counts(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "serve", "--checkpoint", "nowhere", flag, "0", "--out", "x.json"]
    assert main(argv) != 0
    assert f"{flag} must be >= 1" in capsys.readouterr().err
