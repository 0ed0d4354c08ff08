"""The values that cross the public API: what to fetch, and what happened."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from multidict import CIMultiDict

Status = Literal["complete", "skipped", "failed"]
#: The error of an entry a stopped run never reached.
NOT_STARTED = "not started (run interrupted)"
#: the error of a transfer a stop ended
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Entry:
    """One file to fetch: its URL, optional mirrors and per-entry options.

    ``line`` and ``error`` are set by the list parser: an entry with an
    ``error`` is invalid, is never requested, and is reported as failed.
    """

    url: str
    out: str | None = None
    checksum: str | None = None
    headers: Mapping[str, str] | None = None
    mirrors: Sequence[str] = ()
    line: int | None = field(default=None, kw_only=True)
    error: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        # A wrong type fails here, on the caller's line, rather than as a
        # bare AttributeError deep in a run; the obvious spellings are taken.
        if not isinstance(self.url, str):
            raise TypeError(f"Entry url: a str, not {type(self.url).__name__}")
        if isinstance(self.mirrors, (str, bytes)):
            raise TypeError("Entry mirrors: a sequence of URLs, not one str")
        if not all(isinstance(m, str) for m in self.mirrors):
            raise TypeError("Entry mirrors: URLs as str")
        if isinstance(self.out, os.PathLike):
            object.__setattr__(self, "out", os.fspath(self.out))
        if self.out is not None and not isinstance(self.out, str):
            raise TypeError(f"Entry out: a str or a path, not {type(self.out).__name__}")
        if self.checksum is not None and not isinstance(self.checksum, str):
            raise TypeError("Entry checksum: a str, 'ALGO=HEX'")
        if self.headers is not None and not isinstance(self.headers, Mapping):
            # (name, value) pairs: a name given twice is sent twice, as by -H
            object.__setattr__(self, "headers", CIMultiDict(self.headers))

    @property
    def urls(self) -> tuple[str, ...]:
        """The URL then its mirrors, in the order they are tried."""
        return (self.url, *(m for m in self.mirrors if m != self.url))


@dataclass(slots=True)
class Record:
    """What became of one entry; the report holds one of these per entry."""

    url: str
    path: str | None
    status: Status
    bytes: int = 0
    attempts: int = 0
    error: str | None = None
    line: int | None = None
    #: Position of the entry in its run; lets ``Downloader.retry`` find it.
    index: int | None = field(default=None, repr=False, compare=False)
    #: What to fetch again (failed records): ``Downloader.retry`` re-runs it.
    entry: Entry | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "path": self.path,
            "status": self.status,
            "bytes": self.bytes,
            "attempts": self.attempts,
            "error": self.error,
            "line": self.line,
        }


class Results(list[Record]):
    """The records of a run, in list order, with views by status.

    ``interrupted`` is true when the run was stopped (Ctrl-C, SIGTERM, task
    cancelled) before every entry was handled; the state on disk lets
    :meth:`Downloader.retry` or ``downloader --retry`` continue it.
    """

    def __init__(self, records: Sequence[Record] = (), *, interrupted: bool = False) -> None:
        super().__init__(records)
        self.interrupted = interrupted
        self.bytes_downloaded = 0
        self.elapsed = 0.0
        #: Entries this call set out to fetch (0: nothing was left to do).
        self.attempted = 0
        #: The recorded run these results belong to (``DIR/.downloader/run.json``).
        self.run_id = ""
        #: The run was stopped before its list was read to the end: entries
        #: after the last one recorded are unknown, so it can never be complete.
        self.partial = False
        self.output_dir: str | None = None
        self._counts: dict[str, int] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Entries per status; with ``collect=False`` only failed records are
        kept, but the counts still cover every entry."""
        if self._counts is not None:
            return dict(self._counts)
        out = {"complete": 0, "skipped": 0, "failed": 0}
        for r in self:
            out[r.status] += 1
        return out

    @property
    def complete(self) -> list[Record]:
        return [r for r in self if r.status == "complete"]

    @property
    def skipped(self) -> list[Record]:
        return [r for r in self if r.status == "skipped"]

    @property
    def failed(self) -> list[Record]:
        return [r for r in self if r.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when every entry is complete or skipped (exit status 0)."""
        return not self.interrupted and not self.partial and self.counts["failed"] == 0
