"""http1, the plain http:// path: keep-alive connections, stale ones, and the
framing of answers, against a server that writes raw bytes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from downloader import Downloader

from .server import FaultServer

#: (path, number of the request on its connection, from 1) -> the bytes to
#: send back, or None to close the connection without a word; bytes that
#: end with CLOSE are sent, then the connection is closed
Script = Callable[[str, int], bytes | None]
CLOSE = b"<close>"


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


class RawServer:
    """Reads each request's head and answers what ``script`` says, byte for byte."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[str] = []
        #: every request's head, as received
        self.heads: list[bytes] = []
        self.base = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.requests.append(path)
                self.heads.append(head)
                n += 1
                answer = self.script(path, n)
                if answer is None:
                    break
                writer.write(answer.removesuffix(CLOSE))
                await writer.drain()
                if answer.endswith(CLOSE):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def make(script: Script) -> RawServer:
        srv = RawServer(script)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()


async def test_keep_alive_connections_are_reused(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    srv = await raw(lambda path, n: ok(path.encode())).start()
    urls = [f"{srv.base}/f{i}" for i in range(30)]
    results = await Downloader(tmp_path, jobs=3, progress=False).download(urls)
    assert results.ok and len(results) == 30
    assert (tmp_path / "f17").read_bytes() == b"/f17"
    assert srv.connections <= 3


async def test_a_connection_the_server_dropped_meanwhile_is_replaced(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    """The server closes an idle connection just as the next request comes:
    that request goes once more, on a new connection, and is no failure."""
    srv = await raw(lambda path, n: ok(b"body") if n == 1 else None).start()
    urls = [f"{srv.base}/f{i}" for i in range(5)]
    results = await Downloader(tmp_path, jobs=1, retries=0, progress=False).download(urls)
    assert results.ok, [r.error for r in results]
    assert [r.attempts for r in results] == [1] * 5
    assert srv.connections >= 5


async def test_a_body_longer_than_its_length_stays_out_of_the_next_file(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    def script(path: str, n: int) -> bytes | None:
        return ok(b"hello") + b"TAIL OF A LYING SERVER" if path == "/a" else ok(b"world")

    srv = await raw(script).start()
    dl = Downloader(tmp_path, jobs=1, progress=False)
    results = await dl.download([f"{srv.base}/a", f"{srv.base}/b"])
    assert results.ok
    assert (tmp_path / "a").read_bytes() == b"hello"
    assert (tmp_path / "b").read_bytes() == b"world"


async def test_chunked_bodies_and_a_chunked_body_cut_short(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    def script(path: str, n: int) -> bytes | None:
        if path == "/whole":
            return head + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        return head + b"3\r\nabc\r\n10\r\nde" + CLOSE

    srv = await raw(script).start()
    dl = Downloader(tmp_path, retries=1, progress=False)
    whole, cut = await dl.download([f"{srv.base}/whole", f"{srv.base}/cut"])
    assert whole.status == "complete"
    assert (tmp_path / "whole").read_bytes() == b"abcdefg"
    assert cut.status == "failed" and cut.attempts == 2
    assert cut.error == "connection closed after 5 bytes of a chunked body"
    assert not (tmp_path / "cut").exists()


async def test_informational_answers_come_before_the_answer(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    srv = await raw(lambda path, n: early + ok(b"the body")).start()
    results = await Downloader(tmp_path, progress=False).download([f"{srv.base}/x"])
    assert results.ok
    assert (tmp_path / "x").read_bytes() == b"the body"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\nbody",
            "invalid response from the server",
        ),
        (b"ICY 200 OK\r\n\r\nbody", "invalid response from the server: malformed status line"),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"y" * 270_000 + b"\r\n\r\n",
            "invalid response from the server: header section over 256 KiB",
        ),
        # answers that can never end a head: at once, not after --timeout
        (
            b"HTTP/1.1 200 OK\nContent-Length: 4\n\nbody",
            "invalid response from the server: Missing expected CR",
        ),
        (b"\x00\x00\x12\x04\x00\x00\x00\x00", "invalid response from the server: malformed"),
    ],
)
async def test_a_malformed_answer_is_a_reason(
    raw: Callable[[Script], RawServer], tmp_path: Path, answer: bytes, reason: str
) -> None:
    srv = await raw(lambda path, n: answer).start()  # and the connection stays open
    dl = Downloader(tmp_path, retries=0, timeout=20, progress=False)
    (record,) = await dl.download([f"{srv.base}/x"])
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith(reason)
    assert list(tmp_path.iterdir()) == [tmp_path / ".downloader"]


async def test_a_chunked_body_ends_where_its_message_does(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    """Bytes after the last chunk (a stray answer, in the same write) are no
    part of the file, and the connection they came on is not used again."""
    body = b"x" * 10_000
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    srv = await raw(lambda path, n: chunked + ok(b"stray") if path == "/a" else ok(b"b")).start()
    results = await Downloader(tmp_path, jobs=1, progress=False).download(
        [f"{srv.base}/a", f"{srv.base}/b"]
    )
    assert results.ok
    assert (tmp_path / "a").read_bytes() == body
    assert (tmp_path / "b").read_bytes() == b"b"
    assert srv.connections == 2


@pytest.mark.parametrize("coding", ["gzip", "chunked, gzip", "xchunked"])
async def test_a_body_not_chunked_last_runs_to_the_close(
    raw: Callable[[Script], RawServer], tmp_path: Path, coding: str
) -> None:
    answer = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n".encode() + b"as sent"
    srv = await raw(lambda path, n: answer + CLOSE).start()
    results = await Downloader(tmp_path, progress=False).download([f"{srv.base}/x"])
    assert results.ok
    assert (tmp_path / "x").read_bytes() == b"as sent"


async def test_calls_inside_one_async_with_share_their_connections(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    srv = await raw(lambda path, n: ok(path.encode())).start()
    async with Downloader(tmp_path, jobs=1, progress=False) as dl:
        first = await dl.download([f"{srv.base}/a"])
        second = await dl.download([f"{srv.base}/b"])
    assert first.ok and second.ok
    assert (tmp_path / "b").read_bytes() == b"/b"
    assert srv.connections == 1  # (each call had its own pool before)


async def test_connections_outlive_empty_bodies_and_error_pages(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    def script(path: str, n: int) -> bytes | None:
        if path.startswith("/gone"):
            page = b"<h1>not here</h1>"
            return f"HTTP/1.1 404 Not Found\r\nContent-Length: {len(page)}\r\n\r\n".encode() + page
        return ok(b"")

    srv = await raw(script).start()
    urls = [f"{srv.base}/{'gone' if i % 2 else 'empty'}{i}" for i in range(10)]
    results = await Downloader(tmp_path, jobs=1, progress=False).download(urls)
    assert [r.status for r in results] == ["complete", "failed"] * 5
    assert srv.connections == 1


async def test_a_101_is_an_answer_like_any_other(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    srv = await raw(lambda path, n: answer).start()
    (record,) = await Downloader(tmp_path, progress=False).download([f"{srv.base}/x"])
    assert record.status == "failed" and record.error == "HTTP 101 Switching Protocols"


async def test_a_redirect_is_followed_on_the_connections_it_has(
    server: FaultServer, tmp_path: Path
) -> None:
    target = server.add("/target.bin", b"moved here")
    server.add("/old.bin", redirect=target)
    results = await Downloader(tmp_path, progress=False).download([f"{server.base}/old.bin"])
    assert results.ok
    assert (tmp_path / "old.bin").read_bytes() == b"moved here"
    assert server.requests["/old.bin"] == 1 and server.requests["/target.bin"] == 1


async def test_a_redirect_given_once_is_followed(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    """A one-time redirect (a signed URL) is followed, not asked for again."""
    asked: list[str] = []

    def script(path: str, n: int) -> bytes | None:
        asked.append(path)
        if path == "/file" and asked.count("/file") == 1:
            return b"HTTP/1.1 302 Found\r\nLocation: /signed?t=1\r\nContent-Length: 0\r\n\r\n"
        return ok(b"signed body" if path.startswith("/signed") else b"second answer")

    srv = await raw(script).start()
    results = await Downloader(tmp_path, progress=False).download([f"{srv.base}/file"])
    assert results.ok
    assert (tmp_path / "file").read_bytes() == b"signed body"
    assert asked == ["/file", "/signed?t=1"]


@pytest.mark.parametrize(
    ("limit", "reason"),
    [(5, "redirect loop (6 redirects)"), (0, "too many redirects (more than 0)")],
)
async def test_redirects_are_counted(
    raw: Callable[[Script], RawServer], tmp_path: Path, limit: int, reason: str
) -> None:
    hop = b"HTTP/1.1 302 Found\r\nLocation: /%s\r\nContent-Length: 0\r\n\r\n"
    srv = await raw(lambda path, n: hop % (b"b" if path == "/a" else b"a")).start()
    dl = Downloader(tmp_path, max_redirects=limit, progress=False)
    (record,) = await dl.download([f"{srv.base}/a"])
    assert record.status == "failed" and record.error == reason
    assert len(srv.requests) == limit + 1


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HTTPS_PROXY": "http://127.0.0.1:9"},
        {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"},
    ],
)
async def test_plain_http_never_loads_aiohttp(
    server: FaultServer, tmp_path: Path, env: dict[str, str]
) -> None:
    """A run of plain URLs does not pay for importing aiohttp (0.1-0.2 s),
    nor does one with a proxy only for other URLs."""
    url = server.add("/a.bin", b"abc")
    code = (
        "import sys\nfrom downloader import Downloader\n"
        f"r = Downloader({str(tmp_path)!r}, progress=False).run([{url!r}])\n"
        "print(r.ok, 'aiohttp' in sys.modules)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, env={**os.environ, **env}
    )
    out, _ = await proc.communicate()
    assert out.decode().split() == ["True", "False"]


def moved(location: str) -> bytes:
    return f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


async def test_locations_as_aiohttp_reads_them(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    """``http:/path`` is a path on the same server, and a value's trailing
    blanks are no part of it (nor of an ETag)."""

    def script(path: str, n: int) -> bytes | None:
        if path == "/a":
            return moved("http:/b")
        if path == "/b":
            return moved("/c   ")
        return ok(b"here", 'ETag: "v1"  ')

    srv = await raw(script).start()
    results = await Downloader(tmp_path, progress=False).download([f"{srv.base}/a"])
    assert results.ok
    assert srv.requests == ["/a", "/b", "/c"]
    assert (tmp_path / "a").read_bytes() == b"here"


async def test_a_secret_header_comes_back_with_its_origin(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    """X-Api-Key stays off another origin's requests, and is sent again when
    the chain comes back to the origin the user named."""
    other = await raw(lambda path, n: moved(f"{home.base}/final")).start()
    home = await raw(
        lambda path, n: moved(f"{other.base}/x") if path == "/start" else ok(b"f")
    ).start()
    dl = Downloader(
        tmp_path, headers={"X-Api-Key": "k3y", "Authorization": "Bearer t"}, progress=False
    )
    results = await dl.download([f"{home.base}/start"])
    assert results.ok
    first, final = home.heads
    assert b"X-Api-Key: k3y" in first and b"Authorization: Bearer t" in first
    assert b"X-Api-Key" not in other.heads[0] and b"Authorization" not in other.heads[0]
    assert b"X-Api-Key: k3y" in final
    assert b"Authorization" not in final  # as aiohttp: once off its origin, gone


async def test_bodies_of_redirects_keep_their_connection(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    chunked = b"HTTP/1.1 302 Found\r\nLocation: /to%s\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"5\r\nmoved\r\n0\r\n\r\n"

    def script(path: str, n: int) -> bytes | None:
        return chunked % path[1:].encode() if not path.startswith("/to") else ok(b"x")

    srv = await raw(script).start()
    urls = [f"{srv.base}/f{i}" for i in range(20)]
    results = await Downloader(tmp_path, jobs=2, progress=False).download(urls)
    assert results.ok
    assert srv.connections <= 2


async def test_a_login_in_a_location_yields_to_an_authorization_header(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    """As for the entry's own URL (curl's rule): the header the user gave wins."""

    def script(path: str, n: int) -> bytes | None:
        return moved(f"http://u:p@{srv.base[7:]}/b") if path == "/a" else ok(b"b")

    srv = await raw(script).start()
    dl = Downloader(tmp_path, headers={"Authorization": "Bearer t"}, progress=False)
    results = await dl.download([f"{srv.base}/a"])
    assert results.ok, results[0].error
    assert b"Authorization: Bearer t" in srv.heads[1]


async def test_blank_lines_before_a_status_line_are_skipped(
    raw: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    """llhttp skips them; the head read after it must too (the reason was
    lost, and the status line became a header)."""

    def script(path: str, n: int) -> bytes:
        if path == "/gone":
            return b"\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc"
        return b"\r\n\r\n" + ok(b"fine")

    srv = await raw(script).start()
    results = await Downloader(tmp_path, jobs=1, progress=False).download(
        [f"{srv.base}/gone", f"{srv.base}/fine"]
    )
    assert results[0].error == "HTTP 404 Not Found"
    assert results[1].status == "complete" and (tmp_path / "fine").read_bytes() == b"fine"


async def test_a_stall_is_timed_on_the_loops_clock_not_by_counting_ticks() -> None:
    """The ticks of a busy loop come late: a wait is judged by how long it
    lasted (counting ticks told a stall of --timeout 10 after 12.5 s)."""
    from downloader.errors import StallError
    from downloader.http1 import _Conn, _Watch

    watch = _Watch(1.0)
    conn = _Conn()
    conn.watch = watch
    waiting = asyncio.ensure_future(conn.more())
    await asyncio.sleep(0)
    watch.close()  # no ticks but the two below
    waiter = conn.waiter
    assert waiter is not None
    conn.since -= 0.5  # as if the wait began half a second ago
    watch._on_tick()
    watch.close()
    assert not waiter.done()
    conn.since -= 0.6  # 1.1 s: one late tick is enough
    watch._on_tick()
    watch.close()
    assert waiter.done()
    with pytest.raises(StallError, match="no data for 1 s"):
        await waiting
