"""glibc allocator tuning for the command.

Every body chunk aiohttp hands over is a fresh ``bytes`` of up to 256 KiB.
With glibc's defaults such a buffer often lands just above the dynamic mmap
threshold, or is freed at the top of the heap and trimmed straight back to
the kernel; either way the next chunk pays for fresh zeroed pages. Measured
on a 1 GiB download from nginx over loopback: 20,000–270,000 page faults and
1.2–1.9 CPU s/GiB by default, 6,000 faults and 0.85–1.0 s/GiB with the
thresholds fixed below (the rest of the run-to-run spread was the size of
the writes: see ``config.WRITE_SLICE``). They are kept low because memory
kept by the allocator counts in peak RSS: with a 32 MiB trim threshold a
200,000-entry run peaked at 76 MiB against 70 untuned (today, with 8 MiB
and a smaller name table: 58).

Only the command calls this: a library should not retune its host
process's allocator.
"""

from __future__ import annotations

import sys

#: mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Chunks up to this size come from the heap and are reused there.
MMAP_THRESHOLD = 4 << 20
#: Free memory kept at the top of the heap before it is given back.
TRIM_THRESHOLD = 8 << 20


def tune() -> bool:
    """Fix glibc's mmap and trim thresholds; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (ImportError, OSError, AttributeError):  # no ctypes, musl, or no shared libc
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
