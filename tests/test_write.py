"""The write path: big chunks and short writes land whole; allocator tuning is optional."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from downloader.config import WRITE_SLICE
from downloader.writes import write_all


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


def test_write_all_at_an_offset_finishes_short_pwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment path: pwrite at ``pos``, the bytes before it untouched."""
    data = os.urandom(2 * WRITE_SLICE + 77)
    real_pwrite = os.pwrite

    def stingy(fd: int, buf: bytes | memoryview, offset: int) -> int:
        assert len(buf) <= WRITE_SLICE
        return real_pwrite(fd, bytes(buf)[:5000], offset)

    monkeypatch.setattr(os, "pwrite", stingy)
    path = tmp_path / "f"
    path.write_bytes(b"\0" * 100)
    fd = os.open(path, os.O_WRONLY)
    try:
        write_all(fd, data, 0, 100)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\0" * 100 + data


def test_malloc_tuning_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python built without ctypes (or a libc without mallopt) still runs."""
    import sys

    from downloader import _malloc

    monkeypatch.setitem(sys.modules, "ctypes", None)
    assert _malloc.tune() is False
