"""Bounded concurrency over a lazy stream: a sliding window, never batches.

``jobs`` workers pull the next item the moment they finish one, so a slow
file holds one slot, not a whole batch, and the stream is read only as fast
as slots free up (a million-line list is never a million coroutines).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


async def run_window(items: Iterator[T], jobs: int, handle: Callable[[T], Awaitable[None]]) -> None:
    """Run ``handle`` on every item, at most ``jobs`` at once.

    An exception that escapes ``handle`` cancels the other workers and is
    raised: the run of files records each failure instead, the segments of
    one file stop together.
    """

    async def worker() -> None:
        for item in items:
            await handle(item)

    workers = [asyncio.ensure_future(worker()) for _ in range(jobs)]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
