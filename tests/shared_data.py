"""Where the real data lives for tests, and a skip marker when it is absent."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("RANKSTREAM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ML1M_SEQ = DATA / "ml1m_seq" / "ml-1m.txt.gz"

needs_ml1m = pytest.mark.skipif(
    not ML1M_SEQ.is_file(), reason=f"real data not found at {ML1M_SEQ} (set RANKSTREAM_DATA)"
)


def ml1m_slice(folder: Path, users: int) -> Path:
    """Write the first ``users`` lines of the real ML-1M sequence file to folder/slice.txt."""
    with gzip.open(ML1M_SEQ, "rt") as f:
        lines = [next(f) for _ in range(users)]
    out = folder / "slice.txt"
    out.write_text("".join(lines))
    return out


def write_config(folder: Path, model: dict, data_path: str, **sections: dict) -> Path:
    """A small experiment YAML for tests."""
    import yaml

    cfg = {
        "name": model["name"],
        "dataset": "slice",
        "model": model,
        "data": {"loader": "seq_text", "path": data_path, "max_len": 50},
        "train": {"batch_size": 32, "num_threads": 1, "progress": False, "patience": 100,
                  "checkpoint_dir": str(folder / "ckpt"), **sections.get("train", {})},
        "eval": {"ks": [10, 50]},
    }
    p = folder / f"{model['name']}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


BEAUTY = DATA / "amazon_s3rec" / "Beauty.txt.gz"
needs_beauty = pytest.mark.skipif(
    not BEAUTY.is_file(), reason=f"real data not found at {BEAUTY} (set RANKSTREAM_DATA)"
)


def beauty_slice(folder: Path, users: int) -> Path:
    """Write the first ``users`` lines of the real Amazon Beauty file to folder/beauty.txt."""
    with gzip.open(BEAUTY, "rt") as f:
        lines = [next(f) for _ in range(users)]
    out = folder / "beauty.txt"
    out.write_text("".join(lines))
    return out
