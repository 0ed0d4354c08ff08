"""A long list's transfers, shared with forked worker processes.

CPython runs Python code on one core at a time, and a list of small files
keeps that core busy from the first request to the last (per file: the
request, the head, the ``.part``'s open, write and rename, a journal line),
while the machine's other cores idle. So once the list is read and named
(every entry is in the run state), the run forks: every process reads the
same job stream and takes the next job dealt to it (:class:`Dealer`), with
its share of ``--jobs``, and does for it all a run does (transfer, retries,
journal line, progress line) on an event loop of its own. Each outcome
also goes up a pipe to the parent, which keeps the run's ledger whole for
the summary, the report and the results, and stops the workers when the
run is stopped.

Only where ``fork`` is safe and cheap: Linux, one thread, and nothing
shared that a copy would break (a caller's session, a callback, a rate
shared by all transfers, bars on one terminal): ``client._processes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

from ._console import stop_signals

T = TypeVar("T")

#: What the parent sends its workers to stop them: not one of the run's
#: stop signals (_console.stop_signals), which a second time (a second
#: Ctrl-C) mean quit at once
TOLD = signal.SIGUSR1

#: Jobs a run must have before it forks. A fork and the worker's loop cost
#: about 4 ms, which 16 to 64 files of 16 KiB neither lost nor won (within
#: noise, 2-core VM), while 20 files of 32 MiB took 0.54 s against 0.76 s:
#: both cores copy.
FORK_AT = 16


def auto_processes() -> int:
    """Two when this process may use two cores or more: the run's own core
    is then the limit for small files (measured, 2 cores: see README)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def can_fork() -> bool:
    """A forked child has only the thread that forked: with any other
    running (a caller's, a library's), a lock it held stays held."""
    import threading

    return (
        sys.platform.startswith("linux")
        and hasattr(os, "memfd_create")
        and threading.active_count() == 1
    )


class Dealer:
    """Deals the jobs of one stream, one at a time, to the processes that
    each read the same stream: whichever is free takes the next, so that
    none idles at the end while another still has a share to do (a fixed
    share each ended up to a fifth of the run apart, on a busy machine).
    The count of jobs dealt is in memory shared across the fork, under a
    POSIX lock, which is the process's (a lock on a file shared across a
    fork would be both processes' at once), and goes with a process that dies."""

    def __init__(self) -> None:
        import mmap

        self._count = mmap.mmap(-1, 8)  # anonymous and shared: the forks see one
        self._lock = os.memfd_create("downloader-deal")

    def _next(self) -> int:
        import fcntl

        fcntl.lockf(self._lock, fcntl.LOCK_EX)
        try:
            at = int.from_bytes(self._count[:8], "little")
            self._count[:8] = (at + 1).to_bytes(8, "little")
        finally:
            fcntl.lockf(self._lock, fcntl.LOCK_UN)
        return at

    def close(self) -> None:
        self._count.close()
        os.close(self._lock)

    def deal(self, jobs: Iterator[T]) -> Iterator[T]:
        """This process's jobs of ``jobs``, as it asks for them."""
        want = self._next()
        for at, job in enumerate(jobs):
            if at == want:
                yield job
                want = self._next()


def write_all(fd: int, data: bytes) -> None:
    """A pipe write that a signal may cut short, written to its end."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Worker:
    """The parent's side of one worker: its pid and the pipe its outcomes
    come up, read as they come (a full pipe would block the worker)."""

    def __init__(self, pid: int, fd: int, take: Callable[[dict[str, Any]], None]) -> None:
        self.pid = pid
        self._fd = fd
        self._take = take
        self._tail = b""
        #: what the worker said at its end: bytes received, whether stopped
        self.end: dict[str, Any] | None = None
        #: its wait status, once reaped
        self.status = 0
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 1 << 16)
        except OSError:
            data = b""
        if not data:
            self._closed()
            return
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "end" in message:
                self.end = message
            else:
                self._take(message)

    def _closed(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)
        # reaped at once: it has closed its end of the pipe by exiting
        with contextlib.suppress(ChildProcessError):
            self.status = os.waitpid(self.pid, 0)[1]
        if not self.done.done():
            self.done.set_result(None)

    def stop(self) -> None:
        """As the run's own stop: no new transfers, the state saved."""
        if not self.done.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, TOLD)

    def how_it_ended(self) -> str:
        if os.WIFSIGNALED(self.status):
            sig = os.WTERMSIG(self.status)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            return f"was killed ({name})"
        return f"ended with status {os.waitstatus_to_exitcode(self.status)}"


def fork(child: Callable[[int], Coroutine[Any, Any, dict[str, Any]]]) -> tuple[int, int]:
    """Start a worker running ``child(fd)`` on a loop of its own; its
    result, the worker's last message, goes to ``fd``. Returns the pid and
    the read end of the pipe."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()  # or the child would write it again
    r, w = os.pipe()
    # held until the worker has its own handlers: one that came in between
    # would meet the parent's, and be lost
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {*stop_signals(), TOLD})
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(r)
        os.close(w)
        raise
    if pid == 0:
        os.close(r)
        _child_main(child, w)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    os.close(w)
    return pid, r


def _child_main(child: Callable[[int], Coroutine[Any, Any, dict[str, Any]]], fd: int) -> NoReturn:
    code = 70  # EX_SOFTWARE: the parent reports the worker's jobs not finished
    try:
        # The parent's loop is not this process's to touch: its selector and
        # the pipe its signals wake it by are shared with the parent.
        signal.set_wakeup_fd(-1)
        asyncio._set_running_loop(None)
        loop = asyncio.SelectorEventLoop()
        asyncio.set_event_loop(loop)
        end = loop.run_until_complete(child(fd))
        write_all(fd, json.dumps({"end": 1, **end}).encode() + b"\n")
        code = 0
    except BaseException:  # whatever it was, the parent learns it from the missing end
        pass
    finally:
        os._exit(code)


def stop_on_signals(stop: Callable[[], None], parent: int) -> None:
    """The worker's own. The parent tells it to stop (TOLD), and so does
    its death (kill -9: PR_SET_PDEATHSIG), rather than leave it running
    unseen; Ctrl-C reaches the whole process group, and a second one, as
    in the parent, quits at once."""
    loop = asyncio.get_running_loop()
    hits = 0

    def again() -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            os._exit(130)
        stop()

    loop.add_signal_handler(TOLD, stop)
    stops = stop_signals()  # (SIGHUP not under nohup: the run outlives the terminal)
    for sig in stops:
        loop.add_signal_handler(sig, again)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {*stops, TOLD})  # blocked since the fork
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, TOLD)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # gone before the call
        stop()
