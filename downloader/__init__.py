"""A concurrent file downloader: a URL list in, verified files out.

The public API is re-exported here; the modules behind it are private. The
re-exports are resolved on first use, so that ``import downloader`` (and the
command line's start, which must answer Ctrl-C from its first moment) does
not wait for aiohttp to load.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import Downloader
    from .errors import (
        ChecksumMismatch,
        DownloaderError,
        DownloadError,
        HTTPStatusError,
        ListError,
        NoRunError,
        StateDirError,
        UnsafeNameError,
    )
    from .models import Entry, Record, Results
    from .progress import ProgressEvent
    from .urllist import load_list

_WHERE = {
    "Downloader": "client",
    "ChecksumMismatch": "errors",
    "DownloaderError": "errors",
    "DownloadError": "errors",
    "HTTPStatusError": "errors",
    "ListError": "errors",
    "NoRunError": "errors",
    "StateDirError": "errors",
    "UnsafeNameError": "errors",
    "Entry": "models",
    "Record": "models",
    "Results": "models",
    "ProgressEvent": "progress",
    "load_list": "urllist",
}


if not TYPE_CHECKING:  # for a type checker, the names are the imports above

    def __getattr__(name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'downloader' has no attribute {name!r}")
        value = getattr(import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})  # a name resolved once is in both


__all__ = [
    "ChecksumMismatch",
    "DownloadError",
    "Downloader",
    "DownloaderError",
    "Entry",
    "HTTPStatusError",
    "ListError",
    "NoRunError",
    "ProgressEvent",
    "Record",
    "Results",
    "StateDirError",
    "UnsafeNameError",
    "__version__",
    "load_list",
]
