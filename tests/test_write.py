"""The write path: big chunks and short writes land whole; allocator tuning is optional."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from downloader.config import WRITE_SLICE
from downloader.transfer import write_all


def test_write_all_slices_and_finishes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * WRITE_SLICE + 123)
    sizes: list[int] = []
    real_write = os.write

    def stingy(fd: int, buf: bytes | memoryview) -> int:
        sizes.append(len(buf))
        return real_write(fd, bytes(buf)[:7000])  # the kernel takes less than given

    monkeypatch.setattr(os, "write", stingy)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        written = real_write(fd, data[:5])  # a first short write, by the caller
        write_all(fd, data, written)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data
    assert max(sizes) <= WRITE_SLICE


def test_malloc_tuning_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python built without ctypes (or a libc without mallopt) still runs."""
    import sys

    from downloader import _malloc

    monkeypatch.setitem(sys.modules, "ctypes", None)
    assert _malloc.tune() is False
