"""The write path: chunks bigger than a slice, and short writes, land whole."""

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
