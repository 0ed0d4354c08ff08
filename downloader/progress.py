"""What the user sees while a run goes: tqdm bars, plain lines, or a callback.

Transfers only bump an integer per chunk (``Activity.done``); a ticker turns
those counters into bar updates and callback events a few times a second, so
the per-chunk path never calls into tqdm.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TextIO

from .models import Record, Results
from .text import printable, shortened

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass(frozen=True)
class ProgressEvent:
    """Passed to ``Downloader(on_progress=...)``.

    ``kind`` is ``start`` when a file's transfer begins, ``progress`` a few
    times a second while bytes arrive, ``finish`` with the final ``status``.
    """

    kind: Literal["start", "progress", "finish"]
    url: str
    path: str | None
    done: int
    total: int | None
    status: str | None = None
    error: str | None = None


class Activity:
    """One transfer's live counters; ``done`` is the only field the hot path writes."""

    __slots__ = ("bar", "done", "path", "shown", "started", "total", "url")

    def __init__(self, url: str, path: str | None) -> None:
        self.url = url
        self.path = path
        self.done = 0
        self.total: int | None = None
        self.bar: tqdm[Any] | None = None
        self.shown = 0
        self.started = time.monotonic()


Mode = Literal["bars", "lines", "quiet"]

#: Characters in one write of lines: at most PIPE_BUF (4,096) bytes in UTF-8
_ATOMIC = 1024


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Bars (a terminal), lines (a log), or silence (``-q``), plus the callback."""

    def __init__(
        self,
        mode: Mode,
        total_files: int,
        callback: Callable[[ProgressEvent], Any] | None = None,
        *,
        interval: float = 0.2,
        stream: TextIO | None = None,
    ) -> None:
        self.mode = mode
        self.callback = callback
        self.interval = interval
        self.stream = stream or sys.stderr
        self.active: dict[int, Activity] = {}
        self.finished_bytes = 0
        self.t0 = time.monotonic()
        self._next = 0
        self.overall: tqdm[Any] | None = None
        self._lines: list[str] = []
        if mode == "bars":
            from tqdm import tqdm  # only a terminal pays for importing it

            self._tqdm = tqdm
            self.overall = tqdm(
                total=total_files,
                unit="file",
                desc="total",
                file=self.stream,
                dynamic_ncols=True,
                position=0,
                leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} files "
                "[{elapsed}<{remaining}{postfix}]",
            )

    def _emit(self, event: ProgressEvent) -> None:
        """A failing callback is the caller's bug: it must not stop the
        downloads; it is reported once and not called again."""
        assert self.callback is not None
        try:
            self.callback(event)
        except Exception as exc:
            self.callback = None
            logging.getLogger("downloader").warning(
                "on_progress callback raised %r; not called again", exc
            )

    # -- called by the engine ---------------------------------------------
    def begin(self, url: str, path: str | None) -> tuple[int, Activity]:
        act = Activity(url, path)
        key = self._next
        self._next += 1
        self.active[key] = act
        if self.callback is not None:
            self._emit(ProgressEvent("start", url, path, 0, None))
        return key, act

    def end(self, key: int | None, act: Activity | None, record: Record) -> None:
        if key is not None:
            self.active.pop(key, None)
        if act is not None:
            self.finished_bytes += act.done
        try:
            if act is not None and act.bar is not None:
                act.bar.close()
            if self.overall is not None:
                self.overall.update(1)
        except (OSError, ValueError):
            self._gone(act)
        self.settled(record, act)

    def _gone(self, ended: Activity | None = None) -> None:
        """The stream cannot be written any more (a closed pipe, a terminal
        hung up): say nothing more, rather than stop the downloads. The
        report on disk still tells everything."""
        self.mode = "quiet"
        self._lines.clear()
        acts = [*self.active.values(), *([ended] if ended is not None else [])]
        for bar in [*(act.bar for act in acts), self.overall]:
            if bar is not None:
                bar.disable = True  # its close() would write
        for act in acts:
            act.bar = None
        self.overall = None

    def settled(self, record: Record, act: Activity | None = None) -> None:
        """An entry's end as a line and the callback's ``finish``; alone, for
        one the list settled (invalid, a duplicate), which has no transfer
        and is not counted by the overall bar."""
        try:
            if self.overall is not None:
                if record.status == "failed":
                    self.overall.write(self._line(record), file=self.stream)
            elif self.mode == "lines":
                # written a tick at a time: one system call per file would
                # cost more than a small file's transfer
                self._lines.append(self._line(record))
                if len(self._lines) >= 256:
                    self._flush_lines()
        except (OSError, ValueError):  # ValueError: a closed file object
            self._gone()
        if self.callback is not None:
            done = act.done if act is not None else 0
            total = act.total if act is not None else None
            if record.status == "skipped" and act is not None:
                done = total = record.bytes  # already there, whole: as its record says
            self._emit(
                ProgressEvent(
                    "finish", record.url, record.path, done, total, record.status, record.error
                )
            )

    @staticmethod
    def _line(record: Record) -> str:
        name = printable(record.path or shortened(record.url))
        if record.status == "failed":
            return f"failed    {name}: {record.error}"
        if record.status == "skipped":
            why = f" ({record.error})" if record.error else " (already there)"
            return f"skipped   {name}{why}"
        return f"complete  {name} ({fmt_bytes(record.bytes)})"

    # -- the ticker --------------------------------------------------------
    async def tick_forever(self) -> None:
        if self.mode == "quiet" and self.callback is None:
            return
        while True:
            await asyncio.sleep(self.interval)
            self.refresh()

    def _flush_lines(self) -> None:
        """In writes of at most 4 KiB (1,024 characters of UTF-8), whole
        lines each: a pipe takes such a write whole, never torn by another
        process's lines (a run's worker writes to the same stderr)."""
        start = size = 0
        lines = self._lines
        for end, line in enumerate(lines):
            if end > start and size + len(line) >= _ATOMIC:
                self._write(lines[start:end])
                start, size = end, 0
            size += len(line) + 1
        if lines:
            self._write(lines[start:])
            lines.clear()

    def _write(self, lines: list[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def refresh(self) -> None:
        try:
            self._refresh()
        except (OSError, ValueError):
            self._gone()

    def _refresh(self) -> None:
        self._flush_lines()
        now = time.monotonic()
        running = 0
        for act in list(self.active.values()):
            running += act.done
            if self.mode == "bars" and act.bar is None and now - act.started >= self.interval:
                act.bar = self._tqdm(
                    total=act.total,
                    desc=_short(act.path or act.url),
                    unit="iB",  # with the 1024 divisor: KiB, MiB, as the total bar says
                    unit_scale=True,
                    unit_divisor=1024,
                    file=self.stream,
                    dynamic_ncols=True,
                    leave=False,
                    miniters=1,
                )
            if act.bar is not None:
                if act.total is not None and act.bar.total != act.total:
                    act.bar.total = act.total
                act.bar.update(act.done - act.shown)
                act.shown = act.done
            if self.callback is not None and act.done:
                self._emit(ProgressEvent("progress", act.url, act.path, act.done, act.total))
        if self.overall is not None:
            total = self.finished_bytes + running
            rate = total / max(now - self.t0, 1e-6)
            self.overall.set_postfix_str(f"{fmt_bytes(total)}, {fmt_bytes(rate)}/s", refresh=True)

    def close(self) -> None:
        try:
            self._flush_lines()
            for act in self.active.values():
                if act.bar is not None:
                    act.bar.close()
            if self.overall is not None:
                self._refresh()
                self.overall.close()
                self.overall = None
        except (OSError, ValueError):
            self._gone()
        self.active.clear()


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def summary_lines(results: Results, *, quiet: bool = False) -> Iterator[str]:
    """The end-of-run text: counts, bytes, time, rate, then one line per
    failure; made as it is printed (a million failures, one line at a time)."""
    counts = results.counts
    if not quiet:
        elapsed = max(results.elapsed, 1e-6)
        yield (
            f"{'Interrupted' if results.interrupted else 'Done'}: "
            f"{counts['complete']} complete, {counts['skipped']} skipped, "
            f"{counts['failed']} failed; {fmt_bytes(results.bytes_downloaded)} downloaded in "
            f"{results.elapsed:.1f} s ({fmt_bytes(results.bytes_downloaded / elapsed)}/s)"
        )
    failed = results.failed
    if failed:
        yield f"Failed ({len(failed)}):"
        for r in failed:  # one line each, as the contract says, not-started ones included
            tries = f"{r.attempts} attempt{'s' if r.attempts != 1 else ''}"
            where = printable(f"{shortened(r.url)} -> {r.path or '-'}")
            yield f"  {where} [{tries}]: {printable(shortened(r.error or ''))}"
