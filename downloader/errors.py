"""The exceptions a caller can catch by kind.

Every failure of an entry ends up as a :class:`DownloadError` whose ``str()`` is
the reason shown in the summary and the report, and whose ``transient`` flag
tells the retry policy whether another attempt can help.
"""

from __future__ import annotations


class DownloaderError(Exception):
    """Base of every error this package raises on purpose."""


class ListError(DownloaderError):
    """A URL list cannot be read at all (missing file, not a file, ...)."""


class NoRunError(DownloaderError):
    """``--retry`` was asked for in a directory that holds no recorded run."""


class StateDirError(DownloaderError):
    """``DIR/.downloader`` cannot hold the run state (a symlink, a file, unwritable)."""


class UnsafeNameError(DownloaderError, ValueError):
    """A requested file name would leave the output directory."""


class DownloadError(DownloaderError):
    """One attempt, or a whole entry, failed; ``str(err)`` is the reason."""

    transient: bool = False

    def __init__(self, reason: str, *, transient: bool | None = None) -> None:
        super().__init__(reason)
        if transient is not None:
            self.transient = transient


class HTTPStatusError(DownloadError):
    """The server answered with an error status; the body was not saved."""

    TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        text = f"HTTP {status} {reason}".rstrip()
        super().__init__(text, transient=status in self.TRANSIENT)
        self.status = status
        self.retry_after = retry_after


class StallError(DownloadError):
    """No byte arrived for ``--timeout`` seconds."""

    transient = True


class TruncatedError(DownloadError):
    """The body ended before its announced length."""

    transient = True


class ConnectionFailed(DownloadError):
    """The connection could not be made, or broke during the transfer."""

    transient = True


class LocalFileError(DownloadError):
    """Writing on this machine failed (disk full, permissions, no file
    descriptor left): no retry helps. (Retrying the last one was tried: with
    every worker holding a connection and waiting for a descriptor, none
    came free, and the run stalled instead of failing.)"""


class ChecksumMismatch(DownloadError):
    """The bytes do not match the ``checksum=`` asked for."""


class RestartNeeded(DownloadError):
    """The partial file cannot be continued (resource changed, range ignored)."""

    transient = True
