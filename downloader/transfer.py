"""One entry, from the first request to the rename of ``NAME.part`` to ``NAME``.

Every byte goes to ``NAME.part``; the final name appears only after the
length (and the checksum, when asked for) is verified, so a file under its
final name is never partial, whatever happens to the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import stat
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict
from yarl import URL

from .config import WRITE_SLICE, Settings, secret_names
from .errors import (
    ChecksumMismatch,
    DownloadError,
    HTTPStatusError,
    LocalFileError,
    RestartNeeded,
    TruncatedError,
    UnsafeNameError,
)
from .hosts import HostLimits, no_slot
from .models import Status
from .naming import Namer, is_name_for, server_name, target
from .progress import Activity
from .proxies import EnvProxies
from .ratelimit import RateLimiter
from .retry import RetryPolicy, as_download_error, has_content, is_client_error, status_error
from .segments import Segmented, open_segmented, plan, splittable
from .state import RunState, has_userinfo, redact_url, strip_userinfo
from .urls import wire_url
from .writes import write_all

if TYPE_CHECKING:
    import aiohttp

    from .http1 import Pool

#: Parts smaller than this keep their resume metadata in memory while they go
#: well, and save it only when they fail or are stopped: after a kill -9 they
#: restart, which costs less than a metadata file per small file.
PERSIST_MIN = 256 * 1024
_READ_CHUNK = 1024 * 1024
_MAX_RESTARTS = 3
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class _ShortRange(Exception):
    """A 206 sent all it said it would, but less than asked for (servers may cap
    a range's size): no failure, the next request continues from there."""


class _AlreadyThere(Exception):
    """The server named a file that is already in the output directory:
    the response is dropped, and :meth:`Transfer._existing` decides."""


@dataclass(slots=True)
class Job:
    """An entry ready to run: its index in the run and its assigned path."""

    index: int
    urls: tuple[str, ...]
    path: str
    checksum: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None
    #: the list named the file (``out=``): the server's name never overrides it
    named: bool = False
    #: the name the server gave this entry in the previous run, held for it
    server_name: str | None = None
    #: a slot of its host is counted for it (``--per-host``) until it asks
    promised: bool = False


@dataclass(slots=True)
class Outcome:
    status: Status
    bytes: int
    attempts: int
    error: str | None = None
    path: str | None = None


@dataclass
class Context:
    """What every transfer of a run shares."""

    #: aiohttp's session and the timeout its requests carry, made on first
    #: use: a run of plain http:// URLs never loads aiohttp (http1.py)
    open_session: Callable[[], tuple[aiohttp.ClientSession, aiohttp.ClientTimeout]]
    settings: Settings
    state: RunState
    root: Path
    policy: RetryPolicy
    hosts: HostLimits
    limiter: RateLimiter | None
    base_headers: CIMultiDict[str]
    proxies: EnvProxies = field(default_factory=EnvProxies)
    received: int = 0
    namer: Namer = field(default_factory=Namer)
    #: plain http:// requests, when nothing asks for aiohttp (see Transfer.get)
    fast: Pool | None = None
    #: the output directory held nothing but the run state when the run
    #: began: an entry's file and part are not there before its transfer
    untouched: bool = False
    _session: tuple[aiohttp.ClientSession, aiohttp.ClientTimeout] | None = None

    def http_session(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientTimeout]:
        """The session, and the timeout sent with each of its requests (a
        session passed in by the caller has its own; aiohttp's default caps
        a whole transfer at 5 minutes)."""
        if self._session is None:
            self._session = self.open_session()
        return self._session


def _secrets_stay_home(url: str, names: set[str]) -> Any:
    """A client middleware (run for every hop of a redirect chain) that
    drops secret-looking headers (X-Api-Key, tokens) on a hop to another
    origin, as aiohttp does for Authorization and Cookie: a redirect must
    not hand a credential to a host the user never named."""
    home = URL(url).origin()

    async def middleware(request: aiohttp.ClientRequest, handler: Any) -> Any:
        if request.url.origin() != home:
            for name in names:
                request.headers.popall(name, None)
        return await handler(request)

    return middleware


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    if not value:
        return None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def check_partial(
    meta: Mapping[str, Any], resp: aiohttp.ClientResponse, start: int
) -> tuple[int, int]:
    """A 206 is trusted only when it continues exactly the resource the part
    holds (some servers ignore If-Range): same start, same total length, same
    ETag and Last-Modified when known. Used by whole-file resumes and by every
    segment. Returns the total length and where the 206's bytes end (a
    server may send less than asked for); RestartNeeded otherwise."""
    cr = parse_content_range(resp.headers.get("Content-Range"))
    if cr is None:
        raise RestartNeeded("206 without a usable Content-Range; restarting")
    got_start, end, total = cr
    known = meta.get("total")
    if got_start != start:
        raise RestartNeeded(f"server resumed at byte {got_start}, not {start}; restarting")
    if known is not None and total is not None and total != known:
        raise RestartNeeded("resource length changed; restarting from byte 0")
    changed = _other_version(meta, resp)
    if changed:
        raise RestartNeeded(f"resource changed ({changed}); restarting from byte 0")
    etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
    if meta.get("etag") or meta.get("last_modified"):
        # A validator was recorded: the 206 must name the same version (a
        # server ignoring If-Range may send no validator, and another version).
        if not (
            (meta.get("etag") and etag == meta["etag"])
            or (meta.get("last_modified") and modified == meta["last_modified"])
        ):
            raise RestartNeeded("the 206 does not name the version resumed; restarting")
    elif known is None or total is None:
        # No validator: only a stated total equal to the recorded one allows it.
        raise RestartNeeded("nothing to validate the partial file against; restarting")
    total = total if total is not None else known  # "bytes a-b/*": the recorded length
    if total is None:
        raise RestartNeeded("the length of the resource is unknown; restarting")
    return int(total), end + 1


def _other_version(meta: Mapping[str, Any], resp: aiohttp.ClientResponse) -> str | None:
    """Which validator of the answer names another version than the part's
    (``"ETag"``, ``"Last-Modified"``), if one does."""
    for header, key in (("ETag", "etag"), ("Last-Modified", "last_modified")):
        value = resp.headers.get(header)
        if meta.get(key) and value and value != meta[key]:
            return header
    return None


def _unasked_range(resp: aiohttp.ClientResponse) -> tuple[int, int]:
    """The length of a resource sent as a 206 to a request with no Range
    (some servers and caches do), and where the 206's bytes end: from byte 0
    it is the body's start, and when short, the next request continues it."""
    cr = parse_content_range(resp.headers.get("Content-Range"))
    if cr is None or cr[0] != 0 or cr[2] is None:
        value = resp.headers.get("Content-Range", "none")[:80]
        raise DownloadError(f"HTTP 206 to a request without a range (Content-Range: {value})")
    return cr[2], cr[1] + 1


def _segments_ok(meta: dict[str, Any], size: int) -> bool:
    """A segment table read back from disk is used only if it is coherent."""
    try:
        segs = meta["segments"]
        total = int(meta["total"])
        return size == total and all(
            isinstance(s, list) and len(s) == 3 and 0 <= s[0] <= s[2] <= s[1] <= total for s in segs
        )
    except (KeyError, TypeError, ValueError):
        return False


def _resumable(meta: Mapping[str, Any]) -> bool:
    """A part can be continued only against a validator or a known length."""
    return bool(meta.get("etag") or meta.get("last_modified") or meta.get("total") is not None)


def _close_watch(resp: aiohttp.ClientResponse) -> asyncio.Future[None] | None:
    """The connection's end, watched from the headers on, for a body that only
    the connection's end delimits (no Content-Length, not chunked): aiohttp
    ends such a body at a reset as at a clean close."""
    if "chunked" in resp.headers.get("Transfer-Encoding", "").lower():
        return None
    conn = resp.connection
    closed = conn.protocol.closed if conn is not None and conn.protocol is not None else None
    if closed is not None:  # retrieved whatever happens, so never logged as lost
        closed.add_done_callback(lambda f: f.cancelled() or f.exception())
    return closed


def _strong_etag(etag: str | None) -> str | None:
    return etag if etag and not etag.startswith("W/") else None


async def _hash_file(path: str | Path, algo: str, limit: int | None = None) -> Any:
    import hashlib  # (checksums only: not at every start)

    import aiofiles

    hasher = hashlib.new(algo)
    remaining = limit
    async with aiofiles.open(path, "rb") as f:
        while remaining is None or remaining > 0:
            size = _READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining)
            block = await f.read(size)
            if not block:
                break
            hasher.update(block)
            if remaining is not None:
                remaining -= len(block)
    return hasher


class Transfer:
    """Fetches one :class:`Job`: retries, mirrors, resume, verification."""

    def __init__(self, ctx: Context, job: Job, act: Activity) -> None:
        self.ctx = ctx
        self.job = job
        self.act = act
        self.attempts = 0
        #: transient failures of the entry, segments included: one --retries budget
        self.failures = 0
        self.meta: dict[str, Any] | None = None
        self.resumed = False
        self.no_split = False
        self.cd_dest: str | None = None
        #: the checksum's hasher over the part's first N bytes, after a short 206
        self.carried_hash: tuple[Any, int] | None = None
        #: (URL, its wire form when it goes by http1.Pool, the extra arguments of
        #: its aiohttp requests: secret headers stay on its origin), per mirror
        self._guard: tuple[str | None, URL | None, dict[str, Any] | None] = (None, None, None)

    # -- the entry ---------------------------------------------------------
    async def run(self) -> Outcome:
        settings = self.ctx.settings
        job = self.job
        try:
            final = target(self.ctx.root, job.path)
        except UnsafeNameError as exc:
            return Outcome("failed", 0, 0, str(exc))
        except OSError as exc:  # a folder on the way: name too long, no room, no right
            return Outcome(
                "failed", 0, 0, f"cannot create the folders of {job.path}: {exc.strerror}"
            )
        part = final + ".part"
        if not self.ctx.untouched:
            skip = await self._existing(final)
            if skip is not None:
                return skip
            if not settings.resume:
                self._discard(part)

        restarts = 0
        fresh_after_mismatch = False
        tried: set[int] = set()
        dead: set[int] = set()
        #: mirror -> when its server said it may be asked again (Retry-After)
        not_before: dict[int, float] = {}
        mirror = 0
        while True:
            url = job.urls[mirror]
            tried.add(mirror)
            try:
                await self._attempt(url, part)
                return self._finish(final, part)
            except _ShortRange:
                continue
            except _AlreadyThere:
                assert self.cd_dest is not None
                try:
                    there = await self._existing(target(self.ctx.root, self.cd_dest), self.cd_dest)
                except UnsafeNameError as exc:
                    return Outcome("failed", 0, self.attempts, str(exc))
                except OSError as exc:
                    why = f"cannot create the folders of {self.cd_dest}: {exc.strerror}"
                    return Outcome("failed", 0, self.attempts, why)
                if there is None:  # fails its checksum: fetch it again, under that name
                    continue
                return dataclasses.replace(there, attempts=self.attempts, path=self.cd_dest)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = as_download_error(exc, settings.timeout)
            if isinstance(err, LocalFileError):
                return self._fail(err)
            if isinstance(err, RestartNeeded) and restarts < _MAX_RESTARTS:
                restarts += 1
                self._discard(part)
                continue
            if isinstance(err, ChecksumMismatch):
                self._discard(part)
                if err.transient and not fresh_after_mismatch:
                    fresh_after_mismatch = True
                    self.no_split = True  # the fresh try: one answer, one version
                    continue
                return self._fail(err)
            if err.transient:
                self.failures += 1
            else:
                dead.add(mirror)
            alive = [i for i in range(len(job.urls)) if i not in dead]
            untried = [i for i in alive if i not in tried]
            if not alive or (self.failures > settings.retries and not untried):
                return self._fail(err)
            if isinstance(err, HTTPStatusError) and err.retry_after is not None:
                # Retry-After speaks for the server that sent it: that mirror
                # is not asked before then; another one may be sooner
                wait = min(err.retry_after, self.ctx.policy.retry_after_cap)
                not_before[mirror] = time.monotonic() + wait
            if untried:
                mirror = untried[0]
            else:
                later = [i for i in alive if i > mirror]
                mirror = later[0] if later else alive[0]
            if err.transient:
                wait = max(
                    self.ctx.policy.delay(self.failures),
                    not_before.get(mirror, 0.0) - time.monotonic(),
                )
                await asyncio.sleep(wait)

    async def _existing(self, final: str, name: str | None = None) -> Outcome | None:
        """Skip a final file that is already there (unless it fails its checksum);
        ``name`` is how messages call it (the entry's path by default)."""
        name = name or self.job.path
        try:
            st = os.stat(final)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Outcome("failed", 0, 0, f"cannot use {name}: {exc.strerror}")
        if not stat.S_ISREG(st.st_mode):
            return Outcome("failed", 0, 0, f"{name} exists and is not a file")
        if self.ctx.settings.overwrite:
            return None
        if self.job.checksum is not None:
            algo, expected = self.job.checksum
            try:
                hasher = await _hash_file(final, algo)
            except OSError as exc:
                return Outcome("failed", 0, 0, f"cannot read {name} to check it: {exc.strerror}")
            if hasher.hexdigest() != expected:
                return None  # corrupt: download again and replace it
        return Outcome("skipped", st.st_size, 0, None, None)

    def _fail(self, err: DownloadError) -> Outcome:
        size = 0
        part = f"{self.ctx.root}/{self.job.path}.part"
        with contextlib.suppress(OSError):
            st = os.stat(part)
            size = st.st_size
            if not size and stat.S_ISREG(st.st_mode):
                self._discard(part)  # nothing to continue: no empty part left behind
        meta = self.meta
        if size and meta is not None and meta.get("segments"):
            # a segmented part has its full length from the start (sparse):
            # what it holds is what its segments have received
            size = sum(seg[2] - seg[0] for seg in meta["segments"])
        if size and meta is not None and not meta.get("saved") and _resumable(meta):
            # A small part's metadata stays in memory while it goes well (a
            # file each would cost more than a small transfer); a part left
            # behind gets it, so a rerun or --retry continues it too.
            with contextlib.suppress(LocalFileError):
                self._save_meta(meta)
        return Outcome("failed", size, self.attempts, str(err))

    def _discard(self, part: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        if self.meta is not None and self.meta.get("saved"):
            self.ctx.state.drop_part(self.job.path)
        self.meta = None

    def _finish(self, final: str, part: str) -> Outcome:
        dest, relpath = final, self.job.path
        try:
            if self.cd_dest is not None:
                dest, relpath = target(self.ctx.root, self.cd_dest), self.cd_dest
            os.replace(part, dest)
        except (OSError, UnsafeNameError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            return Outcome("failed", 0, self.attempts, f"cannot rename {self.job.path}.part: {why}")
        if self.meta is not None and self.meta.get("saved"):
            self.ctx.state.drop_part(self.job.path)
        size = self.act.done
        return Outcome(
            "complete", size, self.attempts, None, relpath if relpath != self.job.path else None
        )

    def _server_name(self, resp: aiohttp.ClientResponse) -> None:
        """``--content-disposition``: pick the server's name once (in the
        entry's folder, distinct from every other entry's), and stop early
        when that file is already there."""
        if self.cd_dest is not None or self.job.named:
            return
        with warnings.catch_warnings():
            # aiohttp warns about a malformed header with the server's bytes
            # in it, raw, on stderr (escape sequences for the terminal):
            # such a header names nothing, and says nothing either
            warnings.simplefilter("ignore")
            cd = resp.content_disposition
        name = server_name(cd.filename) if cd is not None else None
        if not name:
            return
        head = self.job.path.rpartition("/")[0]
        wanted = f"{head}/{name}" if head else name
        if wanted == self.job.path:
            return
        held = self.job.server_name
        if held is not None and is_name_for(held, wanted):
            self.cd_dest = held
        else:
            self.cd_dest = self.ctx.namer.reserve(wanted)
        if not self.ctx.settings.overwrite and os.path.lexists(self.ctx.root / self.cd_dest):
            raise _AlreadyThere

    # -- one request -------------------------------------------------------
    def _resume_point(self, part: str) -> int:
        """Bytes of ``part`` that can be continued (``--no-resume`` removed any
        earlier part before the first attempt; later attempts continue their own)."""
        if not self.attempts and self.ctx.untouched:
            return 0  # (self.meta is None: nothing was asked yet)
        try:
            st = os.lstat(part)
        except FileNotFoundError:
            self.meta = None
            return 0
        meta = self.meta
        if meta is None:
            meta = self.ctx.state.load_part(self.job.path)
            if meta is not None:
                meta["saved"] = True
        size = st.st_size
        usable = (
            stat.S_ISREG(st.st_mode)
            and meta is not None
            and _resumable(meta)
            and (meta.get("total") is None or size <= meta["total"])
            and ("segments" not in meta or _segments_ok(meta, size))
        )
        self.meta = meta
        if not usable or size == 0:
            self._discard(part)
            return 0
        return size

    async def _attempt(self, url: str, part: str) -> None:
        ctx = self.ctx
        offset = self._resume_point(part)
        if offset and self.meta is not None and self.meta.get("segments"):
            # no request of its own: each segment counts the requests it sends
            ctx.hosts.settle(self.job)
            await self._run_segments(url, part, None, no_slot, create=False)
            return
        release = await ctx.hosts.acquire(url, self.job)
        self.attempts += 1  # attempts are requests sent, here and per segment
        try:
            await self._request(url, part, offset, release)
        finally:
            release()

    def get(
        self, url: str, byte_range: str | None
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """One GET of the entry's content, as every attempt and segment sends
        it: the run's and the entry's headers, no decompression, the redirect
        cap, and a range guarded by the part's validator."""
        ctx = self.ctx
        headers = CIMultiDict(ctx.base_headers)
        if self.job.headers:
            headers.update(self.job.headers)  # the entry's replace the run's, by name
        if has_userinfo(url) and "Authorization" in headers:
            url = strip_userinfo(url)  # an explicit Authorization header wins, as in curl
        if byte_range is not None and self.meta is not None:
            headers["Range"] = byte_range
            validator = _strong_etag(self.meta.get("etag")) or self.meta.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        if self._guard[0] != url:  # once per entry and mirror, not per request
            wire = wire_url(url)
            plain = (
                ctx.fast is not None
                and wire.scheme == "http"
                and not has_userinfo(url)
                and ctx.fast.direct(wire)
            )
            self._guard = (url, wire if plain else None, None)
        fast = self._guard[1]
        if fast is not None:
            assert ctx.fast is not None
            return ctx.fast.request(
                fast,
                headers,
                ctx.settings.max_redirects,
                lambda hop, hop_headers, left: self._aiohttp_get(hop, hop_headers, url, left),
            )
        return self._aiohttp_get(url, headers)

    def _aiohttp_get(
        self,
        url: str,
        headers: CIMultiDict[str],
        home: str | None = None,
        max_redirects: int | None = None,
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A GET through aiohttp; ``home``: the entry's URL, when this is a
        redirect that http1 followed to where it does not go (https)."""
        ctx = self.ctx
        settings = ctx.settings
        session, timeout = ctx.http_session()
        if home is not None and has_userinfo(url) and "Authorization" in headers:
            url = strip_userinfo(url)  # the header wins, as for the entry's own URL
        extra = self._guard[2] if home is None else None
        if extra is None:  # once per entry and mirror, not per request
            names = secret_names(headers)
            extra = {}
            ours = (_secrets_stay_home(home or url, names),) if names else ()
            if ctx.proxies.active:  # the proxy is chosen per hop: proxies.py
                ours = (*ours, ctx.proxies.middleware)
            if ours:
                # a per-request list replaces the session's: a caller's own
                # middlewares (signing, logging) must still run
                own = tuple(getattr(session, "_middlewares", None) or ())
                extra["middlewares"] = (*own, *ours)
            if home is None:
                self._guard = (self._guard[0], self._guard[1], extra)
        if max_redirects is None:
            max_redirects = settings.max_redirects
        return session.get(
            wire_url(url),
            headers=headers,
            # aiohttp refuses the redirect that makes the count reach this
            max_redirects=max_redirects + 1,
            timeout=timeout,
            auto_decompress=False,
            ssl=not settings.insecure,
            raise_for_status=False,  # a caller's session may say True: statuses are ours to judge
            # under --limit-rate, aiohttp buffers little: TCP slows the server
            read_bufsize=ctx.limiter.step if ctx.limiter is not None else None,
            **extra,
        )

    async def _request(self, url: str, part: str, offset: int, release: Callable[[], None]) -> None:
        ctx = self.ctx
        job = self.job
        settings = ctx.settings
        self.act.done = offset
        async with self.get(url, f"bytes={offset}-" if offset else None) as resp:
            status = resp.status
            if offset and status == 416:
                await self._range_unsatisfiable(resp, part, offset)
                return
            if not has_content(status):
                raise status_error(resp)
            if settings.content_disposition:
                self._server_name(resp)
            served: int | None = None  # where a 206's bytes end
            total: int | None
            if status == 206 and offset:
                total, served = check_partial(self.meta or {}, resp, offset)
            else:
                if offset:
                    # The old part goes before the new metadata is saved: a
                    # crash in between must not label old bytes with the new
                    # validator. (At offset 0 there is none: _resume_point
                    # found no part, or discarded it.)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(part)
                offset = 0
                self.act.done = 0
                if status == 206:
                    total, served = _unasked_range(resp)
                else:
                    total = resp.content_length
                self._start_part(part, url, resp, total)
                if status == 200 and not self.no_split and splittable(resp, total, settings.split):
                    assert self.meta is not None and total is not None
                    self.meta["segments"] = plan(total, settings.split)
                    await self._run_segments(url, part, resp, release, create=True)
                    return
            self.act.total = total
            hasher = None
            if job.checksum is not None:
                carried, self.carried_hash = self.carried_hash, None
                if not offset:
                    import hashlib

                    hasher = hashlib.new(job.checksum[0])
                elif carried is not None and carried[1] == offset:
                    hasher = carried[0]  # a short 206 before: its bytes are hashed already
                else:
                    hasher = await _hash_file(part, job.checksum[0], offset)
            self.resumed = offset > 0
            closed = _close_watch(resp) if total is None else None
            size = await self._stream(resp, part, offset, hasher, total)
            if closed is not None and closed.done() and closed.exception() is not None:
                # a body with no length ends when the connection does; a
                # reset is not an end (curl: "Recv failure"), whatever aiohttp says
                raise TruncatedError(f"connection reset after {size} bytes (no length given)")
        if total is not None and size != total:
            if served is not None and offset < size == served < total:
                if hasher is not None:
                    self.carried_hash = (hasher, size)
                raise _ShortRange
            raise TruncatedError(f"body ended after {size} of {total} bytes")
        if hasher is not None and job.checksum is not None:
            self._verify(hasher.hexdigest())

    async def _run_segments(
        self,
        url: str,
        part: str,
        first: aiohttp.ClientResponse | None,
        release: Callable[[], None],
        *,
        create: bool,
    ) -> None:
        meta = self.meta
        assert meta is not None
        total = int(meta["total"])
        if create:
            # The segment table reaches the disk before the (sparse) part
            # does: a part of full length must never be taken for complete.
            self._save_meta(meta)
        try:
            fd = open_segmented(part, total, create)
        except OSError as exc:
            raise LocalFileError(f"cannot write {self.job.path}.part: {exc.strerror}") from exc
        self.act.total = total
        self.act.done = sum(s[2] - s[0] for s in meta["segments"])
        try:
            await Segmented(self, url, fd, meta).run(first, release)
        except RestartNeeded:
            self.no_split = True
            raise
        finally:
            os.close(fd)
        self.act.done = total
        if self.job.checksum is not None:
            hasher = await _hash_file(part, self.job.checksum[0])
            # several answers make one file: a mismatch earns the fresh
            # try a resumed file does, on one connection
            self.resumed = True
            self._verify(hasher.hexdigest())

    def _verify(self, digest: str) -> None:
        assert self.job.checksum is not None
        algo, expected = self.job.checksum
        if digest != expected:
            # A resumed file may have spliced two versions: one fresh try.
            raise ChecksumMismatch(
                f"checksum mismatch ({algo}: expected {expected[:16]}…, got {digest[:16]}…)",
                transient=self.resumed,
            )

    async def _range_unsatisfiable(
        self, resp: aiohttp.ClientResponse, part: str, offset: int
    ) -> None:
        cr = resp.headers.get("Content-Range", "")
        total = int(cr.rpartition("/")[2]) if cr.rpartition("/")[2].isdigit() else None
        meta = self.meta or {}
        known = meta.get("total")
        if (
            known is not None
            and offset == known
            and total in (None, known)
            and not _other_version(meta, resp)
        ):
            self.act.done = self.act.total = offset
            if self.job.checksum is not None:
                hasher = await _hash_file(part, self.job.checksum[0])
                self.resumed = True
                self._verify(hasher.hexdigest())
            return
        raise RestartNeeded("server refused the range (416); restarting from byte 0")

    def _start_part(
        self, part: str, url: str, resp: aiohttp.ClientResponse, total: int | None
    ) -> None:
        """Record what the new part is a copy of, before its first byte is written."""
        old_saved = bool(self.meta and self.meta.get("saved"))
        meta: dict[str, Any] = {
            "path": self.job.path,
            "url": redact_url(url),
            "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"),
            "total": total,
        }
        if _resumable(meta) and (total is None or total >= PERSIST_MIN):
            self._save_meta(meta)
        elif old_saved:
            self.ctx.state.drop_part(self.job.path)
        self.meta = meta

    def _save_meta(self, meta: dict[str, Any]) -> None:
        try:
            self.ctx.state.save_part(self.job.path, meta)
        except OSError as exc:
            raise LocalFileError(
                f"cannot save the resume data of {self.job.path}.part: {exc.strerror or exc}"
            ) from exc
        meta["saved"] = True

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        part: str,
        offset: int,
        hasher: Any,
        total: int | None,
    ) -> int:
        """The hot loop: write, hash if asked, count, pace; nothing else."""
        try:
            if offset:
                fd = os.open(part, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                try:
                    fd = os.open(part, flags, 0o644)
                except FileExistsError:  # our own stale part (or a planted link): replace it
                    os.unlink(part)
                    fd = os.open(part, flags, 0o644)
        except OSError as exc:
            raise LocalFileError(f"cannot write {self.job.path}.part: {exc.strerror}") from exc
        act = self.act
        limiter = self.ctx.limiter
        received = 0
        write = os.write
        try:
            # Each chunk is written as it comes, straight from the client's
            # buffer (http1's, aiohttp's) while it is still in the CPU cache
            # (no BufferedWriter: one more copy, of colder memory), in writes
            # of at most WRITE_SLICE. Under --limit-rate, chunks are small and
            # paid for before they land: the cap holds from the first byte.
            chunks = resp.content.iter_any() if limiter is None else limiter.chunks(resp)
            async for chunk in chunks:
                n = len(chunk)
                if limiter is not None:
                    await limiter.take(n)
                done = write(fd, chunk) if n <= WRITE_SLICE else 0
                if done != n:
                    write_all(fd, chunk, done)
                if hasher is not None:
                    hasher.update(chunk)
                received += n
                act.done += n
        except OSError as exc:
            if isinstance(exc, (ConnectionError, TimeoutError)) or is_client_error(exc):
                raise
            raise LocalFileError(f"cannot write {self.job.path}.part: {exc.strerror}") from exc
        finally:
            os.close(fd)
            self.ctx.received += received
        return offset + received
