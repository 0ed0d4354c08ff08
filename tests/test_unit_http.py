"""HTTP paths of one transfer, with aioresponses standing in for the network."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from downloader import Downloader, Entry
from downloader.retry import RetryPolicy, parse_retry_after

URL = "http://files.test/data/file.bin"


class _Written:
    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.x predates aiohttp 3.14's required ``stream_writer``
    (pnuckowski/aioresponses#289); give it the finished writer it expects."""

    def __init__(self, *args: Any, stream_writer: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, stream_writer=stream_writer or _Written(), **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    # aioresponses stands in for aiohttp: plain http:// must not go by http1
    monkeypatch.setenv("DOWNLOADER_AIOHTTP_ONLY", "1")
    with aioresponses() as m:
        yield m


REAL_DELAY = RetryPolicy.delay


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, failures, retry_after=None: 0.0)


async def test_404_fails_once_and_writes_nothing(mocked: aioresponses, tmp_path: Path) -> None:
    mocked.get(URL, status=404, body=b"not found page")
    results = await Downloader(tmp_path, progress=False).download([URL])
    (rec,) = results.failed
    assert (rec.error, rec.attempts, rec.path) == ("HTTP 404 Not Found", 1, "file.bin")
    assert not list(tmp_path.glob("file.bin*"))


async def test_503_twice_then_ok(mocked: aioresponses, tmp_path: Path) -> None:
    mocked.get(URL, status=503)
    mocked.get(URL, status=503)
    mocked.get(URL, status=200, body=b"payload")
    results = await Downloader(tmp_path, progress=False).download([URL])
    assert results.complete[0].attempts == 3
    assert (tmp_path / "file.bin").read_bytes() == b"payload"


async def test_connection_errors_are_retried_then_reported(
    mocked: aioresponses, tmp_path: Path
) -> None:
    for _ in range(3):
        mocked.get(URL, exception=aiohttp.ServerDisconnectedError())
    results = await Downloader(tmp_path, progress=False, retries=2).download([URL])
    (rec,) = results.failed
    assert rec.attempts == 3 and rec.error == "server closed the connection"


async def test_checksum_verified_while_streaming(mocked: aioresponses, tmp_path: Path) -> None:
    body = b"x" * 5000
    mocked.get(URL, status=200, body=body)
    mocked.get(URL.replace("file", "other"), status=200, body=body)
    good = Entry(URL, checksum="sha-1=" + hashlib.sha1(body).hexdigest())
    bad = Entry(URL.replace("file", "other"), checksum="sha-1=" + "0" * 40)
    results = await Downloader(tmp_path, progress=False).download([good, bad])
    assert [r.status for r in results] == ["complete", "failed"]
    assert not (tmp_path / "other.bin").exists()


async def test_request_headers(mocked: aioresponses, tmp_path: Path) -> None:
    mocked.get(URL, status=200, body=b"ok")
    dl = Downloader(tmp_path, progress=False, headers={"X-A": "1"}, user_agent="t/1")
    await dl.download([Entry(URL, headers={"X-B": "2"})])
    ((_, calls),) = mocked.requests.items()
    sent = calls[0].kwargs["headers"]
    assert sent["X-A"] == "1" and sent["X-B"] == "2" and sent["User-Agent"] == "t/1"
    assert sent["Accept-Encoding"] == "identity" and "Range" not in sent
    assert calls[0].kwargs["auto_decompress"] is False


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_backoff_grows_and_is_capped() -> None:
    real = REAL_DELAY
    policy = RetryPolicy(base=1.0, cap=8.0)
    delays = [real(policy, n) for n in range(1, 10) for _ in range(50)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert real(policy, 1, retry_after=3.0) >= 3.0
    assert real(policy, 1, retry_after=10_000) <= policy.retry_after_cap + 8.0


def _206(content_range: str, **headers: str) -> Any:
    from types import SimpleNamespace

    from multidict import CIMultiDict

    return SimpleNamespace(headers=CIMultiDict({"Content-Range": content_range, **headers}))


def test_a_206_must_prove_it_continues_the_same_version() -> None:
    """Some servers ignore If-Range: a 206 is trusted only on its own headers."""
    from downloader.errors import RestartNeeded
    from downloader.transfer import check_partial

    tagged = {"etag": '"v1"', "total": 1000}
    assert check_partial(tagged, _206("bytes 300-999/1000", ETag='"v1"'), 300) == (1000, 1000)
    assert check_partial(tagged, _206("bytes 300-499/1000", ETag='"v1"'), 300) == (1000, 500)
    with pytest.raises(RestartNeeded):  # the validator recorded, none sent back
        check_partial(tagged, _206("bytes 300-999/1000"), 300)
    with pytest.raises(RestartNeeded):
        check_partial(tagged, _206("bytes 300-999/1000", ETag='"v2"'), 300)
    dated = {"last_modified": "Wed, 21 Oct 2015 07:28:00 GMT", "total": 1000}
    same = _206("bytes 300-999/*", **{"Last-Modified": dated["last_modified"]})
    assert check_partial(dated, same, 300) == (1000, 1000)
    bare = {"total": 1000}  # no validator: only the same stated total will do
    assert check_partial(bare, _206("bytes 300-999/1000"), 300) == (1000, 1000)
    for cr in ("bytes 300-999/*", "bytes 300-1999/2000"):
        with pytest.raises(RestartNeeded):
            check_partial(bare, _206(cr), 300)
    with pytest.raises(RestartNeeded):  # resumed at another byte
        check_partial(tagged, _206("bytes 0-999/1000", ETag='"v1"'), 300)
