"""Serving fixtures (helpers in tests/serve_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serve_support import Checkpoints, Server, start_server, synthetic_sequences, train_checkpoint


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkpoints]:
    """Four tiny checkpoints; the prepared-data cache lives in the session's temp folder."""
    root = tmp_path_factory.mktemp("serve")
    env = pytest.MonkeyPatch()
    env.setenv("RANKSTREAM_CACHE", str(root / "cache"))  # servers started below inherit it
    data = synthetic_sequences(root / "data" / "seq.txt", users=200, items=150, seed=0)
    other = synthetic_sequences(root / "data2" / "seq.txt", users=100, items=90, seed=1, first_item=1000)
    yield Checkpoints(
        data=data,
        hstu=train_checkpoint(root / "hstu", data, "hstu", seed=1),
        hstu_b=train_checkpoint(root / "hstu_b", data, "hstu", seed=2),
        sasrec=train_checkpoint(root / "sasrec", data, "sasrec", seed=1),
        other=train_checkpoint(root / "other", other, "hstu", seed=1, epochs=1),
    )
    env.undo()


@pytest.fixture(scope="session", autouse=True)
def _restore_denormals(ckpts: Checkpoints) -> None:
    """Training in-process sets torch.set_flush_denormal(True) (experiment.set_threads), which
    also stops Hypothesis from generating subnormal floats; later tests get IEEE floats back."""
    import torch

    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def server(ckpts: Checkpoints) -> Iterator[Server]:
    """A real server on the HSTU checkpoint (torch runtime, no API key)."""
    with start_server(ckpts.hstu) as s:
        yield s
