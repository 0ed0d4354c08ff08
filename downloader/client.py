"""``Downloader``: the engine behind the CLI, for scripts, sync and async."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from multidict import CIMultiDict

from .config import DEFAULT_AGENT, Settings, is_secret_header, one_spelling, parse_rate
from .errors import DownloaderError, DownloadError, UnsafeNameError
from .hosts import HostLimits, prefer_free_hosts
from .models import INTERRUPTED, Entry, Record, Results
from .naming import STATE_DIR, Namer, clean_out, name_from_url
from .progress import Mode, Progress, ProgressEvent
from .ratelimit import RateLimiter
from .retry import RetryPolicy
from .scheduler import run_window
from .sources import rest_of
from .state import (
    RunState,
    has_userinfo,
    redact_loose,
    redact_url,
    strip_userinfo,
)
from .transfer import Context, Job, Outcome, Transfer
from .urllist import entries_from, parse_checksum, url_problem
from .workers import FORK_AT, Dealer, Worker, auto_processes, can_fork, fork, stop_on_signals

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

    from .http1 import Pool
    from .proxies import EnvProxies

T = TypeVar("T")


class Downloader:
    """Downloads many files at once into one directory, and says what happened.

    >>> dl = Downloader(output_dir="data", jobs=8, progress=False)
    >>> results = dl.run(["https://example.org/a.bin"])        # doctest: +SKIP
    >>> [r.error for r in results.failed]                       # doctest: +SKIP

    ``progress``: None shows bars on a terminal and a line per file
    otherwise; True always bars; ``"lines"`` always lines; False nothing
    (``on_progress`` still sees every event). ``on_progress`` is called on
    the run's event loop, between transfers: it must return quickly (a
    callback that blocks for longer than ``timeout`` makes transfers look
    stalled); one that raises is reported once and not called again.
    Warnings (a report that cannot be written, ...) go to the
    ``"downloader"`` logger.

    Use ``async with Downloader(...) as dl`` to keep one HTTP session (and
    its connection pool) across several calls, or pass ``session=`` to use
    an ``aiohttp.ClientSession`` of your own.

    ``processes``: more than 1 shares a list of 16 files or more with
    forked worker processes (Linux only; one core runs out long before the
    network on small files); None picks (two where two cores are free).
    The default, 1, never forks: a worker holds a copy of every file and
    socket the calling process has open until it ends, which the command
    line can afford and a caller's program may not. Runs with
    ``on_progress``, bars, ``per_host``, ``limit_rate``, a session, or
    inside ``async with`` keep to one process.
    """

    def __init__(
        self,
        output_dir: str | Path = ".",
        *,
        jobs: int = 8,
        per_host: int | None = None,
        split: int = Settings.split,
        retries: int = 5,
        timeout: float = 30.0,
        limit_rate: int | str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        user_agent: str | None = None,
        overwrite: bool = False,
        resume: bool = True,
        content_disposition: bool = False,
        insecure: bool = False,
        max_redirects: int = 10,
        processes: int | None = 1,
        report: str | Path | None = None,
        quiet: bool = False,
        progress: bool | Literal["lines"] | None = None,
        on_progress: Callable[[ProgressEvent], Any] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if on_progress is not None and (
            not callable(on_progress) or inspect.iscoroutinefunction(on_progress)
        ):
            # an async one would only make coroutines that nobody awaits
            raise TypeError("on_progress must be a plain (not async) function of one event")
        self.settings = Settings(
            output_dir=Path(output_dir),
            jobs=jobs,
            per_host=per_host,
            split=split,
            retries=retries,
            timeout=timeout,
            limit_rate=parse_rate(limit_rate) if isinstance(limit_rate, str) else limit_rate,
            # pairs keep a name given twice (-H 'X-A: 1' -H 'X-A: 2'): both are sent
            headers=CIMultiDict(headers or {}),
            user_agent=user_agent or DEFAULT_AGENT,
            overwrite=overwrite,
            resume=resume,
            content_disposition=content_disposition,
            insecure=insecure,
            max_redirects=max_redirects,
            processes=processes,
            report=Path(report) if report is not None else None,
            quiet=quiet,
            progress=progress,
            on_progress=on_progress,
        )
        self._given_session = session
        #: a caller's session may carry its own User-Agent: ours goes only when asked
        self._agent_given = user_agent is not None
        #: (the command line's) where a list's entries come from, recorded so
        #: that a retry can read the rest of a list a stopped run did not
        #: finish recording (sources.rest_of)
        self._origin: list[dict[str, Any]] | None = None
        #: inside ``async with``: the session (made when first needed) is
        #: kept for every call until the block ends
        self._entered = False
        self._own_session: aiohttp.ClientSession | None = None
        #: inside ``async with``, the plain-http connections too outlive a call
        self._own_pool: Pool | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Credentials (URL user info, secret headers: is_secret_header) are never
        #: written to disk; they live here, by entry index, for ``retry()``.
        self._secrets: dict[int, tuple[tuple[str, ...], CIMultiDict[str]]] = {}
        self.last_results: Results | None = None
        self._namer = Namer()
        #: (URL, path) -> the server's name for it in the previous run
        self._held: dict[tuple[str, str], str] = {}
        #: the same, read from the previous run while the list is read
        self._previous: dict[tuple[str, str], str] = {}

    # -- session -----------------------------------------------------------
    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp

        s = self.settings
        connector = aiohttp.TCPConnector(
            limit=s.jobs * s.split,
            ssl=not s.insecure,
            ttl_dns_cache=300,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout(),
            trust_env=False,  # proxies from the environment: see EnvProxies
            auto_decompress=False,
            read_bufsize=2**20,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    def _timeout(self, whole_connect: bool = True) -> aiohttp.ClientTimeout:
        """``--timeout``: the connect and the longest silence, never the whole
        transfer. ``connect`` bounds the whole way to a usable connection,
        a proxy's answer to CONNECT included (aiohttp waits for that one
        without any other bound); it also counts a wait for a free
        connection of the pool, which ours never makes (it has one for each
        transfer and segment), but a caller's smaller pool might."""
        import aiohttp

        t = self.settings.timeout
        return aiohttp.ClientTimeout(
            total=None, connect=t if whole_connect else None, sock_connect=t, sock_read=t
        )

    async def __aenter__(self) -> Downloader:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None
        if self._own_pool is not None:
            await self._own_pool.close()
            self._own_pool = None

    # -- public calls ------------------------------------------------------
    async def download(self, entries: Iterable[str | Entry], *, collect: bool = True) -> Results:
        """Fetch every entry (URL strings or :class:`Entry`); never raises for
        an entry's failure, which is in ``results.failed`` with its reason.

        ``collect=False`` keeps only the failed records in memory (the counts
        still cover every entry), and without the entries ``retry(results)``
        would fetch as a run of their own (``retry()`` of the recorded run
        finds them): for lists of millions of lines, whose full record is in
        ``DIR/.downloader/report.json``.
        """
        return await self._execute(entries_from(_many(entries)), None, collect)

    async def retry(self, results: Results | None = None, *, collect: bool = True) -> Results:
        """Run again what did not complete, resuming partial files.

        With no argument: every unfinished entry of the last run recorded in
        the output directory (what ``downloader --retry`` does); raises
        :class:`NoRunError` when none is recorded. With ``results``: only
        its failed entries; the returned results cover all of its entries."""
        s = self.settings
        if results is None:
            return await self._execute(None, None, collect)
        if results.run_id and results.run_id == RunState(s.output_dir).recorded_id():
            only = {r.index for r in results.failed if r.index is not None}
            for r in results.failed:
                # credentials are not on disk: the results (maybe another
                # Downloader's) hold them in memory
                if r.entry is None or r.index is None or r.index in self._secrets:
                    continue
                urls, headers, secret = _credentials(r.entry)
                if secret:
                    self._secrets[r.index] = (urls, headers)
            return await self._execute(None, only, collect)
        # Results of an older run (another one has been recorded since):
        # their failed entries, under the same names, as a run of their own.
        again = [r.entry for r in results.failed if r.entry is not None]
        fresh = await self._execute(iter(again), None, True)
        replaced = iter(fresh)
        merged = Results(
            [
                next(replaced) if r.status == "failed" and r.entry is not None else r
                for r in results
            ],
            interrupted=fresh.interrupted,
        )
        for name in ("bytes_downloaded", "elapsed", "output_dir", "attempted", "run_id"):
            setattr(merged, name, getattr(fresh, name))
        return merged

    def run(self, entries: Iterable[str | Entry], *, collect: bool = True) -> Results:
        """Blocking :meth:`download`.

        Where an event loop already runs in this thread (a notebook), the run
        goes to a helper thread with a loop of its own, and this loop waits
        for it, blocked: ``await dl.download(...)`` is the way there. A
        session of this Downloader's (``async with``, ``session=``) belongs to
        the running loop and cannot go along: RuntimeError.
        """
        entries = _many(entries)  # a TypeError here, not in the helper thread
        return self._run_sync(lambda: self.download(entries, collect=collect))

    def run_retry(self, results: Results | None = None, *, collect: bool = True) -> Results:
        """Blocking :meth:`retry`, under :meth:`run`'s rules."""
        return self._run_sync(lambda: self.retry(results, collect=collect))

    def _run_sync(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _new_loop_run(call())
        if self._entered or self._given_session is not None:
            raise RuntimeError(
                "run() inside a running event loop: this Downloader's session belongs "
                "to that loop; use `await dl.download(...)` (or `await dl.retry(...)`)"
            )
        # Ctrl-C reaches this thread, whose loop is blocked: it stops the
        # helper's run as it would stop a run of this thread (state saved,
        # then KeyboardInterrupt), whoever handled SIGINT before.
        interrupted = threading.Event()
        main = threading.current_thread() is threading.main_thread()
        previous: Any = None
        if main:
            previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                future = pool.submit(_new_loop_run, call())
                while not future.done():
                    concurrent.futures.wait([future], timeout=0.1)
                    if interrupted.is_set():
                        self.stop()  # again until the run has a loop to hear it
                results = future.result()
        finally:
            if main:  # None: a handler set outside Python; Python's own is the nearest
                signal.signal(
                    signal.SIGINT, previous if previous is not None else signal.default_int_handler
                )
        if interrupted.is_set():
            raise KeyboardInterrupt
        return results

    def stop(self) -> None:
        """Stop the current run as Ctrl-C does: no new transfers, in-flight
        ones end with their ``.part`` kept, the state and report are written,
        and the call returns results with ``interrupted`` set. Thread-safe."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    # -- the run -----------------------------------------------------------
    def _progress_mode(self) -> Mode:
        s = self.settings
        if s.quiet:
            return "quiet"
        if s.progress is None:
            return "bars" if sys.stderr.isatty() else "lines"
        if s.progress == "lines":
            return "lines"
        return "bars" if s.progress else "quiet"

    def _materialize(
        self,
        state: RunState,
        source: Iterator[Entry],
        stopping: threading.Event,
        lock: threading.Lock,
        recorded: Iterator[dict[str, Any]] | None = None,
    ) -> None:
        """Write every entry, with its final name, to the run state before the
        first request: names depend on the whole list's order, and ``--retry``
        must know the entries that never started.

        ``recorded``: the entries a stopped run recorded, which the list's
        first entries must match (they are named again, not added), so that
        the rest get the names the whole run would have given them."""
        namer = self._namer = Namer()
        for position, entry in enumerate(source, 1):
            with lock:
                if stopping.is_set():
                    return
                data = next(recorded, None) if recorded is not None else None
                if data is None:
                    recorded = None
                    self._add(state, namer, entry)
                    continue
                relpath, _, error = self._name(namer, entry, position)
                if data["url"] != _redact(entry.url) or data.get("path") != (
                    None if error else relpath
                ):
                    # nothing added yet: go on with the entries recorded
                    _warn(
                        f"the list differs from the one recorded, at its entry {position}: "
                        "its entries the run never recorded are not read again"
                    )
                    return
                urls, headers, secret = _credentials(entry)
                if secret:
                    self._secrets[data["i"]] = (urls, headers)  # the list has them again
        with lock:
            if not stopping.is_set():
                state.entries_written()

    def _name(
        self, namer: Namer, entry: Entry, position: int
    ) -> tuple[str | None, str | None, str | None]:
        """An entry's path, the earlier entry it duplicates, or why it is invalid."""
        if entry.error is not None:
            return None, None, entry.error
        relpath = clean_out(entry.out) if entry.out else name_from_url(entry.url)
        try:
            # the checksum as parsed: "SHA-256=AB…" and "sha256=ab…" are one
            checksum = "=".join(parse_checksum(entry.checksum)) if entry.checksum else None
            relpath, dup = namer.claim(entry.url, relpath, entry.line, checksum, position)
        except UnsafeNameError as exc:
            return None, None, f"line {entry.line}: {exc}" if entry.line else str(exc)
        return relpath, dup, None

    def _add(self, state: RunState, namer: Namer, entry: Entry) -> None:
        urls, headers, secret = _credentials(entry)
        data: dict[str, Any] = {
            "url": _redact(entry.url),
            "mirrors": [_redact(u) for u in urls[1:]],
            "line": entry.line,
        }
        relpath, dup, error = self._name(namer, entry, len(state.ledger) + 1)
        if error is not None or relpath is None:
            data["path"] = None
            i = state.add_entry(data)
            state.ledger.invalid.add(i)
            state.record(i, "failed", 0, 0, error)
            return
        data["path"] = relpath
        if dup is not None:
            # Also in the entry itself, not only in the journal: a second job
            # on one path would mean two transfers into one .part.
            data["dup"] = dup
        if entry.out:
            data["out"] = True
        elif self._previous:
            held = self._previous.get((data["url"], relpath))
            if held is not None:
                # kept with the entry: a run that never reaches it must not forget it
                data["held"] = held
        data["checksum"] = entry.checksum
        # pairs: a name given twice keeps both values
        data["headers"] = [[k, v] for k, v in headers.items() if not is_secret_header(k)]
        if secret:
            data["secret"] = True
        i = state.add_entry(data)
        if dup is not None:
            state.record(i, "skipped", 0, 0, f"duplicate of {dup}")
        elif secret:
            self._secrets[i] = (urls, headers)

    def _sources(self, data: dict[str, Any]) -> tuple[tuple[str, ...], Mapping[str, str]]:
        """A recorded entry's URLs and headers, with its credentials when this
        process still has them, and with none at all (not ``***``) otherwise."""
        if data["i"] in self._secrets:
            return self._secrets[data["i"]]
        urls: tuple[str, ...] = (data["url"], *data.get("mirrors", ()))
        if data.get("secret"):
            urls = tuple(strip_userinfo(u) for u in urls)
        recorded = data.get("headers")
        if not recorded:
            return urls, _NO_HEADERS
        # a dict in state recorded by versions before pairs
        pairs = recorded.items() if isinstance(recorded, dict) else map(tuple, recorded)
        return urls, one_spelling(CIMultiDict(pairs))

    def _entry_of(self, data: dict[str, Any]) -> Entry:
        """A recorded entry as an :class:`Entry` again, under its recorded name."""
        urls, headers = self._sources(data)
        return Entry(
            urls[0],
            out=data["path"],
            checksum=data.get("checksum"),
            headers=CIMultiDict(headers) or None,
            mirrors=tuple(urls[1:]),
            line=data.get("line"),
        )

    def _jobs(
        self,
        state: RunState,
        only: set[int] | None,
        progress: Progress | None = None,
        fresh: bool = False,
        done: Callable[[int], bool] | None = None,
    ) -> Iterator[Job]:
        """The entries to fetch, in list order; on the way, those the list
        settled (invalid ones; duplicates, in the run that found them) are
        shown as ended, in their place. ``done``: what counts as done, when
        not the ledger as it is at each entry."""
        done = done or state.ledger.done
        for data in state.iter_entries():
            i = data["i"]
            if only is not None and i not in only:
                continue
            if data.get("path") is None or data.get("dup"):
                if progress is not None and (fresh or data.get("path") is None):
                    progress.settled(state.record_of(data))
                continue
            if done(i):
                continue
            urls, headers = self._sources(data)
            checksum = data.get("checksum")
            yield Job(
                index=i,
                urls=urls,
                path=data["path"],
                checksum=parse_checksum(checksum) if checksum else None,
                headers=headers,
                line=data.get("line"),
                named=bool(data.get("out")),
                server_name=self._held.get((data["url"], data["path"])) if self._held else None,
            )

    async def _execute(
        self, source: Iterator[Entry] | None, only: set[int] | None, collect: bool
    ) -> Results:
        s = self.settings
        if self._given_session is not None and self._given_session.closed:
            # before the directory's last run is replaced by one that fails whole
            raise RuntimeError("the aiohttp session given to Downloader(session=...) is closed")
        t0 = time.monotonic()
        state = RunState(s.output_dir)
        untouched = False
        interrupted = False
        #: what stopped the list's reading (a cancellation, the caller's
        #: iterable raising): raised again once the report is written
        raised: BaseException | None = None
        try:
            if source is None:
                state.load()
                state.lock()
                self._arm()
                rest = rest_of(s.output_dir) if state.partial else None
                if rest is not None and s.content_disposition:
                    # the names servers gave before this run were in the
                    # stopped process's memory only: read again, the rest
                    # could land on other entries' files
                    _warn(
                        "with --content-disposition, the entries the stopped run never "
                        "recorded are not read again: run the list again for them"
                    )
                    rest = None
                if rest is not None:
                    # stopped while its list was recorded: the rest of the
                    # list, read again, joins the run (the first entries must
                    # match those recorded)
                    state.more_entries()
                    interrupted = await self._read_list(state, rest, state.iter_entries())
                self._prepare_retry(state)
            else:
                self._make_output_dir()
                untouched = _untouched(s.output_dir)
                state.lock()
                self._arm()
                self._secrets.clear()
                self._previous = state.server_names() if s.content_disposition else {}
                # here, not in the list's thread: a stop at any moment finds
                # this run begun, and its report replaces the last one
                state.begin(s.recorded(), self._origin)
                try:
                    interrupted = await self._read_list(state, source)
                except (asyncio.CancelledError, Exception) as exc:
                    # cancelled, or the entries could not be read to their
                    # end: the report of what was read is written (every
                    # run has one), then the exception goes on
                    interrupted, raised = True, exc
        except BaseException:
            state.close()  # and the lock goes with it
            raise
        if source is not None:
            self._hold(self._previous)
            self._previous = {}
            if not s.content_disposition:
                # Every name is on disk (entries.jsonl) now, and only server
                # names are handed out mid-run: a long list's name table
                # (tens of MB for millions of entries) need not outlive this.
                self._namer = Namer()
        ledger = state.ledger
        todo = 0
        if not interrupted:
            todo = sum(
                1
                for i in range(len(ledger))
                if not ledger.done(i) and i not in ledger.invalid and (only is None or i in only)
            )
        progress = Progress(self._progress_mode(), todo, s.on_progress)
        given = self._given_session
        made: list[aiohttp.ClientSession] = []  # a session of this run's own, once made

        def open_session() -> tuple[aiohttp.ClientSession, aiohttp.ClientTimeout]:
            if given is not None:
                # a caller's pool may be smaller than the run: its waits are
                # no failures (with a proxy, a silent one would hang instead)
                return given, self._timeout(whole_connect=ctx.proxies.active)
            if self._entered:
                if self._own_session is None:
                    self._own_session = self._new_session()
                return self._own_session, self._timeout()
            made.append(self._new_session())
            return made[0], self._timeout()

        ctx = Context(
            open_session=open_session,
            settings=s,
            state=state,
            root=s.output_dir,
            policy=RetryPolicy(retries=s.retries),
            hosts=HostLimits(s.per_host),
            limiter=RateLimiter(s.limit_rate) if s.limit_rate else None,
            base_headers=_base_headers(
                s,
                agent=given is None
                or self._agent_given
                or "User-Agent" not in getattr(given, "headers", {}),
            ),
            namer=self._namer,
            untouched=untouched,
        )
        if (
            given is None
            and ctx.limiter is None
            and not s.content_disposition
            and not os.environ.get("DOWNLOADER_AIOHTTP_ONLY")
        ):
            from .http1 import Pool

            if self._own_pool is not None:
                ctx.fast = self._own_pool
            else:
                ctx.fast = Pool(s.timeout, _direct(ctx.proxies) if ctx.proxies.active else None)
                if self._entered:
                    self._own_pool = ctx.fast
        try:
            if not interrupted:
                interrupted = await self._transfer_all(
                    ctx, progress, only, source is not None, todo
                )
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            progress.close()
            state.close()
            if ctx.fast is not None and ctx.fast is not self._own_pool:
                await ctx.fast.close()
            if made:
                await made[0].close()
            results = Results(interrupted=interrupted)
            results.bytes_downloaded = ctx.received
            results.elapsed = time.monotonic() - t0
            results.output_dir = str(s.output_dir)
            results.attempted = todo
            results.run_id = state.run_id
            results.partial = state.partial
            # One pass over the entries fills the results and the report.
            records = self._collect(state, results, collect)
            summary = lambda: _summary(results)  # noqa: E731
            written = False
            try:
                state.write_report(records, summary)
                written = True
            except OSError as exc:
                _warn(f"cannot write the report to {state.report_path}: {exc.strerror or exc}")
            for _ in records:  # the results are whole even when the report is not
                pass
            if s.report is not None:
                try:
                    if written:
                        state.copy_report(s.report)
                    else:  # DIR's disk is full: PATH may be on another one
                        state.write_report_at(s.report, (r for _, r in state.records()), summary)
                except OSError as exc:
                    _warn(f"cannot write the report to {s.report}: {exc.strerror or exc}")
            if state.journal_error is not None:
                _warn(
                    f"cannot write the run state in {state.dir}: {state.journal_error}; "
                    "some outcomes are not saved, so --retry checks those entries again"
                )
            if results.partial and not interrupted:
                _warn(
                    "the recorded run was stopped before its list was read to the end: only "
                    f"its first {sum(results.counts.values())} entries are known; run the "
                    "list again for the rest"
                )
            self.last_results = results
            self._stop = None
        if raised is not None:
            raise raised
        return results

    def _arm(self) -> None:
        """Make :meth:`stop` reach this run: only once it holds the
        directory, so that a second call refused for a busy directory
        leaves the first one stoppable."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

    def _make_output_dir(self) -> None:
        root = self.settings.output_dir
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise DownloaderError(
                f"the output directory {str(root)!r} exists and is not a folder"
            ) from None
        except OSError as exc:
            raise DownloaderError(
                f"cannot create the output directory {str(root)!r}: {exc.strerror or exc}"
            ) from exc

    async def _read_list(
        self,
        state: RunState,
        source: Iterator[Entry],
        recorded: Iterator[dict[str, Any]] | None = None,
    ) -> bool:
        """Materialise the list in a thread, so that Ctrl-C works even while
        a list on a terminal's standard input is still being typed; returns
        True when the run was stopped before the list was read to its end."""
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        stopping = threading.Event()
        lock = threading.Lock()

        def settle(exc: BaseException | None) -> None:
            if not done.done():
                if exc is None:
                    done.set_result(None)
                else:
                    done.set_exception(exc)

        def work() -> None:
            try:
                self._materialize(state, source, stopping, lock, recorded)
            except BaseException as exc:  # handed to the loop, raised there
                loop.call_soon_threadsafe(settle, exc)
            else:
                loop.call_soon_threadsafe(settle, None)

        reader = threading.Thread(target=work, name="downloader-list", daemon=True)
        reader.start()
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([done, stop], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            stopping.set()
            with lock:
                state.close()
            raise
        finally:
            stop.cancel()
        if done.done():
            # its last step was to say so: gone in a moment (a run forks
            # only with no other thread: workers.can_fork)
            reader.join()
            done.result()
            return False
        stopping.set()
        with lock:  # the reader writes nothing after this
            state.close()
        return True

    def _hold(self, previous: dict[tuple[str, str], str]) -> None:
        """Names servers gave in the previous run stay with their entries: in
        arrival order, another entry could get one, find the file there and
        skip its own download."""
        self._held = {key: name for key, name in previous.items() if self._namer.hold(name)}

    def _prepare_retry(self, state: RunState) -> None:
        s = self.settings
        ledger = state.ledger
        self._held = {}
        if s.content_disposition:
            # server-chosen names must stay clear of every name of the run
            self._namer = Namer()
            earlier: list[tuple[tuple[str, str], str]] = []
            for data in state.iter_entries():
                i = data["i"]
                if data.get("path") is not None:
                    with contextlib.suppress(UnsafeNameError):  # recorded by an older version
                        self._namer.claim(
                            data["url"], ledger.paths.get(i, data["path"]), data.get("line")
                        )
                if data.get("held") and not ledger.done(i) and i not in ledger.paths:
                    earlier.append(((data["url"], data["path"]), data["held"]))
            # names from earlier runs, not yet used in this one: held once every
            # recorded name is claimed, so that none of those moves
            self._hold(dict(earlier))
        if not s.quiet:
            lost = sum(
                1
                for data in state.iter_entries()
                if data.get("secret")
                and data["i"] not in self._secrets
                and not ledger.done(data["i"])
            )
            if lost:
                _warn(
                    f"{lost} entr{'y' if lost == 1 else 'ies'} to retry had credentials "
                    "(user:password@ in the URL, Authorization, Cookie, token or key "
                    "headers), which are never saved to disk: they are retried without them; "
                    "give them again (-H; headers= in Python), or run the list again"
                )

    async def _transfer_all(
        self, ctx: Context, progress: Progress, only: set[int] | None, fresh: bool, todo: int
    ) -> bool:
        """Every job through the sliding window; True when stopped early."""
        n = self._processes(ctx, progress, todo)
        if n > 1:
            return await self._shared(ctx, progress, only, fresh, n)
        jobs = self._jobs(ctx.state, only, progress, fresh)
        return await self._window(ctx, progress, jobs, self.settings.jobs)

    def _processes(self, ctx: Context, progress: Progress, todo: int) -> int:
        """How many processes share the run's transfers (workers.py): one,
        unless the list is long and nothing of the run would be broken by
        a copy in another process."""
        s = self.settings
        n = s.processes if s.processes is not None else auto_processes()
        if (
            n < 2
            or todo < FORK_AT
            or (self._stop is not None and self._stop.is_set())  # stopped already
            or s.jobs < 2
            or ctx.fast is None  # a rate for all, a caller's session, server names
            or self._entered  # a session and pool that outlive the call
            or s.per_host is not None  # a bound over all processes' requests
            or s.on_progress is not None  # the caller's, in this process
            or progress.mode == "bars"  # one terminal, one set of bars
            or not can_fork()
        ):
            return 1
        return min(n, s.jobs)

    async def _window(
        self, ctx: Context, progress: Progress, jobs: Iterator[Job], width: int
    ) -> bool:
        """``jobs`` through a window of ``width``; True when stopped early."""
        assert self._stop is not None
        state = ctx.state

        async def handle(job: Job) -> None:
            shown = redact_url(job.urls[0])
            key, act = progress.begin(shown, job.path)
            transfer = Transfer(ctx, job, act)
            try:
                outcome = await transfer.run()
            except asyncio.CancelledError:
                outcome = transfer._fail(DownloadError(INTERRUPTED))
                self._note(state, progress, job, shown, outcome, key, act)
                raise
            except Exception as exc:
                outcome = Outcome("failed", 0, transfer.attempts, f"internal error: {exc!r}")
            finally:
                ctx.hosts.settle(job)  # skipped, or failed before its first request
            self._note(state, progress, job, shown, outcome, key, act)

        ticker = asyncio.ensure_future(progress.tick_forever())
        window = asyncio.ensure_future(
            run_window(prefer_free_hosts(jobs, ctx.hosts), width, handle)
        )
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({window, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopped = not window.done()
            if stopped:
                window.cancel()
            await asyncio.gather(window, return_exceptions=True)
            if not window.cancelled() and window.exception() is not None:
                raise window.exception()  # type: ignore[misc]
            return stopped
        finally:
            window.cancel()
            stopper.cancel()
            ticker.cancel()
            await asyncio.gather(window, stopper, ticker, return_exceptions=True)

    async def _shared(
        self, ctx: Context, progress: Progress, only: set[int] | None, fresh: bool, n: int
    ) -> bool:
        """The run's jobs dealt out to ``n`` processes, this one and n - 1
        forked workers, each with its share of ``--jobs``; the workers'
        outcomes come into this process's ledger as they end."""
        assert self._stop is not None
        state = ctx.state
        width = self.settings.jobs
        shares = [width // n + (k < width % n) for k in range(n)]
        # Every process reads the same stream of jobs and takes the next
        # one dealt to it: what is done is taken as of now, as the workers'
        # outcomes will come into this process's ledger while it reads
        done = state.ledger.done_now()
        try:
            dealer = Dealer()
        except OSError:  # no shared memory here (a sandbox): one process
            return await self._window(
                ctx, progress, self._jobs(state, only, progress, fresh), width
            )
        #: each entry's fate in this run: 0 nobody's yet, 1 taken here or
        #: ended by a worker, 2 ended "interrupted" by a worker's stop, 3
        #: read back from the journal (a worker that died). What a worker
        #: that died or was stopped alone had been dealt and not finished
        #: is what is left at 0 or 2.
        settled = bytearray(len(state.ledger))
        since = state.journal_size()  # this run's outcomes come after

        def take(rec: dict[str, Any], fate: int = 1) -> None:
            if state.adopt(rec):
                interrupted = rec["s"] == "failed" and rec["e"] == INTERRUPTED
                settled[rec["i"]] = 2 if interrupted else fate

        def ours() -> Iterator[Job]:
            for job in dealer.deal(self._jobs(state, only, progress, fresh, done)):
                settled[job.index] = 1
                yield job

        workers: list[Worker] = []
        for k in range(1, n):
            try:
                pid, fd = fork(
                    partial(
                        self._worker,
                        ctx,
                        progress.mode,
                        (only, fresh, done),
                        (dealer, shares[k]),
                        os.getpid(),
                    )
                )
            except OSError:
                break  # fewer workers: those there are take the rest
            workers.append(Worker(pid, fd, take))
        stopped = True  # this process's own window
        waited = False  # a stop came while the workers went on
        try:
            stopped = await self._window(
                ctx, progress, ours(), width - sum(shares[1 : len(workers) + 1])
            )
            if not stopped and workers:
                waited = await self._until_done(workers)
        finally:
            if stopped or waited:
                for w in workers:
                    w.stop()
            # their last outcomes, even when this one is cancelled
            await asyncio.gather(*(w.done for w in workers), return_exceptions=True)
            dealer.close()
        ended = [w for w in workers if w.end is not None]
        for w in ended:
            ctx.received += w.end["received"]  # type: ignore[index]
            if state.journal_error is None:
                state.journal_error = w.end["journal_error"]  # type: ignore[index]
        told = stopped or waited or self._stop.is_set()  # the run was stopped
        # ended early, or stopped by a signal of its own while the run went on
        lost = [w for w in workers if w.end is None or (w.end["stopped"] and not told)]
        if not lost:
            # (a stop that came once a worker had ended its jobs stopped nothing)
            return stopped or any(w.end["stopped"] for w in ended)  # type: ignore[index]
        for w in lost:
            how = w.how_it_ended() if w.end is None else "was stopped by a signal of its own"
            then = "are left for --retry" if told else "are fetched by the main one"
            _warn(f"a worker process (pid {w.pid}) {how}: the files it had not finished {then}")
        if told:
            return True
        # What it finished is in the journal (its last outcomes may not have
        # come up the pipe; the lines before this run's are older runs'); the
        # rest is done here, resuming its .part files.
        for rec in state.journalled(since):
            if settled[rec["i"]] != 1:
                take(rec, 3)
        ctx.untouched = False
        left = (
            job
            for job in self._jobs(state, only, None, fresh, done)
            if settled[job.index] in (0, 2)
        )
        return await self._window(ctx, progress, left, width)

    async def _until_done(self, workers: list[Worker]) -> bool:
        """Wait for the workers' ends, or the run's stop (True)."""
        assert self._stop is not None
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            pending: set[asyncio.Future[Any]] = {w.done for w in workers}
            while pending and not stopper.done():
                await asyncio.wait({stopper, *pending}, return_when=asyncio.FIRST_COMPLETED)
                pending = {f for f in pending if not f.done()}
            return stopper.done()
        finally:
            stopper.cancel()

    async def _worker(
        self,
        ctx: Context,
        mode: Mode,
        which: tuple[set[int] | None, bool, Callable[[int], bool]],
        deal: tuple[Dealer, int],
        parent: int,
        fd: int,
    ) -> dict[str, Any]:
        """A worker's run (forked): the jobs dealt to it, ``width`` at once,
        with what the parent made for the run, except what belongs to the
        parent's loop."""
        from .http1 import Pool

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        stop_on_signals(self._stop.set, parent)
        ctx.state.echo = fd
        ctx.received = 0
        ctx._session = None
        proxies = ctx.proxies
        ctx.fast = Pool(self.settings.timeout, _direct(proxies) if proxies.active else None)
        progress = Progress(mode, 0)
        only, fresh, done = which
        dealer, width = deal
        # (progress None: the list's own lines, invalid entries, are the parent's)
        jobs = self._jobs(ctx.state, only, None, fresh, done)
        try:
            stopped = await self._window(ctx, progress, dealer.deal(jobs), width)
        finally:
            ctx.state.flush_echo()
            progress.close()
            await ctx.fast.close()
            if ctx._session is not None:
                await ctx._session[0].close()
        return {
            "received": ctx.received,
            "stopped": stopped,
            "journal_error": ctx.state.journal_error,  # the parent's warning says it
        }

    @staticmethod
    def _note(
        state: RunState,
        progress: Progress,
        job: Job,
        shown: str,
        outcome: Outcome,
        key: int,
        act: Any,
    ) -> None:
        state.record(
            job.index, outcome.status, outcome.bytes, outcome.attempts, outcome.error, outcome.path
        )
        record = Record(
            url=shown,
            path=outcome.path or job.path,
            status=outcome.status,
            bytes=outcome.bytes,
            attempts=state.ledger.attempts[job.index],  # earlier runs' included
            error=state.ledger.errors.get(job.index),  # as state.record cleaned it
            line=job.line,
            index=job.index,
        )
        progress.end(key, act, record)

    def _collect(self, state: RunState, results: Results, collect: bool) -> Iterator[Record]:
        """Every entry's record, in list order, counted into ``results`` as it
        passes (and kept there when ``collect``, or when it failed)."""
        counts = {"complete": 0, "skipped": 0, "failed": 0}
        results._counts = counts
        for data, record in state.records():
            status = record.status
            counts[status] += 1
            if collect or status == "failed":
                record.index = data["i"]
                if collect and status == "failed" and data.get("path") is not None:
                    # (not for collect=False: a million failures kept light;
                    # retry() of the recorded run finds them by index)
                    record.entry = self._entry_of(data)
                results.append(record)
            yield record


#: what a recorded entry without headers sends of its own (read, never changed)
_NO_HEADERS: CIMultiDict[str] = CIMultiDict()


def _credentials(entry: Entry) -> tuple[tuple[str, ...], CIMultiDict[str], bool]:
    """An entry's URLs and headers, and whether they hold credentials (user
    info, a secret header), which are never written to disk."""
    if not entry.headers and not entry.mirrors and "@" not in entry.url:
        return (entry.url,), _NO_HEADERS, False  # most entries of a list
    urls, headers = entry.urls, one_spelling(CIMultiDict(entry.headers or {}))
    return urls, headers, any(map(has_userinfo, urls)) or any(map(is_secret_header, headers))


def _many(entries: Iterable[str | Entry]) -> Iterable[str | Entry]:
    """Refuse one URL or one Entry where many are expected, before the
    directory's previous run is replaced: a str is an iterable of
    one-character "URLs"."""
    if isinstance(entries, (str, bytes, Entry)) or not isinstance(entries, Iterable):
        raise TypeError(
            f"entries: an iterable of URLs or Entry objects, not {type(entries).__name__}"
            " (one URL: [url])"
        )
    return entries


def _redact(url: str) -> str:
    """A URL for the state and report: an unparseable one loses all that may
    be a password (``user:pa/ss@host``), a valid one only its user info."""
    return redact_loose(url) if "@" in url and url_problem(url) else redact_url(url)


def _untouched(root: Path) -> bool:
    """Whether the output directory holds nothing but the run state: then no
    entry's file or ``.part`` is there before its own transfer makes it (the
    names are distinct), and a small file need not look for them."""
    try:
        with os.scandir(root) as it:
            return all(e.name == STATE_DIR for e in it)
    except OSError:
        return False


def _direct(proxies: EnvProxies) -> Callable[[URL], bool]:
    """Whether a URL goes without a proxy (an unusable proxy variable is
    aiohttp's to report, through proxies.py)."""

    def direct(url: URL) -> bool:
        try:
            return proxies.lookup(url) is None
        except DownloadError:
            return False

    return direct


def _base_headers(s: Settings, agent: bool = True) -> CIMultiDict[str]:
    """What every request sends; the run's headers replace ours by name."""
    base: CIMultiDict[str] = CIMultiDict({"Accept-Encoding": "identity"})
    if agent:
        base["User-Agent"] = s.user_agent
    base.update(one_spelling(CIMultiDict(s.headers)))
    return base


#: A library speaks through logging: a script may route, or silence, what
#: the command line prints as "downloader: warning: ...". With no logging
#: set up, Python prints warnings to stderr as they are.
log = logging.getLogger("downloader")


def _warn(message: str) -> None:
    log.warning(message)


def _summary(results: Results) -> dict[str, Any]:
    counts = results.counts
    return {
        "total": sum(counts.values()),
        **counts,
        "bytes_downloaded": results.bytes_downloaded,
        "elapsed_seconds": round(results.elapsed, 3),
        "rate_bytes_per_second": round(results.bytes_downloaded / max(results.elapsed, 1e-9)),
        "interrupted": results.interrupted,
        "output_dir": results.output_dir,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _new_loop_run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed (an optional extra)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
