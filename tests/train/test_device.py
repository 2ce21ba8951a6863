"""train.device: names resolve to a device, or fail with a message that says what to do."""

from __future__ import annotations

import pytest
import torch

from rankstream.data.jagged import JaggedBatch
from rankstream.train.distributed import resolve_device


def test_cpu_and_auto_resolve_without_cuda() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_unknown_device_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected cpu, cuda"):
        resolve_device("tpu")


def test_batch_to_cpu_is_the_same_batch() -> None:
    t = torch.arange(3)
    b = JaggedBatch(t, torch.tensor([0, 3]), t, t, 3, torch.tensor([0]), targets=t)
    assert b.to(torch.device("cpu")) is b
