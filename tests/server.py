"""A real HTTP server on 127.0.0.1 for the tests, with faults on demand.

Each served path has a :class:`Behaviour`; the server counts requests, bytes
served and requests in flight, so tests assert on what really crossed the
socket rather than on mocks.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Behaviour:
    body: bytes = b""
    #: statuses to answer before serving the body, one per request (e.g. [503, 503]).
    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    #: close the connection after this fraction of the body, for the first N requests.
    reset_at: float | None = None
    resets_left: int = 1
    #: stop sending (but keep the connection open) after the headers.
    stall: bool = False
    #: announce more bytes than sent, for the first N requests.
    short_by: int = 0
    short_left: int = 1
    ignore_range: bool = False
    #: answer every ranged request with this status (416, 501, ...), for a
    #: server that says Accept-Ranges but refuses them
    range_status: int = 0
    #: serve at most this many bytes of a range (a 206 shorter than asked, as
    #: some CDNs and object stores do)
    range_cap: int = 0
    #: a new body (and ETag) for each request: the resource keeps changing.
    versions: list[bytes] = field(default_factory=list)
    etag: bool = True
    last_modified: bool = False
    delay: float = 0.0
    #: seconds to spread the body over (a slow file).
    slow: float = 0.0
    redirect: str | None = None
    gzip: bool = False
    content_disposition: str | None = None
    #: release the body only once this event is set.
    gate: asyncio.Event | None = None
    #: answer 401 unless the request carries exactly this Authorization.
    auth: str | None = None
    #: bytes written straight to the socket instead of a normal response.
    raw: bytes | None = None
    #: for this many first requests, ``raw`` then a connection reset (RST),
    #: then normal responses
    raw_resets: int = 0
    raw_resets_given: bool = field(init=False)

    def __post_init__(self) -> None:
        self.raw_resets_given = self.raw_resets > 0


class FaultServer:
    def __init__(self) -> None:
        self.paths: dict[str, Behaviour] = {}
        self.requests: dict[str, int] = {}
        self.request_log: list[tuple[float, str, dict[str, str]]] = []
        #: every request's headers as sent, a name given twice included
        self.header_log: list[list[tuple[str, str]]] = []
        self.bytes_served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished: list[str] = []
        self.runner: web.AppRunner | None = None
        self.base = ""

    def add(self, path: str, body: bytes = b"", **kw: object) -> str:
        self.paths[path] = Behaviour(body=body, **kw)  # type: ignore[arg-type]
        return self.base + path

    def url(self, path: str) -> str:
        return self.base + path

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> FaultServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        if "://" in path:  # absolute form: we are being used as a proxy
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        self.requests[path] = self.requests.get(path, 0) + 1
        self.request_log.append((time.monotonic(), path, dict(request.headers)))
        self.header_log.append(list(request.headers.items()))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._serve(request, path)
        finally:
            self.in_flight -= 1
            self.finished.append(path)

    async def _serve(self, request: web.Request, path: str) -> web.StreamResponse:
        b = self.paths.get(path)
        if b is None:
            return web.Response(status=404, text="no such file")
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.auth is not None and request.headers.get("Authorization") != b.auth:
            return web.Response(status=401, text="who are you")
        if b.raw is not None and (b.raw_resets or not b.raw_resets_given):
            transport = request.transport
            assert transport is not None
            transport.write(b.raw)
            if b.raw_resets:
                b.raw_resets -= 1
                assert transport.get_write_buffer_size() == 0  # all in the kernel: then RST
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            else:
                transport.close()
            return web.Response()
        if b.statuses:
            status = b.statuses.pop(0)
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return web.Response(status=status, headers=headers, text=f"error {status} body")
        if b.redirect is not None:
            raise web.HTTPFound(b.redirect)
        body = b.body
        if b.versions:
            body = b.versions.pop(0) if len(b.versions) > 1 else b.versions[0]
        if b.gzip:
            body = gzip.compress(body)
        headers: dict[str, str] = {"Accept-Ranges": "bytes"}
        if b.etag:
            headers["ETag"] = '"' + hashlib.md5(body).hexdigest() + '"'
        if b.last_modified:
            headers["Last-Modified"] = "Wed, 21 Oct 2015 07:28:00 GMT"
        if b.gzip:
            headers["Content-Encoding"] = "gzip"
        if b.content_disposition:
            headers["Content-Disposition"] = b.content_disposition
        start, stop, status = 0, len(body), 200
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes=") and b.range_status:
            return web.Response(status=b.range_status, text="no ranges here")
        if rng.startswith("bytes=") and not b.ignore_range:
            if_range = request.headers.get("If-Range")
            if (
                if_range is None
                or if_range == headers.get("ETag")
                or if_range == headers.get("Last-Modified")
            ):
                first_s, _, last_s = rng[6:].partition("-")
                first = int(first_s)
                last = min(int(last_s), len(body) - 1) if last_s else len(body) - 1
                if first >= len(body):
                    return web.Response(
                        status=416, headers={"Content-Range": f"bytes */{len(body)}"}
                    )
                if b.range_cap:
                    last = min(last, first + b.range_cap - 1)
                start, stop, status = first, last + 1, 206
                headers["Content-Range"] = f"bytes {start}-{last}/{len(body)}"
        payload = body[start:stop]
        announced = len(payload)
        cut = len(payload)
        if b.short_by and b.short_left > 0:
            b.short_left -= 1
            cut = max(0, len(payload) - b.short_by)
        if b.reset_at is not None and b.resets_left > 0:
            b.resets_left -= 1
            cut = min(cut, int(len(body) * b.reset_at) - start)
            cut = max(cut, 0)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = announced
        await resp.prepare(request)
        if b.gate is not None:
            await b.gate.wait()
        if b.stall:
            await asyncio.sleep(3600)
        step = 64 * 1024
        pieces = max(1, (cut + step - 1) // step)
        for pos in range(0, cut, step):
            chunk = payload[pos : min(pos + step, cut)]
            await resp.write(chunk)
            self.bytes_served += len(chunk)
            if b.slow:
                await asyncio.sleep(b.slow / pieces)
        if cut < announced:
            # Break the connection mid-body: the client sees a short read.
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp
