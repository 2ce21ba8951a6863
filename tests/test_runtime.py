"""Process-wide CPU settings: the allocator tuning takes on glibc and can be switched off."""

from __future__ import annotations

import platform

import pytest
import torch

from rankstream.runtime import configure_cpu, keep_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")


@glibc
def test_keep_freed_memory_takes_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANKSTREAM_KEEP_FREED_MEMORY", raising=False)
    assert keep_freed_memory.__wrapped__() is True


def test_keep_freed_memory_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKSTREAM_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory.__wrapped__() is False


def test_configure_cpu_sets_the_threads() -> None:
    before = torch.get_num_threads()
    try:
        configure_cpu(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
