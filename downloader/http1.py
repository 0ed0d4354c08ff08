"""Plain ``http://`` GETs on keep-alive connections, without aiohttp.

Why it exists: on the small-files benchmark (2,000 × 16 KiB over loopback)
aiohttp was half of the run. Importing it takes 0.1–0.2 s (it builds two TLS
contexts at import, for runs that may never speak TLS), and each request
costs it about 0.15 ms of Python; a whole run of ours took 0.9–1.1 s where
aria2c took 0.45. What a download of a plain URL needs is small: one GET,
a head to read, a body of known length to write. Here heads (and chunked
bodies) are read by httptools, llhttp's binding (llhttp is the parser of
Node.js and of aiohttp itself); a body of known length goes from the
socket into the connection's buffer and from there to the file, with no
copy in between.

Only what is plain goes this way; the rest goes to aiohttp, imported only
then (``transfer.Transfer.get`` decides): https, proxies, credentials in the
URL, a caller's own session, ``--limit-rate``, ``--content-disposition``.
A redirect is followed by sending the request again through aiohttp, which
knows how (hop limits, loops, credentials dropped on the way out).
"""

from __future__ import annotations

import asyncio
import mmap
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from itertools import repeat
from typing import Any

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import secret_names
from .errors import ConnectionFailed, DownloadError, StallError, TruncatedError
from .retry import non_http_redirect, redirect_error, redirect_history

#: Bytes read from the socket at once, into each connection's own buffer.
#: On 20 files of 32 MiB (-j 8, to tmpfs), 1 MiB took 0.69-0.72 s, 256 KiB
#: 0.75-0.80 s, 64 KiB 1.0-1.1 s. The buffer is an anonymous mapping: only
#: the pages a read fills are memory (a small file's answer touches a few),
#: and an idle connection gives back what a big one used (RELEASE_ABOVE).
BUFFER = 1024 * 1024
RELEASE_ABOVE = 256 * 1024
#: A body's reader is woken when this much of it has come (or its rest, or
#: FLUSH seconds brought less): the socket is read in ~100 KB pieces on
#: loopback, and a wake-up per piece cost more than the piece's write.
WAKE_AT = 256 * 1024
FLUSH = 0.05
#: The longest response head taken (curl takes 100 KiB per line).
HEAD_MAX = 256 * 1024
#: Seconds an idle connection is kept for the next request (aiohttp's default).
KEEP_IDLE = 15.0
#: Statuses aiohttp follows (with a Location): the request goes to it again.
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Stale(Exception):
    """The connection ended before the first byte of an answer: on a
    connection taken from the pool, the server had closed it meanwhile,
    and the request goes once more on a new one (as aiohttp and curl do)."""


class _Conn(asyncio.BufferedProtocol):
    """One connection; ``buf[start:end]`` is what was received and not yet
    taken. A chunk handed out is a view of the buffer: it is used (written,
    hashed) before its taker asks for the next, and only then can the
    buffer be refilled over it."""

    def __init__(self) -> None:
        self.buf = mmap.mmap(-1, BUFFER)
        self.mv = memoryview(self.buf)
        #: how far reads have filled the buffer since it was last given back
        self.high = 0
        self.start = 0
        self.end = 0
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.lost: BaseException | None = None
        self.paused = False
        self.idle_since = 0.0
        #: bytes the reader waits for before it is woken (see WAKE_AT)
        self.want = 1
        #: the pool's timer for every wait (set by Pool._connect)
        self.watch: _Watch | None = None
        #: when the reader began to wait (the loop's clock)
        self.since = 0.0
        #: kept: each asyncio.get_running_loop() makes a system call (getpid)
        self.loop = asyncio.get_running_loop()

    # -- asyncio's side ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        start, end = self.start, self.end
        if start == end:
            self.start = self.end = 0
        elif end == BUFFER:  # room only before the data not yet taken
            self.buf.move(0, start, end - start)
            self.start, self.end = 0, end - start
        return self.mv[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        if self.end > self.high:
            self.high = self.end
        if self.end - self.start == BUFFER:
            assert self.transport is not None
            self.transport.pause_reading()
            self.paused = True
        if self.end - self.start >= self.want:
            self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.lost = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the reader's side -------------------------------------------------
    async def more(self, want: int = 1) -> None:
        """Wait for more bytes or the connection's end, at most the pool's
        timeout (``--timeout``: the longest silence); with ``want``, until
        that many bytes are here, or a tick of the watch brought fewer."""
        if self.paused:
            self.paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        if self.eof:
            return
        watch = self.watch
        assert watch is not None
        loop = self.loop
        waiter = self.waiter = loop.create_future()
        self.want = want
        self.since = loop.time()
        watch.add(self)
        try:
            await waiter
        finally:
            watch.waiting.discard(self)
            self.waiter = None
            self.want = 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.eof = True


class _Watch:
    """One timer for the waits of every connection of a pool: a timer per
    wait (made, cancelled, and sorted in asyncio's heap of timers) cost as
    much as the rest of a small file's request. Every ``tick`` seconds, a
    reader that has waited ``timeout`` seconds with nothing come is told
    it stalled, and one waiting for a big piece is given what came."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: a stall is told within a tick after ``timeout`` (timed on the
        #: loop's clock: ticks of a busy loop come late, and would add up)
        self.tick = min(FLUSH, timeout / 4)
        self.waiting: set[_Conn] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn: _Conn) -> None:
        self.waiting.add(conn)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._on_tick)

    def _on_tick(self) -> None:
        now = asyncio.get_running_loop().time()
        for conn in list(self.waiting):
            waiter = conn.waiter
            if waiter is None or waiter.done():
                continue
            if conn.want > 1 and conn.end > conn.start:
                # fewer than wanted, but news (a body's reader waits with
                # nothing buffered; any other is woken by its first byte)
                waiter.set_result(None)
            elif now - conn.since >= self.timeout:
                waiter.set_exception(StallError(f"stalled: no data for {self.timeout:g} s"))
        self._timer = (
            asyncio.get_running_loop().call_later(self.tick, self._on_tick)
            if self.waiting
            else None
        )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Response:
    """What ``transfer`` and ``segments`` read of an answer, as aiohttp's
    ``ClientResponse`` names it: ``status``, ``reason``, ``headers``,
    ``content_length``, ``content.iter_any()``, ``close()``."""

    #: a reset is told by the body's reader here, not by watching the connection
    connection = None

    def __init__(self, pool: Pool, key: tuple[str, int], conn: _Conn, url: URL) -> None:
        self._pool = pool
        self._key = key
        self._conn: _Conn | None = conn
        self.url = url
        self.status = 0
        self.reason: str | None = None
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.content_length: int | None = None
        #: bytes of the body not read yet; None: chunked, or up to the end
        self._left: int | None = 0
        self._chunked = False
        self._complete = False
        self._keep = False
        self._pieces: list[bytes] = []
        self._parser: Any = None

    # -- httptools' callbacks (chunked bodies; the head is read whole) ------
    def on_body(self, body: bytes) -> None:
        if self._complete:  # bytes after the message: another answer, or junk
            self._keep = False
        else:
            self._pieces.append(body)

    def on_message_begin(self) -> None:
        if self._complete:
            self._keep = False

    def on_message_complete(self) -> None:
        self._complete = True

    @property
    def content(self) -> Response:
        return self

    # -- the body ------------------------------------------------------------
    def iter_any(self) -> AsyncIterator[memoryview | bytes]:
        if self._chunked and self._conn is not None:
            return self._chunks(self._conn)
        return _Body(self)

    def _broken(self, conn: _Conn, got: int) -> TruncatedError:
        how = "reset" if conn.lost is not None else "closed"
        if self._chunked:
            return TruncatedError(f"connection {how} after {got} bytes of a chunked body")
        if self._left is None:
            return TruncatedError(f"connection {how} after {got} bytes (no length given)")
        return TruncatedError(f"connection {how} after {got} of {self.content_length} bytes")

    async def _chunks(self, conn: _Conn) -> AsyncIterator[bytes]:
        pieces = self._pieces
        got = 0
        while True:
            if pieces:
                taken = pieces[:]
                pieces.clear()
                for piece in taken:
                    got += len(piece)
                    yield piece
            if self._complete:
                return
            if conn.end > conn.start:
                error = self._feed(conn)
                if error is not None and not self._complete:  # (after it: bytes nobody asked for)
                    raise ConnectionFailed(f"invalid response from the server: {error}")
                continue
            if conn.eof:
                raise self._broken(conn, got)
            await conn.more()

    def _feed(self, conn: _Conn) -> httptools.HttpParserError | None:
        """What the connection holds, to the chunked body's parser; an error
        means the connection is not used again."""
        data = bytes(conn.mv[conn.start : conn.end])
        conn.start = conn.end
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._keep = False
            return exc
        return None

    # -- the connection --------------------------------------------------------
    def close(self) -> None:
        """Done with this answer; its connection goes back to the pool only
        when the whole body was read and nothing more came."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        left = self._left
        if left and not self._chunked and conn.end - conn.start >= left:
            conn.start += left  # an error page, a redirect's body: already here
            self._left = 0
        elif self._chunked and not self._complete and conn.end > conn.start:
            self._feed(conn)  # the same, chunked
            self._pieces.clear()
        if (
            self._keep
            and (self._complete or self._left == 0)
            and conn.start == conn.end
            and not conn.eof
        ):
            self._pool.put(self._key, conn)
        else:
            conn.close()

    release = close


class _Body:
    """A body of known length, or one up to the connection's end, as views
    of the connection's buffer (an iterator, not an async generator: asyncio
    keeps a weak set of those, two Python calls per file)."""

    __slots__ = ("_conn", "_got", "_resp")

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self._conn = resp._conn
        self._got = 0

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> memoryview:
        resp, conn = self._resp, self._conn
        if conn is None:
            raise StopAsyncIteration
        left = resp._left
        while left is None or left:
            have = conn.end - conn.start
            if have:
                n = have if left is None or have < left else left
                start = conn.start
                conn.start = start + n
                self._got += n
                if left is not None:
                    resp._left = left - n
                return conn.mv[start : start + n]
            if conn.eof:
                if left is None and conn.lost is None:
                    break  # a body the connection's end delimits
                raise resp._broken(conn, self._got)
            await conn.more(WAKE_AT if left is None or left > WAKE_AT else left)
        resp._complete = True
        self._conn = None
        raise StopAsyncIteration


class Exchange(AbstractAsyncContextManager[Any]):
    """One GET (``async with``, as aiohttp's ``session.get``), redirects
    followed as aiohttp follows them: at most ``max_redirects`` (then "too
    many redirects", or "redirect loop" when a URL comes back), credentials
    dropped on the way to another origin (Authorization, Cookie as aiohttp
    does; the other secret headers on a hop away from the first URL's origin). A hop to
    what is not plain http (https, a login in the URL) goes to aiohttp:
    ``handover(url, headers, redirects_left)``."""

    def __init__(
        self,
        pool: Pool,
        url: URL,
        headers: CIMultiDict[str],
        max_redirects: int,
        handover: Callable[[str, CIMultiDict[str], int], AbstractAsyncContextManager[Any]],
    ) -> None:
        self._pool = pool
        self._url = url
        self._headers = headers
        self._max_redirects = max_redirects
        self._handover = handover
        self._resp: Response | None = None
        self._other: AbstractAsyncContextManager[Any] | None = None

    async def __aenter__(self) -> Any:
        url, headers = self._url, self._headers
        home = None
        hops: list[str] = []
        while True:
            sent = headers
            if home is not None and url.origin() != home:
                sent = CIMultiDict(headers)
                for name in secret_names(headers):
                    sent.popall(name, None)
            resp = await self._pool.send(url, request_head(url, sent))
            location = (
                (resp.headers.get("Location") or resp.headers.get("URI"))
                if (resp.status in REDIRECTS)
                else None
            )
            if not location:
                self._resp = resp
                return resp
            resp.close()
            hops.append(str(url))
            if len(hops) > self._max_redirects:
                raise redirect_error(hops)
            home = self._url.origin()
            url, headers = _next(url, headers, location)
            if (
                url.scheme != "http"
                or url.user is not None
                or url.password is not None
                or not self._pool.direct(url)
            ):
                # (its secret headers too: aiohttp keeps them to the first origin)
                self._other = self._handover(str(url), headers, self._max_redirects - len(hops))
                try:
                    return await self._other.__aenter__()
                except Exception as exc:
                    later = redirect_history(exc)
                    if later is None:
                        raise
                    raise redirect_error(hops + later) from None

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._other is not None:
            await self._other.__aexit__(*exc_info)
        elif self._resp is not None:
            self._resp.close()


def _next(url: URL, headers: CIMultiDict[str], location: str) -> tuple[URL, CIMultiDict[str]]:
    """Where a redirect goes, as aiohttp reads a Location (requoted; relative
    when it has no host, ``http:/x`` too), and the headers that go there:
    Authorization and Cookie stay behind on a hop to another origin."""
    try:
        target = URL(location)
        scheme = target.scheme
        if scheme and scheme not in ("http", "https"):
            raise non_http_redirect(location)
        if not target.absolute:
            target = url.join(target)
        origin = target.origin()
    except ValueError:
        raise DownloadError("redirect to an invalid URL") from None
    if origin != url.origin():
        headers = CIMultiDict(headers)
        for name in ("Authorization", "Cookie", "Proxy-Authorization"):
            headers.popall(name, None)
    return target, headers


def request_head(url: URL, headers: CIMultiDict[str]) -> bytes:
    """The request's bytes: what aiohttp sends for a GET (``Host``,
    ``Accept: */*``, then ours), one write."""
    lines = [f"GET {url.raw_path_qs or '/'} HTTP/1.1"]
    if "Host" not in headers:
        host = url.raw_host or ""
        if ":" in host:
            host = f"[{host}]"
        if not url.is_default_port():
            host = f"{host}:{url.port}"
        lines.append(f"Host: {host}")
    if "Accept" not in headers:
        lines.append("Accept: */*")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


_CRLF = (13, 10)


def _too_large() -> DownloadError:
    return DownloadError("invalid response from the server: header section over 256 KiB")


class _Sink:
    """httptools' callbacks for a head that is only looked at."""


def _not_a_head(conn: _Conn) -> None:
    """What was received cannot become a response head: say so now, not
    after --timeout of waiting for the blank line that ends a head."""
    have = min(conn.end - conn.start, 5)
    if have and conn.buf[conn.start : conn.start + have] != b"HTTP/"[:have]:
        raise ConnectionFailed("invalid response from the server: malformed status line")
    if conn.buf.find(b"\n\n", conn.start, conn.end) >= 0:  # ended, without CRs
        try:
            httptools.HttpResponseParser(_Sink()).feed_data(conn.buf[conn.start : conn.end])
        except httptools.HttpParserError as exc:
            raise ConnectionFailed(f"invalid response from the server: {exc}") from None


class Pool:
    """Keep-alive connections by host and port. A connection is either in
    one transfer's hands or idle here; the transfers' own bounds (``--jobs``,
    ``--split``, ``--per-host``) bound how many there are."""

    def __init__(self, timeout: float, direct: Callable[[URL], bool] | None = None) -> None:
        self.timeout = timeout
        self._watch = _Watch(timeout)
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        #: whether a URL is fetched without a proxy (else: aiohttp, proxies.py)
        self.direct = direct or (lambda url: True)

    def request(
        self,
        url: URL,
        headers: CIMultiDict[str],
        max_redirects: int,
        handover: Callable[[str, CIMultiDict[str], int], AbstractAsyncContextManager[Any]],
    ) -> Exchange:
        return Exchange(self, url, headers, max_redirects, handover)

    def put(self, key: tuple[str, int], conn: _Conn) -> None:
        if conn.high > RELEASE_ABOVE:  # the pages a big body filled
            conn.buf.madvise(mmap.MADV_DONTNEED)
            conn.high = 0
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(key, []).append(conn)

    def _take(self, key: tuple[str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = idle[-1].loop.time()
        while idle:
            conn = idle.pop()
            if conn.eof or conn.start != conn.end or now - conn.idle_since > KEEP_IDLE:
                conn.close()  # closed by the server, or sent what nobody asked for
                continue
            return conn
        return None

    async def _connect(self, host: str, port: int) -> _Conn:
        loop = asyncio.get_running_loop()
        # aiohttp's happy eyeballs (RFC 8305); uvloop does not take the argument
        eyeballs: dict[str, Any] = (
            {"happy_eyeballs_delay": 0.25} if isinstance(loop, asyncio.BaseEventLoop) else {}
        )
        try:
            async with asyncio.timeout(self.timeout):
                conn: _Conn
                _, conn = await loop.create_connection(_Conn, host, port, **eyeballs)
        except TimeoutError:
            raise StallError(f"connect timeout ({self.timeout:g} s)") from None
        except socket.gaierror:
            raise ConnectionFailed(f"DNS lookup failed for {host}") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {reason}") from None
        conn.watch = self._watch
        return conn

    async def send(self, url: URL, head: bytes) -> Response:
        host = url.raw_host or ""
        key = (host, url.port or 80)
        for again in (False, True):
            conn = None if again else self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(*key)
            try:
                assert conn.transport is not None
                conn.transport.write(head)
                return await self._answer(conn, key, url)
            except _Stale as stale:
                conn.close()
                if reused:
                    continue
                raise ConnectionFailed(str(stale)) from None
            except BaseException:
                conn.close()
                raise
        raise ConnectionFailed("server closed the connection")

    async def _answer(self, conn: _Conn, key: tuple[str, int], url: URL) -> Response:
        """Read the head of the answer (after any 1xx), and tell how its body ends."""
        first = True
        buf = conn.buf
        while True:
            # blank lines before a status line are skipped, as llhttp does
            while conn.start < conn.end and buf[conn.start] in _CRLF:
                conn.start += 1
            end = buf.find(b"\r\n\r\n", conn.start, conn.end)
            if end < 0:
                _not_a_head(conn)
                if conn.end - conn.start >= HEAD_MAX:
                    raise _too_large()
                if conn.eof:
                    if first and conn.end == conn.start:
                        if conn.lost is not None:
                            raise _Stale(f"connection error: {conn.lost}")
                        raise _Stale("server closed the connection")
                    if conn.lost is not None:
                        raise ConnectionFailed(f"connection error: {conn.lost}")
                    raise ConnectionFailed("server closed the connection in the middle of a head")
                await conn.more()
                continue
            if end + 4 - conn.start > HEAD_MAX:
                raise _too_large()
            first = False
            head = bytes(conn.mv[conn.start : end + 4])
            conn.start = end + 4
            resp = Response(self, key, conn, url)
            parser = httptools.HttpResponseParser(resp)
            try:
                parser.feed_data(head)
            except httptools.HttpParserUpgrade:
                pass  # a 101: judged by its status, as any other that is no content
            except httptools.HttpParserError as exc:
                what = str(exc) if head.startswith(b"HTTP/") else "malformed status line"
                raise ConnectionFailed(f"invalid response from the server: {what}") from None
            status = parser.get_status_code()
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue, 103 Early Hints: the answer follows
            resp.status = status
            # llhttp has checked the head (no folded lines, no bare LF, a name
            # and a colon on each line): read whole, it costs a fraction of a
            # callback per header
            lines = head.decode("utf-8", "surrogateescape").split("\r\n")
            status_line = lines[0].split(" ", 2)
            resp.reason = status_line[2] if len(status_line) > 2 else None
            # (llhttp drops a value's leading blanks, and aiohttp and curl its trailing ones)
            pairs = map(str.partition, lines[1:-2], repeat(":"))
            headers = resp.headers = CIMultiDictProxy(
                CIMultiDict([(name, value.strip(" \t")) for name, _, value in pairs])
            )
            # (httptools' should_keep_alive() says no once a message is
            # complete, as one with no body is at its head)
            connection = headers.get("Connection", "").lower()
            if parser.get_http_version() == "1.1":
                resp._keep = "close" not in connection and status != 101
            else:
                resp._keep = "keep-alive" in connection
            self._framing(resp, parser)
            return resp

    def _framing(self, resp: Response, parser: Any) -> None:
        status = resp.status
        headers = resp.headers
        if status in (204, 304) or status < 200:
            resp._left = 0
            return
        if "Transfer-Encoding" in headers:
            codings = ",".join(headers.getall("Transfer-Encoding")).lower().split(",")
            # chunked only as the last coding; else the body runs to the
            # connection's end, whatever Content-Length says (RFC 9112 §6.3)
            if codings[-1].strip() == "chunked":
                resp._chunked = True
                resp._parser = parser
            else:
                resp._keep = False
            resp._left = None
            return
        length = headers.get("Content-Length")
        if length is None:
            resp._left = None  # to the connection's end
            resp._keep = False
            return
        length = length.strip()
        if not length.isdigit() or not length.isascii():
            raise ConnectionFailed(
                f"invalid response from the server: Content-Length {length[:40]!r}"
            )
        resp.content_length = resp._left = int(length)

    async def close(self) -> None:
        self._watch.close()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
