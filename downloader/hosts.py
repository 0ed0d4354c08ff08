"""``--per-host``: at most N requests in flight to one host, and entries
handed out so that a busy host does not hold up the others.

Without the second part, workers take entries in list order and wait for
their host's slot while holding their ``--jobs`` place: ten files from one
host ahead of ten from another ran one at a time, the second host idle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, Protocol

from .state import host_of

#: How far ahead of a busy host the list is read for entries of free hosts.
LOOKAHEAD = 1024


class _Job(Protocol):
    urls: tuple[str, ...]
    promised: bool


def no_slot() -> None:
    """The release of a request that holds no slot (no --per-host)."""


class HostLimits:
    """The slots of each host, and the entries promised one but not yet there."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._busy: dict[str, int] = {}
        self._promised: dict[str, int] = {}
        #: entries asking for a slot of the host, not yet given one
        self._queued: dict[str, int] = {}

    def _sem(self, host: str) -> asyncio.Semaphore:
        sem = self._sems.get(host)
        if sem is None:
            assert self.limit is not None
            sem = self._sems[host] = asyncio.Semaphore(self.limit)
        return sem

    def room_at(self, host: str) -> bool:
        """A slot of the host is free, counting those promised to entries
        already handed out."""
        assert self.limit is not None
        taken = self._busy.get(host, 0) + self._promised.get(host, 0) + self._queued.get(host, 0)
        return taken < self.limit

    def promise(self, job: _Job) -> None:
        host = host_of(job.urls[0])
        self._promised[host] = self._promised.get(host, 0) + 1
        job.promised = True

    def settle(self, job: _Job) -> None:
        """The entry asks for its slot now, or will never (it was skipped)."""
        if job.promised:
            job.promised = False
            host = host_of(job.urls[0])
            self._promised[host] -= 1

    def slot(self, url: str) -> AbstractAsyncContextManager[Any]:
        return nullcontext() if self.limit is None else self._held(url)

    @asynccontextmanager
    async def _held(self, url: str) -> Any:
        release = await self.acquire(url)
        try:
            yield
        finally:
            release()

    async def acquire(self, url: str, job: _Job | None = None) -> Callable[[], None]:
        """Take a slot; the returned function gives it back (once), so a
        split download can hand its first connection's slot on early."""
        if job is not None:
            self.settle(job)
        if self.limit is None:
            return no_slot
        host = host_of(url)
        sem = self._sem(host)
        # counted while it waits: else the host looks free, and gets the
        # next entries too, ahead of another host's that is really free
        self._queued[host] = self._queued.get(host, 0) + 1
        try:
            await sem.acquire()
        finally:
            self._queued[host] -= 1
        self._busy[host] = self._busy.get(host, 0) + 1
        held = [True]

        def release() -> None:
            if held[0]:
                held[0] = False
                self._busy[host] -= 1
                sem.release()

        return release


def prefer_free_hosts(jobs: Iterator[Any], hosts: HostLimits) -> Iterator[Any]:
    """``jobs`` in list order, except that an entry whose host is busy waits
    (up to LOOKAHEAD of them) while later entries of free hosts go first.
    When every waiting entry's host is busy, the oldest goes anyway and
    waits for its slot, as it would have in order.

    Waiting entries are kept by host, the hosts in the order they started
    waiting: a pick looks at hosts, not entries, and stops at the first
    with room (hosts waiting are about the hosts busy, at most ``--jobs``)."""
    if hosts.limit is None:
        yield from jobs
        return
    waiting: dict[str, deque[Any]] = {}
    count = 0
    exhausted = False
    while True:
        job = None
        host = next((h for h in waiting if hosts.room_at(h)), None)
        while host is None and not exhausted and count < LOOKAHEAD:
            nxt = next(jobs, None)
            if nxt is None:
                exhausted = True
                break
            h = host_of(nxt.urls[0])
            if h not in waiting and hosts.room_at(h):
                job = nxt
                break
            waiting.setdefault(h, deque()).append(nxt)
            count += 1
        if job is None:
            if host is None:
                if not count:
                    return
                host = next(iter(waiting))  # every host busy: the longest waiting goes
            queue = waiting[host]
            job = queue.popleft()
            count -= 1
            if not queue:
                del waiting[host]
        hosts.promise(job)
        yield job
