"""``--limit-rate``: one token bucket shared by every transfer and segment."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """A token bucket that lets the balance go negative: a caller takes what
    it read, then sleeps off any debt. Later callers see the earlier debt, so
    the overall rate holds however many transfers share the bucket."""

    def __init__(self, rate: int, burst_seconds: float = 0.1) -> None:
        self.rate = float(rate)
        self.capacity = max(self.rate * burst_seconds, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)
