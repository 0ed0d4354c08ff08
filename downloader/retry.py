"""What is worth another attempt, and how long to wait before it.

Kept as a value (like urllib3's ``Retry``) so the transfer code asks two
questions — is this transient? how long to sleep? — and holds no policy.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import (
    ConnectionFailed,
    DownloadError,
    HTTPStatusError,
    StallError,
    TruncatedError,
)
from .text import from_wire, printable

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring ``Retry-After``."""

    retries: int = 5
    base: float = 0.5
    cap: float = 30.0
    #: A server asking for more than this is taken at this word: an hour's
    #: ``Retry-After`` must not hang a run.
    retry_after_cap: float = 120.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the attempt that follows ``failures`` failures."""
        import random  # (after a failure only: not at every start)

        backoff = random.uniform(0, min(self.cap, self.base * (2 ** max(failures - 1, 0))))
        if retry_after is not None:
            return max(min(retry_after, self.retry_after_cap), backoff)
        return backoff

    def delay_after(self, failures: int, err: DownloadError) -> float:
        """:meth:`delay` after ``err``, honouring the server's Retry-After."""
        return self.delay(failures, err.retry_after if isinstance(err, HTTPStatusError) else None)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime  # (rare: not at every start)

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def has_content(status: int) -> bool:
    """A success with the resource's bytes, as curl saves them: any 2xx but
    204 and 205 (no content; a 206 is judged by its range)."""
    return 200 <= status < 300 and status not in (204, 205)


def status_error(resp: aiohttp.ClientResponse) -> HTTPStatusError:
    """The error for an answer that is not the one asked for, with the wait
    the server asked for (``Retry-After``), if any."""
    wait = parse_retry_after(resp.headers.get("Retry-After"))
    err = HTTPStatusError(resp.status, printable(from_wire(resp.reason or "")), wait)
    if err.transient and wait is not None and wait > RetryPolicy.retry_after_cap:
        # Minutes of silence, then the same answer: say so now instead.
        err.transient = False
        err.args = (
            f"{err} (the server asks to wait {wait:.0f} s, longer than a run waits: "
            "try again later; --retry continues)",
        )
    return err


def non_http_redirect(location: str) -> DownloadError:
    """A redirect to ``ftp:``, ``file:``...: refused, named by its scheme."""
    return DownloadError(f"redirect to a non-HTTP URL refused: {_scheme_of(location)}")


def redirect_error(urls: list[str]) -> DownloadError:
    """Past ``--max-redirects``: ``urls`` answered with a redirect each."""
    if len(set(urls)) < len(urls):
        return DownloadError(f"redirect loop ({len(urls)} redirects)")
    return DownloadError(f"too many redirects (more than {max(len(urls) - 1, 0)})")


def redirect_history(exc: BaseException) -> list[str] | None:
    """The URLs that redirected, when aiohttp gave up on too many of them."""
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is None or not isinstance(exc, aiohttp.TooManyRedirects):
        return None
    return [str(r.url) for r in exc.history]


def is_client_error(exc: BaseException) -> bool:
    """Whether aiohttp raised it (when aiohttp is loaded at all: http1)."""
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(exc, aiohttp.ClientError)


def as_download_error(exc: BaseException, timeout: float) -> DownloadError:
    """Map what aiohttp and the OS raise to a reason a user can read."""
    if isinstance(exc, DownloadError):
        return exc
    if is_client_error(exc):
        return _client_error(exc, timeout)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return StallError(f"stalled: no data for {timeout:g} s")
    if isinstance(exc, ConnectionError):
        return ConnectionFailed(f"connection error: {_first_line(exc)}")
    if isinstance(exc, OSError):
        return DownloadError(f"local file error: {exc.strerror or exc}")
    return DownloadError(f"{type(exc).__name__}: {_first_line(exc)}")


def _client_error(exc: BaseException, timeout: float) -> DownloadError:
    import aiohttp

    if isinstance(exc, aiohttp.TooManyRedirects):
        return redirect_error([str(r.url) for r in exc.history])
    if isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        return non_http_redirect(str(exc))
    if isinstance(exc, aiohttp.InvalidUrlRedirectClientError):
        return DownloadError("redirect to an invalid URL")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return StallError(f"connect timeout ({timeout:g} s)")
    if isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return StallError(f"stalled: no data for {timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # OpenSSL's own words ("IP address mismatch, ..."), without the
        # "[SSL: ...] (_ssl.c:1006)" wrapping
        why = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return DownloadError(f"TLS certificate verification failed: {why}")
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = getattr(exc.os_error, "reason", None)
        if reason == "WRONG_VERSION_NUMBER":
            return DownloadError("TLS error: the server does not speak TLS (an http:// URL?)")
        why = reason.lower().replace("_", " ") if reason else _first_line(exc)
        return DownloadError(f"TLS error: {why}")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ConnectionFailed(f"cannot connect to the proxy {exc.host}:{exc.port}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ConnectionFailed(f"DNS lookup failed for {exc.host}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return ConnectionFailed(f"cannot connect to {exc.host}:{exc.port}: {reason}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        short = _SHORT_BODY.search(str(exc))
        if short:  # aiohttp's words carry a "400" that reads like a status
            return TruncatedError(f"connection closed after {short[1]} of {short[2]} bytes")
        return TruncatedError(f"connection broken during the body: {_first_line(exc)}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionFailed("server closed the connection")
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError)):
        return ConnectionFailed(f"connection error: {_first_line(exc)}")
    if isinstance(exc, aiohttp.InvalidURL):
        return DownloadError(f"invalid URL: {exc}")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        # the proxy's answer to CONNECT: judged as the same status on plain http
        return HTTPStatusError(
            exc.status,
            printable(from_wire(exc.message or "")),
            parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None),
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        what = _first_line(exc.message).rstrip(": '\"")
        if what.lower().startswith("bad status line"):
            # the usual cause: the last body on this connection was longer
            # than its Content-Length, and its tail was read as a response
            what = "malformed status line"
        return ConnectionFailed(f"invalid response from the server: {what}")
    if isinstance(exc, aiohttp.ClientError):
        return ConnectionFailed(f"{type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, OSError):
        return DownloadError(f"local file error: {exc.strerror or exc}")
    return DownloadError(f"{type(exc).__name__}: {_first_line(exc)}")


_SHORT_BODY = re.compile(r"received (\d+) of (\d+) bytes")


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip()[:200] if text else type(exc).__name__


def _scheme_of(url: str) -> str:
    scheme = url.partition(":")[0]
    return f"{scheme}:" if scheme and len(scheme) < 20 else url[:40]
