from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator

import pytest

from .server import FaultServer

# Never send the tests' loopback traffic through a proxy from the environment.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_name, None)


@pytest.fixture
async def server() -> AsyncIterator[FaultServer]:
    srv = await FaultServer().start()
    try:
        yield srv
    finally:
        await srv.stop()


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(params=["http1", "aiohttp"])
def both_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Plain http:// goes by http1 unless DOWNLOADER_AIOHTTP_ONLY is set: the
    modules that inject faults run on both ways (a subprocess inherits it)."""
    if request.param == "aiohttp":
        monkeypatch.setenv("DOWNLOADER_AIOHTTP_ONLY", "1")
    else:
        monkeypatch.delenv("DOWNLOADER_AIOHTTP_ONLY", raising=False)
    return str(request.param)
