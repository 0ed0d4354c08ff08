"""``--limit-rate``: one token bucket shared by every transfer and segment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

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

    def chunks(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body in reads of at most :attr:`step` bytes."""
        return resp.content.iter_chunked(self.step)

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)
