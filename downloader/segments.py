"""``--split``: one file over several connections, each writing its byte range
at its offset into the one ``NAME.part`` (no join step, no temporary files).

The segment table lives in the part's metadata (``[start, end, done]`` each),
saved every second and when a segment stops, so a crash resumes every segment
where its bytes on disk end. ``done`` only moves after a write has returned,
so the table never claims bytes that are not in the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import MIN_SEGMENT, WRITE_SLICE
from .errors import DownloadError, LocalFileError, RestartNeeded, TruncatedError
from .retry import as_download_error, has_content, status_error
from .scheduler import run_window
from .writes import write_all

if TYPE_CHECKING:
    import aiohttp

    from .transfer import Transfer

_SAVE_EVERY = 1.0


def plan(total: int, split: int) -> list[list[int]]:
    """Equal segments, none smaller than MIN_SEGMENT; ``[start, end, done]``."""
    n = max(1, min(split, total // MIN_SEGMENT))
    size = total // n
    bounds = [i * size for i in range(n)] + [total]
    return [[bounds[i], bounds[i + 1], bounds[i]] for i in range(n)]


def splittable(resp: aiohttp.ClientResponse, total: int | None, split: int) -> bool:
    """Whether a whole-body answer may be fetched in segments: ranges
    answered (the contract's rule, and aria2c's). Every segment's 206 must
    then repeat the validator (ETag, Last-Modified) or, with none, the total
    length, as a resume must (``check_partial``); a checksum catches what a
    server that changes a file without saying so splices."""
    return (
        split > 1
        and total is not None
        and total >= 2 * MIN_SEGMENT
        and resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        and "Content-Encoding" not in resp.headers
    )


#: Answers to a segment that refuse its range rather than the file: 400 Bad
#: Request, 405 Method Not Allowed, 416 Range Not Satisfiable, 501 Not Implemented.
_RANGE_REFUSED = frozenset({400, 405, 416, 501})


class Segmented:
    """Fetches the unfinished segments of one part, ``split`` at a time."""

    def __init__(self, transfer: Transfer, url: str, fd: int, meta: dict[str, Any]) -> None:
        self.t = transfer
        self.url = url
        self.fd = fd
        self.meta = meta
        self.segments: list[list[int]] = meta["segments"]

    def _save(self) -> None:
        """The segment table to disk. A full disk there is no reason to stop
        the download (or to swallow a Ctrl-C): the table on disk is then only
        older, which costs bytes fetched again, never wrong bytes."""
        try:
            self.t.ctx.state.save_part(self.t.job.path, self.meta)
        except OSError:
            return
        self.meta["saved"] = True

    async def run(
        self, first: aiohttp.ClientResponse | None, release_first: Callable[[], None]
    ) -> None:
        """Fill every segment; ``first`` (a whole-body 200) serves segment 0,
        then gives its host slot back (``release_first``) for the others."""
        segments = self.segments
        lead = []
        if first is not None and segments[0][2] < segments[0][1]:
            lead.append(self._first(first, release_first))
        else:
            release_first()
        todo = [s for s in segments if s[2] < s[1] and not (lead and s is segments[0])]
        n = max(1, self.t.ctx.settings.split - len(lead))
        tasks = [
            asyncio.ensure_future(c) for c in (*lead, run_window(iter(todo), n, self._segment))
        ]
        saver = asyncio.ensure_future(self._save_forever())
        try:
            await asyncio.gather(*tasks)
        finally:
            saver.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, saver, return_exceptions=True)
            self._save()
        if any(s[2] < s[1] for s in self.segments):
            raise TruncatedError("a segment ended early")

    async def _first(self, resp: aiohttp.ClientResponse, release: Callable[[], None]) -> None:
        """Segment 0 from the whole-body answer; when that breaks, segment 0
        is retried alone (ranged, from where it stopped), as any other is:
        the other segments go on."""
        try:
            try:
                await self._pump(self.segments[0], resp, None)
            finally:
                resp.close()  # its connection is done: not a request in flight any more
                release()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._after(as_download_error(exc, self.t.ctx.settings.timeout))
            await self._segment(self.segments[0])

    async def _after(self, err: DownloadError) -> None:
        """Raise ``err`` unless it earns another try; else wait for it. One
        budget for the entry: the segments' failures spend it too."""
        t = self.t
        if isinstance(err, RestartNeeded) or not err.transient:
            raise err
        t.failures += 1
        if t.failures > t.ctx.settings.retries:
            raise err
        await asyncio.sleep(t.ctx.policy.delay_after(t.failures, err))

    async def _save_forever(self) -> None:
        while True:
            await asyncio.sleep(_SAVE_EVERY)
            self._save()

    async def _segment(self, seg: list[int]) -> None:
        """One segment's requests: retried alone, each resuming where it stopped."""
        t = self.t
        ctx = t.ctx
        while seg[2] < seg[1]:
            try:
                t.attempts += 1
                async with ctx.hosts.slot(self.url):
                    await self._request(seg)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = as_download_error(exc, ctx.settings.timeout)
            await self._after(err)

    async def _request(self, seg: list[int]) -> None:
        meta = self.meta
        async with self.t.get(self.url, f"bytes={seg[2]}-{seg[1] - 1}") as resp:
            if resp.status != 206 and has_content(resp.status):
                raise RestartNeeded("server ignored a segment's range; fetching whole")
            if resp.status in _RANGE_REFUSED:
                # the file was there a moment ago: a refused range ends the
                # split, not the download (other refusals, 401 or 404, keep
                # the part for a later --retry)
                raise RestartNeeded(
                    f"server refused a segment's range (HTTP {resp.status}); fetching whole"
                )
            if resp.status != 206:
                raise status_error(resp)
            from .transfer import check_partial

            _, served = check_partial(meta, resp, seg[2])
            await self._pump(seg, resp, served)

    async def _pump(self, seg: list[int], resp: aiohttp.ClientResponse, served: int | None) -> None:
        """Stream into the segment's byte range; stops at its end. A 206 that
        sent all it said it would, short of the segment's end (servers may
        cap a range's size), is no failure: the next request continues."""
        act = self.t.act
        ctx = self.t.ctx
        limiter = ctx.limiter
        end = seg[1]
        received = 0
        write = self._write
        try:
            chunks = resp.content.iter_any() if limiter is None else limiter.chunks(resp)
            async for chunk in chunks:
                room = end - seg[2]
                if len(chunk) > room:
                    chunk = chunk[:room]
                n = len(chunk)
                if limiter is not None:
                    await limiter.take(n)  # paid before it lands (transfer._stream)
                write(chunk, seg)
                received += n
                act.done += n
                if n == room:
                    break
        finally:
            ctx.received += received
        if seg[2] < end and not (received and seg[2] == served):
            raise TruncatedError(f"segment ended at byte {seg[2]} of {seg[0]}-{end - 1}")

    def _write(self, data: bytes, seg: list[int]) -> None:
        """Each chunk goes to its offset as it comes, with no copy into a buffer
        of our own; ``seg[2]`` counts it only once it is all written."""
        try:
            n = len(data)
            done = os.pwrite(self.fd, data, seg[2]) if n <= WRITE_SLICE else 0
            if done != n:
                write_all(self.fd, data, done, seg[2])
        except OSError as exc:
            raise LocalFileError(f"cannot write {self.t.job.path}.part: {exc.strerror}") from exc
        seg[2] += len(data)


def open_segmented(path: os.PathLike[str] | str, total: int | None, create: bool) -> int:
    flags = os.O_WRONLY | os.O_NOFOLLOW
    if create:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if total:
                os.ftruncate(fd, total)
        except BaseException:
            os.close(fd)
            raise
        return fd
    return os.open(path, flags)
