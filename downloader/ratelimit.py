"""``--limit-rate``: one token bucket shared by every transfer and segment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp


class RateLimiter:
    """A token bucket that lets the balance go negative: a caller takes what
    it read, sleeping off any debt, before writing it. Later callers see the
    earlier debt, so the overall rate holds however many transfers share the
    bucket; reads of :attr:`step` bytes keep it smooth."""

    def __init__(self, rate: int, burst_seconds: float = 0.1) -> None:
        self.rate = float(rate)
        self.capacity = max(self.rate * burst_seconds, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        #: bytes per read under the cap: a twentieth of a second's worth,
        #: 1-64 KiB; a read of aiohttp's whole buffer (up to 2 MiB) would
        #: land at once, seconds of the cap in one burst
        self.step = int(min(max(self.rate / 20, 1024), 65536))

    async def chunks(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body in pieces of at most :attr:`step` bytes.

        Once the whole body has arrived, what is left is taken out of
        aiohttp's buffer at once: a read after the body's end restarts
        aiohttp's read timer (``sock_read``), which, with nothing more to
        come, fires while we pace ourselves; the next read would then fail
        a complete body as "stalled" (a cap's wait can outlast ``--timeout``)."""
        content, step = resp.content, self.step
        while True:
            chunk = await content.read(step)
            if not chunk:
                return
            if content.is_eof():
                # before the caller's pacing: the payload is not touched again
                chunk += content.read_nowait()
                for at in range(0, len(chunk), step):
                    yield chunk[at : at + step]
                return
            yield chunk

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)
