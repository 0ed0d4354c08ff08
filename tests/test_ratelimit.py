"""The token bucket, on a virtual clock (no timing in unit tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from downloader import Downloader, client, ratelimit
from downloader.config import parse_rate

from .conftest import blob
from .server import FaultServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(ratelimit.time, "monotonic", c.monotonic)
    monkeypatch.setattr(ratelimit.asyncio, "sleep", c.sleep)
    return c


async def test_rate_holds_for_one_and_many_takers(clock: Clock) -> None:
    limiter = ratelimit.RateLimiter(1024 * 1024)
    total = 0
    for _ in range(200):  # 200 chunks of 64 KiB = 12.5 MiB
        await limiter.take(65536)
        total += 65536
    rate = total / clock.now
    assert 0.9 * 1024 * 1024 <= rate <= 1.1 * 1024 * 1024


async def test_shared_bucket_caps_the_sum(clock: Clock) -> None:
    limiter = ratelimit.RateLimiter(2 * 1024 * 1024)

    async def taker() -> None:
        for _ in range(50):
            await limiter.take(131072)

    # sequential turns on a virtual clock: the debt carries across takers
    for _ in range(4):
        await taker()
    rate = 4 * 50 * 131072 / clock.now
    assert 0.9 * 2 * 1024 * 1024 <= rate <= 1.1 * 2 * 1024 * 1024
    assert asyncio.iscoroutinefunction(limiter.take)


def test_parse_rate() -> None:
    assert parse_rate("500K") == 500 * 1024
    assert parse_rate("2M") == 2 * 1024**2
    assert parse_rate("1G") == 1024**3
    assert parse_rate("1.5m") == int(1.5 * 1024**2)
    assert parse_rate("300") == 300
    for bad in ("", "fast", "-1M", "0", "2X"):
        with pytest.raises(ValueError):
            parse_rate(bad)


async def test_bytes_are_paid_for_before_they_land(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under --limit-rate nothing reaches the disk before its tokens are
    taken, in reads of at most ``step`` bytes: a read of aiohttp's whole
    buffer (2 MiB) landed at once, seconds of the cap in one burst."""
    body = blob(3 * 1024 * 1024)
    url = server.add("/capped.bin", body)
    part = tmp_path / "capped.bin.part"
    paid = 0
    taken: list[int] = []

    class Watching(ratelimit.RateLimiter):
        async def take(self, n: int) -> None:  # no sleeping: order and sizes only
            nonlocal paid
            assert (part.stat().st_size if part.exists() else 0) <= paid
            paid += n
            taken.append(n)

    monkeypatch.setattr(client, "RateLimiter", Watching)
    results = await Downloader(tmp_path, progress=False, limit_rate="100K").download([url])
    assert results[0].status == "complete"
    assert (tmp_path / "capped.bin").read_bytes() == body
    assert sum(taken) == len(body) and max(taken) <= 100 * 1024 // 20


async def test_a_wait_for_tokens_longer_than_the_timeout_is_no_stall(
    server: FaultServer, tmp_path: Path
) -> None:
    """--timeout measures the server, never our own pacing: with two files
    sharing 4 KiB/s in 1 KiB reads, each waits about 0.5 s between reads,
    longer than --timeout 0.2, after the server has sent everything."""
    urls = [server.add(f"/f{n}.bin", blob(3072, n)) for n in range(2)]
    dl = Downloader(tmp_path, progress=False, jobs=2, limit_rate=4096, timeout=0.2, retries=0)
    results = await dl.download(urls)
    assert [r.status for r in results] == ["complete", "complete"], [r.error for r in results]
    assert [r.attempts for r in results] == [1, 1]
