"""Writing a chunk to a file descriptor, whole, for both transfer paths."""

from __future__ import annotations

import os

from .config import WRITE_SLICE


def write_all(fd: int, data: bytes, done: int = 0, pos: int | None = None) -> None:
    """Write ``data[done:]`` whole, in slices of at most WRITE_SLICE: at the
    file position, or at offset ``pos`` (``pwrite``: a segment's place).

    Also finishes a short write (a signal, a full disk: on a regular file
    the kernel may take less than it is given, and raises only on the next
    try). On an error the bytes before it may be on disk: callers count
    progress only after a whole chunk, and a resume reads the truth from the
    file (whole-file) or rewrites the same offsets (segments).
    """
    view = memoryview(data)
    n = len(data)
    while done < n:
        piece = view[done : done + WRITE_SLICE]
        done += os.write(fd, piece) if pos is None else os.pwrite(fd, piece, pos + done)
