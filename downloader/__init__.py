"""A concurrent file downloader: a URL list in, verified files out.

The public API is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import Downloader
from .errors import (
    ChecksumMismatch,
    DownloaderError,
    DownloadError,
    HTTPStatusError,
    ListError,
    NoRunError,
    UnsafeNameError,
)
from .models import Entry, Record, Results
from .progress import ProgressEvent
from .urllist import load_list

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
    "UnsafeNameError",
    "__version__",
    "load_list",
]
